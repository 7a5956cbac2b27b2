"""``SearchConfig``: the one validated set of search knobs (DESIGN §1)."""

from __future__ import annotations

import numbers
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from deal_chains.errors import ConfigError

Strategy = Literal["greedy", "sample", "best_of_n", "rerank", "deal"]
STRATEGIES: tuple[str, ...] = ("greedy", "sample", "best_of_n", "rerank", "deal")
# strategies that sample: they default to temperature 1.0 (0 would make them greedy)
SAMPLING_STRATEGIES: tuple[str, ...] = ("sample", "best_of_n")
SAMPLING_TEMPERATURE = 1.0
# most answers one search returns per prompt (SearchConfig.returns); deal keeps that many beams
MAX_RETURNS = 64


def _whole_number(value: Any) -> Any:
    # pydantic's lax mode reads True as 1, "4" as 4 and 4.0 as 4: in a config those are
    # typos (YAML `yes`, a quoted number), so only real integers (numpy's too) pass
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PydanticCustomError("int_type", "Input should be an integer, not {kind}",
                                  {"kind": type(value).__name__})
    return int(value)


def _real_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PydanticCustomError("float_type", "Input should be a number, not {kind}",
                                  {"kind": type(value).__name__})
    try:
        return float(value)
    except OverflowError:  # an int past float range (10**400): a ConfigError, not a raw crash
        raise PydanticCustomError("finite_number", "Input should be a finite number") from None


def _true_or_false(value: Any) -> Any:
    if not isinstance(value, bool):
        raise PydanticCustomError("bool_type", "Input should be true or false, not {kind}",
                                  {"kind": type(value).__name__})
    return value


def _whole_number_or_none(value: Any) -> Any:
    return None if value is None else _whole_number(value)


Int = Annotated[int, BeforeValidator(_whole_number)]
# validated outside the union, so an error names the field, not a union branch
OptionalInt = Annotated[int | None, BeforeValidator(_whole_number_or_none)]
Float = Annotated[float, BeforeValidator(_real_number)]
Bool = Annotated[bool, BeforeValidator(_true_or_false)]


class SearchConfig(BaseModel):
    """How to decode.

    >>> SearchConfig(strategy="deal", top_k=8, lookahead=8, beam=2, lam=8.0).commit_tokens
    8

    ``commit`` defaults to ``lookahead`` (blockwise commit, the fast setting); ``commit=1``
    is the paper's exact rule (one token committed per lookahead). The defaults were
    tuned on CommonGen dev with the default model (docs/benchmarks.md): ``lam`` is large
    because rewards live in [0, 1] while log-probabilities differ by several nats, and a
    coverage reward gives one word of five only 1/5 of it (with ``lam`` 24, sets of 4-5 words
    were often ended early with a word missing; 48 covers more at the same speed).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    strategy: Strategy = Field(
        "deal", description="greedy, sample, best_of_n, rerank (n samples ranked by the rewards) or deal "
        "(the lookahead tree search)")
    top_k: Int = Field(6, ge=1, le=256, description="candidate next tokens per beam")
    lookahead: Int = Field(4, ge=0, le=128, description="greedy tokens rolled out after each candidate")
    beam: Int = Field(2, ge=1, le=64, description="live beams kept per prompt")
    lam: Float = Field(48.0, ge=0.0, allow_inf_nan=False,
                       description="weight of the reward against the log-probability")
    commit: OptionalInt = Field(
        None, ge=1, le=128,
        description="tokens committed per step; default = lookahead (blockwise); 1 = paper-exact",
    )
    max_new_tokens: Int = Field(48, ge=1, le=8192, description="token budget of one answer; an answer it cuts "
                                "reports finish_reason length")
    temperature: Float = Field(
        0.0, ge=0.0, le=10.0, allow_inf_nan=False,
        description="0 = deterministic; >0 samples; default 0, 1.0 for sample and best_of_n",
    )
    seed: OptionalInt = Field(
        None, ge=0,
        description="sampling seed; default: a fresh random seed per prompt (recorded in stats.seed)",
    )
    n: Int = Field(4, ge=1, le=256, description="samples for best_of_n / hypotheses for rerank")
    returns: Int = Field(
        1, ge=1, le=MAX_RETURNS,
        description="answers returned per prompt: the best, then the next best distinct hypotheses "
        "(GenerationResult.alternatives). deal keeps at least this many beams, rerank this many hypotheses, "
        "best_of_n draws at least this many samples, sample draws this many independent samples (ranked); "
        "greedy has one answer (returns must be 1)",
    )
    hold_eos: Bool = Field(
        False,
        description="deal: end-of-sequence competes only when no reward still owes tokens the budget could "
        "pay (a keyword missing while budget is left is not a place to stop; NeuroLogic's rule). Off by "
        "default: on the default model it covers every word but often by appending a second sentence that "
        "talks about the words, unless hold_ends holds the sentence end too (docs/benchmarks.md)",
    )
    hold_ends: list[Annotated[str, Field(min_length=1, max_length=16)]] | None = Field(
        None, max_length=16,
        description="deal, with hold_eos: text that ends the answer as end-of-sequence does, held with it while "
        "a reward owes tokens: every token whose text contains one of these strings (for a one-sentence answer "
        "the sentence end: ['.', '!', '?', '\\n']), so a missing keyword goes into the sentence instead of a "
        "second sentence after it. A rollout re-reads what it owes after every token, so the end is free again "
        "as soon as the last keyword is in",
    )
    no_repeat_ngram: OptionalInt = Field(
        None, ge=1, le=16,
        description="no token that would repeat an n-gram of this size already in the answer (transformers' "
        "no_repeat_ngram_size, over the answer's own tokens; every strategy, every candidate and rollout token). "
        "A small model's continuation can loop ('the topic of the topic of ...') until the budget cuts it; "
        "3 blocks that. None: off (JSON and other structured text repeat n-grams by design)",
    )
    max_logprob_drop: Float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="deal: a candidate token must be within this many nats of its beam's likeliest token, "
        "so the reward chooses among what the model finds plausible instead of overruling it without bound "
        "(None: the top_k candidates whatever their log-probability)",
    )
    requested_logprob_drop: Float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="deal: max_logprob_drop for a token that starts an item the rewards ask for (a keyword's "
        "forms), so the bound may be tight on the words between them and looser where a requested word goes "
        "in; at least max_logprob_drop, which it needs (None: max_logprob_drop's)",
    )
    first_top_k: OptionalInt = Field(
        None, ge=1, le=256,
        description="deal: candidate tokens at the answer's first step (None: top_k). The first step has "
        "one beam per prompt, so widening it costs a few rows once, and it is where answers part ways: on "
        "AdvBench a refusal's first token ('I') is outside the top 8 for 40% of requests (docs/benchmarks.md)",
    )
    first_max_logprob_drop: Float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="deal: max_logprob_drop at the answer's first step (None: max_logprob_drop's)",
    )
    commit_by_reward: Bool = Field(
        False,
        description="deal: where the candidates' rewards agree a beam commits the whole block, where they "
        "disagree only up to the token at which its rollout reaches its reward (at least one), so the tokens "
        "after a keyword are searched again instead of taken from the greedy rollout. Hard (grammar) "
        "constraints and terminal rewards keep the fixed block",
    )
    length_penalty: Float = Field(
        0.0, ge=0.0, le=2.0, allow_inf_nan=False,
        description="the score's log-probability is divided by (tokens ** length_penalty), as in transformers' "
        "beam search: 0 sums it (the default: a short answer pays fewer nats than a long one), 1 averages it "
        "per token. lam weighs the reward against that term, so a larger length_penalty wants a smaller lam "
        "(the harmless preset: 1 with lam 2)",
    )
    end_in_lookahead: Bool = Field(
        False,
        description="deal: end-of-sequence is a candidate at every token of a rollout by the rule of a step's "
        "first token (within top_k and max_logprob_drop), not only where the greedy rollout takes it or at a "
        "step's start: a reply that could end after a sentence becomes a finished answer, scored on its whole "
        "text, at no extra forward. Not with a hard constraint or a fluency prompt",
    )
    estimate: Bool = Field(
        False,
        description="deal: credit a live candidate, for each item its lookahead text still misses (a "
        "keyword), the item's gain times the best probability its rollout gave the item's first token "
        "(an A*-style estimate of completion, as in NeuroLogic A*esque; costs no forward)",
    )
    fluency_prompt: str | None = Field(
        None, min_length=1, max_length=4000,
        description="deal: rank by the answer's log-probability after this prompt (it replaces the whole "
        "request, system prompt included) instead of after the request: after a request that lists words to "
        "use the model finds the bare list likelier than a sentence, after 'Write one short sentence.' the "
        "sentence (docs/benchmarks.md). The answer's reported logprob stays the request's. Costs one forward "
        "per step over the commit window",
    )
    fluency_weight: Float = Field(
        1.0, ge=0.0, le=1.0, allow_inf_nan=False,
        description="deal, with fluency_prompt: each token's ranked log-probability is (1 - w) x the "
        "request's + w x the fluency prompt's",
    )
    fluency_mix: Literal["blend", "copy_penalty"] = Field(
        "blend",
        description="deal, with fluency_prompt: how the two log-probabilities combine per token. blend: "
        "(1 - w) x the request's + w x the fluency prompt's. copy_penalty: the request's, less w x how much "
        "likelier the request makes the token than the fluency prompt does (never more): what the answer "
        "copies from the request (a listed word's comma) pays, a token both find likely does not",
    )
    fluency_spare_requested: Bool = Field(
        False,
        description="deal, with fluency_prompt: a token that starts an item a reward asks for (a keyword, in "
        "any of its forms) is ranked by the request's own log-probability: placing the word is the reward's "
        "business, and the fluency read judges the form around it (a list's commas and order)",
    )
    fluency_context: Literal["bare", "conversation"] = Field(
        "bare",
        description="deal, with fluency_prompt: what the fluency prompt is read after. bare: nothing (it "
        "replaces the whole request). conversation: the request's own conversation (system prompt, example "
        "turns) with its last user turn replaced by the fluency prompt, so that only what the last turn "
        "itself adds (a listed word, the list's commas) counts as copied, not the examples' style",
    )
    fluency_tokens: OptionalInt = Field(
        None, ge=1, le=8192,
        description="deal, with fluency_prompt: read it for the answer's first N tokens only (to the end of "
        "the commit block that reaches N), where the answer's form (a sentence or the request's list) is set, "
        "then rank by the request's own log-probability at no extra forward (None: the whole answer)",
    )
    prune: Bool = Field(
        True,
        description="drop candidates that cannot enter the top beams whatever the reward says",
    )
    adaptive: Bool = Field(
        True,
        description="fall back to greedy steps for a beam whose rewards are all settled",
    )

    @model_validator(mode="after")
    def _check(self) -> "SearchConfig":
        if "temperature" not in self.model_fields_set:
            # not given: the strategy's own default, so `strategy: sample` alone samples and
            # the config reports the temperature really used. Written past validate_assignment
            # (this runs on assignment too) and left out of the set fields, so a later strategy
            # change still picks its own default.
            self.__dict__["temperature"] = (SAMPLING_TEMPERATURE if self.strategy in SAMPLING_STRATEGIES
                                            else 0.0)
        elif self.strategy == "sample" and self.temperature == 0.0:
            # sampling at an explicit temperature 0 is greedy; say so instead of silently doing greedy
            raise ValueError("strategy 'sample' needs temperature > 0 (leave temperature out for 1.0)")
        if self.returns > 1 and self.strategy == "greedy":
            raise ValueError(f"strategy 'greedy' has one answer per prompt, so returns={self.returns} cannot "
                             "apply: use strategy deal (its beams), rerank, best_of_n or sample for several "
                             "answers, or returns=1")
        if self.hold_ends and not self.hold_eos:
            raise ValueError(f"hold_ends ({self.hold_ends!r}) holds those ends with end-of-sequence: it needs "
                             "hold_eos: true")
        if self.requested_logprob_drop is not None and (
                self.max_logprob_drop is None or self.requested_logprob_drop < self.max_logprob_drop):
            # it only loosens max_logprob_drop for requested tokens: without that bound, or below it,
            # it would change nothing, so say so instead of silently searching as before
            raise ValueError(f"requested_logprob_drop ({self.requested_logprob_drop}) loosens max_logprob_drop "
                             f"({self.max_logprob_drop}) for tokens that start a requested item: it needs "
                             "max_logprob_drop set, and at most requested_logprob_drop")
        if self.commit is not None and self.strategy == "deal" and self.commit > max(self.lookahead, 1):
            raise ValueError(
                f"commit ({self.commit}) cannot exceed lookahead ({self.lookahead}): "
                "only looked-ahead tokens can be committed"
            )
        return self

    @property
    def commit_tokens(self) -> int:
        """Tokens committed per search step."""
        if self.commit is not None:
            return self.commit
        return max(self.lookahead, 1)

    @classmethod
    def build(cls, **values: Any) -> "SearchConfig":
        """Validate ``values`` and raise ``ConfigError`` naming each bad field."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, prefix="search")) from None

    def updated(self, **changes: Any) -> "SearchConfig":
        """A validated copy with ``changes`` applied (``None`` values are ignored).

        Only the fields set so far are carried over, so a value filled in from a default
        (the strategy's temperature) stays a default in the copy."""
        merged = self.model_dump(exclude_unset=True)
        merged.update({k: v for k, v in changes.items() if v is not None})
        return SearchConfig.build(**merged)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        value = err.get("input")
        shown = f" (got {value!r})" if not isinstance(value, dict) and err["type"] != "missing" else ""
        lines.append(f"{field}: {err['msg']}{shown}")
    return "invalid search config: " + "; ".join(lines)
