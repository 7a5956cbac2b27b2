"""The reward protocol every reward implements.

A reward scores a batch of candidate output texts for one prompt. Scores are floats,
in [0, 1] where the reward can manage it (the search combines ``sum(weight_i * R_i)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class RewardContext:
    """What a reward may know besides the text: the prompt and the input record's variables."""

    prompt: str = ""
    variables: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Reward(Protocol):
    """A batched scorer of output texts.

    ``score`` returns one float per text. ``terminal`` rewards only make sense on finished
    text; the search scores unfinished candidates with the reward's upper bound instead.
    """

    name: str
    weight: float
    terminal: bool

    def score(self, texts: Sequence[str], context: RewardContext) -> list[float]: ...


class BaseReward:
    """Convenience base: name, weight, terminal flag, bounds and the optional
    ``settled`` hint used by adaptive search.

    Subclasses implement ``score``. ``bounds`` is the (min, max) the reward can return;
    the search uses it to prune candidates that cannot win whatever the reward says.
    """

    name: str = "reward"
    weight: float = 1.0
    terminal: bool = False
    bounds: tuple[float, float] = (0.0, 1.0)

    def score(self, texts: Sequence[str], context: RewardContext) -> list[float]:  # pragma: no cover
        raise NotImplementedError

    def settled(self, text: str, context: RewardContext) -> bool:
        """True when ``text`` already has this reward's maximum and a short continuation
        is not expected to lower it. A hint for adaptive search: the default is False
        (never skip the lookahead on this reward's account)."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, weight={self.weight})"


def reward_bounds(reward: Any) -> tuple[float, float]:
    """(min, max) of a reward's score; [0, 1] for rewards that do not say."""
    lo, hi = getattr(reward, "bounds", (0.0, 1.0))
    return float(lo), float(hi)


def reward_settled(reward: Any, text: str, context: RewardContext) -> bool:
    fn = getattr(reward, "settled", None)
    return bool(fn(text, context)) if fn is not None else False
