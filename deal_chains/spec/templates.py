r"""``{name}`` templates in spec strings (prompts, reward parameters).

Only bare ``{name}`` placeholders exist: no attribute or index access, no format specs,
no evaluation. In text (``system``, ``prompt``, ``keywords.words``, ``judge.question``)
``{{`` and ``}}`` stand for literal braces and any other brace is an error. In a regex
(``regex.must_match``/``must_not_match``) only an unescaped ``{name}`` is a placeholder:
quantifiers such as ``\d{3}`` or ``x{2,5}`` and the escapes ``\p{Greek}`` / ``\x{FF}`` are
regex syntax, and ``\{name\}`` is the literal text ``{name}``.

What a variable may hold (anything else is an error naming the variable and its type):

- written into text (a placeholder in a longer string, or anywhere in a prompt, a system
  message or a judge question): a string, a number, or a list of strings and numbers
  (joined with ", "); inserted into a longer regex it is matched literally (escaped);
- a whole item of a list-valued field (``words: "{concepts}"``, ``must_match: "{pattern}"``):
  a string or a list of strings (a list gives several words or patterns; a string given
  as the whole regex is used as a pattern);
- never null, a boolean, a mapping, a nested list or a non-finite number.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, NamedTuple

from deal_chains.errors import SpecError

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# Alternation order matters: escapes first, then a valid placeholder, then a malformed
# one (``{a.b}``, ``{0}``, ``{ x }``), then a stray brace.
_TOKEN = re.compile(r"\{\{|\}\}|\{(" + _NAME + r")\}|(\{[^{}\n]*\})|([{}])")
# In a regex: a {name} after an even number of backslashes (an odd number escapes the brace).
# RE2's own braced escapes \p{Greek}, \P{Lu} and \x{FF} hold an identifier too: the optional
# letter catches them (an escaped p/P/x before the brace makes it one of those).
_REGEX_TOKEN = re.compile(r"(\\*)([pPx]?)\{(" + _NAME + r")\}")
_PLACEHOLDER_LIKE = re.compile(r"\{" + _NAME + r"\}")


class Placeholder(NamedTuple):
    """A ``{name}`` in a parsed template."""

    name: str


class TemplateKind(NamedTuple):
    """How a templated field is parsed and filled.

    ``regex``: the field is a regex (only an unescaped ``{name}`` is a placeholder, a value
    inserted into a longer pattern is escaped). ``lists``: a string that is one placeholder
    may take a list variable and give the list (a list-valued field). ``numbers``: such a
    lone placeholder may also take a number (the generic ``render_template``; a word or a
    pattern is text). ``reserved``: placeholders the reward fills itself, kept as written
    (``{text}`` and ``{prompt}`` in a judge question).
    """

    regex: bool = False
    lists: bool = False
    numbers: bool = False
    reserved: tuple[str, ...] = ()


TEXT = TemplateKind()  # system, prompt: always one string
GENERIC = TemplateKind(lists=True, numbers=True)  # render_template


class TemplateError(Exception):
    """A template variable is missing or holds a value the field cannot take.
    ``message`` says which and why (the caller adds the field and its position)."""

    message: str

    def __str__(self) -> str:
        return self.message


class MissingVariable(TemplateError, KeyError):
    """A template names a variable that was not given."""

    def __init__(self, name: str, available: Mapping[str, Any]):
        super().__init__(name)
        self.name = name
        self.message = missing_variable_message(name, available)


class BadVariable(TemplateError, ValueError):
    """A template variable holds a value of a type the field cannot take."""

    def __init__(self, name: str, value: Any, expected: str, ok: Callable[[Any], bool] | None = None):
        super().__init__(name)
        self.name = name
        self.message = (f"template variable {{{name}}} is {describe_value(value, ok)}; "
                        f"here it must be {expected}")


def describe_value(value: Any, ok: Callable[[Any], bool] | None = None) -> str:
    """``null``, ``a boolean (true)``, ``a mapping ({'a': 1})``... for error messages; for
    a list, what its first item that fails ``ok`` (default: is a string) is."""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"a non-finite number ({value})"
    if isinstance(value, Mapping):
        return f"a mapping ({shown})"
    if isinstance(value, (list, tuple)):
        bad = next((v for v in value if not (ok or _is_str)(v)), None)
        inner = "a list" if isinstance(bad, (list, tuple)) else describe_value(bad)
        return f"a list holding {inner} ({shown})"
    if isinstance(value, (int, float)):
        return f"a number ({shown})"
    return f"of type {type(value).__name__} ({shown})"


def missing_variable_message(name: str, available: Mapping[str, Any]) -> str:
    """The message for an unset template variable, listing those that are set (and the
    closest one, when a name looks like a typo of it)."""
    import difflib

    names = ", ".join(sorted(map(str, available))) or "none were given"
    close = difflib.get_close_matches(name, [str(k) for k in available], n=1, cutoff=0.6)
    hint = f"; did you mean {{{close[0]}}}?" if close else ""
    return f"template variable {{{name}}} is not set (available variables: {names}){hint}"


def parse_template(text: str, *, regex: bool = False) -> list[str | Placeholder]:
    r"""Split ``text`` into literal strings and placeholders; ValueError on bad braces.

    >>> parse_template("Use {words} {{literally}}")
    ['Use ', Placeholder(name='words'), ' ', '{', 'literally', '}']
    >>> parse_template(r"\d{3}-{code}\{x\}", regex=True)
    ['\\d{3}-', Placeholder(name='code'), '\\{x\\}']

    ``regex``: only an unescaped ``{name}`` is a placeholder, every other character is
    the pattern's own (never an error here).
    """
    if regex:
        return _parse_regex(text)
    parts: list[str | Placeholder] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        if match.start() > pos:
            parts.append(text[pos:match.start()])
        pos = match.end()
        token = match.group(0)
        if match.group(1):
            parts.append(Placeholder(match.group(1)))
        elif match.group(2):
            raise ValueError(
                f"invalid placeholder {token!r}: only {{name}} placeholders are supported "
                "(letters, digits and _; write '{{' and '}}' for literal braces)"
            )
        elif match.group(3):
            raise ValueError(
                f"stray {token!r} at position {match.start()}: write "
                f"{token * 2!r} for a literal brace or use a {{name}} placeholder"
            )
        else:
            parts.append(token[0])  # "{{" -> "{", "}}" -> "}"
    if pos < len(text):
        parts.append(text[pos:])
    return parts


def _parse_regex(text: str) -> list[str | Placeholder]:
    parts: list[str | Placeholder] = []
    pos = 0
    for match in _REGEX_TOKEN.finditer(text):
        slashes, letter = match.group(1), match.group(2)
        if len(slashes) % 2:  # \{name}: an escaped brace; \p{name}, \x{FF}: an RE2 escape
            continue
        literal = text[pos:match.start()] + slashes + letter
        if literal:
            parts.append(literal)
        parts.append(Placeholder(match.group(3)))
        pos = match.end()
    if pos < len(text):
        parts.append(text[pos:])
    return parts


def check_template(text: str) -> str:
    """Return ``text`` unchanged if its placeholders are well formed, else ValueError.

    >>> check_template("Write about {topic}.")
    'Write about {topic}.'
    """
    parse_template(text)
    return text


def template_variables(value: Any, kind: TemplateKind = GENERIC) -> set[str]:
    """The placeholder names used in a string or (nested) list of strings (those the
    reward fills itself, ``kind.reserved``, left out).

    >>> sorted(template_variables(["{a} and {b}", "{{c}}"]))
    ['a', 'b']
    """
    if isinstance(value, str):
        return {p.name for p in parse_template(value, regex=kind.regex)
                if isinstance(p, Placeholder) and p.name not in kind.reserved}
    if isinstance(value, (list, tuple)):
        return set().union(*(template_variables(v, kind) for v in value)) if value else set()
    return set()


def placeholder_like(text: str) -> str | None:
    """The first ``{name}`` in ``text``, for fields that are not templates (a reward's
    ``name``, a classifier ``label``): there it would be used as written, never filled.

    >>> placeholder_like("label-{lang}")
    '{lang}'
    """
    found = _PLACEHOLDER_LIKE.search(text) if isinstance(text, str) else None
    return found.group(0) if found else None


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_text_item(value: Any) -> bool:
    return isinstance(value, str) or _is_number(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_TEXT_TYPES = "a string, a number or a list of strings and numbers (it is written into text)"


def _as_text(name: str, value: Any) -> str:
    """A variable's value written into text; BadVariable for what has no sensible text
    (``None`` would become the word "None", a mapping its Python repr)."""
    if isinstance(value, str):
        return value
    if _is_number(value):
        return str(value)
    if isinstance(value, (list, tuple)) and all(_is_text_item(v) for v in value):
        return ", ".join(str(v) for v in value)
    raise BadVariable(name, value, _TEXT_TYPES, _is_text_item)


def _whole_item(name: str, value: Any, kind: TemplateKind) -> Any:
    """The value of a placeholder that is a whole item of a list-valued field."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    if kind.numbers:
        if _is_number(value):
            return str(value)
        if isinstance(value, (list, tuple)) and all(_is_text_item(v) for v in value):
            return [v if isinstance(v, str) else str(v) for v in value]
    what = "patterns" if kind.regex else "words"
    raise BadVariable(name, value, f"a string or a list of strings (the {what} it stands for; write a "
                      "number as a string in the input record)")


def _escape_regex(text: str) -> str:
    """``text`` as a literal in an RE2 pattern: RE2 takes a backslash before any ASCII
    punctuation as that character."""
    return "".join("\\" + c if c.isascii() and not c.isalnum() and not c.isspace() and c != "_" else c
                   for c in text)


def render_value(value: Any, variables: Mapping[str, Any], kind: TemplateKind = GENERIC) -> Any:
    """Like ``render_template`` but raises ``MissingVariable`` / ``BadVariable`` (for callers
    that add their own field path and source line to the error); ``kind`` says how the
    field's templates are parsed and what its variables may hold."""
    if isinstance(value, (list, tuple)):
        return [render_value(v, variables, kind) for v in value]
    if not isinstance(value, str):
        return value
    parts = parse_template(value, regex=kind.regex)

    def lookup(name: str) -> Any:
        if name not in variables:
            raise MissingVariable(name, variables)
        return variables[name]

    if len(parts) == 1 and isinstance(parts[0], Placeholder) and parts[0].name not in kind.reserved:
        name = parts[0].name
        if kind.lists:
            return _whole_item(name, lookup(name), kind)
        return _as_text(name, lookup(name))
    out = []
    for part in parts:
        if not isinstance(part, Placeholder):
            out.append(part)
        elif part.name in kind.reserved:
            out.append("{" + part.name + "}")  # the reward fills it in later
        else:
            text = _as_text(part.name, lookup(part.name))
            clash = next((r for r in kind.reserved if "{" + r + "}" in text), None)
            if clash is not None:  # the reward would fill it in as if the spec had written it
                raise BadVariable(part.name, text, f"text without {{{clash}}} (the judge fills {{{clash}}} "
                                  "itself)")
            out.append(_escape_regex(text) if kind.regex else text)
    return "".join(out)


def render_template(value: Any, variables: Mapping[str, Any], *, field: str | None = None) -> Any:
    """Fill ``{name}`` placeholders in a string, or element-wise in a list of strings.

    >>> render_template("Use: {concepts}.", {"concepts": ["dog", "cat"]})
    'Use: dog, cat.'
    >>> render_template("{concepts}", {"concepts": ["dog", "cat"]})
    ['dog', 'cat']

    A string that is exactly one placeholder of a list variable gives the list itself;
    inside a longer string a list is joined with ", " and numbers are written as text.
    Values that are not strings or lists are returned unchanged. A missing variable, or
    one that is null, a boolean, a mapping or a nested list, raises ``SpecError`` naming
    ``field`` (when given) and the variable.
    """
    try:
        return render_value(value, variables)
    except TemplateError as exc:
        raise SpecError(
            [{"file": None, "line": None, "column": None, "field": field, "message": exc.message}]
        ) from None
    except ValueError as exc:
        raise SpecError(
            [{"file": None, "line": None, "column": None, "field": field, "message": str(exc)}]
        ) from None


def render_text(value: str, variables: Mapping[str, Any], kind: TemplateKind = TEXT) -> str:
    """Render a template to one string (a lone list placeholder is joined with ", ").

    >>> render_text("{concepts}", {"concepts": ["a", "b"]})
    'a, b'
    """
    return render_value(value, variables, kind._replace(lists=False))


def split_words(text: str) -> list[str]:
    """Split a word list given as one string: on commas, or on whitespace if it has none.

    >>> split_words("dog, hot dog ,cat")
    ['dog', 'hot dog', 'cat']
    >>> split_words("dog cat")
    ['dog', 'cat']
    """
    pieces = text.split(",") if "," in text else text.split()
    return [p.strip() for p in pieces if p.strip()]
