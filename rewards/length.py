"""Length reward: 1.0 inside a word and/or token range, a smooth decay outside it."""

from __future__ import annotations

import re
from typing import Callable, Sequence

from rewards.base import BaseReward, RewardContext

# A word: letters/digits, possibly joined by apostrophes or hyphens ("don't", "well-known").
WORD_RE = re.compile(r"\w+(?:['’-]\w+)*")

# ``settled`` wants this much room below a maximum: a few more words/tokens from the
# lookahead must not push the text over.
WORD_MARGIN = 3
TOKEN_MARGIN = 4


def count_words(text: str) -> int:
    """Number of ``WORD_RE`` matches in ``text``."""
    return sum(1 for _ in WORD_RE.finditer(text))


def _check_bound(field: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"LengthReward: {field} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"LengthReward: {field} must be non-negative, got {value}")
    return value


class _Range:
    """A [lo, hi] range on one count (either end optional) and its distance decay."""

    def __init__(self, unit: str, lo: int | None, hi: int | None, scale: float | None) -> None:
        self.unit, self.lo, self.hi, self.scale = unit, lo, hi, scale

    def score(self, count: int) -> float:
        if self.lo is not None and count < self.lo:
            d, bound = self.lo - count, self.lo
        elif self.hi is not None and count > self.hi:
            d, bound = count - self.hi, self.hi
        else:
            return 1.0
        scale = self.scale if self.scale is not None else max(1.0, 0.2 * bound)
        return 1.0 / (1.0 + (d / scale) ** 2)

    def settled(self, count: int, margin: int) -> bool:
        if self.lo is not None and count < self.lo:
            return False
        return self.hi is None or count <= self.hi - margin


class LengthReward(BaseReward):
    """Rewards a text whose length lies in a range of words and/or tokens.

    Words are ``\\w+(?:['’-]\\w+)*`` matches; tokens are counted by ``count_tokens``
    (required when a token bound is given). The score is 1.0 inside the range; at
    distance ``d`` outside it, ``1 / (1 + (d / scale)**2)``: in (0, 1), falling smoothly
    and monotonically with ``d``, and 0.5 at ``d == scale``. ``scale`` defaults to
    ``max(1, 0.2 * bound)`` of the bound that is violated (so 20% over a 50-word limit
    scores 0.5). With both word and token ranges the score is the lower of the two.

    The search scores unfinished text as it stands, so a minimum penalises every short
    candidate on the way; when only the finished length matters, set ``terminal=True``.
    """

    def __init__(
        self,
        min_words: int | None = None,
        max_words: int | None = None,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
        scale: float | None = None,
        weight: float = 1.0,
        name: str = "length",
        terminal: bool = False,
    ) -> None:
        bounds = {
            "min_words": _check_bound("min_words", min_words),
            "max_words": _check_bound("max_words", max_words),
            "min_tokens": _check_bound("min_tokens", min_tokens),
            "max_tokens": _check_bound("max_tokens", max_tokens),
        }
        if all(v is None for v in bounds.values()):
            raise ValueError(
                "LengthReward: give at least one of min_words, max_words, min_tokens, max_tokens"
            )
        for unit in ("words", "tokens"):
            lo, hi = bounds[f"min_{unit}"], bounds[f"max_{unit}"]
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"LengthReward: min_{unit} ({lo}) is greater than max_{unit} ({hi})")
        if count_tokens is None:
            for field in ("min_tokens", "max_tokens"):
                if bounds[field] is not None:
                    raise ValueError(
                        f"LengthReward: {field} needs count_tokens (a callable text -> token count)"
                    )
        elif not callable(count_tokens):
            raise ValueError("LengthReward: count_tokens must be a callable text -> int")
        if scale is not None:
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
                raise ValueError(f"LengthReward: scale must be a positive number, got {scale!r}")
            scale = float(scale)

        self.min_words, self.max_words = bounds["min_words"], bounds["max_words"]
        self.min_tokens, self.max_tokens = bounds["min_tokens"], bounds["max_tokens"]
        self.count_tokens = count_tokens
        self.scale = scale
        self._words = (
            _Range("words", self.min_words, self.max_words, scale)
            if self.min_words is not None or self.max_words is not None
            else None
        )
        self._tokens = (
            _Range("tokens", self.min_tokens, self.max_tokens, scale)
            if self.min_tokens is not None or self.max_tokens is not None
            else None
        )
        self.weight = float(weight)
        self.name = name
        self.terminal = bool(terminal)

    def _score_one(self, text: str) -> float:
        s = 1.0
        if self._words is not None:
            s = min(s, self._words.score(count_words(text)))
        if self._tokens is not None:
            s = min(s, self._tokens.score(self._count_tokens(text)))
        return s

    def _count_tokens(self, text: str) -> int:
        assert self.count_tokens is not None  # guaranteed by __init__ when a token range exists
        return int(self.count_tokens(text))

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        return [self._score_one(t) for t in texts]

    def settled(self, text: str, context: RewardContext | None = None) -> bool:
        """In range with room to spare below any maximum (3 words / 4 tokens)."""
        if self._words is not None and not self._words.settled(count_words(text), WORD_MARGIN):
            return False
        if self._tokens is not None and not self._tokens.settled(
            self._count_tokens(text), TOKEN_MARGIN
        ):
            return False
        return True

    def __repr__(self) -> str:
        parts = [
            f"{k}={getattr(self, k)}"
            for k in ("min_words", "max_words", "min_tokens", "max_tokens")
            if getattr(self, k) is not None
        ]
        return f"LengthReward({', '.join(parts)}, name={self.name!r}, weight={self.weight})"
