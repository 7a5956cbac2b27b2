"""Shape checks of a JSON Schema before anything is compiled: size, depth, local refs, and
whether any finite document satisfies it at all.

>>> schema_shape_problem({"type": "object", "required": ["a"], "properties": {"a": False}}) is not None
True
"""

from __future__ import annotations

import json
import math
from typing import Any

from deal_chains.jsonkit.schema_walk import schema_types, walk_schema


MAX_SCHEMA_NODES = 20_000


MAX_SCHEMA_DEPTH = 64


def schema_shape_problem(schema: Any) -> str | None:
    """Why ``schema`` cannot be used whatever the model, or None: too many nodes or too deep
    (limits against pathological specs), a local ``$ref`` that points nowhere, or recursion
    that every valid value would have to follow forever (no finite instance)."""
    nodes = 0

    def walk(node: Any, depth: int) -> str | None:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            return f"the schema has over {MAX_SCHEMA_NODES} nodes"
        if depth > MAX_SCHEMA_DEPTH:
            return f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
        if isinstance(node, float) and not math.isfinite(node):
            # JSON has no infinity or NaN (1e400 in YAML or a JSON file reads as inf):
            # no bound, enum value or const can be written out or compared soundly
            return f"the schema holds a number that is not finite ({node!r}); JSON numbers are finite"
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            found = walk(child, depth + 1)
            if found:
                return found
        return None

    found = walk(schema, 0)
    if found:
        return found
    if not isinstance(schema, dict):
        return None
    refs: list[str] = []

    def collect(node: dict) -> dict:
        if isinstance(node.get("$ref"), str):
            refs.append(node["$ref"])
        return node

    walk_schema(schema, collect)  # a "$ref" key inside enum/const data is data, not a reference
    for ref in refs:
        if not ref.startswith("#") or (not ref.startswith("#/") and ref != "#"):
            continue  # remote refs are refused elsewhere; $anchors are left to the validator
        if resolve_pointer(schema, ref) is MISSING:
            return f"$ref {ref!r} points to nothing in the schema"
    try:
        # a dead end that needs no recursion (a false subschema, type: []) is named as such
        why = _no_finite_instance(schema) and (_no_finite_instance(schema, cycles_close=True)
                                               or "a required property or item recurses into itself on every path")
    except (TypeError, ValueError, AttributeError):  # a malformed schema: the validator says why
        why = None
    if why:
        return f"no finite JSON value satisfies the schema: {why}"
    return None


MISSING = object()


def resolve_pointer(root: Any, ref: str) -> Any:
    if ref in ("#", "#/"):
        return root
    node = root
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        from urllib.parse import unquote

        part = unquote(part)
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


def _pointer(at: str, *keys: Any) -> str:
    return "/".join([at, *(str(k).replace("~", "~0").replace("/", "~1") for k in keys)])


def _no_finite_instance(root: dict, cycles_close: bool = False) -> str | None:
    """Why no finite value satisfies ``root``, or None: the least fixpoint of "this
    subschema has a finite instance" over ``$ref`` cycles (an approximation that only says
    no when recursion is forced on every path, or a required part is a dead end). With
    ``cycles_close``, a ``$ref`` cycle counts as satisfiable, so what is left is a dead end
    that needs no recursion (a false subschema, ``type: []``), named with its place."""
    known: dict[int, str | None] = {}

    def finite(node: Any, stack: tuple[int, ...], at: str) -> str | None:
        if not isinstance(node, dict):
            return f"the schema at {at} is false" if node is False else None
        key = id(node)
        if key in known:
            return known[key]
        if key in stack:  # assume not, until another path proves otherwise
            return None if cycles_close else "it recurses into itself"
        stack = stack + (key,)
        why = None
        if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/") or node.get("$ref") == "#":
            target = resolve_pointer(root, node["$ref"])
            why = None if target is MISSING else finite(target, stack, node["$ref"])
        if why is None and isinstance(node.get("allOf"), list):
            why = next(filter(None, (finite(b, stack, _pointer(at, "allOf", i))
                                     for i, b in enumerate(node["allOf"]))), None)
        for k in ("anyOf", "oneOf"):
            if why is None and isinstance(node.get(k), list) and node[k]:
                whys = []
                for i, b in enumerate(node[k]):
                    whys.append(finite(b, stack, _pointer(at, k, i)))
                    if whys[-1] is None:
                        break
                else:
                    why = f"no {k} branch at {at} is satisfiable ({'; '.join(whys)})"  # type: ignore[arg-type]
        if why is None:
            types = node.get("type")
            types = {t for t in types if isinstance(t, str)} if isinstance(types, list) \
                else {types} if isinstance(types, str) else None
            if types is not None and not types:
                why = f"no value satisfies type: {json.dumps(node['type'])} at {at}"
            elif types is not None and not types - {"object", "array"}:
                paths = []
                if "object" in types:
                    props = node.get("properties") if isinstance(node.get("properties"), dict) else {}
                    req = node.get("required") if isinstance(node.get("required"), list) else []
                    found = None
                    for r in req:
                        if r in props and (found := finite(props[r], stack, _pointer(at, "properties", r))):
                            if props[r] is False:
                                found = f"required property {r!r} has schema false at {_pointer(at, 'properties', r)}"
                            break
                    paths.append(found)
                if "array" in types:
                    min_items = node.get("minItems", 0) if isinstance(node.get("minItems", 0), int) else 0
                    items = node.get("items", True)
                    # the first items follow prefixItems (or a list-form items, before
                    # 2020-12); only those past the prefix follow items/additionalItems
                    if isinstance(items, list):
                        prefix, rest, keys = items, node.get("additionalItems", True), ("items", "additionalItems")
                    else:
                        prefix = node.get("prefixItems") if isinstance(node.get("prefixItems"), list) else []
                        rest, keys = items, ("prefixItems", "items")
                    found = None
                    for i, p in enumerate(prefix[:min_items]):
                        if found := finite(p, stack, _pointer(at, keys[0], i)):
                            if p is False:
                                found = f"item {i} has schema false at {_pointer(at, keys[0], i)} " \
                                        f"but minItems is {min_items}"
                            break
                    if found is None and min_items > len(prefix):
                        found = finite(rest, stack, _pointer(at, keys[1]))
                        if found and rest is False:
                            found = f"{keys[1]} is false at {_pointer(at, keys[1])} but minItems is {min_items}" \
                                    + (f" (with {len(prefix)} {keys[0]})" if prefix else "")
                    paths.append(found)
                if all(paths):
                    why = "; ".join(paths)  # type: ignore[arg-type]
        if len(stack) == 1:
            known[key] = why
        return why

    return finite(root, (), "#")


def root_required_keys(schema: Any) -> list[str]:
    """The keys a document's top-level object must have (following a local ``$ref`` at the
    root and merging ``allOf`` branches); [] when the root is not plainly an object."""
    seen: list[str] = []

    def collect(node: Any, depth: int) -> None:
        if not isinstance(node, dict) or depth > 8:
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target = resolve_pointer(schema, ref)
            if isinstance(target, dict):
                collect(target, depth + 1)
        for key in node.get("required", []) if isinstance(node.get("required"), list) else []:
            if isinstance(key, str) and key not in seen:
                seen.append(key)
        for branch in node.get("allOf", []) if isinstance(node.get("allOf"), list) else []:
            collect(branch, depth + 1)

    collect(schema, 0)
    return seen


def may_repeat_keys(schema: Any) -> bool:
    """Whether some object of ``schema`` takes keys beyond its declared properties (only
    those can repeat under the grammar engine)."""
    found = False

    def look(node: dict) -> dict:
        nonlocal found
        types = schema_types(node)
        if "object" in types or (not types and not any(k in node for k in ("enum", "const", "$ref", "anyOf",
                                                                              "oneOf", "allOf"))):
            found = found or node.get("additionalProperties", True) is not False or bool(node.get("patternProperties"))
        return node

    walk_schema(schema, look)
    return found


def typical_tokens(schema: Any, *, chars_per_token: float = 3.0, cap: int = 1024) -> int:
    """About how many tokens a typical compact JSON instance of ``schema`` takes: the basis
    of a default token budget sized from the schema (a budget that cuts ordinary answers is
    worse than one that is a bit large, since generation ends at the document's end).

    >>> typical_tokens({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}})
    25

    Per node: a string ~12 tokens (or its ``maxLength``, enum or const), a number 4, a
    boolean or null 2, an array three items (within ``minItems``/``maxItems``), an object
    its declared properties with their keys, a choice (``anyOf``/``oneOf``) its largest
    branch; local ``$ref``s are followed (recursion counted once). Capped at ``cap``."""
    root = schema

    def tokens(text: str) -> int:
        return max(1, math.ceil(len(text) / chars_per_token))

    def size(node: Any, depth: int, seen: frozenset[str]) -> float:
        if depth > 16 or not isinstance(node, dict):
            return 4.0
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#") and ref not in seen:
            target: Any = root
            for part in ref.lstrip("#").strip("/").split("/") if ref not in ("#", "#/") else []:
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, dict) else None
            return size(target, depth + 1, seen | {ref})
        if isinstance(ref, str):
            return 4.0
        if "const" in node:
            return tokens(json.dumps(node["const"]))
        if isinstance(node.get("enum"), list) and node["enum"]:
            return max(tokens(json.dumps(v)) for v in node["enum"])
        branches = [b for key in ("anyOf", "oneOf") for b in node.get(key) or [] if isinstance(b, dict)]
        if branches:
            return max(size(b, depth + 1, seen) for b in branches)
        for part in node.get("allOf") or []:
            if isinstance(part, dict) and ("properties" in part or "type" in part):
                return size({**node, **part, "allOf": []}, depth + 1, seen)
        kinds = schema_types(node)
        if "object" in kinds or "properties" in node:
            props = node.get("properties") or {}
            return 2 + sum(tokens(f'"{key}":') + size(sub, depth + 1, seen) + 1 for key, sub in props.items())
        if "array" in kinds or "items" in node:
            items = node.get("items") if isinstance(node.get("items"), dict) else {}
            count = max(int(node.get("minItems") or 0), min(3, int(node.get("maxItems") or 3)))
            return 2 + count * (size(items, depth + 1, seen) + 1)
        if "string" in kinds:
            if isinstance(node.get("maxLength"), int):
                return 2 + tokens("x" * min(node["maxLength"], 256))
            return 12.0
        if kinds & {"number", "integer"}:
            return 4.0
        if kinds & {"boolean", "null"}:
            return 2.0
        return 12.0  # any value

    return min(cap, math.ceil(size(schema, 0, frozenset())))
