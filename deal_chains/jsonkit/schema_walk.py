"""Walking a JSON Schema by its structure: which keys hold subschemas, which hold maps of them,
which hold data (``enum``, ``const``, ...) that must never be read as schema.

>>> walk_schema({"properties": {"enum": {"type": "string"}}}, lambda n: {**n, "seen": 1})["properties"]
{'enum': {'type': 'string', 'seen': 1}}
"""

from __future__ import annotations

from typing import Any, Callable, Mapping



# keywords whose values are JSON data, not subschemas: never rewritten
DATA_KEYWORDS = ("enum", "const", "default", "examples")


# keywords whose values map names (property names, definition names) to subschemas
MAP_KEYWORDS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                 "dependencies")


def walk_schema(node: Any, fn: Callable[[dict], dict], as_map: bool = False) -> Any:
    """A copy of ``node`` with ``fn`` applied bottom-up to every dict subschema, never to
    ``enum``/``const``/``default``/``examples`` data (whose dicts only look like schemas)."""
    if isinstance(node, list):
        return [walk_schema(v, fn) for v in node]
    if not isinstance(node, dict):
        return node
    if as_map:
        return {k: walk_schema(v, fn) for k, v in node.items()}
    out = {k: v if k in DATA_KEYWORDS else walk_schema(v, fn, as_map=k in MAP_KEYWORDS)
           for k, v in node.items()}
    return fn(out)


def schema_types(node: dict) -> set[str]:
    t = node.get("type")
    return {x for x in t if isinstance(x, str)} if isinstance(t, list) else {t} if isinstance(t, str) else set()


EXACT_LIMIT = 2**53  # floats hold every integer (and dyadic multiple) below this exactly


def number_bounds(node: dict) -> tuple[Any, Any]:
    """The node's lower and upper numeric bounds (inclusive or not), or None."""
    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    lows = [node[k] for k in ("minimum", "exclusiveMinimum") if num(node.get(k))]
    highs = [node[k] for k in ("maximum", "exclusiveMaximum") if num(node.get(k))]
    return (max(lows) if lows else None), (min(highs) if highs else None)


BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


# keywords whose values are one subschema or a list of them
SUB_KEYWORDS = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "items", "prefixItems", "additionalItems",
                 "additionalProperties", "contains", "propertyNames", "unevaluatedItems", "unevaluatedProperties",
                 "contentSchema", "extends")


REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


def schema_children(node: Mapping[str, Any], path: tuple):
    """(subschema, its path) for each direct subschema of the schema ``node``."""
    for key, value in node.items():
        if key in MAP_KEYWORDS and isinstance(value, Mapping):
            for name, sub in value.items():
                if isinstance(sub, (Mapping, bool)):
                    yield sub, path + (key, name)
        elif key in SUB_KEYWORDS:
            if isinstance(value, (Mapping, bool)):
                yield value, path + (key,)
            elif isinstance(value, list):
                for i, sub in enumerate(value):
                    if isinstance(sub, (Mapping, bool)):
                        yield sub, path + (key, i)


def pointer_of(path: tuple) -> str:
    return "/".join(["#", *(str(p) for p in path)])
