"""Tool calling for small local models: a JSON envelope generated under a grammar mask.

>>> ts = ToolSet.build([{"type": "function", "function": {"name": "add", "description": "Add.",
...     "parameters": {"type": "object", "properties": {"a": {"type": "integer"}},
...                    "required": ["a"]}}}], tool_choice="any")
>>> ts.parse('{"name":"add","arguments":{"a":2}}', finished=True)[1][0]["args"]
{'a': 2}

The model answers with one JSON object (compact, no free-form preamble):

- a tool call: ``{"name": "<tool>", "arguments": {...}}`` — ``arguments`` valid for that
  tool's argument schema (the mask is an ``anyOf`` over the bound tools);
- with ``tool_choice="auto"`` (the default), alternatively ``{"answer": "<text>"}``: a
  plain reply, returned as the message text. With a ``response_format`` bound too
  (``bind_tools(tools, response_format=...)``, create_agent's ``ProviderStrategy``) the
  reply is ``{"answer": <an object valid for that schema>}``, returned as its JSON text.

``tool_choice``: ``"auto"`` (call a tool or answer), ``"any"`` / ``"required"`` / ``True``
(must call one of the tools), a tool name or ``{"type": "function", "function": {"name":
...}}`` (must call that tool), ``"none"`` / ``False`` (plain text, tools ignored). One tool
call per message. Previous tool calls in the history are shown to the model in the same
envelope, so it sees its own format.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from deal_chains.errors import InputError
from deal_chains.jsonkit.lexer import JsonLexer
from deal_chains.jsonkit.schema_walk import schema_children, walk_schema

_JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}

# What a reply to the user is, in one place: the tool-calling envelope's answer string and a
# plain-text turn after tool results both use it. It does not open with JSON (``{``, ``[``,
# a quote), a code fence or whitespace: so neither tool-call syntax nor a quoted JSON string
# passes for an answer. A bare number stays allowed ("85" answers "38 plus 47?"): asking for
# a letter too made small models pad numbers with digits until the budget ran out.
# (Regex in llguidance's syntax.)
REPLY_START = r"[^\s{\[\"`]"


def reply_constraint() -> Any:
    """The hard constraint of a plain-text reply (``REPLY_START``, then anything)."""
    from deal_chains.search.constraints import GrammarConstraint

    return GrammarConstraint.regex(REPLY_START + r"[\s\S]*")
_ANSWER_PREFIX = re.compile(r'\{\s*"answer"\s*:\s*"')
_ARGUMENTS = re.compile(r'"arguments"\s*:\s*')


def _tool_name(tool: Any) -> str:
    name = getattr(tool, "name", None) or getattr(tool, "__name__", None)
    if isinstance(tool, Mapping):
        name = tool.get("name") or (tool.get("function") or {}).get("name") or tool.get("title")
    return str(name) if name else repr(tool)[:60]


def _check_args_schema(name: str, params: Any) -> None:
    """Raise ``InputError`` naming the tool and the offending part of its argument schema."""
    if not isinstance(params, Mapping):
        raise InputError(f"tool {name!r}: its argument schema must be a JSON-schema object, got {params!r:.80}")
    if params.get("type", "object") != "object":
        raise InputError(f"tool {name!r}: its argument schema must have type 'object' (tool arguments are "
                         f"keyword arguments), got type {params.get('type')!r}")
    _check_schema(f"tool {name!r}", "argument schema", params)


def _check_schema(who: str, what: str, schema: Mapping[str, Any]) -> None:
    """Raise ``InputError`` (``who: ...``) for a schema nested in the envelope (a tool's
    ``what="argument schema"``, a response format's ``"schema"``) that the mask cannot
    enforce: unknown types, remote refs, an invalid schema, draft-03."""

    stack: list[tuple[Any, tuple]] = [(schema, ())]
    while stack:  # subschemas only: a key named "enum" under properties is a schema, enum data is not
        node, path = stack.pop()
        if not isinstance(node, Mapping):
            continue
        t = node.get("type")
        for value in (t if isinstance(t, list) else [t]):
            if isinstance(value, str) and value not in _JSON_TYPES:
                where = "/".join(map(str, path + ("type",)))
                raise InputError(f"{who}: unknown type {value!r} at {where} of its {what} "
                                 f"(JSON Schema types: {', '.join(sorted(_JSON_TYPES))})")
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            where = "/".join(map(str, path + ("$ref",)))
            raise InputError(f"{who}: remote $ref {ref!r} at {where} is not supported (local refs only)")
        stack.extend(schema_children(node, path))
    from jsonschema import exceptions, validators

    try:
        cls = validators.validator_for(schema)
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "/".join(map(str, exc.path)) or "(top level)"
        raise InputError(f"{who}: its {what} is invalid at {where}: {exc.message}") from None
    if cls.__name__ == "Draft3Validator":  # as for a hard json_schema: its keywords go unread
        raise InputError(f"{who}: draft-03 {what}s cannot be enforced by the token mask "
                         "(required: true, divisibleBy, disallow, extends); write it in draft-04 or later")


def _is_pointer_ref(node: Mapping[str, Any]) -> bool:
    ref = node.get("$ref")
    return isinstance(ref, str) and (ref == "#" or ref.startswith("#/"))


def _has_pointer_refs(node: Any) -> bool:
    """Whether a schema has a ``$ref`` to a JSON pointer inside itself (``#`` or ``#/...``)."""
    found: list[Mapping[str, Any]] = []

    def look(n: dict) -> dict:
        if _is_pointer_ref(n):
            found.append(n)
        return n

    walk_schema(node, look)  # (a "$ref" in enum/const data is data, a property named "default" a schema)
    return bool(found)


def _rebase_refs(node: Any, base: str) -> Any:
    """``node`` with its ``#`` / ``#/...`` refs pointing below ``base`` instead."""
    return walk_schema(node, lambda n: {**n, "$ref": base + n["$ref"][1:]} if _is_pointer_ref(n) else n)


def _embedded(schema: Any, key: str) -> tuple[Any, dict[str, Any]]:
    """``schema`` as a subschema of the envelope, and the root ``$defs`` that takes: its
    ``#`` / ``#/...`` refs point into ``schema`` itself, so such a schema is kept at the root
    (under ``key``), where the refs, rebased, still resolve."""
    if not _has_pointer_refs(schema):
        return schema, {}
    return {"$ref": f"#/$defs/{key}"}, {key: _rebase_refs(schema, f"#/$defs/{key}")}


def without_titles(schema: Any) -> Any:
    """``schema`` without its subschemas' ``title`` annotations (a property named ``title``
    and ``title`` keys in enum/const data are kept)."""
    return walk_schema(schema, lambda node: {k: v for k, v in node.items() if not (k == "title" and isinstance(v, str))})


def _arguments_summary(params: Mapping[str, Any]) -> str:
    props = params.get("properties") or {}
    if not props:
        return "no arguments, use {}"
    required = set(params.get("required") or ())
    parts = []
    for key, sub in props.items():
        kind = sub.get("type") if isinstance(sub, Mapping) else None
        if kind is None and isinstance(sub, Mapping) and "anyOf" in sub:
            kind = "|".join(str(s.get("type")) for s in sub["anyOf"] if isinstance(s, Mapping))
        desc = sub.get("description") if isinstance(sub, Mapping) else None
        parts.append(f'"{key}" ({kind or "any"}{", required" if key in required else ""})'
                     + (f": {desc}" if desc else ""))
    return "; ".join(parts)


@dataclass
class ToolSet:
    """Bound tools (OpenAI format) and the tool choice, with the schema the mask enforces."""

    tools: list[dict[str, Any]]
    choice: str  # "auto" | "any" | "none" | a tool name
    answer_only: bool = False  # an "auto" turn that must answer (its tool call repeated an answered one)
    answer_schema: dict[str, Any] | None = None  # the JSON schema a reply must match (a response_format)

    @classmethod
    def build(cls, tools: Sequence[Any], tool_choice: Any = None) -> "ToolSet":
        """Convert and check ``tools`` (anything ``convert_to_openai_tool`` takes) and
        ``tool_choice``; errors name the tool and the offending part of its schema."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        formatted: list[dict[str, Any]] = []
        seen: dict[str, Any] = {}
        for i, tool in enumerate(tools):
            try:
                spec = convert_to_openai_tool(tool)
            except Exception as exc:  # langchain raises ValueError/TypeError variants
                raise InputError(f"tool {i} ({_tool_name(tool)}): cannot be turned into a tool schema: {exc}") from None
            fn = spec.get("function") if isinstance(spec, Mapping) else None
            if not isinstance(fn, Mapping) or not fn.get("name"):
                raise InputError(f"tool {i} ({_tool_name(tool)}): only function tools are supported, got {spec!r:.100}")
            name = str(fn["name"])
            params = fn.get("parameters") or {"type": "object", "properties": {}}
            if name in seen:
                # the same tool given twice (e.g. a pydantic class and its JSON schema) is
                # one tool; two different tools under one name cannot be told apart
                if without_titles(seen[name]) != without_titles(params):
                    raise InputError(f"two different tools are named {name!r}; tool names must be distinct")
                continue
            seen[name] = params
            _check_args_schema(name, params)
            formatted.append({"type": "function", "function": {**fn, "parameters": dict(params)}})
        choice = cls._choice(tool_choice, [t["function"]["name"] for t in formatted])
        if choice != "none" and not formatted:
            raise InputError(f"tool_choice={tool_choice!r} needs at least one tool")
        return cls(formatted, choice)

    @staticmethod
    def _choice(tool_choice: Any, names: list[str]) -> str:
        if tool_choice is None or tool_choice == "auto":
            return "auto" if names else "none"
        if tool_choice is True or tool_choice in ("any", "required"):
            return "any"
        if tool_choice is False or tool_choice == "none":
            return "none"
        if isinstance(tool_choice, Mapping):
            tool_choice = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
        if isinstance(tool_choice, str):
            if tool_choice not in names:
                raise InputError(f"tool_choice {tool_choice!r} is not one of the bound tools ({', '.join(names)})")
            return tool_choice
        raise InputError(f"tool_choice must be 'auto', 'any', 'required', 'none', a tool name or "
                         f"{{'type': 'function', 'function': {{'name': ...}}}}, got {tool_choice!r}")

    @property
    def active(self) -> bool:
        return self.choice != "none"

    def _callable(self) -> list[dict[str, Any]]:
        if self.answer_only:
            return []
        if self.choice in ("auto", "any"):
            return [t["function"] for t in self.tools]
        return [t["function"] for t in self.tools if t["function"]["name"] == self.choice]

    def envelope(self, fn: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON schema of one call of tool ``fn``."""
        from deal_chains.search.constraints import bounded_schema

        names = [t["function"]["name"] for t in self.tools]
        key = f"deal_chains_tool_{names.index(fn['name']) if fn['name'] in names else 0}"
        arguments, defs = _embedded(bounded_schema(fn["parameters"]), key)
        out = {"type": "object",
               "properties": {"name": {"const": fn["name"]}, "arguments": arguments},
               "required": ["name", "arguments"], "additionalProperties": False}
        return {**out, "$defs": defs} if defs else out

    def with_answer_schema(self, schema: Mapping[str, Any]) -> "ToolSet":
        """The same tools, where a reply must be an object valid for ``schema`` (checked as
        tool schemas are: ``InputError`` for draft-03, remote refs, an invalid schema)."""
        _check_schema("response_format", "schema", schema)
        return ToolSet(self.tools, self.choice, self.answer_only, dict(schema))

    def schema(self) -> dict[str, Any]:
        branches = [self.envelope(fn) for fn in self._callable()]
        defs: dict[str, Any] = {}
        for branch in branches:
            if "$defs" in branch:
                defs.setdefault("$defs", {}).update(branch.pop("$defs"))
        if self.choice == "auto":
            answer: Any = {"type": "string", "pattern": "^" + REPLY_START}
            if self.answer_schema is not None:
                from deal_chains.search.constraints import bounded_schema

                answer, answer_defs = _embedded(bounded_schema(self.answer_schema), "deal_chains_answer")
                if answer_defs:
                    defs.setdefault("$defs", {}).update(answer_defs)
            branches.append({"type": "object", "properties": {"answer": answer},
                             "required": ["answer"], "additionalProperties": False})
        out = branches[0] if len(branches) == 1 else {"anyOf": branches}
        return {**out, **defs} if defs else out

    def constraint(self) -> Any:
        """The hard constraint of a tool-calling turn (None for ``tool_choice="none"``)."""
        if not self.active:
            return None
        from deal_chains.search.constraints import GrammarConstraint

        from deal_chains.jsonkit.schema_rewrite import STRING_CAP

        # the tools' arguments are capped (bounded_schema) in envelope(); the answer text
        # stays open. A string that stops at the cap is reported as cut (``budget_cut``)
        constraint = GrammarConstraint.json_schema(self.schema(), bounded=False)
        constraint.string_cap = STRING_CAP
        return constraint

    def check(self, lm: Any) -> None:
        """Compile every tool's envelope for ``lm`` now, so a schema the grammar engine
        refuses fails at bind time with the tool's name."""
        from deal_chains.search.constraints import ConstraintError, GrammarConstraint

        for fn in self._callable():
            try:
                GrammarConstraint.json_schema(self.envelope(fn), bounded=False).compile(lm)
            except ConstraintError as exc:
                raise ConstraintError(f"tool {fn['name']!r}: {exc}") from None
        if self.active:
            self.constraint().compile(lm)

    def typical_tokens(self) -> int:
        """About how many tokens a call of this turn (or its structured reply) takes: what a
        default token budget is sized from (``runtime.options.budget_for_json``)."""
        from deal_chains.jsonkit.schema_shape import typical_tokens

        sizes = [8 + len(fn["name"]) // 3 + typical_tokens(fn["parameters"]) for fn in self._callable()]
        if self.answer_schema is not None:
            sizes.append(6 + typical_tokens(self.answer_schema))
        return max(sizes, default=0)

    def instructions(self) -> str:
        if not self.active:
            return ""
        lines = ["You can call these tools:"]
        for fn in [t["function"] for t in self.tools] if self.answer_only else self._callable():
            desc = (fn.get("description") or "").strip().splitlines()
            lines.append(f"- {fn['name']}: {desc[0] if desc else ''} Arguments: {_arguments_summary(fn['parameters'])}")
        call = 'To call a tool, reply with JSON {"name": "<tool name>", "arguments": {<arguments>}}.'
        reply = '{"answer": "<your reply>"}'
        if self.answer_schema is not None:
            shown = json.dumps(without_titles(self.answer_schema), ensure_ascii=False, separators=(",", ":"))
            reply = '{"answer": <a JSON object matching this JSON schema: ' + shown + '>}'
        if self.answer_only:
            lines.append(f"You have the tool results you need: reply with JSON {reply}.")
        elif self.choice == "auto":
            lines.append(call + ' Call a tool only when you need its result; otherwise, or once you have the '
                                f'tool results you need, reply with JSON {reply}.')
        elif self.choice == "any":
            lines.append(call + " Call one of the tools now.")
        else:
            lines.append(f'Call the tool {self.choice} now: reply with JSON {{"name": "{self.choice}", '
                         '"arguments": {<arguments>}}.')
        return "\n".join(lines)

    def answering(self) -> "ToolSet":
        """The same tools, for a turn that must reply ``{"answer": ...}``."""
        return ToolSet(self.tools, self.choice, answer_only=True, answer_schema=self.answer_schema)

    def parse(self, text: str, finished: bool, cut: str | None = None) -> tuple[str, list[dict], list[dict]]:
        """(content, tool_calls, invalid_tool_calls) of a generated envelope. ``finished``:
        the model ended it (not the token budget or a search limit); ``cut``: what cut it
        otherwise (the error an invalid call reports)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and "name" in data:
            if not finished:
                # it parses, but the budget closed it (a value in it is cut): not a call to make
                args = json.dumps(data.get("arguments") or {}, ensure_ascii=False)
                return "", [], [{"name": data["name"], "args": args, "id": new_call_id(), "type": "invalid_tool_call",
                                 "error": cut or "the arguments were cut by the token budget: raise max_tokens"}]
            return "", [{"name": data["name"], "args": data.get("arguments") or {}, "id": new_call_id(),
                         "type": "tool_call"}], []
        if isinstance(data, dict) and "answer" in data:
            answer = data["answer"]
            # a structured reply (answer_schema) is returned as its JSON text
            return (answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)), [], []
        # cut by the token budget or a stop sequence: keep what can be kept
        from langchain_core.utils.json import parse_partial_json

        try:
            partial = parse_partial_json(text)
        except (json.JSONDecodeError, ValueError):
            partial = None
        if isinstance(partial, dict) and "answer" in partial and isinstance(partial["answer"], str) \
                and self.answer_schema is None:
            return partial["answer"], [], []
        name = partial.get("name") if isinstance(partial, dict) else None
        why = (cut or "the answer was cut by the token budget (raise max_tokens)") if not finished else \
            "the output is not a complete tool call"
        # args: the arguments as generated (unparsed), not the whole envelope
        m = _ARGUMENTS.search(text)
        args = text[m.end():] if m else None
        return "", [], [{"name": name if isinstance(name, str) else None, "args": args, "id": new_call_id(),
                         "error": why, "type": "invalid_tool_call"}]


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def envelope_text(tool_calls: Sequence[Mapping[str, Any]]) -> str:
    """How earlier tool calls appear in the prompt (the format the model must produce)."""
    return "\n".join(json.dumps({"name": c.get("name"), "arguments": c.get("args") or {}}, ensure_ascii=False,
                                separators=(",", ":")) for c in tool_calls)


def called_text(tool_calls: Sequence[Mapping[str, Any]]) -> str:
    """How earlier tool calls appear in a plain-text turn: in words, not in the JSON envelope,
    which a small model would copy into its reply.

    >>> called_text([{"name": "get_weather", "args": {"city": "Paris"}}])
    'I called get_weather(city="Paris").'
    """
    def call(c: Mapping[str, Any]) -> str:
        args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in (c.get("args") or {}).items())
        return f"I called {c.get('name')}({args})."

    return " ".join(call(c) for c in tool_calls)


def answer_text(text: str) -> str:
    return json.dumps({"answer": text}, ensure_ascii=False, separators=(",", ":"))


class AnswerStream:
    """Streams the reply text out of a growing ``{"answer": "..."}`` envelope (nothing for a
    tool call, which is sent whole once complete)."""

    def __init__(self) -> None:
        self.head = ""  # the envelope until its answer string opens
        self.answer: JsonLexer | None = None  # reads the answer string, one delta at a time
        self.sent = ""

    def feed(self, delta: str) -> str:
        if self.answer is None:
            self.head += delta
            m = _ANSWER_PREFIX.match(self.head)
            if not m:
                return ""
            self.answer = JsonLexer(collect=True).feed(self.head[m.end() - 1:])  # from its opening quote
        else:
            self.answer.feed(delta)
        text = self.answer.string_so_far()
        if text is None or not text.startswith(self.sent):
            return ""
        out, self.sent = text[len(self.sent):], text
        return out

    def rest(self, content: str) -> str:
        """What the final reply adds to what was streamed."""
        if not content.startswith(self.sent):  # pragma: no cover - partial decoding is a prefix
            return ""
        return content[len(self.sent):]


