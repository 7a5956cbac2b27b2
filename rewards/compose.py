"""Composite rewards: weighted sums, rescaling, thresholds and gates over other rewards.

>>> from rewards import KeywordCoverage, LengthReward
>>> from rewards.compose import AllOf, Gated, Normalized, Threshold, WeightedSum
>>> kw = KeywordCoverage(["dog", "park"], inflections=False, weight=3)
>>> short = LengthReward(max_words=4, scale=1, weight=1)
>>> both = WeightedSum([kw, short])        # (3 * kw + 1 * short) / 4
>>> both.score(["A dog in the park.", "A dog."], None)
[0.875, 0.625]
>>> both.breakdown(["A dog."], None)
[{'keywords': 0.5, 'length': 1.0}]
>>> AllOf([kw, short]).score(["A dog in the park.", "A dog."], None)  # fraction met
[0.5, 0.5]
>>> Gated(Threshold(short, 1.0), kw).score(["A dog in the park.", "A dog."], None)
[0.0, 0.5]
>>> Normalized(kw, lo=0.5, hi=1.0).score(["dog", "dog park", "cat"], None)
[0.0, 1.0, 0.0]

A composite is itself a reward: it has a ``name`` (its breakdown keys are its children's
names, which must therefore differ), a ``weight`` (its own, in the search's sum; the
single-child wrappers default to the child's), ``bounds`` derived from its children's
and a ``settled`` hint derived from theirs. It is ``terminal`` only when all its children
are (or when told so): the search cannot see inside a composite, so in a mixed one the
terminal children are scored on unfinished text too. Keep such rewards at the top level
of the reward list, or pass ``terminal=True`` to score the whole composite on finished
text only.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from rewards.base import (BaseReward, RewardContext, ScoreProblem, read_scores, reward_bounds, reward_settled,
                          weighted_range)


def _child_name(child: Any) -> str:
    return str(getattr(child, "name", type(child).__name__))


def _check_child(child: Any, owner: str, where: str) -> Any:
    if isinstance(child, type) or not callable(getattr(child, "score", None)):
        raise TypeError(f"{owner}: {where} must be a reward (an object with score(texts, context)), "
                        f"got {child!r:.80}")
    return child


def _finite(value: Any, owner: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {field} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {field} must be finite, got {value}")
    return value


def _clip01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


class _Composite(BaseReward):
    """Shared plumbing: children, their scores (checked), breakdown, terminal and name."""

    children: list[Any]

    def _setup(self, children: Sequence[Any], name: str, weight: float, terminal: bool | None) -> None:
        owner = type(self).__name__
        names = [_child_name(c) for c in children]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{owner}: children share the name(s) {dupes}; give each a distinct name=")
        self.children = list(children)
        self.name = str(name)
        self.weight = float(weight)
        self.terminal = (
            all(bool(getattr(c, "terminal", False)) for c in self.children) if terminal is None else bool(terminal)
        )

    def _scores(self, child: Any, texts: list[str], context: RewardContext) -> list[float]:
        """``child.score`` on ``texts``, checked: one number per text."""
        if not texts:
            return []
        owner, name = f"{type(self).__name__} {self.name!r}", _child_name(child)
        try:
            return read_scores(child, texts, context)
        except ScoreProblem as exc:
            if exc.kind == "type":
                raise TypeError(f"{owner}: child {name!r} returned non-numeric scores: {exc}") from None
            raise ValueError(f"{owner}: child {name!r} {exc}") from None

    def _columns(self, texts: Sequence[str], context: RewardContext | None) -> tuple[list[str], list[list[float]]]:
        texts = list(texts)
        context = context if context is not None else RewardContext()
        return texts, [self._scores(c, texts, context) for c in self.children]

    def breakdown(self, texts: Sequence[str], context: RewardContext | None = None) -> list[dict[str, float]]:
        """Each child's own (unweighted) score per text, keyed by the child's name."""
        texts, cols = self._columns(texts, context)
        names = [_child_name(c) for c in self.children]
        return [dict(zip(names, row)) for row in zip(*cols)] if cols else [{} for _ in texts]

    def __repr__(self) -> str:
        kids = ", ".join(repr(c) for c in self.children)
        return f"{type(self).__name__}([{kids}], name={self.name!r}, weight={self.weight})"


class WeightedSum(_Composite):
    """``sum(w_i * R_i) / sum(|w_i|)``, each ``w_i`` being child i's ``weight``.

    >>> from rewards.callable import CallableReward
    >>> a = CallableReward(lambda t: 1.0, name="a", weight=3)
    >>> b = CallableReward(lambda t: 0.0, name="b", weight=1)
    >>> s = WeightedSum([a, b])
    >>> s.score(["x"], None), s.bounds
    ([0.75], (0.0, 1.0))

    Dividing by the total absolute weight keeps the result in the children's range
    (in [0, 1] for [0, 1] children, whatever the weights). A negative weight makes a
    child a penalty. ``bounds`` follow from the children's. ``settled`` when every
    positive-weight child is settled and no child has a negative weight (a settled
    child sits at its maximum, the worst place for a penalty).
    """

    def __init__(self, rewards: Sequence[Any], name: str = "sum", weight: float = 1.0,
                 *, terminal: bool | None = None) -> None:
        rewards = [_check_child(r, "WeightedSum", f"rewards[{i}]") for i, r in enumerate(rewards)]
        if not rewards:
            raise ValueError("WeightedSum: rewards is empty; give at least one reward")
        self._setup(rewards, name, weight, terminal)
        if self._total() == 0:
            raise ValueError("WeightedSum: every child has weight 0; nothing to sum")

    def _weights(self) -> list[float]:
        return [float(getattr(c, "weight", 1.0)) for c in self.children]

    def _total(self) -> float:
        return sum(abs(w) for w in self._weights())

    @property
    def bounds(self) -> tuple[float, float]:  # type: ignore[override]
        lo, hi = weighted_range(self.children)
        total = self._total()
        return lo / total, hi / total

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        texts, cols = self._columns(texts, context)
        weights, total = self._weights(), self._total()
        return [sum(w * s for w, s in zip(weights, row)) / total for row in zip(*cols)]

    def settled(self, text: str, context: RewardContext | None = None) -> bool:
        context = context if context is not None else RewardContext()
        pairs = list(zip(self.children, self._weights()))
        if any(w < 0 for _, w in pairs):
            return False
        return all(reward_settled(c, text, context) for c, w in pairs if w > 0)


class Normalized(_Composite):
    """Rescale a reward with a known range ``[lo, hi]`` to [0, 1] (clipped by default).

    >>> from rewards.callable import CallableReward
    >>> logit = CallableReward(lambda t: float(len(t)), name="rm", bounds=(-10, 10))
    >>> Normalized(logit, lo=-4, hi=4).score(["", "ab", "abcdefghij"], None)
    [0.5, 0.75, 1.0]

    For a reward model's logits, say. ``name`` and ``weight`` default to the child's;
    ``settled`` is the child's.
    """

    def __init__(self, reward: Any, lo: float, hi: float, clip: bool = True, *, name: str | None = None,
                 weight: float | None = None, terminal: bool | None = None) -> None:
        _check_child(reward, "Normalized", "reward")
        self.lo = _finite(lo, "Normalized", "lo")
        self.hi = _finite(hi, "Normalized", "hi")
        if not self.lo < self.hi:
            raise ValueError(f"Normalized: lo ({self.lo}) must be less than hi ({self.hi})")
        self.clip = bool(clip)
        self._setup([reward], name if name is not None else _child_name(reward),
                    weight if weight is not None else getattr(reward, "weight", 1.0), terminal)

    def _map(self, x: float) -> float:
        y = (x - self.lo) / (self.hi - self.lo)
        return _clip01(y) if self.clip else y

    @property
    def bounds(self) -> tuple[float, float]:  # type: ignore[override]
        if self.clip:
            return 0.0, 1.0
        a, b = reward_bounds(self.children[0])
        return self._map(a), self._map(b)

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        _, (col,) = self._columns(texts, context)
        return [self._map(s) for s in col]

    def settled(self, text: str, context: RewardContext | None = None) -> bool:
        return reward_settled(self.children[0], text, context if context is not None else RewardContext())

    def __repr__(self) -> str:
        return f"Normalized({self.children[0]!r}, lo={self.lo}, hi={self.hi}, name={self.name!r})"


class Threshold(_Composite):
    """1.0 when the child scores at least ``min``, else 0.0 (``soft``: ``score / min``).

    >>> from rewards.callable import CallableReward
    >>> r = CallableReward(lambda t: len(t) / 10, name="chars")
    >>> Threshold(r, 0.5).score(["abc", "abcdef"], None)
    [0.0, 1.0]
    >>> Threshold(r, 0.5, soft=True).score(["abc", "abcdef"], None)
    [0.6, 1.0]

    ``soft`` needs ``min > 0`` (and scores below 0 count as 0). ``name`` and ``weight``
    default to the child's. ``settled`` when the child is settled and its maximum meets
    ``min``.
    """

    def __init__(self, reward: Any, min: float, soft: bool = False, *, name: str | None = None,  # noqa: A002
                 weight: float | None = None, terminal: bool | None = None) -> None:
        _check_child(reward, "Threshold", "reward")
        self.min = _finite(min, "Threshold", "min")
        self.soft = bool(soft)
        if self.soft and self.min <= 0:
            raise ValueError(f"Threshold: soft=True needs min > 0, got {self.min}")
        self._setup([reward], name if name is not None else _child_name(reward),
                    weight if weight is not None else getattr(reward, "weight", 1.0), terminal)
        self.bounds = (0.0, 1.0)

    def _gate(self, s: float) -> float:
        if s >= self.min:
            return 1.0
        return _clip01(s / self.min) if self.soft else 0.0

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        _, (col,) = self._columns(texts, context)
        return [self._gate(s) for s in col]

    def settled(self, text: str, context: RewardContext | None = None) -> bool:
        child = self.children[0]
        return reward_bounds(child)[1] >= self.min and reward_settled(
            child, text, context if context is not None else RewardContext()
        )

    def __repr__(self) -> str:
        return f"Threshold({self.children[0]!r}, min={self.min}, soft={self.soft}, name={self.name!r})"


def _thresholds(value: Sequence[float] | float, n: int, owner: str) -> list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [_finite(value, owner, "thresholds")] * n
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{owner}: thresholds must be a number or a list of numbers, got {value!r}")
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{owner}: {len(values)} thresholds for {n} rewards; give one per reward or a single number")
    return [_finite(v, owner, f"thresholds[{i}]") for i, v in enumerate(values)]


class _Gate(_Composite):
    """AllOf / AnyOf: children with one threshold each."""

    def __init__(self, rewards: Sequence[Any], thresholds: Sequence[float] | float = 1.0, *,
                 name: str | None = None, weight: float = 1.0, terminal: bool | None = None) -> None:
        owner = type(self).__name__
        rewards = [_check_child(r, owner, f"rewards[{i}]") for i, r in enumerate(rewards)]
        if not rewards:
            raise ValueError(f"{owner}: rewards is empty; give at least one reward")
        self.thresholds = _thresholds(thresholds, len(rewards), owner)
        self._setup(rewards, name if name is not None else self._default_name, weight, terminal)
        self.bounds = (0.0, 1.0)

    _default_name = "gate"

    def met(self, texts: Sequence[str], context: RewardContext | None = None) -> list[list[bool]]:
        """Per text, one flag per child: does it meet its threshold?"""
        _, cols = self._columns(texts, context)
        return [[s >= t for s, t in zip(row, self.thresholds)] for row in zip(*cols)]

    def _can_meet(self, i: int) -> bool:
        return reward_bounds(self.children[i])[1] >= self.thresholds[i]

    def __repr__(self) -> str:
        kids = ", ".join(repr(c) for c in self.children)
        return f"{type(self).__name__}([{kids}], thresholds={self.thresholds}, name={self.name!r})"


class AllOf(_Gate):
    """1.0 when every child meets its threshold, else the fraction that do.

    >>> from rewards import KeywordCoverage
    >>> dog, cat = KeywordCoverage(["dog"], name="dog"), KeywordCoverage(["cat"], name="cat")
    >>> AllOf([dog, cat]).score(["dog and cat", "a dog", "a cow"], None)
    [1.0, 0.5, 0.0]

    ``thresholds``: one number for all children or one per child (default 1.0). The
    fraction keeps partial progress visible to the search. Children's weights are
    ignored. ``settled`` when every child is settled at a maximum that meets its
    threshold.
    """

    _default_name = "all_of"

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        return [sum(row) / len(row) for row in self.met(texts, context)]

    def settled(self, text: str, context: RewardContext | None = None) -> bool:
        context = context if context is not None else RewardContext()
        return all(self._can_meet(i) and reward_settled(c, text, context) for i, c in enumerate(self.children))


class AnyOf(_Gate):
    """1.0 when some child meets its threshold, else the best child's progress towards it.

    >>> from rewards import KeywordCoverage
    >>> kw = KeywordCoverage(["red", "green", "blue", "white"], name="colours")
    >>> AnyOf([kw], thresholds=0.5).score(["red and blue", "red", "none"], None)
    [1.0, 0.5, 0.0]

    A child's progress is ``(score - lo) / (threshold - lo)`` with ``lo`` its lower
    bound (clipped to [0, 1]; 0 when ``lo`` is infinite), so a text that meets no
    threshold still scores how close it came. Children's weights are ignored.
    ``settled`` when some child is settled at a maximum that meets its threshold.
    """

    _default_name = "any_of"

    def _progress(self, i: int, s: float) -> float:
        t = self.thresholds[i]
        if s >= t:
            return 1.0
        lo = reward_bounds(self.children[i])[0]
        if not math.isfinite(lo) or t <= lo:
            return 0.0
        return _clip01((s - lo) / (t - lo))

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        _, cols = self._columns(texts, context)
        return [max(self._progress(i, s) for i, s in enumerate(row)) for row in zip(*cols)]

    def settled(self, text: str, context: RewardContext | None = None) -> bool:
        context = context if context is not None else RewardContext()
        return any(self._can_meet(i) and reward_settled(c, text, context) for i, c in enumerate(self.children))


class Gated(_Composite):
    """``reward``'s score where ``gate`` scores at least ``threshold``, else ``reward``'s minimum.

    >>> from rewards.callable import CallableReward
    >>> is_json = CallableReward(lambda t: t.startswith("{") and t.endswith("}"), name="json")
    >>> length = CallableReward(lambda t: min(1.0, len(t) / 10), name="len")
    >>> Gated(is_json, length).score(['{"a": 1}', "hello"], None)
    [0.8, 0.0]

    E.g. "valid JSON, then the reward model's score". The minimum is the lower bound of
    ``reward`` (0 for a [0, 1] reward; it must be finite). ``reward`` is scored only on
    the texts that pass the gate. ``name`` and ``weight`` default to ``reward``'s.
    ``settled`` when the gate is settled at a maximum that meets ``threshold`` and
    ``reward`` is settled.
    """

    def __init__(self, gate: Any, reward: Any, threshold: float = 1.0, *, name: str | None = None,
                 weight: float | None = None, terminal: bool | None = None) -> None:
        _check_child(gate, "Gated", "gate")
        _check_child(reward, "Gated", "reward")
        self.threshold = _finite(threshold, "Gated", "threshold")
        self.gate, self.reward = gate, reward
        lo, _ = reward_bounds(reward)
        if not math.isfinite(lo):
            raise ValueError(f"Gated: reward {_child_name(reward)!r} has no finite lower bound to score a closed "
                             "gate with; wrap it in Normalized")
        self._setup([gate, reward], name if name is not None else _child_name(reward),
                    weight if weight is not None else getattr(reward, "weight", 1.0), terminal)

    @property
    def bounds(self) -> tuple[float, float]:  # type: ignore[override]
        return reward_bounds(self.reward)

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        texts = list(texts)
        context = context if context is not None else RewardContext()
        gate = self._scores(self.gate, texts, context)
        open_ = [i for i, g in enumerate(gate) if g >= self.threshold]
        inner = self._scores(self.reward, [texts[i] for i in open_], context)
        out = [reward_bounds(self.reward)[0]] * len(texts)
        for i, s in zip(open_, inner):
            out[i] = s
        return out

    def settled(self, text: str, context: RewardContext | None = None) -> bool:
        context = context if context is not None else RewardContext()
        return (
            reward_bounds(self.gate)[1] >= self.threshold
            and reward_settled(self.gate, text, context)
            and reward_settled(self.reward, text, context)
        )

    def __repr__(self) -> str:
        return f"Gated({self.gate!r}, {self.reward!r}, threshold={self.threshold}, name={self.name!r})"
