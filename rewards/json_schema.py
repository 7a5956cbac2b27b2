"""JSON Schema reward: scores JSON *prefixes* (so the search can steer while the object is
being written) and validates finished text with ``jsonschema``.

>>> r = JsonSchemaReward({"type": "object", "properties": {"n": {"type": "integer"}},
...                       "required": ["n"]})
>>> r.score(['{"n": 3}', '{"n": "x"}', '{"n": ', 'hello'], None)
[1.0, 0.15, 0.9, 0.0]

Scores: a finished, valid document 1.0; a valid JSON prefix 0.5 + 0.4 / (1 + schema errors of the part
written so far, missing properties not counted); a complete document that violates the schema
0.3 / (1 + errors); complete JSON followed by other text 0.2; anything that can no longer
become JSON 0.0. ``mode: hard`` in a spec also adds a token mask (see deal_chains' grammar
constraints) so the output always parses and validates; this reward then ranks what the
mask allows and reports the final validation.

Only ``$ref``s inside the document (``#...``) are allowed; nothing is ever fetched.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Mapping, Sequence

from rewards.base import BaseReward, RewardContext

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?|\n?\s*```\s*$", re.IGNORECASE)
_NUMBER_CHARS = set("0123456789+-.eE")
_LITERALS = ("true", "false", "null")


def _check_refs(node: Any, path: str = "#") -> None:
    if isinstance(node, Mapping):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            raise ValueError(f"$ref {ref!r} at {path} points outside the schema; only local refs (#/...) "
                             "are allowed and nothing is fetched")
        for k, v in node.items():
            _check_refs(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_refs(v, f"{path}/{i}")


def make_validator(schema: Mapping[str, Any] | bool):
    """A jsonschema validator for ``schema`` (any draft jsonschema knows, by ``$schema``),
    with format checking; raises ValueError for an invalid or non-local-ref schema."""
    import jsonschema
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, (Mapping, bool)):
        raise ValueError(f"a JSON schema must be an object or a boolean, got {type(schema).__name__}")
    _check_refs(schema)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        raise ValueError(f"invalid JSON schema at {where}: {exc.message}") from None
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def scan_json_prefix(text: str) -> tuple[bool, bool, str | None, int]:
    """Walk ``text`` as the beginning of one JSON document.

    Returns ``(valid_prefix, complete, closed, end)``: whether some continuation could
    still make it JSON, whether a whole document is already there (``end`` = where it
    stops), and ``closed`` — the prefix cut back to its last complete value with every open
    container closed, so a partial object can be checked against the schema.
    """
    stack: list[str] = []
    expect = "value"  # value | key_or_end | key | colon | comma_or_end | value_or_end | done
    last_ok: tuple[int, list[str]] | None = None  # (cut index, open containers) for `closed`
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if expect == "done":
            return True, True, None, i
        if ch == '"':
            j = i + 1
            while j < n:
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == '"':
                    break
                if ord(text[j]) < 0x20:
                    return False, False, None, i
                j += 1
            if j >= n:  # unterminated string: fine as a prefix
                break
            try:
                json.loads(text[i:j + 1])
            except json.JSONDecodeError:
                return False, False, None, i
            i = j + 1
            if expect in ("key_or_end", "key"):
                expect = "colon"
                continue
            if expect not in ("value", "value_or_end"):
                return False, False, None, i
            expect = _after_value(stack)
            last_ok = (i, list(stack)) if stack else last_ok
            continue
        if ch in "{[":
            if expect not in ("value", "value_or_end"):
                return False, False, None, i
            stack.append(ch)
            expect = "key_or_end" if ch == "{" else "value_or_end"
            i += 1
            continue
        if ch in "}]":
            want = "{" if ch == "}" else "["
            if not stack or stack[-1] != want:
                return False, False, None, i
            if expect not in ("comma_or_end", "key_or_end" if ch == "}" else "value_or_end"):
                return False, False, None, i
            stack.pop()
            i += 1
            expect = _after_value(stack)
            if stack:
                last_ok = (i, list(stack))
            continue
        if ch == ":":
            if expect != "colon":
                return False, False, None, i
            expect = "value"
            i += 1
            continue
        if ch == ",":
            if expect != "comma_or_end":
                return False, False, None, i
            expect = "key" if stack[-1] == "{" else "value"
            i += 1
            continue
        if expect not in ("value", "value_or_end"):
            return False, False, None, i
        j = i
        if ch in _NUMBER_CHARS:
            while j < n and text[j] in _NUMBER_CHARS:
                j += 1
            token = text[i:j]
            if j >= n:  # the number may go on
                if not _number_prefix(token):
                    return False, False, None, i
                if not stack and _is_number(token):
                    return True, True, None, j  # a bare top-level number is a document
                break
            if not _is_number(token):
                return False, False, None, i
        elif ch.isalpha():
            while j < n and text[j].isalpha():
                j += 1
            token = text[i:j]
            if j >= n and any(lit.startswith(token) for lit in _LITERALS) and token not in _LITERALS:
                break
            if token not in _LITERALS:
                return False, False, None, i
        else:
            return False, False, None, i
        i = j
        expect = _after_value(stack)
        if stack:
            last_ok = (i, list(stack))
    if expect == "done":
        return True, True, None, n
    closed = None
    if last_ok is not None:
        cut, open_stack = last_ok
        closed = text[:cut] + "".join("}" if c == "{" else "]" for c in reversed(open_stack))
    elif stack:
        closed = "".join(stack) + "".join("}" if c == "{" else "]" for c in reversed(stack))
    return True, False, closed, n


def _after_value(stack: list[str]) -> str:
    return "comma_or_end" if stack else "done"


@lru_cache(maxsize=4096)
def _number_prefix(token: str) -> bool:
    return re.fullmatch(r"-?(0|[1-9]\d*)?(\.\d*)?([eE][+-]?\d*)?", token) is not None


def _is_number(token: str) -> bool:
    return re.fullmatch(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?", token) is not None


class JsonSchemaReward(BaseReward):
    """Reward JSON that is valid against ``schema`` (see the module docstring for scores).

    ``strip_fences`` accepts a Markdown code fence around the JSON (models like to add one).
    """

    def __init__(self, schema: Mapping[str, Any] | bool, *, strip_fences: bool = True, weight: float = 1.0,
                 name: str = "json_schema", terminal: bool = False):
        self.schema = schema
        self.validator = make_validator(schema)
        self.strip_fences = strip_fences
        self.weight = float(weight)
        self.name = name
        self.terminal = terminal
        self._cache: dict[str, float] = {}

    def errors(self, value: Any, *, ignore_required: bool = False) -> list[str]:
        out = []
        for err in self.validator.iter_errors(value):
            if ignore_required and err.validator in ("required", "minItems", "minProperties", "dependentRequired"):
                continue
            out.append(err.message)
        return out

    def is_valid(self, text: str) -> bool:
        """Does ``text`` parse as one JSON document valid against the schema?"""
        try:
            value = json.loads(self._clean(text))
        except json.JSONDecodeError:
            return False
        return not self.errors(value)

    def _clean(self, text: str) -> str:
        return _FENCE.sub("", text) if self.strip_fences else text

    def _score_one(self, text: str) -> float:
        body = self._clean(text)
        valid_prefix, complete, closed, end = scan_json_prefix(body)
        if not valid_prefix:
            return 0.0
        if complete:
            try:
                value = json.loads(body[:end])
            except (json.JSONDecodeError, RecursionError):
                return 0.0
            if body[end:].strip():
                return 0.2
            errors = self.errors(value)
            return 1.0 if not errors else round(0.3 / (1 + len(errors)), 6)
        if closed is None:
            return 0.5
        try:
            partial = json.loads(closed)
        except (json.JSONDecodeError, RecursionError):
            return 0.5
        return round(0.5 + 0.4 / (1 + len(self.errors(partial, ignore_required=True))), 6)

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        out = []
        for t in texts:
            v = self._cache.get(t)
            if v is None:
                v = self._score_one(t)
                if len(self._cache) < 20_000:
                    self._cache[t] = v
            out.append(v)
        return out
