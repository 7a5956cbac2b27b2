"""Rewrites that keep a schema's meaning or only narrow it: ``oneOf`` as an equivalent
``anyOf`` where the branches are disjoint, and caps on what a schema leaves unbounded.

>>> bounded_schema({"type": "string"})
{'type': 'string', 'maxLength': 160}
"""

from __future__ import annotations

import math
from typing import Any, Callable

from deal_chains.jsonkit.schema_shape import MISSING, resolve_pointer
from deal_chains.jsonkit.schema_walk import DATA_KEYWORDS, MAP_KEYWORDS, walk_schema
from deal_chains.jsonkit.schema_walk import EXACT_LIMIT, number_bounds


ONE_OF_HINT = ("a oneOf whose branches may overlap cannot be enforced exactly by a token mask, and "
               "deal-chains does not approximate it; make the branches disjoint (different types, or "
               "each requiring a key the others lack), or write anyOf if overlap is acceptable")


NUMERIC_TYPES = {"integer", "number"}


def _branch_types(branch: Any) -> set[str] | None:
    if not isinstance(branch, dict) or "type" not in branch:
        return None
    t = branch["type"]
    types = set(t) if isinstance(t, list) else {t}
    return types | {"number"} if "integer" in types else types  # integers are numbers


def _required_only(branch: Any) -> str | None:
    """The key of a ``{"required": [key]}`` branch (annotations allowed), else None."""
    if not isinstance(branch, dict):
        return None
    rest = {k for k in branch if k not in ("required", "description", "title", "$comment")}
    req = branch.get("required")
    if rest or not isinstance(req, list) or len(req) != 1 or not isinstance(req[0], str):
        return None
    return req[0]


MAX_DEPENDENCY_BRANCHES = 8


def _dependencies_as_any_of(node: dict) -> None:
    """Rewrite draft-4..7 ``dependencies`` / 2019+ ``dependentRequired`` with key lists
    (``{a: [b, c]}``: if ``a`` is present, so are ``b`` and ``c``) as an equivalent
    ``anyOf`` over "absent" / "present with its dependents" for each key, in place. Left
    alone (so refused, fail closed) when a dependency is a schema, when the node already
    has an ``anyOf``, or when it would take more than ``MAX_DEPENDENCY_BRANCHES`` branches."""
    for keyword in ("dependencies", "dependentRequired"):
        deps = node.get(keyword)
        if not isinstance(deps, dict) or not deps or "anyOf" in node:
            continue
        if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in deps.values()):
            continue
        if 2 ** len(deps) > MAX_DEPENDENCY_BRANCHES:
            continue
        branches = [{}]
        for key, needs in deps.items():
            nxt = []
            for b in branches:
                nxt.append({**b, "properties": {**b.get("properties", {}), key: False}})
                nxt.append({**b, "required": sorted(set(b.get("required", [])) | {key, *needs})})
            branches = nxt
        node.pop(keyword)
        node["anyOf"] = branches


def exact_one_of(schema: Any) -> Any:
    """A copy of ``schema`` with every ``oneOf`` the grammar engine cannot take (it has
    no exclusive-or) rewritten as an *equivalent* ``anyOf`` where one exists:

    - branches with pairwise disjoint ``type`` sets (a value can match at most one, so
      one-of and any-of accept the same values);
    - branches that each only require one key (``[{required: [a]}, {required: [b]}]``):
      branch *i* becomes ``{required: [a_i], properties: {a_j: false, ...}}``, which is
      exactly "a_i present and no other a_j".

    Any other ``oneOf`` is left alone, so the grammar engine still refuses it (fail
    closed) rather than approximating it with a looser mask."""

    def fix(out: dict) -> dict:
        _dependencies_as_any_of(out)
        branches = out.get("oneOf")
        if isinstance(branches, list) and branches and "anyOf" not in out:
            types = [_branch_types(b) for b in branches]
            keys = [_required_only(b) for b in branches]
            if all(t is not None for t in types) and \
                    sum(len(t) for t in types) == len(set().union(*types)):  # type: ignore[arg-type]
                out["anyOf"] = out.pop("oneOf")
            elif all(k is not None for k in keys) and len(set(keys)) == len(keys):
                out.pop("oneOf")
                out["anyOf"] = [{**b, "properties": {o: False for o in keys if o != k}}
                                for b, k in zip(branches, keys)]
        return out

    return walk_schema(schema, fix)


MAX_ABS_NUMBER = 10**12 - 1


def bounded_schema(schema: Any, *, max_string_length: int | None = None, max_items: int = 8,
                   max_properties: int = 8, cap_patterns: bool = True,
                   satisfiable: Callable[[dict], bool] | None = None) -> Any:
    """A copy of ``schema`` with caps on what it leaves unbounded (see
    ``GrammarConstraint.json_schema``); caps never go below the schema's own minimums.

    Strings with a ``format`` or a ``pattern`` get the shortest of ``PATTERN_CAP`` (32) and
    ``max_string_length`` that the pattern can still satisfy (a pattern anchored at one end
    only, such as ``^[A-Z]``, gets ``max_string_length``: the rest of it is free text) — each checked by
    ``satisfiable`` on the string's own schema (the grammar engine's check; without one,
    patterned strings are not capped) — or none (also when ``cap_patterns`` is off); numbers without
    bounds get +-``MAX_ABS_NUMBER`` (twelve digits before any fraction)."""
    max_string_length = STRING_CAP if max_string_length is None else max_string_length

    blocked = _unclosable(schema)

    def walk(node: Any, in_combinator: bool = False, as_map: bool = False) -> Any:
        if isinstance(node, list):
            return [walk(v, in_combinator) for v in node]
        if not isinstance(node, dict):
            return node
        if as_map:
            return {k: walk(v) for k, v in node.items()}
        out = {k: v if k in DATA_KEYWORDS else walk(v, k in _COMBINATORS, k in MAP_KEYWORDS)
               for k, v in node.items()}
        # closing an object is only safe where no sibling subschema may declare more keys:
        # not inside a combinator, not beside a $ref or combinator, not when a $ref combines
        # this node with other keywords, and not when it requires keys it does not list
        required = out.get("required") if isinstance(out.get("required"), list) else []
        props = out.get("properties") if isinstance(out.get("properties"), dict) else {}
        may_close = not in_combinator and not any(k in out for k in _COMBINATORS + ("$ref",)) \
            and id(node) not in blocked and all(r in props for r in required)
        types = out.get("type")
        types = set(types) if isinstance(types, list) else ({types} if isinstance(types, str) else set())
        if "string" in types and not any(k in out for k in ("enum", "const", "maxLength")):
            floor = int_or(out.get("minLength"), 0)
            if not ("pattern" in out or "format" in out):
                out["maxLength"] = max(max_string_length, floor)
            elif cap_patterns and satisfiable is not None:
                # a pattern anchored at one end only ("^[A-Z]": how the text starts) leaves the
                # rest free: the short cap would cut a sentence. One anchored at both ends or at
                # neither (a date written without anchors) is a value of its own shape
                pattern = out.get("pattern")
                one_end = _start_anchored(pattern) != _end_anchored(pattern)
                short = (PATTERN_CAP,) if "format" in out or not one_end else ()
                cap = _pattern_cap(out, [c for c in (*short, max_string_length) if c >= floor], satisfiable)
                if cap is not None:
                    out["maxLength"] = cap
        if types & {"integer", "number"} and not any(k in out for k in ("enum", "const")):
            # caps relative to the schema's own bounds, inclusive or exclusive (a numeric
            # exclusiveMinimum of 1e13 gets a maximum above it, never a contradiction); a
            # draft-4 boolean flag next to a new cap only makes that cap exclusive
            lo, hi = number_bounds(out)
            # (never past +-2**53, where the engine's float reading of a bound is inexact)
            if hi is None:
                out["maximum"] = min(EXACT_LIMIT, max(MAX_ABS_NUMBER, math.floor(lo) + MAX_ABS_NUMBER)) \
                    if lo is not None else MAX_ABS_NUMBER
            if lo is None:
                out["minimum"] = max(-EXACT_LIMIT, min(-MAX_ABS_NUMBER, math.ceil(hi) - MAX_ABS_NUMBER)) \
                    if hi is not None else -MAX_ABS_NUMBER
        if "array" in types and "maxItems" not in out and "prefixItems" not in out:
            out["maxItems"] = max(max_items, int_or(out.get("minItems"), 0))
        if "object" in types or "properties" in out:
            if may_close and "properties" in out and "additionalProperties" not in out \
                    and "patternProperties" not in out and "unevaluatedProperties" not in out:
                out["additionalProperties"] = False
            elif "properties" not in out and "maxProperties" not in out:
                out["maxProperties"] = max(max_properties, int_or(out.get("minProperties"), 0),
                                           len(out.get("required", []) or []))
        return out

    return walk(schema)


_COMBINATORS = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas")


_ANNOTATIONS = {"$ref", "description", "title", "$comment", "default", "examples", "deprecated", "readOnly",
                "writeOnly"}


def _unclosable(schema: Any) -> set[int]:
    """The ids of the nodes of ``schema`` that a local ``$ref`` combines with other keywords
    (``allOf: [{$ref: Base}, {properties: ...}]``, or ``$ref`` beside ``properties``): closing
    such a target would forbid the keys the other side declares."""
    pending: list[Any] = []

    def visit(node: Any, combined: bool, as_map: bool = False) -> None:
        if isinstance(node, list):
            for v in node:
                visit(v, combined)
            return
        if not isinstance(node, dict):
            return
        if as_map:
            for v in node.values():
                visit(v, False)
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and (combined or set(node) - _ANNOTATIONS):
            pending.append(ref)
        for k, v in node.items():
            if k not in DATA_KEYWORDS:
                visit(v, k in _COMBINATORS, k in MAP_KEYWORDS)

    visit(schema, False)
    blocked: set[int] = set()
    while pending:
        ref = pending.pop()
        target = resolve_pointer(schema, ref) if ref == "#" or ref.startswith("#/") else MISSING
        if isinstance(target, dict) and id(target) not in blocked:
            blocked.add(id(target))
            if isinstance(target.get("$ref"), str):  # a reference passes the combination on
                pending.append(target["$ref"])
    return blocked


PATTERN_CAP = 32  # a date-time, a UUID's worth of hex, a short URI or e-mail address
# strings without maxLength: long enough for a sentence or two (a shorter cap cut ordinary
# free-text values mid-sentence), short enough that a rambling value ends; loops are closed
# by the search (closing.repeating_tail) long before
STRING_CAP = 160


def _start_anchored(pattern: Any) -> bool:
    """Whether a JSON Schema ``pattern`` starts with ``^``."""
    return isinstance(pattern, str) and pattern.startswith("^")


def _end_anchored(pattern: Any) -> bool:
    """Whether a JSON Schema ``pattern`` (a regex search) ends in an unescaped ``$``, so it
    bounds the whole string and not only a part of it."""
    if not isinstance(pattern, str) or not pattern.endswith("$"):
        return False
    backslashes = len(pattern[:-1]) - len(pattern[:-1].rstrip("\\"))
    return backslashes % 2 == 0


def _pattern_cap(node: dict, caps: list[int], satisfiable: Callable[[dict], bool]) -> int | None:
    """The first of ``caps`` under which a patterned string ``node`` is still satisfiable
    (``satisfiable`` asks the grammar engine, which alone can tell for a pattern)."""
    keys = ("type", "pattern", "format", "minLength")
    for cap in caps:
        probe = {k: node[k] for k in keys if k in node}
        probe.update(type="string", maxLength=cap)
        if satisfiable(probe):
            return cap
    return None


def int_or(value: Any, default: int) -> int:
    """A schema's own bound as an int (a malformed one is left to the validator)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default
