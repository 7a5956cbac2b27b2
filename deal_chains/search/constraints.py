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

from deal_chains.errors import ConfigError, ConstraintError
from deal_chains.jsonkit import schema_rewrite
from deal_chains.search.closing import JsonCloser, closing_bias, closing_window, json_closer, key_cost, repeating_tail
from deal_chains.jsonkit.lexer import JsonLexer
from deal_chains.jsonkit.schema_rewrite import ONE_OF_HINT, STRING_CAP, exact_one_of
from deal_chains.jsonkit.schema_shape import may_repeat_keys, root_required_keys, schema_shape_problem
from deal_chains.jsonkit.schema_sound import sound_schema
from deal_chains.jsonkit.schema_walk import BOUND_KEYS, EXACT_LIMIT, walk_schema

_LLTOKENIZERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


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
    # the length the mask caps strings at where the schema sets no maxLength (``bounded``):
    # a string that reaches it was closed by the cap, not by the model (``budget_cut``)
    string_cap: int | None = field(default=None, compare=False)

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any] | str, *, whitespace_flexible: bool = False,
                    max_whitespace: int = 2, bounded: bool = True, max_string_length: int = STRING_CAP,
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
        capped = cls("json_schema", json.dumps(bounded_schema(schema, **caps)), options, notes, max_string_length)
        try:
            capped.check()
        except ConstraintError:
            # maybe a pattern that demands a longer string than the cap: cap those strings no
            # more; a schema the engine refuses even so fails here, before any model is loaded
            loose = cls("json_schema", json.dumps(bounded_schema(schema, **caps, cap_patterns=False)),
                        options, notes, max_string_length)
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
            compiled.closer = json_closer(lm, vocab)
            compiled.required_keys = {key: key_cost(lm, key) for key in root_required_keys(json.loads(self.source))}
            compiled.dedupe_keys = may_repeat_keys(json.loads(self.source))
        probe = compiled.new_state()  # catches errors validate() lets through
        if probe.is_error():
            raise ConstraintError(f"the grammar engine refused this {self.kind}: {probe.get_error()}")
        return compiled


def bounded_schema(schema: Any, **caps: Any) -> Any:
    """``jsonkit``'s ``bounded_schema`` with patterned strings capped where the grammar engine
    proves the pattern still satisfiable under the cap."""
    return schema_rewrite.bounded_schema(schema, satisfiable=_engine_accepts, **caps)


def _engine_accepts(schema: dict) -> bool:
    try:
        GrammarConstraint("json_schema", json.dumps(schema), {}).check()
    except ConstraintError:
        return False
    return True


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
                and not (k in BOUND_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
                         and not abs(v) <= EXACT_LIMIT)}

    wide = walk_schema(exact_one_of(schema), widen)
    try:
        GrammarConstraint("json_schema", json.dumps(wide), {"whitespace_flexible": False}).check()
    except ConstraintError as exc:
        text = str(exc)
        if any(w in text for w in ("Unsatisfiable", "does not exist", "incompatible")):
            return text
    return None


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
        self._lex_states: dict[tuple[int, ...], JsonLexer] = {}

    def lex_state(self, ids: Sequence[int]) -> JsonLexer:
        """Where the JSON text of ``ids`` stands (memoised by prefix: a row grows by one token
        per call, so each call reads one token's text)."""
        key = tuple(ids)
        state = self._lex_states.get(key)
        if state is None:
            assert self.closer is not None
            prev = self._lex_states.get(key[:-1]) if key else None
            if prev is None:
                state = JsonLexer().feed(self.closer.text(ids))
            else:
                state = prev.copy().feed(self.closer.text(ids[-1:]))
            if len(self._lex_states) > 50_000:
                self._lex_states.clear()
            self._lex_states[key] = state
        return state

    def mask_repeated_keys(self, allowed: "torch.Tensor", ids: Sequence[int]) -> None:
        """Clear (in place) the allowed tokens that would close a key its object already has.

        ``{"x":1,"x":2}`` parses to one key (json.loads keeps the last), so it fails
        minProperties and is never what a schema meant; llguidance keeps declared properties
        unique but not additional / pattern ones."""
        assert self.closer is not None
        state = self.lex_state(ids)
        if not any(kind == "{" and keys for kind, keys in state.frames):
            return
        quotes = self.closer.one_quote if state.in_key else self.closer.two_quotes
        texts = self.closer.texts
        for t in (allowed & quotes.to(allowed.device)).nonzero().flatten().tolist():
            if state.copy().feed(texts[t]).repeated_key:
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

    def owed_tokens(self, state: JsonLexer) -> int:
        """About how many tokens the required top-level keys the document lacks still need."""
        return sum(cost for key, cost in self.required_keys.items() if key not in state.root_keys)

    def closing_pressure(self, ids: Sequence[int], remaining: int, max_new_tokens: int,
                         looping: bool | None = None) -> tuple[float, bool]:
        """(the closing bias ``apply_masks`` gives a row that generated ``ids`` with
        ``remaining`` tokens of ``max_new_tokens`` left, whether the row is inside a string).
        The one place that says when closing pressure is on: the search applies it, and
        ``budget_cut`` reads it back (``looping=False``: the budget's share alone) to tell a
        value the model closed from one the budget closed."""
        lexed = self.lex_state(ids)
        needed = lexed.depth + int(lexed.in_string)
        if self.required_keys:
            needed += self.owed_tokens(lexed)
        # a row caught in a loop closes now, whatever budget is left
        # ``looping``: whether the row is in a loop, when the caller already knows (None: look)
        looping = repeating_tail(ids) if looping is None else looping
        bias = 16.0 if looping else closing_bias(remaining, max_new_tokens, needed=needed)
        return bias, lexed.in_string

    def new_state(self) -> Any:
        return _llguidance().LLMatcher(self.ll_tokenizer, self.grammar, log_level=0)

    def incomplete(self, ids: Sequence[int], eos_ids: frozenset[int]) -> str | None:
        """Why the finished answer ``ids`` is not a whole sentence of the grammar (the engine's
        error, e.g. a lexer that ran out of states, where it only allowed the end), or None
        when the grammar accepts it: an answer is vouched for only then."""
        state = self.new_state()
        body = list(ids[:-1]) if ids and int(ids[-1]) in eos_ids else list(ids)
        if state.try_consume_tokens(body) == len(body) and state.is_accepting():
            return None
        return state.get_error() or "the answer does not complete the grammar"

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
                bias, in_string = c.closing_pressure(ids, remaining, max_new_tokens, looping=looping)
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
