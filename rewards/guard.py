"""What happens when a reward fails: ``Guarded(reward, on_error=...)``.

A reward *fails* on a call when it raises, returns a number of scores other than the
number of texts, or returns a score that is not a finite number. The policy:

- ``"fail"`` (the default for every reward, guarded or not): the search stops with a
  ``RewardError`` naming the reward (``generate`` keeps every finished record);
- ``"zero"``: the texts it failed on score 0 (when a batch call raises, the texts are
  scored one by one so that only the failing ones get 0), and the run goes on;
- ``"skip"``: after its first failure the reward is switched off for the rest of the
  run: it scores 0 for every text, so it no longer changes which candidate wins.

Each failure is counted in ``failures`` and the first is logged as a warning with its
cause, so a failing reward never goes unnoticed.

>>> from rewards.callable import CallableReward
>>> flaky = CallableReward(lambda text, ctx: 1 / len(text), name="inv_len")
>>> Guarded(flaky, on_error="zero").score(["ab", ""], RewardContext())
[0.5, 0.0]
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from rewards.base import BaseReward, RewardContext, ScoreProblem, read_scores, reward_bounds, reward_settled

POLICIES = ("fail", "zero", "skip")
log = logging.getLogger("deal_chains.rewards")


class RewardFailure(RuntimeError):
    """One failed reward call (raised by ``Guarded`` under ``on_error="fail"``)."""


class Guarded(BaseReward):
    """``reward`` with a failure policy (see the module docstring). Name, weight, terminal
    flag, bounds and ``settled`` are the wrapped reward's."""

    def __init__(self, reward: Any, on_error: str = "fail") -> None:
        if on_error not in POLICIES:
            raise ValueError(f"on_error must be one of {', '.join(POLICIES)}, got {on_error!r}")
        self.reward = reward
        self.on_error = on_error
        self.name = reward.name
        self.weight = reward.weight
        self.terminal = bool(getattr(reward, "terminal", False))
        lo, hi = reward_bounds(reward)
        # a failed text scores 0, so 0 must lie inside the bounds the search prunes with
        self.bounds = (min(lo, 0.0), max(hi, 0.0)) if on_error != "fail" else (lo, hi)
        self.failures = 0
        self.disabled = False

    def _failed(self, why: str) -> None:
        self.failures += 1
        if self.failures == 1:
            log.warning("reward %r failed (%s); on_error=%s: %s", self.name, why, self.on_error,
                        "scoring 0 where it fails" if self.on_error == "zero" else "switched off for this run")
        if self.on_error == "skip":
            self.disabled = True

    def _call(self, texts: Sequence[str], context: RewardContext) -> list[float]:
        try:
            return read_scores(self.reward, texts, context)
        except ScoreProblem as exc:
            raise RewardFailure(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - any failure of user code is handled by policy
            raise RewardFailure(f"raised {type(exc).__name__}: {exc}") from exc

    def score(self, texts: Sequence[str], context: RewardContext) -> list[float]:
        texts = list(texts)
        if self.disabled:
            return [0.0] * len(texts)
        try:
            return self._call(texts, context)
        except RewardFailure as exc:
            if self.on_error == "fail":
                raise
            self._failed(str(exc))
            if self.on_error == "skip" or len(texts) == 1:
                return [0.0] * len(texts)
        out = []
        for text in texts:  # isolate the failing texts
            try:
                out.extend(self._call([text], context))
            except RewardFailure as exc:
                self.failures += 1
                log.debug("reward %r failed on one text: %s", self.name, exc)
                out.append(0.0)
        return out

    def settled(self, text: str, context: RewardContext) -> bool:
        if self.disabled:
            return True
        try:
            return reward_settled(self.reward, text, context)
        except Exception:  # noqa: BLE001 - a hint only; never settle on a failing reward
            return False

    def __repr__(self) -> str:
        return f"Guarded({self.reward!r}, on_error={self.on_error!r})"
