"""The state of a DeAL tree search: groups (one search tree each), their live rows, and what
one step passes from proposing to committing.

>>> TreeParams(top_k=4, beam=2, lookahead=4, commit=4, lam=48.0, max_new_tokens=32).prune
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from deal_chains.search.constraints import CompiledConstraint
from deal_chains.search.kv import KVBatch
from rewards.base import RewardContext, reward_tokens_owed, weighted_range


@dataclass
class Hypothesis:
    """One answer (finished) or a live beam cut by the budget (unfinished), with its score."""

    tokens: list[int]  # generated tokens, EOS excluded
    logprob: float  # includes the EOS token's log-probability when finished
    finished: bool
    score: float = float("-inf")
    rewards: dict[str, float] = field(default_factory=dict)
    reward: float = 0.0
    # the log-probability the score ranks by (None: ``logprob``): under the fluency prompt
    # when the search has one (``SearchConfig.fluency_prompt``)
    fluency: float | None = None

    @property
    def ranked_logprob(self) -> float:
        return self.logprob if self.fluency is None else self.fluency


@dataclass
class Group:
    """One search tree and its bookkeeping."""

    prompt_row: int  # row of the prefill batch holding this group's prompt
    rewards: Sequence[Any]
    context: RewardContext
    generator: torch.Generator | None = None
    constraint: CompiledConstraint | None = None  # hard constraint (token mask)
    finished: list[Hypothesis] = field(default_factory=list)
    unfinished: list[Hypothesis] = field(default_factory=list)  # cut by the token budget
    done: bool = False
    steps: int = 0
    forward_passes: int = 0
    candidates_scored: int = 0
    greedy_steps: int = 0
    reward_seconds: float = 0.0  # wall time spent in this group's reward calls
    _cache: dict[str, list[float]] = field(default_factory=dict)

    def tokens_owed(self, text: str) -> int:
        """The most tokens any of the group's rewards still needs on ``text`` (0: none)."""
        return max((reward_tokens_owed(r, text, self.context) for r in self.rewards), default=0)

    def reward_range(self) -> tuple[float, float]:
        """(min, max) of the weighted reward total this group's texts can score."""
        return weighted_range(self.rewards)


@dataclass
class TreeParams:
    """The search settings one tree search runs with (from ``SearchConfig``)."""

    top_k: int
    beam: int
    lookahead: int
    commit: int
    lam: float
    max_new_tokens: int
    temperature: float = 0.0
    prune: bool = True
    adaptive: bool = True
    use_rewards: bool = True  # False: plain beam search by log-probability (rerank's proposals)
    # end-of-sequence competes only when no reward owes tokens the budget could still pay
    hold_eos: bool = False
    # tokens held with end-of-sequence by hold_eos (those of SearchConfig.hold_ends)
    held_ids: frozenset[int] = frozenset()
    # no token that would repeat an n-gram of this size in the row's own tokens (None: off)
    no_repeat_ngram: int | None = None
    # candidates only within this many nats of the row's likeliest token (None: top_k alone)
    max_logprob_drop: float | None = None
    # max_logprob_drop for a token that starts a requested item (None: max_logprob_drop)
    requested_logprob_drop: float | None = None
    # the answer's first step: its candidates and bound (None: top_k / max_logprob_drop)
    first_top_k: int | None = None
    first_max_logprob_drop: float | None = None
    # commit per beam by the reward: the whole block where the candidates' rewards agree, else
    # only up to where the chosen rollout's reward gain is realized (at least one token)
    commit_by_reward: bool = False
    # the score's log-probability over (tokens ** length_penalty); 0: the sum
    length_penalty: float = 0.0
    # end-of-sequence a candidate at every rollout token (by the first-token rule), not only greedy
    end_in_lookahead: bool = False
    # credit live candidates the chance their rollout gave what their rewards still miss (A*-style)
    estimate: bool = False

    def width(self, first: bool) -> tuple[int, float | None]:
        """(candidates, max_logprob_drop) of a row at the answer's first step or later."""
        if not first:
            return self.top_k, self.max_logprob_drop
        drop = self.max_logprob_drop if self.first_max_logprob_drop is None else self.first_max_logprob_drop
        return self.first_top_k or self.top_k, drop

    @property
    def widest(self) -> int:
        """The most candidates one row may have at any step."""
        return max(self.top_k, self.first_top_k or 0)


@dataclass
class Rows:
    """The live beams of every group, one row each (parallel lists, row order = cache rows)."""

    group: list[int]
    tokens: list[list[int]]
    logprob: list[float]
    settled: list[bool]
    states: list[Any] = field(default_factory=list)  # grammar state per row (None: unconstrained)
    # the log-probability the score ranks by (= logprob without a fluency prompt)
    fluency: list[float] = field(default_factory=list)
    # tokens each row committed this step (empty: every row the step's ``commit``)
    advance: list[int] = field(default_factory=list)


@dataclass
class Step:
    """What one step does: tokens to commit (``commit``), forwards to run (``forwards``: the
    lookahead, or the commit alone when the rewards cannot change the choice), budget left."""

    commit: int
    forwards: int
    remaining: int


@dataclass
class Proposals:
    """First tokens of the candidates: ``parent[i]`` is the row candidate i extends."""

    parent: list[int]
    token: list[int]
    logprob: list[float]
    live_groups: list[int]
    ranked: list[float] = field(default_factory=list)  # first token's ranked log-probability


@dataclass
class Rollout:
    """The candidates rolled out greedily together: tokens and their log-probabilities, the
    logits after each token of the commit window, and (under a hard constraint) each row's grammar state."""

    tokens: list[list[int]]
    logprobs: list[list[float]]
    fed: int  # forwards run
    # logits after each token of the commit window (``window[j]``: after token j); a row that
    # commits ``a`` tokens goes on from ``window[a - 1]``
    window: list[torch.Tensor]
    states: list[Any]
    constraints: list[Any]
    consumed: list[int]  # grammar steps taken per row (rolled back past the commit)
    dead: list[bool]  # a token the grammar refused
    # per token, the log-probability the score ranks by (empty: ``logprobs``)
    ranked: list[list[float]] = field(default_factory=list)
    # ends inside the rollout (``end_in_lookahead``): (row, tokens before the end, the end's log-probability)
    exits: list[tuple[int, int, float]] = field(default_factory=list)


@dataclass
class Candidates:
    """Each candidate's committed tokens and log-probability, whether it finished, and the
    text (committed + lookahead) its rewards score."""

    by_group: dict[int, list[int]]
    parent: list[int]  # the row each candidate extends
    tokens: list[list[int]]
    finished: list[bool]
    logprob: list[float]
    fluency: list[float]  # the log-probability the score ranks by (= logprob without a fluency prompt)
    look: list[list[int]]
    look_ended: list[bool]
    scores: list[float] = field(default_factory=list)
    reward: list[float | None] = field(default_factory=list)  # weighted R of ``look`` (None: not scored)
    # the rollout (cache) row each candidate's tokens were fed in: its own index, except for
    # the ends found inside a rollout (``Rollout.exits``), which are finished and keep no row
    row: list[int] = field(default_factory=list)


@dataclass
class SearchState:
    """Everything one ``run_tree_search`` call carries from step to step."""

    kv: KVBatch
    groups: list[Group]
    params: TreeParams
    eos_ids: frozenset[int]
    decode: Callable[[Sequence[int]], str]
    rows: Rows
    logits: torch.Tensor
    ranges: list[tuple[float, float]]
    any_reward: bool
    constrained: bool
    generated: int = 0  # tokens committed by the shortest live row
    # per live row: tokens its rewards still need (``hold_eos``), set by ``propose``
    owed: list[int] = field(default_factory=list)
    estimator: Any = None  # CompletionEstimate when params.estimate (and the engine gave an encoder)
    step_estimate: Any = None  # this step's StepEstimate, set by ``roll_out``
    fluency: Any = None  # FluencyStream when the search ranks by a fluency prompt
    # per group, the tokens that start an item its rewards ask for (fluency_spare_requested,
    # requested_logprob_drop); None when neither is on
    requested: list[frozenset[int]] | None = None
    features: Any = None  # SearchFeatures when a group's rewards score the search's hidden states

    @property
    def eos_main(self) -> int:
        return min(self.eos_ids)

    @property
    def held_ids(self) -> frozenset[int]:
        """What ``hold_eos`` holds: end-of-sequence and the tokens of ``hold_ends``."""
        return self.eos_ids | self.params.held_ids
