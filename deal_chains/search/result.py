"""What a search returns for each prompt."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SearchStats:
    """Cost of producing one result.

    ``seconds`` is the batch's wall time divided by the prompts in it (the amortised cost
    of this result); ``batch_seconds`` is the whole batch's wall time.
    """

    seconds: float = 0.0
    batch_seconds: float = 0.0
    batch_size: int = 1
    new_tokens: int = 0
    forward_passes: int = 0
    steps: int = 0
    candidates_scored: int = 0
    greedy_steps: int = 0  # adaptive: steps where every beam's rewards were settled
    # wall time this prompt's searches spent in reward calls (not amortised: a batch's
    # prompts each report their own)
    reward_seconds: float = 0.0
    # the run seed this result was sampled with (None: a deterministic search); passing it
    # as SearchConfig.seed reproduces the result
    seed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationResult:
    """One prompt's output.

    ``finished`` is False when the token budget ran out before the model ended its answer
    (``finish_reason == "length"``): the text is then cut, and says so here rather than
    passing for a complete answer. That includes a JSON answer a search limit closed
    (``closed_by``): it may parse, but a value in it was cut.

    ``alternatives`` (with ``SearchConfig.returns`` > 1): the next best hypotheses of the same
    search, best first, each a ``GenerationResult`` of its own (its text, rewards, score,
    finish reason; no alternatives of its own). Texts are distinct from the answer's and
    from each other; fewer than ``returns - 1`` when the search found fewer distinct ones.
    """

    text: str
    token_ids: list[int]
    rewards: dict[str, float]
    reward: float  # sum(weight_i * R_i)
    score: float  # logprob / tokens ** length_penalty + lam * reward, the search's own objective
    logprob: float  # sum of token log-probabilities under the model
    finished: bool
    # "stop" | "length" | "ended" (on_tokens asked the search to end) | "error" (the grammar
    # engine failed on this answer, so the grammar does not vouch for it)
    finish_reason: str
    strategy: str
    stats: SearchStats = field(default_factory=SearchStats)
    # a JSON answer with a value a limit closed where the model would have gone on: "budget"
    # (the closing pressure near the end of the token budget) or "string_cap" (the mask's cap
    # on strings without maxLength). It may parse, but that value is cut: finish_reason is
    # then "length"
    closed_by: str | None = None
    alternatives: list["GenerationResult"] = field(default_factory=list)

    @property
    def mean_logprob(self) -> float:
        """Per-token log-probability: a fluency figure (word lists score low)."""
        return self.logprob / max(1, len(self.token_ids))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": self.text,
            "rewards": dict(self.rewards),
            "reward": self.reward,
            "score": self.score,
            "logprob": self.logprob,
            "mean_logprob": self.mean_logprob,
            "finished": self.finished,
            "finish_reason": self.finish_reason,
            "closed_by": self.closed_by,
            "strategy": self.strategy,
            "new_tokens": len(self.token_ids),
            "stats": self.stats.as_dict(),
        }
        if self.alternatives:  # only with returns > 1, so records of one answer keep their shape
            out["alternatives"] = [a.as_dict() for a in self.alternatives]
        return out
