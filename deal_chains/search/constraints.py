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
        schema = exact_one_of(schema)
        options = {"whitespace_flexible": whitespace_flexible}
        if whitespace_flexible:
            options["whitespace_pattern"] = r"[\n ]{0,%d}" % max_whitespace
        if not bounded:
            return cls("json_schema", json.dumps(schema), options)
        caps = dict(max_string_length=max_string_length, max_items=max_items, max_properties=max_properties)
        capped = cls("json_schema", json.dumps(bounded_schema(schema, **caps)), options)
        try:
            capped.check()
        except ConstraintError:
            # maybe a pattern that demands a longer string than the cap: cap those strings no
            # more; a schema the engine refuses even so fails here, before any model is loaded
            loose = cls("json_schema", json.dumps(bounded_schema(schema, **caps, cap_patterns=False)),
                        options)
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
        is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(self.grammar(), None)
        if is_error and self.kind == "json_schema" and "Unknown format" in " ".join(messages) \
                and not self.options.get("lenient"):
            return [f"not enforced by the mask: {messages[0]}",
                    *GrammarConstraint(self.kind, self.source, {**self.options, "lenient": True}).check()]
        if is_error:
            raise ConstraintError(f"the grammar engine refused this {self.kind}: {_explain('; '.join(messages))}")
        return list(messages)

    def compile(self, lm: Any) -> "CompiledConstraint":
        """Check the grammar now (fail closed, before any generation) and bind it to ``lm``."""
        llg = _llguidance()
        grammar = self.grammar()
        is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, _ll_tokenizer(lm))
        if is_error and self.kind == "json_schema" and "Unknown format" in " ".join(messages):
            # jsonschema itself ignores formats it does not know; do the same (the mask
            # leaves such strings free) instead of refusing a schema the validator accepts
            lenient = GrammarConstraint(self.kind, self.source, {**self.options, "lenient": True})
            compiled = lenient.compile(lm)
            compiled.warnings.insert(0, f"not enforced by the mask: {messages[0]}")
            return compiled
        if is_error:
            raise ConstraintError(f"the grammar engine refused this {self.kind}: {_explain('; '.join(messages))}")
        vocab = int(lm.model.get_output_embeddings().weight.shape[0])
        compiled = CompiledConstraint(self, grammar, _ll_tokenizer(lm), vocab)
        # warnings name schema keywords the mask cannot enforce (e.g. some string formats):
        # the mask is then looser than the schema, and final validation must catch the rest
        compiled.warnings = list(messages)
        if self.kind == "json_schema":
            compiled.closer = _json_closer(lm, vocab)
            compiled.required_keys = {key: _key_cost(lm, key) for key in root_required_keys(json.loads(self.source))}
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

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)

    collect(schema)
    for ref in refs:
        if not ref.startswith("#") or (not ref.startswith("#/") and ref != "#"):
            continue  # remote refs are refused elsewhere; $anchors are left to the validator
        if _resolve(schema, ref) is _MISSING:
            return f"$ref {ref!r} points to nothing in the schema"
    try:
        finite = _has_finite_instance(schema)
    except (TypeError, ValueError, AttributeError):  # a malformed schema: the validator says why
        finite = True
    if not finite:
        return ("no finite JSON value satisfies the schema: a required property or item recurses "
                "into itself on every path")
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


def _has_finite_instance(root: dict) -> bool:
    """Least fixpoint of "this subschema has a finite instance" over ``$ref`` cycles (an
    approximation that only answers False when recursion is forced on every path)."""
    known: dict[int, bool] = {}

    def finite(node: Any, stack: tuple[int, ...]) -> bool:
        if not isinstance(node, dict):
            return node is not False
        key = id(node)
        if key in known:
            return known[key]
        if key in stack:
            return False  # assume not, until another path proves otherwise
        stack = stack + (key,)
        ok = True
        if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/") or node.get("$ref") == "#":
            target = _resolve(root, node["$ref"])
            ok = target is _MISSING or finite(target, stack)
        if ok and isinstance(node.get("allOf"), list):
            ok = all(finite(b, stack) for b in node["allOf"])
        for k in ("anyOf", "oneOf"):
            if ok and isinstance(node.get(k), list) and node[k]:
                ok = any(finite(b, stack) for b in node[k])
        if ok:
            types = node.get("type")
            types = {t for t in types if isinstance(t, str)} if isinstance(types, list) \
                else {types} if isinstance(types, str) else None
            scalar = types is None or bool(types - {"object", "array"})
            if not scalar:
                paths = []
                if "object" in types:
                    props = node.get("properties") if isinstance(node.get("properties"), dict) else {}
                    req = node.get("required") if isinstance(node.get("required"), list) else []
                    paths.append(all(finite(props[r], stack) for r in req if r in props))
                if "array" in types:
                    min_items = node.get("minItems", 0) if isinstance(node.get("minItems", 0), int) else 0
                    items = node.get("items", True)
                    paths.append(min_items == 0 or finite(items, stack))
                ok = any(paths)
        if len(stack) == 1:
            known[key] = ok
        return ok

    return finite(root, ())


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

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: walk(v) for k, v in node.items()}
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

    return walk(schema)


MAX_ABS_NUMBER = 10**12 - 1


def bounded_schema(schema: Any, *, max_string_length: int = 64, max_items: int = 8,
                   max_properties: int = 8, cap_patterns: bool = True) -> Any:
    """A copy of ``schema`` with caps on what it leaves unbounded (see
    ``GrammarConstraint.json_schema``); caps never go below the schema's own minimums.

    Strings with a ``pattern`` or ``format`` get the shortest of ``PATTERN_CAPS`` (32, then
    ``max_string_length``) that the pattern can still satisfy — each checked by compiling
    the string's own schema — or none (also when ``cap_patterns`` is off); numbers without
    bounds get +-``MAX_ABS_NUMBER`` (twelve digits before any fraction)."""

    combinators = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas")

    def walk(node: Any, in_combinator: bool = False) -> Any:
        if isinstance(node, list):
            return [walk(v, in_combinator) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: walk(v, k in combinators) for k, v in node.items()}
        # closing an object is only safe where no sibling subschema may declare more keys
        may_close = not in_combinator and not any(k in out for k in combinators + ("$ref",))
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
            lo, hi = out.get("minimum"), out.get("maximum")
            numeric = (int, float)
            # draft-4 boolean exclusive bounds modify maximum/minimum: leave those alone
            if hi is None and "exclusiveMaximum" not in out:
                out["maximum"] = max(MAX_ABS_NUMBER, int(lo) + MAX_ABS_NUMBER) \
                    if isinstance(lo, numeric) and not isinstance(lo, bool) else MAX_ABS_NUMBER
            if lo is None and "exclusiveMinimum" not in out:
                out["minimum"] = min(-MAX_ABS_NUMBER, int(hi) - MAX_ABS_NUMBER) \
                    if isinstance(hi, numeric) and not isinstance(hi, bool) else -MAX_ABS_NUMBER
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
    return max(16, max_new_tokens // 4)


def closing_bias(remaining: int, max_new_tokens: int, needed: int = 0) -> float:
    """Logit bonus for closing tokens when ``remaining`` tokens are left of the budget and
    closing takes about ``needed`` of them (open strings, objects and arrays).

    Zero while more than a window (a quarter of the budget, at least 16 tokens) is left
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
                    masked[k] = masked[k] + bias * closing.to(masked.dtype)
        logits[idx_t] = masked
    return logits
