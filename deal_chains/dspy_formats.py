"""DSPy's ChatAdapter output format as a grammar: what ``DeALLM`` (``deal_chains.dspy``)
decodes under when DSPy's default adapter calls it.

ChatAdapter asks for each output field after a ``[[ ## name ## ]]`` header, in signature
order, then ``[[ ## completed ## ]]``::

    [[ ## reasoning ## ]]
    Two plus two is four.

    [[ ## answer ## ]]
    4

    [[ ## completed ## ]]

``chat_output_fields`` recognises such a request: it takes the signatures of the DSPy
modules being called (``dspy.settings.caller_modules``: the ``Predict`` whose adapter is
calling the LM) and keeps the one for which ChatAdapter's own formatting functions write
exactly the request's system message and the end of its last user message. A request that
matches none (another adapter, a custom format, a signature changed on the way) is not
recognised, and is decoded without a format constraint.

``chat_format`` turns the fields into a Lark grammar (llguidance's dialect) whose every
output parses with ChatAdapter's ``parse`` on the first call:

* ``str``: free text, not empty, no leading or trailing whitespace, not starting with
  ``{`` (to a small model, the template's ``{answer}`` is the likeliest start), never containing the
  ``[[ ##`` marker (nor ``[[##``), never a bare placeholder such as ``{x}``, and never a
  field's placeholder (``{answer``, ``{question``) anywhere: the prompt's template, not a
  value (a small model copies it); nor just a field's name (``[answer]``);
* ``int`` / ``float``: a number; ``bool``: ``True`` or ``False``;
* ``Literal[...]`` / an ``Enum``: exactly one of the options (as ChatAdapter lists them);
* anything else (``list[str]``, ``dict``, a pydantic model, ``int | None``, ...): one JSON
  value under the field's JSON schema (pydantic's, as DSPy shows it), with the caps of
  ``GrammarConstraint.json_schema`` (compact, bounded strings and arrays).

Output types that DSPy parses by other means (``dspy.Type`` subclasses such as
``dspy.Code`` or ``dspy.ToolCalls``) make the request unrecognised. DSPy is imported only
inside ``chat_output_fields``; the rest of the module needs neither DSPy nor a model.

>>> values_of("[[ ## answer ## ]]\\n42\\n\\n[[ ## comp")
'42'
"""

from __future__ import annotations

import enum
import json
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

__all__ = ["ChatFormat", "OutputField", "chat_format", "chat_output_fields", "check_text_cap", "field_of",
           "json_answer_schema", "values_of"]

MARKER = "[[ ## "
COMPLETED = "[[ ## completed ## ]]"
# a larger bounded repetition (intersected with "no marker") exceeds llguidance's lexer
# limits, which then refuse valid text (seen at 600 with llguidance 1.9)
MAX_TEXT_CAP = 400
_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")


@dataclass(frozen=True)
class OutputField:
    """One output field as the grammar sees it. ``kind``: ``text``, ``int``, ``float``,
    ``bool``, ``choice`` (one of ``options``) or ``json`` (a value under ``schema``)."""

    name: str
    kind: str
    options: tuple[str, ...] = ()
    schema: Any = None


@dataclass(frozen=True)
class ChatFormat:
    """A recognised ChatAdapter request: its output fields and the grammar they make."""

    fields: tuple[OutputField, ...]
    grammar: str
    # what the spec's rewards score: the fields' values, not the markers
    view: Callable[[str], str] = field(default=None, compare=False)  # type: ignore[assignment]

    def constraint(self) -> Any:
        from deal_chains.search.constraints import GrammarConstraint

        return GrammarConstraint.lark(self.grammar)


# ---------------------------------------------------------------- recognising the request


def chat_output_fields(messages: Sequence[Mapping[str, Any]]) -> tuple[list[OutputField], list[str]] | None:
    """The output fields of a ChatAdapter request (``messages`` as the LM got them, contents
    as text) and the names of its input fields, or None when the request is not recognised
    (see the module docstring)."""
    try:
        import dspy
        from dspy.adapters.chat_adapter import ChatAdapter
        from dspy.adapters.json_adapter import JSONAdapter
    except ImportError:
        return None
    if len(messages) < 2 or messages[0].get("role") != "system" or messages[-1].get("role") != "user":
        return None
    system, last = str(messages[0].get("content")), str(messages[-1].get("content"))
    if "[[ ## completed ## ]]" not in system:  # cheap: not ChatAdapter's format at all
        return None
    adapter = ChatAdapter()
    seen: set[int] = set()
    for module in reversed(list(getattr(dspy.settings, "caller_modules", None) or [])):
        signature = getattr(module, "signature", None)
        if not isinstance(signature, type) or not issubclass(signature, dspy.Signature) or id(signature) in seen:
            continue
        seen.add(id(signature))
        if isinstance(dspy.settings.adapter, JSONAdapter):
            return None  # a JSON request (its schema comes as response_format)
        try:
            matches = (system == adapter.format_system_message(signature)
                       and last.endswith(adapter.user_message_output_requirements(signature)))
        except Exception:  # a signature ChatAdapter cannot format is not this request's
            continue
        if matches:
            fields = [field_of(name, info.annotation) for name, info in signature.output_fields.items()]
            if not fields or any(f is None for f in fields):
                return None
            return fields, list(signature.input_fields)  # type: ignore[return-value]
    return None


def field_of(name: str, annotation: Any) -> OutputField | None:
    """How a field of type ``annotation`` is written (None: a type DSPy parses by other means).

    >>> field_of("n", int).kind, field_of("ok", bool).kind, field_of("tags", list[str]).kind
    ('int', 'bool', 'json')
    >>> field_of("mood", typing.Literal["happy", "sad"]).options
    ('happy', 'sad')
    """
    if annotation is str:
        return OutputField(name, "text")
    if annotation is bool:
        return OutputField(name, "bool")
    if annotation is int:
        return OutputField(name, "int")
    if annotation is float:
        return OutputField(name, "float")
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return OutputField(name, "choice", tuple(str(a) for a in typing.get_args(annotation)))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return OutputField(name, "choice", tuple(str(m.value) for m in annotation))
    if _is_reasoning(annotation):
        # dspy.Reasoning (a ChainOfThought option) is prompted and parsed as text
        return OutputField(name, "text")
    if origin in (typing.Union, types.UnionType) and str in typing.get_args(annotation):
        # ChatAdapter parses ``str | None`` as the raw text
        return OutputField(name, "text")
    if _is_dspy_type(annotation):
        return None
    try:
        import pydantic

        schema = pydantic.TypeAdapter(annotation).json_schema()
    except Exception:
        return None
    return OutputField(name, "json", schema=schema)


def _is_reasoning(annotation: Any) -> bool:
    return (isinstance(annotation, type) and annotation.__name__ == "Reasoning"
            and annotation.__module__.startswith("dspy."))


def _is_dspy_type(annotation: Any) -> bool:
    """A ``dspy.Type`` (or a generic of one): types with their own parsing (Code, ToolCalls,
    Image, History, ...)."""
    candidates = [annotation, *typing.get_args(annotation)]
    for c in candidates:
        for base in getattr(c, "__mro__", ()):
            if base.__name__ == "Type" and base.__module__.startswith("dspy."):
                return True
    return False


# ---------------------------------------------------------------- the grammar


def chat_format(fields: Sequence[OutputField], *, max_text_chars: int | None = None,
                input_names: Sequence[str] = ()) -> ChatFormat:
    """The grammar of ChatAdapter's answer with ``fields``. ``max_text_chars`` caps each
    free-text field (None: no cap; the token budget still applies). ``input_names``: the
    input fields, whose template placeholders (``{question``) free text never contains
    either. Caps above
    ``MAX_TEXT_CAP`` are refused: the grammar engine's lexer limits then reject valid text.

    >>> fmt = chat_format([OutputField("answer", "text")])
    >>> fmt.fields[0].name
    'answer'
    """
    if not fields:
        raise ValueError("a ChatAdapter answer has at least one output field")
    check_text_cap(max_text_chars)
    terminals: list[str] = []
    items: list[str] = []
    pending = ""  # the regex of the terminal being built (values and the text around them)
    for i, f in enumerate(fields):
        pending += _lit(("\n\n" if i else "") + f"[[ ## {f.name} ## ]]\n")
        if f.kind == "json":
            name = f"T{len(terminals)}"
            terminals.append(f"{name}: {pending}")
            items += [name, "%json " + json.dumps(_json_schema(f.schema), ensure_ascii=False)]
            pending = ""
        else:
            pending += _value_regex(f, max_text_chars, [*input_names, *(g.name for g in fields)])
    pending += _lit(f"\n\n{COMPLETED}") + r" /\n?/"
    name = f"T{len(terminals)}"
    terminals.append(f"{name}: {pending}")
    items.append(name)
    grammar = "start: " + " ".join(items) + "\n" + "\n".join(terminals) + "\n"
    return ChatFormat(tuple(fields), grammar, _values_view(tuple(fields)))


def check_text_cap(max_text_chars: Any) -> None:
    """``ConfigError`` unless ``max_text_chars`` is None or 1 to ``MAX_TEXT_CAP``."""
    if max_text_chars is None:
        return
    if isinstance(max_text_chars, bool) or not isinstance(max_text_chars, int) \
            or not 1 <= max_text_chars <= MAX_TEXT_CAP:
        from deal_chains.errors import ConfigError

        raise ConfigError(f"max_text_chars must be an integer from 1 to {MAX_TEXT_CAP} (or None: no cap), "
                          f"got {max_text_chars!r}")


def _lit(text: str) -> str:
    """``text`` as an exact regex terminal."""
    return "/" + _lit_body(text) + "/"


def _lit_body(text: str) -> str:
    """A regex matching exactly ``text`` (every character but ASCII letters and digits
    written as ``\\x{..}``, so no regex dialect reads it differently)."""
    return "".join(c if c.isascii() and c.isalnum() else "\\x{%x}" % ord(c) for c in text)


_ANY = r"(?s:.)"
_EDGE = r"[^\s\x{1c}-\x{1e}]"  # the last character of a line: no whitespace
# a character of a line of free text: not the line breaks other than "\n" either, which
# ChatAdapter's parse (str.splitlines) would turn into "\n", so the parsed value is the text as written
_LINE_CHAR = r"[^\n\r\x{b}\x{c}\x{1c}-\x{1e}\x{85}\x{2028}\x{2029}]"
# how every line of free text opens: a letter, a digit, or an opening quote, bracket or sign
# prose may open with; never "{", "[", "#" or whitespace, which open the template a small
# model copies ("{answer}", "[answer]", "[## answer]", "[## completed ## ]]", "# ...")
TEXT_START = r"[\p{L}\p{N}\"'(¿¡$€£\-]"
_LINE = rf"{TEXT_START}({_LINE_CHAR}*{_EDGE})?"
# what a small model wraps a field's name in when it copies the template: "answer:", "**answer**"
_DECOR = r"[\[(<\"'`*_# ]*"
_DECOR_END = r"[\])>\"'`*_:.# ]*"


def _value_regex(f: OutputField, max_text_chars: int | None, names: Sequence[str]) -> str:
    if f.kind == "text":
        # lines, each opening as prose does (a line is cheap for the grammar engine to check;
        # a rule over "any line of the text" is not: it ran out of lexer states)
        body = rf"/{_LINE}(\n+{_LINE})*/"
        if max_text_chars is not None:
            body = rf"({body} & /{_ANY}{{1,{max_text_chars}}}/)"
        # never the marker, nor a near miss such as "[[## completed" (a model trying to end
        # the field: a line starting with the marker is a new field to ChatAdapter's parse);
        # never the prompt's template: not a bare placeholder such as "{answer}", nor a
        # field's placeholder anywhere in the text, nor just a field's name ("answer:")
        placeholders = "|".join(_lit_body("{" + name) for name in names)  # "{answer, completed}" too
        names_rx = "|".join(_lit_body(name) for name in names)
        return (rf"({body} & ~/{_ANY}*\[\[ *#{_ANY}*/ & ~/\{{[A-Za-z_][A-Za-z0-9_]*\}}/"
                rf" & ~/{_ANY}*({placeholders}){_ANY}*/ & ~/{_DECOR}({names_rx}){_DECOR_END}/)")
    if f.kind == "int":
        return r"/-?(0|[1-9][0-9]{0,17})/"
    if f.kind == "float":
        return r"/-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,15})?([eE][+-]?[0-9]{1,2})?/"  # finite
    if f.kind == "bool":
        return "/True|False/"  # what ChatAdapter's parse reads as a bool (and says to write)
    if f.kind == "choice":
        if not f.options:
            raise ValueError(f"field {f.name!r} has no options")
        return "(" + " | ".join(_lit(o) for o in f.options) + ")"
    raise ValueError(f"unknown field kind {f.kind!r}")


# JSONAdapter's free-text fields open as the ChatAdapter grammar's do (a JSON Schema pattern
# is a search, hence the "^")
TEXT_FIELD_PATTERN = "^" + TEXT_START
_FIXED_TEXT = ("pattern", "enum", "const", "format")


def json_answer_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """JSONAdapter's answer schema with each free-text output field opening as the ChatAdapter
    grammar's text fields do (``TEXT_START``: a letter, a digit or an opening quote, never
    ``{``, ``[``, ``#`` or whitespace): to a small model the prompt's template (``{answer}``,
    or a value wrapped as ``{river} boat paddle``) is the likeliest start. Fields with their
    own pattern, options or format are left as they are.

    >>> narrowed = json_answer_schema({"type": "object", "properties": {"a": {"type": "string"}}})
    >>> narrowed["properties"]["a"] == {"type": "string", "pattern": TEXT_FIELD_PATTERN}
    True
    """
    props = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(props, Mapping):
        return dict(schema)
    narrowed = {name: ({**prop, "pattern": TEXT_FIELD_PATTERN}
                       if isinstance(prop, Mapping) and prop.get("type") == "string"
                       and not any(k in prop for k in _FIXED_TEXT) else prop)
                for name, prop in props.items()}
    return {**schema, "properties": narrowed}


def _json_schema(schema: Any) -> Any:
    """The field's schema as ``GrammarConstraint.json_schema`` compiles it (made sound,
    capped, compact), with those options inline for Lark's ``%json``."""
    from deal_chains.search.constraints import GrammarConstraint

    compiled = GrammarConstraint.json_schema(schema)
    inline = json.loads(compiled.source)
    if isinstance(inline, dict):
        inline = {**inline, "x-guidance": dict(compiled.options)}
    return inline


# ---------------------------------------------------------------- what rewards score


def values_of(text: str, json_fields: Sequence[str] = ()) -> str:
    """The field values in (a prefix of) a ChatAdapter answer, one blank line apart: what
    the spec's rewards score instead of the markers. Values of ``json_fields`` are read
    as ``json_content`` (their strings and numbers, not their keys).

    >>> values_of("[[ ## reasoning ## ]]\\nSky.\\n\\n[[ ## answer ## ]]\\nblue\\n\\n[[ ## completed ## ]]\\n")
    'Sky.\\n\\nblue'
    """
    parts = _HEADER.split(text)  # [before, name, value, name, value, ...]
    # a marker being written at the end is no value (values never contain "[[ ##")
    tail = parts[-1]
    for cut in range(min(len(tail), len(MARKER) + 40), 0, -1):
        if _is_marker_prefix(tail[-cut:]):
            parts[-1] = tail[:-cut]
            break
    values = []
    for name, value in zip(parts[1::2], parts[2::2]):
        value = value.strip()
        if name in json_fields and value:
            from deal_chains.jsonkit.lexer import json_content

            value = json_content(value)
        if value and name != "completed":
            values.append(value)
    return "\n\n".join(values)


def _is_marker_prefix(s: str) -> bool:
    if not s.startswith("["):
        return False
    if len(s) <= len(MARKER):
        return MARKER.startswith(s)
    return s.startswith(MARKER) and re.fullmatch(r"\[\[ ## \w*( (#(# ?(\](\]?)?)?)?)?)?", s) is not None


def _values_view(fields: tuple[OutputField, ...]) -> Callable[[str], str]:
    json_fields = tuple(f.name for f in fields if f.kind == "json")

    def chat_values(text: str) -> str:
        return values_of(text, json_fields)

    return chat_values
