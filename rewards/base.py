"""The reward protocol every reward implements.

A reward scores a batch of candidate output texts for one prompt. Scores are floats,
in [0, 1] where the reward can manage it (the search combines ``sum(weight_i * R_i)``).
"""

from __future__ import annotations

import math
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
    uses_model: bool = False  # True: scoring a text runs a model (the search scores fewer extra texts)

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


def reward_tokens_owed(reward: Any, text: str, context: RewardContext) -> int:
    """At least how many more tokens ``text`` needs before ``reward`` can be met (0: met, or
    the reward cannot tell). A reward says so with a ``tokens_owed(text, context)`` method
    (``KeywordCoverage``: its missing words); the search does not let a hypothesis end while
    it owes tokens the budget could still pay (NeuroLogic's rule: no finishing while a
    constraint can still be met). A weight-0 reward owes nothing."""
    fn = getattr(reward, "tokens_owed", None)
    if fn is None or float(getattr(reward, "weight", 1.0)) == 0.0:
        return 0
    return max(0, int(fn(text, context)))


def reward_pending(reward: Any, text: str, context: RewardContext) -> list[tuple[str, float, tuple[str, ...]]]:
    """What ``reward`` still misses on ``text``, item by item: ``(key, weighted gain, forms)``,
    the weighted score it would gain if the item appeared and the surface forms that would
    place it. A reward says so with a ``pending(text, context)`` method (``KeywordCoverage``:
    its missing words); the search's completion estimate credits a hypothesis the chance
    its rollout gave those forms (NeuroLogic A*esque). Terminal and weight-0 rewards: none."""
    fn = getattr(reward, "pending", None)
    weight = float(getattr(reward, "weight", 1.0))
    if fn is None or weight == 0.0 or getattr(reward, "terminal", False):
        return []
    return [(str(key), weight * float(gain), tuple(forms)) for key, gain, forms in fn(text, context)]


def reward_uses_model(reward: Any) -> bool:
    """Whether scoring a text with ``reward`` (or any reward it combines or wraps) runs a
    model: the search then avoids scoring texts it could do without (commit by reward keeps
    the whole block instead of re-scoring each prefix)."""
    if getattr(reward, "uses_model", False):
        return True
    inner = list(getattr(reward, "children", None) or []) + [getattr(reward, "reward", None)]
    return any(reward_uses_model(r) for r in inner if r is not None)


@dataclass(frozen=True)
class FeatureRequest:
    """The hidden-state features a reward can score instead of text (``score_features``).

    ``model``: the model object whose hidden states they are; ``layer``: an index into its
    ``hidden_states`` (0 = the embeddings, -1 = the last layer); ``pooling``: how token
    states become one vector (``"response"``: the mean over the response tokens). A search
    over that same model computes these states anyway for every token it feeds; it may then
    pool them itself and call ``score_features`` instead of ``score`` (no second forward).
    """

    model: Any
    layer: int
    pooling: str = "response"


def reward_search_features(reward: Any) -> FeatureRequest | None:
    """The features ``reward`` can score instead of text, or None (text only). A reward
    offers them with a ``search_features`` attribute (a ``FeatureRequest``, or None when
    not bound to a model) and a ``score_features(features, context) -> list[float]``
    method taking a ``Tensor[n, d]`` of pooled features, one row per text."""
    request = getattr(reward, "search_features", None)
    if not isinstance(request, FeatureRequest) or not callable(getattr(reward, "score_features", None)):
        return None
    return request


def reward_name(reward: Any) -> str:
    """The name a reward reports its score under."""
    return str(getattr(reward, "name", type(reward).__name__))


def weighted_total(rewards: Sequence[Any], scores: Sequence[float]) -> float:
    """``sum(weight_i * score_i)``: what the search adds to the log-probability, times ``lam``."""
    return sum(float(getattr(r, "weight", 1.0)) * s for r, s in zip(rewards, scores))


def weighted_range(rewards: Sequence[Any]) -> tuple[float, float]:
    """(min, max) that ``weighted_total`` can take, from each reward's bounds and weight.

    >>> from rewards import LengthReward
    >>> weighted_range([LengthReward(max_words=3, weight=2), LengthReward(max_words=3, weight=-1)])
    (-1.0, 2.0)
    """
    lo = hi = 0.0
    for reward in rewards:
        w = float(getattr(reward, "weight", 1.0))
        if w:  # a weight-0 reward adds nothing, even with infinite bounds (0 * inf is NaN)
            a, b = reward_bounds(reward)
            lo += min(w * a, w * b)
            hi += max(w * a, w * b)
    return lo, hi


class ScoreProblem(ValueError):
    """A reward's output is not one finite number per text. ``kind``: ``shape`` (not a list),
    ``count``, ``type`` (not a number) or ``finite``."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


def read_scores(reward: Any, texts: Sequence[str], context: Any) -> list[float]:
    """``reward.score(texts, context)``, checked: one finite number per text, as floats.

    The one place that decides whether a score is valid (the search, ``on_error`` guards and
    composite rewards all call it). What the reward raises propagates; a bad output raises
    ``ScoreProblem``. Any iterable is read once, here (reading a generator runs the reward's
    code); a string's characters or a mapping's keys are not scores.
    """
    returned = reward.score(texts, context)
    if isinstance(returned, (str, bytes, Mapping)) or not hasattr(returned, "__iter__"):
        raise ScoreProblem("shape", f"returned {type(returned).__name__} {returned!r:.200}, not a list of scores")
    values = list(returned)
    if len(values) != len(texts):
        raise ScoreProblem("count", f"returned {len(values)} scores for {len(texts)} texts")
    out = []
    for i, v in enumerate(values):
        # numbers only (numpy and torch scalars included): a string that parses is still a bug
        if isinstance(v, (str, bytes)) or not hasattr(v, "__float__"):
            raise ScoreProblem("type", f"scores must be numbers: score {i} is {v!r:.80}, not a number")
        try:
            number = float(v)
        except (TypeError, ValueError, OverflowError):  # an int past float range, a broken __float__
            raise ScoreProblem("type", f"scores must be numbers: score {i} is {v!r:.80}, "
                                       "not a finite number") from None
        if not math.isfinite(number):
            raise ScoreProblem("finite", f"returned a non-finite score: score {i} is {number}, "
                                         "not a finite number")
        out.append(number)
    return out
