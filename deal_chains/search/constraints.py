"""Hard constraints as token masks (DESIGN §2): a grammar compiled for the model's tokenizer
so that invalid tokens are never candidates. Soft rewards still rank what the mask allows.

>>> c = GrammarConstraint.json_schema({"type": "object",              # doctest: +SKIP
...                                    "properties": {"a": {"type": "integer"}}})
>>> engine.generate(["Give me an object"], constraints=c)            # doctest: +SKIP

The grammar engine is llguidance (Rust, CPU-fast masks in tens of microseconds, no torch or
GPU dependency, JSON Schema / regex / Lark front-ends, matcher states that copy and roll
back — which beams and lookahead rollouts need). It never fetches a remote ``$ref``.
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover - torch loads with the engine, not with spec checks
    import torch

from deal_chains.errors import ConfigError, DealChainsError

_LLTOKENIZERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


class ConstraintError(DealChainsError, ValueError):
    """A grammar or schema the grammar engine refuses (we fail closed: no generation)."""


ONE_OF_HINT = ("a oneOf whose branches may overlap cannot be enforced exactly by a token mask, and "
               "deal-chains does not approximate it; make the branches disjoint (different types, or "
               "each requiring a key the others lack), or write anyOf if overlap is acceptable")


def _explain(message: str) -> str:
    """The grammar engine's message, with advice that fits deal-chains in place of the
    engine's own (its option to approximate ``oneOf`` is deliberately not offered)."""
    if "oneOf constraints are not supported" in message:
        return ONE_OF_HINT
    return message


def _llguidance():
    try:
        import llguidance
        import llguidance.hf
    except ImportError as exc:  # pragma: no cover - llguidance is a core dependency
        raise ConfigError("hard constraints need llguidance: pip install llguidance") from exc
    return llguidance


def _ll_tokenizer(lm: Any) -> Any:
    """One llguidance tokenizer per HF tokenizer (building it takes ~0.2 s)."""
    tok = lm.tokenizer
    with _LOCK:
        cached = _LLTOKENIZERS.get(tok)
        if cached is not None:
            return cached
        llg = _llguidance()
        vocab = int(lm.model.get_output_embeddings().weight.shape[0])
        try:
            ll = llg.hf.from_tokenizer(tok, n_vocab=vocab, eos_token=sorted(lm.eos_token_ids)[0])
        except ValueError as exc:
            raise ConstraintError(f"hard constraints need a fast tokenizer: {exc}") from exc
        _LLTOKENIZERS[tok] = ll
        return ll


@dataclass
class GrammarConstraint:
    """A model-independent declaration of a hard constraint: ``json_schema``, ``regex`` or
    ``lark``. ``compile(lm)`` binds it to a model's tokenizer."""

    kind: str
    source: str
    options: Mapping[str, Any] = field(default_factory=dict)
    # what the mask leaves to final validation (e.g. a format jsonschema does not check)
    notes: list[str] = field(default_factory=list, compare=False)

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any] | str, *, whitespace_flexible: bool = False,
                    max_whitespace: int = 2, bounded: bool = True, max_string_length: int = 64,
                    max_items: int = 8, max_properties: int = 8) -> "GrammarConstraint":
        """Outputs must be one JSON value valid against ``schema``.

        Whitespace between tokens is limited (compact JSON by default) so the model cannot
        spend its budget on spaces. ``bounded`` (default) also caps what the schema leaves
        open — strings without ``maxLength``, arrays without ``maxItems``, objects with
        undeclared extra keys — because small models otherwise loop inside an open string
        until the token budget cuts the document. Every cap only narrows the schema, so an
        output valid for the capped grammar is valid for the original schema."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as exc:
                raise ConstraintError(f"the JSON schema is not valid JSON: {exc}") from None
        if not isinstance(schema, Mapping) and not isinstance(schema, bool):
            raise ConstraintError(f"a JSON schema must be an object, got {type(schema).__name__}")
        if schema is False:
            raise ConstraintError("the schema is false: no value satisfies it")
        if schema is True:
            schema = {}  # any JSON value (the engine's options need an object schema)
        # what the spec loader checks (size, depth, dangling refs, no finite instance), so
        # the Python API never hands the engine a schema no finished output could satisfy
        problem = schema_shape_problem(schema)
        if problem is not None:
            raise ConstraintError(problem)
        schema, notes = sound_schema(exact_one_of(schema))
        options = {"whitespace_flexible": whitespace_flexible}
        if whitespace_flexible:
            options["whitespace_pattern"] = r"[\n ]{0,%d}" % max_whitespace
        if not bounded:
            plain = cls("json_schema", json.dumps(schema), options, notes)
            plain.check()
            return plain
        caps = dict(max_string_length=max_string_length, max_items=max_items, max_properties=max_properties)
        capped = cls("json_schema", json.dumps(bounded_schema(schema, **caps)), options, notes)
        try:
            capped.check()
        except ConstraintError:
            # maybe a pattern that demands a longer string than the cap: cap those strings no
            # more; a schema the engine refuses even so fails here, before any model is loaded
            loose = cls("json_schema", json.dumps(bounded_schema(schema, **caps, cap_patterns=False)),
                        options, notes)
            loose.check()
            return loose
        return capped

    @classmethod
    def regex(cls, pattern: str) -> "GrammarConstraint":
        """Outputs must match ``pattern`` entirely (llguidance regex syntax)."""
        return cls("regex", pattern)

    @classmethod
    def lark(cls, grammar: str) -> "GrammarConstraint":
        """Outputs must be derivable from a Lark grammar (llguidance's dialect)."""
        return cls("lark", grammar)

    def grammar(self) -> str:
        llg = _llguidance()
        M = llg.LLMatcher
        try:
            if self.kind == "json_schema":
                return M.grammar_from_json_schema(self.source, defaults=dict(self.options))
            if self.kind == "regex":
                return M.grammar_from_regex(self.source)
            if self.kind == "lark":
                return M.grammar_from_lark(self.source)
        except Exception as exc:  # llguidance raises ValueError/RuntimeError variants
            raise ConstraintError(f"the grammar engine refused this {self.kind}: {_explain(str(exc))}") from None
        raise ConstraintError(f"unknown constraint kind {self.kind!r}")

    def check(self) -> list[str]:
        """Check the grammar without a model (what can be told before one is loaded):
        ``ConstraintError`` if the grammar engine refuses it (an unsatisfiable schema, a
        ``$ref`` to nothing, an unsupported keyword); else its warnings."""
        llg = _llguidance()
        # no lenient fallback for unknown formats: ``json_schema`` already dropped the ones
        # jsonschema does not check, and a checked one left unenforced would break the promise
        is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(self.grammar(), None)
        if is_error:
            raise ConstraintError(f"the grammar engine refused this {self.kind}: {_explain('; '.join(messages))}")
        return [*self.notes, *messages]

    def compile(self, lm: Any) -> "CompiledConstraint":
        """Check the grammar now (fail closed, before any generation) and bind it to ``lm``."""
        llg = _llguidance()
        grammar = self.grammar()
        is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, _ll_tokenizer(lm))
        if is_error:
            raise ConstraintError(f"the grammar engine refused this {self.kind}: {_explain('; '.join(messages))}")
        vocab = int(lm.model.get_output_embeddings().weight.shape[0])
        compiled = CompiledConstraint(self, grammar, _ll_tokenizer(lm), vocab)
        # warnings name schema keywords the mask cannot enforce (e.g. some string formats):
        # the mask is then looser than the schema, and final validation must catch the rest
        compiled.warnings = [*self.notes, *messages]
        if self.kind == "json_schema":
            compiled.closer = _json_closer(lm, vocab)
            compiled.required_keys = {key: _key_cost(lm, key) for key in root_required_keys(json.loads(self.source))}
            compiled.dedupe_keys = _may_repeat_keys(json.loads(self.source))
        probe = compiled.new_state()  # catches errors validate() lets through
        if probe.is_error():
            raise ConstraintError(f"the grammar engine refused this {self.kind}: {probe.get_error()}")
        return compiled


_NUMERIC = {"integer", "number"}


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

    _walk_schema(schema, collect)  # a "$ref" key inside enum/const data is data, not a reference
    for ref in refs:
        if not ref.startswith("#") or (not ref.startswith("#/") and ref != "#"):
            continue  # remote refs are refused elsewhere; $anchors are left to the validator
        if _resolve(schema, ref) is _MISSING:
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


_MISSING = object()


def _resolve(root: Any, ref: str) -> Any:
    if ref in ("#", "#/"):
        return root
    node = root
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        from urllib.parse import unquote

        part = unquote(part)
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
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
            target = _resolve(root, node["$ref"])
            why = None if target is _MISSING else finite(target, stack, node["$ref"])
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


def unsatisfiable_reason(schema: Any) -> str | None:
    """Why no JSON value satisfies ``schema``, as the grammar engine proves it on the
    schema itself (no caps, no narrowing) less the keywords it reads differently from
    jsonschema (``format``, ``pattern``, ``multipleOf``): dropping those only widens the
    schema, so "unsatisfiable" then holds for the original too. None when it is
    satisfiable or the engine cannot tell (a keyword it does not implement)."""
    if schema is False:
        return "the schema is false: no value satisfies it"
    if not isinstance(schema, dict):
        return None

    def widen(node: dict) -> dict:
        # bounds past +-2**53 too: the engine misreads them (and crashes on some past int64)
        return {k: v for k, v in node.items() if k not in ("format", "pattern", "multipleOf")
                and not (k in _BOUND_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
                         and not abs(v) <= _EXACT_LIMIT)}

    wide = _walk_schema(exact_one_of(schema), widen)
    try:
        GrammarConstraint("json_schema", json.dumps(wide), {"whitespace_flexible": False}).check()
    except ConstraintError as exc:
        text = str(exc)
        if any(w in text for w in ("Unsatisfiable", "does not exist", "incompatible")):
            return text
    return None


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

    return _walk_schema(schema, fix)


MAX_ABS_NUMBER = 10**12 - 1


def bounded_schema(schema: Any, *, max_string_length: int = 64, max_items: int = 8,
                   max_properties: int = 8, cap_patterns: bool = True) -> Any:
    """A copy of ``schema`` with caps on what it leaves unbounded (see
    ``GrammarConstraint.json_schema``); caps never go below the schema's own minimums.

    Strings with a ``pattern`` or ``format`` get the shortest of ``PATTERN_CAPS`` (32, then
    ``max_string_length``) that the pattern can still satisfy — each checked by compiling
    the string's own schema — or none (also when ``cap_patterns`` is off); numbers without
    bounds get +-``MAX_ABS_NUMBER`` (twelve digits before any fraction)."""

    blocked = _unclosable(schema)

    def walk(node: Any, in_combinator: bool = False, as_map: bool = False) -> Any:
        if isinstance(node, list):
            return [walk(v, in_combinator) for v in node]
        if not isinstance(node, dict):
            return node
        if as_map:
            return {k: walk(v) for k, v in node.items()}
        out = {k: v if k in _DATA_KEYWORDS else walk(v, k in _COMBINATORS, k in _MAP_KEYWORDS)
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
            floor = _int_or(out.get("minLength"), 0)
            if not ("pattern" in out or "format" in out):
                out["maxLength"] = max(max_string_length, floor)
            elif cap_patterns:
                cap = _pattern_cap(out, [c for c in (PATTERN_CAP, max_string_length) if c >= floor])
                if cap is not None:
                    out["maxLength"] = cap
        if types & {"integer", "number"} and not any(k in out for k in ("enum", "const")):
            # caps relative to the schema's own bounds, inclusive or exclusive (a numeric
            # exclusiveMinimum of 1e13 gets a maximum above it, never a contradiction); a
            # draft-4 boolean flag next to a new cap only makes that cap exclusive
            lo, hi = _bounds(out)
            # (never past +-2**53, where the engine's float reading of a bound is inexact)
            if hi is None:
                out["maximum"] = min(_EXACT_LIMIT, max(MAX_ABS_NUMBER, math.floor(lo) + MAX_ABS_NUMBER)) \
                    if lo is not None else MAX_ABS_NUMBER
            if lo is None:
                out["minimum"] = max(-_EXACT_LIMIT, min(-MAX_ABS_NUMBER, math.ceil(hi) - MAX_ABS_NUMBER)) \
                    if hi is not None else -MAX_ABS_NUMBER
        if "array" in types and "maxItems" not in out and "prefixItems" not in out:
            out["maxItems"] = max(max_items, _int_or(out.get("minItems"), 0))
        if "object" in types or "properties" in out:
            if may_close and "properties" in out and "additionalProperties" not in out \
                    and "patternProperties" not in out and "unevaluatedProperties" not in out:
                out["additionalProperties"] = False
            elif "properties" not in out and "maxProperties" not in out:
                out["maxProperties"] = max(max_properties, _int_or(out.get("minProperties"), 0),
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
            if k not in _DATA_KEYWORDS:
                visit(v, k in _COMBINATORS, k in _MAP_KEYWORDS)

    visit(schema, False)
    blocked: set[int] = set()
    while pending:
        ref = pending.pop()
        target = _resolve(schema, ref) if ref == "#" or ref.startswith("#/") else _MISSING
        if isinstance(target, dict) and id(target) not in blocked:
            blocked.add(id(target))
            if isinstance(target.get("$ref"), str):  # a reference passes the combination on
                pending.append(target["$ref"])
    return blocked


PATTERN_CAP = 32  # a date-time, a UUID's worth of hex, a short URI or e-mail address


def _pattern_cap(node: dict, caps: list[int]) -> int | None:
    """The first of ``caps`` under which a patterned string ``node`` is still satisfiable."""
    keys = ("type", "pattern", "format", "minLength")
    for cap in caps:
        probe = {k: node[k] for k in keys if k in node}
        probe.update(type="string", maxLength=cap)
        try:
            GrammarConstraint("json_schema", json.dumps(probe), {}).check()
        except ConstraintError:
            continue
        return cap
    return None


def _int_or(value: Any, default: int) -> int:
    """A schema's own bound as an int (a malformed one is left to the validator)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


# ---- sound rewrites: keywords the grammar engine reads differently from jsonschema --------
#
# The promise of a hard constraint is that a finished output passes plain ``jsonschema``
# validation (the schema's own draft, with its FORMAT_CHECKER). Where llguidance's reading
# of a keyword is looser than jsonschema's, the schema handed to the engine is narrowed to
# values both accept, or refused; never approximated.

# keywords whose values are JSON data, not subschemas: never rewritten
_DATA_KEYWORDS = ("enum", "const", "default", "examples")
# keywords whose values map names (property names, definition names) to subschemas
_MAP_KEYWORDS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                 "dependencies")


def _walk_schema(node: Any, fn: Callable[[dict], dict], as_map: bool = False) -> Any:
    """A copy of ``node`` with ``fn`` applied bottom-up to every dict subschema, never to
    ``enum``/``const``/``default``/``examples`` data (whose dicts only look like schemas)."""
    if isinstance(node, list):
        return [_walk_schema(v, fn) for v in node]
    if not isinstance(node, dict):
        return node
    if as_map:
        return {k: _walk_schema(v, fn) for k, v in node.items()}
    out = {k: v if k in _DATA_KEYWORDS else _walk_schema(v, fn, as_map=k in _MAP_KEYWORDS)
           for k, v in node.items()}
    return fn(out)


def validator_class(schema: Any) -> Any:
    """The jsonschema validator class a user's plain validation picks for ``schema``."""
    import jsonschema

    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


def _types(node: dict) -> set[str]:
    t = node.get("type")
    return {x for x in t if isinstance(x, str)} if isinstance(t, list) else {t} if isinstance(t, str) else set()


# Sound patterns for formats that jsonschema's checker checks but llguidance either does
# not know or reads more loosely (its date allows Feb 29 of any year and year 0000, its
# time the leap second 60 that rfc3339-validator refuses, its hostname any length). Each
# is a subset of what the checker accepts: checked by sampling in tests/test_json_sound.py.
_LABEL = r"[a-zA-Z0-9]{1,20}(?:-[a-zA-Z0-9]{1,20}){0,2}"  # no "--" (idna), <= 62 characters
_HOST = _LABEL + r"(?:\." + _LABEL + r"){0,3}"  # <= 251 characters (fqdn: 253)
_DATE = (r"[1-9][0-9]{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
         r"|02-(?:0[1-9]|1[0-9]|2[0-8]))")  # February to the 28th: valid in every year
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?(?:[zZ]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
# an absolute URI of plain characters is also a URI reference, an IRI and a URI template
_URI = (r"[a-zA-Z][a-zA-Z0-9+.-]{0,15}://" + _HOST + r"(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~-]*)*"
        r"(?:\?[A-Za-z0-9._~=&-]*)?(?:#[A-Za-z0-9._~-]*)?")
_POINTER = r"(?:/(?:[^~/]|~[01])*)*"
# regexes Python's re compiles: literals, classes of plain ranges, single quantifiers, flat groups
_RE_ATOM = r"(?:[A-Za-z0-9 _,;:@%&=<>'!/~-]|\.|\\[dDwWsS.]|\[\^?(?:a-z|A-Z|0-9|[A-Za-z0-9_ .,])+\])"
_RE_QUANT = r"(?:[*+?]|\{[1-9][0-9]?\})?"
_RE_GROUP = r"\((?:" + _RE_ATOM + _RE_QUANT + r")+(?:\|(?:" + _RE_ATOM + _RE_QUANT + r")+)*\)"
FORMAT_PATTERNS = {
    "date": _DATE, "time": _TIME, "date-time": _DATE + "[tT]" + _TIME,
    "hostname": _HOST, "idn-hostname": _HOST,
    "uri": _URI, "uri-reference": _URI, "iri": _URI, "iri-reference": _URI, "uri-template": _URI,
    "json-pointer": _POINTER,
    # jsonschema's checker refuses any digit after a 0 ("10" passes, "100" does not)
    "relative-json-pointer": r"(?:0|[1-9]{1,4}0?)(?:#|" + _POINTER + ")",
    "regex": r"\^?(?:(?:" + _RE_ATOM + "|" + _RE_GROUP + ")" + _RE_QUANT + r")*\$?",
}
# formats llguidance enforces as a subset of what the checker accepts (an e-mail address of
# ASCII characters is also a valid idn-email: the checker only wants an "@")
NATIVE_FORMATS = {"email": "email", "idn-email": "email", "ipv4": "ipv4", "ipv6": "ipv6", "uuid": "uuid",
                  "duration": "duration"}
LLGUIDANCE_FORMATS = {"date", "date-time", "time", "duration", "email", "hostname", "ipv4", "ipv6", "uuid", "uri",
                      "unknown"}

MAX_MULTIPLE_ENUM = 1000  # admissible values listed for a decimal multipleOf
_EXACT_LIMIT = 2**53  # floats hold every integer (and dyadic multiple) below this exactly


def _sound_format(node: dict, checked: set[str], notes: list[str]) -> dict:
    fmt = node.get("format")
    if not isinstance(fmt, str):
        return node
    if fmt not in checked:
        # jsonschema does not check this format: the engine may enforce it if it knows it,
        # else the string is left free (as jsonschema leaves it)
        if fmt in LLGUIDANCE_FORMATS:
            return node
        notes.append(f"not enforced by the mask: Unknown format: {fmt} (jsonschema does not check it either)")
        return {k: v for k, v in node.items() if k != "format"}
    if fmt in NATIVE_FORMATS:
        return {**node, "format": NATIVE_FORMATS[fmt]}
    pattern = FORMAT_PATTERNS.get(fmt)
    if pattern is None:
        raise ConstraintError(
            f"format {fmt!r} is checked by jsonschema but cannot be enforced by the token mask; "
            "use a pattern instead, or mode: soft")
    out = {k: v for k, v in node.items() if k != "format"}
    anchored = f"^(?:{pattern})$"
    if "pattern" in out:  # both must hold: the engine intersects allOf branches
        out["allOf"] = [*(out.get("allOf") or []), {"pattern": anchored}]
    else:
        out["pattern"] = anchored
    return out


def _bounds(node: dict) -> tuple[Any, Any]:
    """The node's lower and upper numeric bounds (inclusive or not), or None."""
    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    lows = [node[k] for k in ("minimum", "exclusiveMinimum") if num(node.get(k))]
    highs = [node[k] for k in ("maximum", "exclusiveMaximum") if num(node.get(k))]
    return (max(lows) if lows else None), (min(highs) if highs else None)


_BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _just_above(bound: Any, upper: Any) -> float:
    """A float above ``bound`` with a short decimal form (the grammar engine spells a bound
    out digit by digit), close enough to it to cut off at most a millionth of the way to
    ``upper`` (or of the bound's own size, at most 1e-6)."""
    from decimal import ROUND_FLOOR, Decimal

    bound = float(bound)
    width = upper - bound if upper is not None and upper > bound else max(1.0, abs(bound))
    first = min(math.floor(math.log10(width)) - 6, -6)
    exact = Decimal(repr(bound))
    for e in range(first, first + 40):
        step = Decimal(1).scaleb(e)
        candidate = float((exact / step).to_integral_value(rounding=ROUND_FLOOR) * step + step)
        if candidate > bound:
            break
    if not candidate > bound or (upper is not None and candidate > upper):
        candidate = math.nextafter(bound, math.inf)
    return candidate


def _sound_bounds(node: dict, cls: Any) -> dict:
    """llguidance reads numeric bounds more loosely than jsonschema: an exclusive bound lets
    the bound itself through when the other bound is near (``exclusiveMinimum: 0`` with
    ``maximum: 0.5`` accepts ``0``), a decimal longer than a float passes an exclusive bound
    that jsonschema's float comparison refuses (``0.10000000000000000001 > 0.1``), and
    integer bounds are read as 64-bit floats (saturated at the int64 range), so past 2**53
    integers outside them get through. Rewrite the bounds as inclusive ones both agree on:
    an exclusive bound becomes the next float inside it (the next integer where only
    integers are allowed), and bounds are clamped to +-2**53; refuse a range that lies
    wholly past that."""
    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if "enum" in node or "const" in node or not any(k in node for k in _BOUND_KEYS):
        return node
    low_in, low_ex, high_in, high_ex = [], [], [], []
    if num(node.get("minimum")):  # draft 4: exclusiveMinimum: true makes minimum exclusive
        (low_ex if node.get("exclusiveMinimum") is True else low_in).append(node["minimum"])
    if num(node.get("maximum")):
        (high_ex if node.get("exclusiveMaximum") is True else high_in).append(node["maximum"])
    if num(node.get("exclusiveMinimum")):
        low_ex.append(node["exclusiveMinimum"])
    if num(node.get("exclusiveMaximum")):
        high_ex.append(node["exclusiveMaximum"])
    if not (low_ex or high_ex or any(abs(v) > _EXACT_LIMIT for v in low_in + high_in)):
        return node
    if any(isinstance(v, float) and not math.isfinite(v) for v in low_in + low_ex + high_in + high_ex):
        return node  # not a valid bound: left to the validator
    integer_only = bool(_types(node)) and _types(node) <= {"integer"}

    lo_in = max(low_in, default=None)
    hi_in = min(high_in, default=None)
    lo_ex = max(low_ex, default=None)
    hi_ex = min(high_ex, default=None)
    far = [v for v in (hi_in, hi_ex) if v is not None]
    near = [v for v in (lo_in, lo_ex) if v is not None]
    if integer_only:
        above = math.floor(lo_ex) + 1 if lo_ex is not None else None
        below = math.ceil(hi_ex) - 1 if hi_ex is not None else None
    else:
        above = _just_above(lo_ex, min(far)) if lo_ex is not None and far else \
            _just_above(lo_ex, None) if lo_ex is not None else None
        below = -_just_above(-hi_ex, -max(near)) if hi_ex is not None and near else \
            -_just_above(-hi_ex, None) if hi_ex is not None else None
    lo = max([v for v in (lo_in, above) if v is not None], default=None)
    hi = min([v for v in (hi_in, below) if v is not None], default=None)
    if (lo is not None and lo > _EXACT_LIMIT) or (hi is not None and hi < -_EXACT_LIMIT):
        raise ConstraintError(
            f"numeric bounds past +-2**53 ({_EXACT_LIMIT}) cannot be enforced exactly by the token "
            "mask (the grammar engine reads them as 64-bit floats); use mode: soft")
    out = {k: v for k, v in node.items() if k not in _BOUND_KEYS}
    if lo is not None:
        out["minimum"] = max(lo, -_EXACT_LIMIT)
    if hi is not None:
        out["maximum"] = min(hi, _EXACT_LIMIT)
    return out


def _sound_multiple_of(node: dict, cls: Any, notes: list[str]) -> dict:
    """jsonschema checks a float ``multipleOf`` in floating point (``0.29 / 0.01`` is
    ``28.999999999999996``: not a multiple) where llguidance checks exact decimals. Keep the
    keyword only where both agree (a dyadic step like 0.5, or an integer one, with values
    that floats hold exactly); otherwise list the values jsonschema accepts as an ``enum``."""
    from decimal import Decimal
    from fractions import Fraction

    step = node.get("multipleOf")
    if not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0 or "enum" in node \
            or "const" in node:
        return node
    lo, hi = _bounds(node)
    out = dict(node)
    exact_step = Fraction(step)
    integer_only = bool(_types(node)) and _types(node) <= {"integer"}
    if isinstance(step, int) or exact_step == Fraction(Decimal(repr(step))):
        # every decimal multiple of the step is a dyadic rational: exact in a float while
        # its numerator fits 53 bits, so narrow the range to where that holds (integers
        # stay Python ints, exact at any size, when the type allows nothing else)
        if isinstance(step, int) and integer_only:
            return node
        limit = max(1, int(Fraction(_EXACT_LIMIT - 1, exact_step.denominator)))
        if lo is None or lo < -limit:
            out["minimum"] = -limit
            out.pop("exclusiveMinimum", None)  # it was below -limit too (or absent)
        if hi is None or hi > limit:
            out["maximum"] = limit
            out.pop("exclusiveMaximum", None)
        return out
    # a decimal step: list its multiples inside the bounds that jsonschema's own check accepts
    dec = Decimal(repr(step))
    lo_f = float(lo) if lo is not None else -float(MAX_ABS_NUMBER)
    hi_f = float(hi) if hi is not None else float(MAX_ABS_NUMBER)
    if lo_f > hi_f:
        return node  # unsatisfiable anyway: the engine says so
    k_lo, k_hi = int(Fraction(lo_f) / exact_step) - 1, int(Fraction(hi_f) / exact_step) + 1
    if k_hi - k_lo + 1 > MAX_MULTIPLE_ENUM:
        # too many to list: the multiples nearest zero (a sound narrowing of the range)
        if k_lo <= 0 <= k_hi:
            k_lo = max(k_lo, -(MAX_MULTIPLE_ENUM // 2))
            k_hi = min(k_hi, k_lo + MAX_MULTIPLE_ENUM - 1)
        elif k_lo > 0:
            k_hi = k_lo + MAX_MULTIPLE_ENUM - 1
        else:
            k_lo = k_hi - MAX_MULTIPLE_ENUM + 1
        notes.append(f"multipleOf {step}: the mask allows the {MAX_MULTIPLE_ENUM} multiples nearest zero "
                     "that jsonschema's floating-point check accepts")
    keys = ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
    numeric_types = [t for t in node["type"] if t in _NUMERIC] if isinstance(node.get("type"), list) \
        else node.get("type")
    check = cls({**{k: node[k] for k in keys if k in node}, **({"type": numeric_types} if numeric_types else {})})
    values: list[Any] = []
    seen: set[Any] = set()
    for k in range(k_lo, k_hi + 1):
        d = dec * k
        v: Any = int(d) if d == d.to_integral_value() else (None if integer_only else float(d))
        if v is not None and v not in seen and check.is_valid(v):
            seen.add(v)
            values.append(v)
    if not values:
        raise ConstraintError(
            f"multipleOf {step}: no number in the schema's range passes jsonschema's floating-point "
            f"multipleOf check (it computes value / {step}), so the mask cannot produce a valid one")
    for k in keys[1:]:
        out.pop(k, None)
    out["enum"] = values
    other = _types(node) - _NUMERIC
    if other:  # the step constrains numbers only: the node's other types stay as they were
        rest = {k: v for k, v in node.items() if k not in keys}
        return {"anyOf": [{**out, "type": numeric_types}, {**rest, "type": sorted(other)}]}
    return out


def sound_schema(schema: Any) -> tuple[Any, list[str]]:
    """``schema`` narrowed where the grammar engine would otherwise accept values that plain
    jsonschema validation rejects (see the comment above), and notes on what the mask leaves
    to validation; raises ``ConstraintError`` for what it cannot enforce soundly."""
    cls = validator_class(schema)
    if cls.__name__ == "Draft3Validator":
        raise ConstraintError(
            "draft-03 schemas cannot be enforced by the token mask (the grammar engine does not "
            "read required: true, divisibleBy, disallow or extends); write the schema in draft-04 "
            "or later, or use mode: soft")
    checked = set(cls.FORMAT_CHECKER.checkers)
    notes: list[str] = []

    def fix(node: dict) -> dict:
        node = _sound_format(node, checked, notes)
        node = _sound_bounds(node, cls)
        node = _sound_multiple_of(node, cls, notes)
        if "uniqueItems" in node:
            if node["uniqueItems"] is True and not _int_or(node.get("maxItems"), 2) <= 1:
                raise ConstraintError(
                    "uniqueItems (e.g. a set[...] field) cannot be enforced by the token mask; "
                    "use a list, give the array maxItems: 1, or use mode: soft")
            # false, or at most one item (always unique): nothing to enforce
            node = {k: v for k, v in node.items() if k != "uniqueItems"}
        return node

    out = _walk_schema(schema, fix)
    return out, list(dict.fromkeys(notes))


class CompiledConstraint:
    """A grammar bound to one tokenizer. States are llguidance matchers, one per beam or
    lookahead row: copied when a row forks, rolled back when a lookahead is not committed."""

    def __init__(self, declaration: GrammarConstraint, grammar: str, ll_tokenizer: Any, vocab: int):
        self.declaration = declaration
        self.grammar = grammar
        self.ll_tokenizer = ll_tokenizer
        self.vocab = vocab
        self._words = (vocab + 31) // 32
        import torch

        self._shifts = torch.arange(32, dtype=torch.int32)
        self.warnings: list[str] = []
        # JSON only: which tokens close from where a row stands, favoured near the end of
        # the token budget (see ``apply_masks``)
        self.closer: JsonCloser | None = None
        # JSON only: the keys the top-level object must have, and what writing each takes
        # at least (tokens), so a row that still owes many starts closing its values earlier
        self.required_keys: dict[str, int] = {}
        # JSON only: whether some object may repeat a key (see ``mask_repeated_keys``)
        self.dedupe_keys = False
        self._key_states: dict[tuple[int, ...], _KeyState] = {}

    def key_state(self, ids: Sequence[int]) -> _KeyState:
        """Where ``ids`` leave the object keys of the document (memoised by prefix: a row
        grows by one token per call)."""
        key = tuple(ids)
        state = self._key_states.get(key)
        if state is None:
            assert self.closer is not None
            prev = self._key_states.get(key[:-1]) if key else _START
            if prev is None:
                state, _ = _scan_keys(_START, self.closer.text(ids))
            else:
                state, _ = _scan_keys(prev, self.closer.text(ids[-1:]))
            if len(self._key_states) > 50_000:
                self._key_states.clear()
            self._key_states[key] = state
        return state

    def mask_repeated_keys(self, allowed: "torch.Tensor", ids: Sequence[int]) -> None:
        """Clear (in place) the allowed tokens that would close a key its object already has."""
        assert self.closer is not None
        state = self.key_state(ids)
        frames, in_string, _, key = state
        if not any(kind == "{" and keys for kind, keys, _ in frames):
            return
        quotes = self.closer.one_quote if in_string and key is not None else self.closer.two_quotes
        texts = self.closer.texts
        for t in (allowed & quotes.to(allowed.device)).nonzero().flatten().tolist():
            if _scan_keys(state, texts[t])[1]:
                allowed[t] = False

    def can_close_after(self, state: Any, tokens: Sequence[int]) -> list[int]:
        """Those of ``tokens`` after which the grammar allows a closing token (``"``, ``}``
        or ``]``, or the end): a number that may not end yet (``0.000`` under
        exclusiveMinimum 0) closes through one of these (a nonzero digit)."""
        assert self.closer is not None
        closing = self.closer.in_string | self.closer.outside
        out = []
        for t in tokens:
            probe = self.copy(state)
            if self.advance(probe, t) and bool((self.allowed([probe])[0] & closing).any()):
                out.append(t)
        return out

    def owed_tokens(self, text: str) -> int:
        """About how many tokens the required top-level keys not yet in ``text`` need."""
        return sum(cost for key, cost in self.required_keys.items() if f'"{key}"' not in text)

    def new_state(self) -> Any:
        return _llguidance().LLMatcher(self.ll_tokenizer, self.grammar, log_level=0)

    @staticmethod
    def copy(state: Any) -> Any:
        return state.deep_copy()

    @staticmethod
    def advance(state: Any, token: int) -> bool:
        return bool(state.consume_token(int(token)))

    @staticmethod
    def rollback(state: Any, n: int) -> None:
        if n > 0:
            state.rollback(int(n))

    def allowed(self, states: list[Any]) -> torch.Tensor:
        """Boolean (rows, vocab) mask of the tokens each state allows."""
        import torch

        bits = torch.full((len(states), self._words), -1, dtype=torch.int32)
        stride = self._words * 4
        for i, st in enumerate(states):
            # the engine writes the row's bitmask straight into the tensor's memory (this is
            # what llguidance.torch does; calling it directly skips that module's
            # torch.compile set-up)
            st.unsafe_compute_mask_ptr(bits.data_ptr() + i * stride, stride)
        unpacked = (bits.unsqueeze(-1) >> self._shifts) & 1
        return unpacked.view(len(states), -1)[:, : self.vocab].bool()


def _scan_json(text: str, in_string: bool, escaped: bool) -> tuple[int, bool, bool]:
    """Scan one token's text from a lexer state: (change in open depth, in_string, escaped)."""
    depth = 0
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return depth, in_string, escaped


class JsonCloser:
    """Where a JSON document generated so far stands, and which tokens close it from there.

    Small models loop inside an open value ("1234567890123...", "a.b.a.b...",
    ``[{"type":[{"type":[...``) until the token budget cuts the document, which is then
    unfinished and invalid. Near the end of the budget, ``apply_masks`` favours the allowed
    tokens that close from where each row stands: inside a string, tokens with ``"`` (so
    ``"}`` and ``"]}`` count, but a ``}`` that is only a character of the string does not);
    outside, tokens with ``}`` or ``]``. Neither set holds ``{ [ , :``. The window grows
    with how deeply the row is nested, so a deep document starts closing early enough.
    One per tokenizer (decoding the vocabulary takes a moment)."""

    def __init__(self, lm: Any, vocab: int):
        import torch

        tok = lm.tokenizer
        n = min(vocab, len(tok))
        self.texts = tok.batch_decode([[i] for i in range(n)]) + [""] * (vocab - n)
        self.in_string = torch.zeros(vocab, dtype=torch.bool)
        self.outside = torch.zeros(vocab, dtype=torch.bool)
        for i, text in enumerate(self.texts):
            if any(ch in text for ch in "{[,:"):
                continue
            if '"' in text:
                # an escaped quote continues the string it is in
                self.in_string[i] = "\\" not in text
            elif "}" in text or "]" in text:
                self.outside[i] = True
        for e in getattr(lm, "eos_token_ids", ()):
            if e < vocab:
                self.in_string[e] = self.outside[e] = True
        # tokens that can close a key (one quote, from inside the key; two, from outside)
        quotes = torch.tensor([text.count('"') for text in self.texts])
        self.one_quote = quotes >= 1
        self.two_quotes = quotes >= 2
        self._memo: dict[tuple[int, bool, bool], tuple[int, bool, bool]] = {}

    def position(self, ids: Sequence[int]) -> tuple[int, bool]:
        """(open objects + arrays, inside a string) after the tokens ``ids``."""
        depth, in_string, escaped = 0, False, False
        memo, texts = self._memo, self.texts
        for t in ids:
            key = (t, in_string, escaped)
            step = memo.get(key)
            if step is None:
                text = texts[t] if 0 <= t < len(texts) else ""
                step = memo[key] = _scan_json(text, in_string, escaped)
            d, in_string, escaped = step
            depth = max(0, depth + d)
        return depth, in_string

    def text(self, ids: Sequence[int]) -> str:
        texts = self.texts
        return "".join(texts[t] for t in ids if 0 <= t < len(texts))

    def mask(self, in_string: bool) -> "torch.Tensor":
        return self.in_string if in_string else self.outside


# ---- repeated keys: ``{"x":1,"x":2}`` parses to one key (json.loads keeps the last), so it
# fails minProperties and is never what a schema meant. llguidance keeps declared properties
# unique but not additional / pattern ones: per row, a token that would close a key the
# object already has is masked.

# (kind "{" or "[", keys an object has so far, what an object expects: key|colon|value|after)
_Frame = tuple[str, frozenset, str]
# (open containers, in a string, after a backslash, the raw text of an open key or None)
_KeyState = tuple[tuple[_Frame, ...], bool, bool, str | None]
_START: _KeyState = ((), False, False, None)


def _decode_key(raw: str) -> str:
    try:
        return json.loads(f'"{raw}"')
    except json.JSONDecodeError:
        return raw


def _scan_keys(state: _KeyState, text: str) -> tuple[_KeyState, bool]:
    """Advance ``state`` over ``text``; also whether a key closed that its object had."""
    frames, in_string, escaped, key = state
    repeated = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if key is not None:
                    kind, keys, _ = frames[-1]
                    name = _decode_key(key)
                    repeated = repeated or name in keys
                    frames = frames[:-1] + ((kind, keys | {name}, "colon"),)
                    key = None
                continue
            if key is not None:
                key += ch
            continue
        top = frames[-1] if frames else None
        if ch == '"':
            in_string = True
            if top is not None and top[0] == "{" and top[2] == "key":
                key = ""
            elif top is not None and top[0] == "{":
                frames = frames[:-1] + ((top[0], top[1], "after"),)
        elif ch in "{[":
            if top is not None and top[0] == "{":
                frames = frames[:-1] + ((top[0], top[1], "after"),)
            frames = frames + ((ch, frozenset(), "key"),)
        elif ch in "}]":
            frames = frames[:-1]
        elif top is not None and top[0] == "{":
            if ch == ":":
                frames = frames[:-1] + ((top[0], top[1], "value"),)
            elif ch == ",":
                frames = frames[:-1] + ((top[0], top[1], "key"),)
            elif not ch.isspace() and top[2] == "value":
                frames = frames[:-1] + ((top[0], top[1], "after"),)
    return (frames, in_string, escaped, key), repeated


def _may_repeat_keys(schema: Any) -> bool:
    """Whether some object of ``schema`` takes keys beyond its declared properties (only
    those can repeat under the grammar engine)."""
    found = False

    def look(node: dict) -> dict:
        nonlocal found
        types = _types(node)
        if "object" in types or (not types and not any(k in node for k in ("enum", "const", "$ref", "anyOf",
                                                                              "oneOf", "allOf"))):
            found = found or node.get("additionalProperties", True) is not False or bool(node.get("patternProperties"))
        return node

    _walk_schema(schema, look)
    return found


_CLOSERS: "weakref.WeakKeyDictionary[Any, JsonCloser]" = weakref.WeakKeyDictionary()


def _json_closer(lm: Any, vocab: int) -> JsonCloser:
    with _LOCK:
        closer = _CLOSERS.get(lm.tokenizer)
        if closer is None or len(closer.texts) != vocab:
            closer = _CLOSERS[lm.tokenizer] = JsonCloser(lm, vocab)
        return closer


def repeating_tail(ids: Sequence[int], max_period: int = 32, min_span: int = 12) -> bool:
    """Whether ``ids`` end in a loop: a block of ``p <= max_period`` tokens repeated at
    least twice, the repeats spanning at least ``min_span`` tokens (so ``00`` or a key
    written twice is not a loop, ``1.0.0.0:1.0.0.0:1.0.0.0:`` is)."""
    n = len(ids)
    tail = list(ids[-2 * max_period:]) if n > 2 * max_period else list(ids)
    m = len(tail)
    for p in range(1, min(max_period, m // 2) + 1):
        reps = max(2, -(-min_span // p))  # ceil(min_span / p), at least two copies
        if reps * p > m:
            continue
        block = tail[m - p:]
        if all(tail[m - (r + 1) * p: m - r * p] == block for r in range(1, reps)):
            return True
    return False


def root_required_keys(schema: Any) -> list[str]:
    """The keys a document's top-level object must have (following a local ``$ref`` at the
    root and merging ``allOf`` branches); [] when the root is not plainly an object."""
    seen: list[str] = []

    def collect(node: Any, depth: int) -> None:
        if not isinstance(node, dict) or depth > 8:
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target = _resolve(schema, ref)
            if isinstance(target, dict):
                collect(target, depth + 1)
        for key in node.get("required", []) if isinstance(node.get("required"), list) else []:
            if isinstance(key, str) and key not in seen:
                seen.append(key)
        for branch in node.get("allOf", []) if isinstance(node.get("allOf"), list) else []:
            collect(branch, depth + 1)

    collect(schema, 0)
    return seen


def _key_cost(lm: Any, key: str) -> int:
    """Tokens a required key costs at least: ``,"key":`` and a two-token value."""
    return len(lm.tokenizer(f',"{key}":', add_special_tokens=False)["input_ids"]) + 2


def closing_window(max_new_tokens: int) -> int:
    """A quarter of the budget (at least 4 tokens). What closing itself needs (open
    brackets, an open string, required keys still owed) is added by the caller, so a short
    budget does not start pressing from its first token: with 16 tokens for a two-key
    object, a fixed 16-token window emptied every value."""
    return max(4, max_new_tokens // 4)


def closing_bias(remaining: int, max_new_tokens: int, needed: int = 0) -> float:
    """Logit bonus for closing tokens when ``remaining`` tokens are left of the budget and
    closing takes about ``needed`` of them (open strings, objects and arrays).

    Zero while more than a window (a quarter of the budget, at least 4 tokens) is left
    beyond what closing needs; then rising to 16 nats when nothing is left to spare."""
    window = closing_window(max_new_tokens)
    spare = remaining - needed
    if spare > window:
        return 0.0
    return 16.0 * min(window - spare + 1, window) / window


def apply_masks(logits: torch.Tensor, states: list[Any], constraints: list[CompiledConstraint | None],
                eos_id: int, remaining: int | None = None, max_new_tokens: int = 0,
                row_tokens: Callable[[int], Sequence[int]] | None = None) -> torch.Tensor:
    """Set disallowed tokens' logits to -inf for the rows that have a constraint. Given
    ``remaining`` (tokens left of ``max_new_tokens``) and ``row_tokens`` (row -> the tokens
    it generated so far), JSON rows near the end of the budget also get ``closing_bias`` on
    the allowed tokens that close from where they stand (see ``JsonCloser``); the bias only
    reorders what the grammar allows, so validity never depends on it.

    A row whose grammar allows nothing (an engine error state) may only end, so the final
    validation reports it instead of the search crashing mid-batch."""
    import torch

    rows = [i for i, c in enumerate(constraints) if c is not None and states[i] is not None]
    if not rows:
        return logits
    by_constraint: dict[int, list[int]] = {}
    for i in rows:
        by_constraint.setdefault(id(constraints[i]), []).append(i)
    # a row needs at most ~3 closers per token it generated (``[{"``): rows that cannot be in
    # their window yet are not scanned
    window = closing_window(max_new_tokens)
    logits = logits.clone()
    for idxs in by_constraint.values():
        c = constraints[idxs[0]]
        assert c is not None
        allowed = c.allowed([states[i] for i in idxs]).to(logits.device)
        if c.closer is not None and c.dedupe_keys and row_tokens is not None:
            for k, i in enumerate(idxs):
                c.mask_repeated_keys(allowed[k], row_tokens(i))
        empty = ~allowed.any(dim=-1)
        if bool(empty.any()):
            allowed[empty, eos_id] = True
        idx_t = torch.tensor(idxs, device=logits.device)
        masked = logits[idx_t].masked_fill(~allowed, float("-inf"))
        if c.closer is not None and remaining is not None and row_tokens is not None:
            owed_at_most = sum(c.required_keys.values())
            # a row needs at most ~3 closers per token it generated (``[{"``) plus the keys it
            # owes: rows that cannot be in their window yet are not scanned
            near_end = remaining - 3 * (max_new_tokens - remaining) - 1 - owed_at_most <= window
            for k, i in enumerate(idxs):
                ids = row_tokens(i)
                looping = repeating_tail(ids)
                if not (near_end or looping):
                    continue
                depth, in_string = c.closer.position(ids)
                needed = depth + int(in_string)
                if owed_at_most:
                    needed += c.owed_tokens(c.closer.text(ids))
                # a row caught in a loop closes now, whatever budget is left
                bias = 16.0 if looping else closing_bias(remaining, max_new_tokens, needed=needed)
                if bias:
                    closing = allowed[k] & c.closer.mask(in_string).to(logits.device)
                    if not bool(closing.any()):
                        # nothing closes from here (``0.000`` under exclusiveMinimum 0, where
                        # a model repeats zeros): favour the likeliest allowed tokens after
                        # which something does (a nonzero digit)
                        top = masked[k].topk(min(16, int(allowed[k].sum()))).indices.tolist()
                        for t in c.can_close_after(states[i], top):
                            closing[t] = True
                    masked[k] = masked[k] + bias * closing.to(masked.dtype)
        logits[idx_t] = masked
    return logits
