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

Only refs inside the document (``#/...``, ``#anchor``, its own ``$id``) are allowed and
every one is resolved when the reward is built; nothing is ever fetched. ``pattern`` and
``patternProperties`` are matched with RE2 (linear time, see rewards.regex), so a pattern
RE2 cannot compile (lookaround, backreferences) is refused when the reward is built. An
object that repeats a key counts as invalid (``json.loads`` would silently keep one).
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


# keywords whose values are JSON data, not subschemas (a "$ref" key there is data)
_DATA_KEYWORDS = ("enum", "const", "default", "examples")
# keywords whose values map names to subschemas / hold one or a list of subschemas
_MAP_KEYWORDS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
_SUB_KEYWORDS = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "items", "prefixItems", "additionalItems",
                 "additionalProperties", "contains", "propertyNames", "unevaluatedItems", "unevaluatedProperties",
                 "contentSchema", "extends")
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


def _children(node: Mapping[str, Any], path: tuple):
    """(subschema, its path) for each direct subschema of the schema ``node``."""
    for key, value in node.items():
        if key in _MAP_KEYWORDS and isinstance(value, Mapping):
            for name, sub in value.items():
                if isinstance(sub, (Mapping, bool)):
                    yield sub, path + (key, name)
        elif key in _SUB_KEYWORDS:
            if isinstance(value, (Mapping, bool)):
                yield value, path + (key,)
            elif isinstance(value, list):
                for i, sub in enumerate(value):
                    if isinstance(sub, (Mapping, bool)):
                        yield sub, path + (key, i)


def _pointer(path: tuple) -> str:
    return "/".join(["#", *(str(p) for p in path)])


def ref_problem(schema: Any, cls: Any = None) -> tuple[str, tuple] | None:
    """(message, path of the keyword) for the first ``$ref`` / ``$dynamicRef`` /
    ``$recursiveRef`` of ``schema`` that does not resolve inside the document itself, else
    None. Resolved the way the validator resolves them (``$id`` scopes, anchors, a ref to the
    document's own absolute ``$id``), against a registry that holds only this document:
    nothing is fetched, and a ref to anything else is refused here rather than failing (or
    being fetched) at scoring time."""
    import jsonschema
    import referencing
    import referencing.jsonschema
    from referencing.exceptions import Unresolvable

    if not isinstance(schema, Mapping):
        return None
    cls = cls or jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    spec = referencing.jsonschema.specification_with(cls.ID_OF(cls.META_SCHEMA) or "",
                                                     default=referencing.jsonschema.DRAFT202012)
    resolver = referencing.Registry().resolver_with_root(spec.create_resource(schema))
    stack: list[tuple[Any, tuple, Any]] = [(schema, (), resolver)]
    while stack:
        node, path, resolver = stack.pop()
        if not isinstance(node, Mapping):
            continue
        resolver = resolver.in_subresource(spec.create_resource(node))
        for keyword in _REF_KEYWORDS:
            ref = node.get(keyword)
            if not isinstance(ref, str):
                continue
            try:
                resolver.lookup(ref)
            except Unresolvable:
                where = "points to nothing in the schema" if ref.startswith("#") else (
                    "points outside the schema; only local refs (#/..., #anchor, or the document's "
                    "own $id) are allowed and nothing is fetched")
                return f"{keyword} {ref!r} at {_pointer(path)} {where}", path + (keyword,)
            except Exception as exc:  # noqa: BLE001 - a malformed ref: say which one
                return f"{keyword} {ref!r} at {_pointer(path)} cannot be resolved: {exc}", path + (keyword,)
        stack.extend((sub, p, resolver) for sub, p in reversed(list(_children(node, path))))
    return None


def _check_refs(schema: Any, cls: Any = None) -> None:
    found = ref_problem(schema, cls)
    if found is not None:
        raise ValueError(found[0])


def _check_patterns(schema: Any) -> None:
    """Every ``pattern`` and ``patternProperties`` key must compile with RE2, which this
    reward matches them with (linear time: a pattern like ``(a+)+$`` cannot blow up)."""
    from rewards.regex import compile_re2

    stack: list[tuple[Any, tuple]] = [(schema, ())]
    while stack:
        node, path = stack.pop()
        if not isinstance(node, Mapping):
            continue
        found = []
        if isinstance(node.get("pattern"), str):
            found.append((node["pattern"], _pointer(path + ("pattern",))))
        if isinstance(node.get("patternProperties"), Mapping):
            found += [(p, _pointer(path + ("patternProperties",))) for p in node["patternProperties"]
                      if isinstance(p, str)]
        for pattern, where in found:
            try:
                compile_re2(pattern, field=f"pattern at {where}")
            except ValueError as exc:
                raise ValueError(str(exc).removeprefix("RegexReward: ")) from None
        stack.extend(_children(node, path))


@lru_cache(maxsize=1024)
def _re2(pattern: str) -> Any:
    from rewards.regex import compile_re2

    return compile_re2(pattern)


def _re2_search(pattern: str, text: str) -> bool:
    return _re2(pattern).search(text.encode("utf-8", "surrogatepass")) is not None


def _pattern(validator, patrn, instance, schema):
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not _re2_search(patrn, instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(validator, patternProperties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patternProperties.items():
        for k, v in instance.items():
            if _re2_search(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional_properties(validator, aP, instance, schema):
    # jsonschema's own version matches patternProperties with Python's re: same logic, RE2
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [k for k in instance if k not in properties and not any(_re2_search(p, k) for p in patterns)]
    if validator.is_type(aP, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], aP, path=extra)
    elif not aP and extras:
        if patterns:
            joined = ", ".join(repr(each) for each in sorted(extras))
            verb = "does" if len(extras) == 1 else "do"
            yield ValidationError(f"{joined} {verb} not match any of the regexes: "
                                  + ", ".join(repr(p) for p in sorted(patterns)))
        else:
            yield ValidationError("Additional properties are not allowed (%s unexpected)"
                                  % ", ".join(repr(e) for e in sorted(extras, key=str)))


def _safe_format_checker(checker: Any) -> Any:
    """``checker`` whose format functions report an unexpected exception as "does not
    conform" instead of crashing the scoring (the relative-json-pointer check raises
    ValueError on "²", which is a digit to ``str.isdigit``)."""
    import jsonschema

    def guard(func, raises):
        def check(instance):
            try:
                return func(instance)
            except raises:
                raise
            except Exception:  # noqa: BLE001 - any other failure means "not this format"
                return False
        return check

    safe = jsonschema.FormatChecker(formats=())
    safe.checkers = {name: (guard(func, raises), raises) for name, (func, raises) in checker.checkers.items()}
    return safe


def _validator_class(schema: Any) -> Any:
    import jsonschema

    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


@lru_cache(maxsize=16)
def _re2_class(cls: Any) -> Any:
    """``cls`` with ``pattern`` / ``patternProperties`` / ``additionalProperties`` matched by RE2."""
    import jsonschema

    return jsonschema.validators.extend(cls, {"pattern": _pattern, "patternProperties": _pattern_properties,
                                              "additionalProperties": _additional_properties})


def make_validator(schema: Mapping[str, Any] | bool):
    """A jsonschema validator for ``schema`` (any draft jsonschema knows, by ``$schema``),
    with format checking and RE2 for ``pattern`` / ``patternProperties``; raises ValueError
    for an invalid schema, a ref that does not resolve inside it, or a pattern RE2 refuses."""
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, (Mapping, bool)):
        raise ValueError(f"a JSON schema must be an object or a boolean, got {type(schema).__name__}")
    cls = _validator_class(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        raise ValueError(f"invalid JSON schema at {where}: {exc.message}") from None
    _check_refs(schema, cls)
    _check_patterns(schema)
    return _re2_class(cls)(schema, format_checker=_safe_format_checker(cls.FORMAT_CHECKER))


def _relaxed(node: Any) -> Any:
    """``node`` without what only a finished document can satisfy, for scoring prefixes:
    ``required``, ``minItems``, ``minProperties``, ``contains``, key ``dependencies``... in
    every branch (so a valid start of one ``anyOf``/``oneOf`` branch counts as valid), with
    ``oneOf`` read as ``anyOf`` (a prefix may still fit several branches) and container
    ``enum``/``const`` dropped. ``not`` and ``if`` stay as they are (relaxing them would
    turn them stricter)."""
    if isinstance(node, list):
        return [_relaxed(v) for v in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("required", "minItems", "minProperties", "minContains", "contains", "dependentRequired"):
            continue
        if key in ("enum", "const"):
            values = value if key == "enum" and isinstance(value, list) else [value]
            if any(isinstance(v, (dict, list)) for v in values):
                continue
            out[key] = value
        elif key in ("not", "if") or key in _DATA_KEYWORDS:
            out[key] = value
        elif key == "dependencies" and isinstance(value, Mapping):
            out[key] = {k: _relaxed(v) for k, v in value.items() if not isinstance(v, list)}
        elif key in _MAP_KEYWORDS and isinstance(value, Mapping):
            out[key] = {k: _relaxed(v) for k, v in value.items()}
        elif key in _SUB_KEYWORDS:
            out["anyOf" if key == "oneOf" and "anyOf" not in node else key] = _relaxed(value)
        else:
            out[key] = value
    return out


def _loads(text: str) -> tuple[Any, list[str]]:
    """``json.loads`` plus the keys an object repeats (json.loads keeps the last silently, so
    ``{"x": 1, "x": 2}`` would pass ``minProperties: 2`` checks on the text's behalf)."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                repeated.append(k)
            out[k] = v
        return out

    return json.loads(text, object_pairs_hook=pairs), repeated


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
        # prefixes are checked against the schema less what only a finished document can
        # satisfy (built once; its refs and patterns were checked with the schema's)
        self._prefix_validator = type(self.validator)(_relaxed(schema),
                                                      format_checker=self.validator.format_checker)
        self.strip_fences = strip_fences
        self.weight = float(weight)
        self.name = name
        self.terminal = terminal
        self._cache: dict[str, float] = {}

    def errors(self, value: Any, *, ignore_required: bool = False) -> list[str]:
        """The schema's complaints about ``value``; with ``ignore_required``, only those a
        continuation could not fix (``value`` is a prefix cut back to complete values)."""
        validator = self._prefix_validator if ignore_required else self.validator
        try:
            return [err.message for err in validator.iter_errors(value)]
        except RecursionError:
            return ["the value nests too deeply to validate"]

    def text_errors(self, text: str) -> list[str] | None:
        """None if ``text`` (fences stripped) is not one JSON document, else what makes it
        invalid: the schema's errors and any key an object repeats ([] = valid)."""
        try:
            value, repeated = _loads(self._clean(text))
        except (json.JSONDecodeError, RecursionError):
            return None
        return self.errors(value) + [f"duplicate key {k!r}" for k in repeated]

    def is_valid(self, text: str) -> bool:
        """Does ``text`` parse as one JSON document valid against the schema (with no
        repeated keys)?"""
        return self.text_errors(text) == []

    def _clean(self, text: str) -> str:
        return _FENCE.sub("", text) if self.strip_fences else text

    def _score_one(self, text: str) -> float:
        body = self._clean(text)
        valid_prefix, complete, closed, end = scan_json_prefix(body)
        if not valid_prefix:
            return 0.0
        if complete:
            try:
                value, repeated = _loads(body[:end])
            except (json.JSONDecodeError, RecursionError):
                return 0.0
            if body[end:].strip():
                return 0.2
            n_errors = len(self.errors(value)) + len(repeated)
            return 1.0 if not n_errors else round(0.3 / (1 + n_errors), 6)
        if closed is None:
            return 0.5
        try:
            partial, repeated = _loads(closed)
        except (json.JSONDecodeError, RecursionError):
            return 0.5
        n_errors = len(self.errors(partial, ignore_required=True)) + len(repeated)
        return round(0.5 + 0.4 / (1 + n_errors), 6)

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
