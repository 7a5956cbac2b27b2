"""The validator a user's own check would use for a schema (``jsonschema``'s class for the
schema's draft, its format checker), with RE2 for ``pattern`` / ``patternProperties`` and
every ``$ref`` resolved inside the document (nothing is ever fetched).

>>> v = make_validator({"type": "object", "properties": {"n": {"type": "integer"}}})
>>> [e.message for e in v.iter_errors({"n": "x"})]
["'x' is not of type 'integer'"]
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

from deal_chains.jsonkit.patterns import compile_re2
from deal_chains.jsonkit.schema_walk import DATA_KEYWORDS, MAP_KEYWORDS, REF_KEYWORDS, SUB_KEYWORDS, pointer_of, \
    schema_children


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
        for keyword in REF_KEYWORDS:
            ref = node.get(keyword)
            if not isinstance(ref, str):
                continue
            try:
                resolver.lookup(ref)
            except Unresolvable:
                where = "points to nothing in the schema" if ref.startswith("#") else (
                    "points outside the schema; only local refs (#/..., #anchor, or the document's "
                    "own $id) are allowed and nothing is fetched")
                return f"{keyword} {ref!r} at {pointer_of(path)} {where}", path + (keyword,)
            except Exception as exc:  # noqa: BLE001 - a malformed ref: say which one
                return f"{keyword} {ref!r} at {pointer_of(path)} cannot be resolved: {exc}", path + (keyword,)
        stack.extend((sub, p, resolver) for sub, p in reversed(list(schema_children(node, path))))
    return None


def check_refs(schema: Any, cls: Any = None) -> None:
    found = ref_problem(schema, cls)
    if found is not None:
        raise ValueError(found[0])


def check_patterns(schema: Any) -> None:
    """Every ``pattern`` and ``patternProperties`` key must compile with RE2, which this
    reward matches them with (linear time: a pattern like ``(a+)+$`` cannot blow up)."""
    stack: list[tuple[Any, tuple]] = [(schema, ())]
    while stack:
        node, path = stack.pop()
        if not isinstance(node, Mapping):
            continue
        found = []
        if isinstance(node.get("pattern"), str):
            found.append((node["pattern"], pointer_of(path + ("pattern",))))
        if isinstance(node.get("patternProperties"), Mapping):
            found += [(p, pointer_of(path + ("patternProperties",))) for p in node["patternProperties"]
                      if isinstance(p, str)]
        for pattern, where in found:
            compile_re2(pattern, field=f"pattern at {where}")
        stack.extend(schema_children(node, path))


@lru_cache(maxsize=1024)
def _re2(pattern: str) -> Any:
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


def validator_class(schema: Any) -> Any:
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
    cls = validator_class(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        raise ValueError(f"invalid JSON schema at {where}: {exc.message}") from None
    check_refs(schema, cls)
    check_patterns(schema)
    return _re2_class(cls)(schema, format_checker=_safe_format_checker(cls.FORMAT_CHECKER))


def prefix_schema(node: Any) -> Any:
    """``node`` without what only a finished document can satisfy, for scoring prefixes:
    ``required``, ``minItems``, ``minProperties``, ``contains``, key ``dependencies``... in
    every branch (so a valid start of one ``anyOf``/``oneOf`` branch counts as valid), with
    ``oneOf`` read as ``anyOf`` (a prefix may still fit several branches) and container
    ``enum``/``const`` dropped. ``not`` and ``if`` stay as they are (relaxing them would
    turn them stricter)."""
    if isinstance(node, list):
        return [prefix_schema(v) for v in node]
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
        elif key in ("not", "if") or key in DATA_KEYWORDS:
            out[key] = value
        elif key == "dependencies" and isinstance(value, Mapping):
            out[key] = {k: prefix_schema(v) for k, v in value.items() if not isinstance(v, list)}
        elif key in MAP_KEYWORDS and isinstance(value, Mapping):
            out[key] = {k: prefix_schema(v) for k, v in value.items()}
        elif key in SUB_KEYWORDS:
            out["anyOf" if key == "oneOf" and "anyOf" not in node else key] = prefix_schema(value)
        else:
            out[key] = value
    return out
