"""Scoring texts with a group's rewards: checked scores, the weighted total, caching by text,
terminal rewards, and the final ranking of a group's hypotheses.

>>> from rewards import LengthReward
>>> from deal_chains.search.state import Group
>>> g = Group(prompt_row=0, rewards=[LengthReward(max_words=3)], context=RewardContext())
>>> score_texts(g, ["one two", "one two three four five six"], [True, True])[0][0]
1.0
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

from deal_chains.errors import RewardError
from deal_chains.search.state import Group, Hypothesis
from rewards.base import RewardContext, ScoreProblem, read_scores, reward_bounds, reward_name, weighted_total


def score_texts(group: Group, texts: Sequence[str], final: Sequence[bool],
                lam: float = 1.0) -> list[tuple[float, dict[str, float]]]:
    """Weighted reward of each text and its per-reward breakdown.

    Terminal rewards score only final texts; unfinished ones get the reward's upper bound
    (optimistic, so they are not ruled out before they could satisfy it). Results are
    cached by text per group: lookahead texts repeat a lot across steps. ``lam`` (the
    search's) is only checked against: ``lam * total`` must be finite (``RewardError``).
    """
    out: list[tuple[float, dict[str, float]] | None] = [None] * len(texts)
    todo: dict[tuple[str, bool], list[int]] = {}
    # without a terminal reward a text scores the same finished or not: one cache entry, so
    # the final ranking of an answer cut by the budget reuses its score from the search
    final_matters = any(getattr(r, "terminal", False) for r in group.rewards)
    for i, (t, f) in enumerate(zip(texts, final)):
        todo.setdefault((t, bool(f) and final_matters), []).append(i)
    keys = list(todo)
    raw: dict[tuple[str, bool], list[float]] = {}
    missing = [k for k in keys if (("F" if k[1] else "L") + k[0]) not in group._cache]
    for k in keys:
        if k not in missing:
            raw[k] = group._cache[("F" if k[1] else "L") + k[0]]
    if missing:
        started = time.perf_counter()
        per_reward: list[list[float]] = []
        for r in group.rewards:
            name = getattr(r, "name", type(r).__name__)
            if getattr(r, "terminal", False):
                wanted = [k[0] for k in missing if k[1]]
                values = _call_reward(r, name, wanted, group.context) if wanted else []
                it = iter(values)
                hi = reward_bounds(r)[1]
                per_reward.append([next(it) if k[1] else hi for k in missing])
            else:
                per_reward.append(_call_reward(r, name, [k[0] for k in missing], group.context))
        group.reward_seconds += time.perf_counter() - started
        for j, k in enumerate(missing):
            vals = [col[j] for col in per_reward]
            raw[k] = vals
            if len(group._cache) < 50_000:
                group._cache[("F" if k[1] else "L") + k[0]] = vals
    for k, idxs in todo.items():
        vals = raw[k]
        breakdown = {reward_name(r): v for r, v in zip(group.rewards, vals)}
        total = weighted_total(group.rewards, vals)
        if not (math.isfinite(total) and math.isfinite(lam * total)):
            _overflow(group.rewards, vals, total, lam)
        for i in idxs:
            out[i] = (total, breakdown)
    return out  # type: ignore[return-value]


def _overflow(rewards: Sequence[Any], vals: Sequence[float], total: float, lam: float) -> None:
    """Raise the ``RewardError`` of a weighted total (or ``lam`` times it) that overflowed:
    each score is finite but the sum is not, and an infinite score would rank every
    candidate alike. Blamed: the reward with the largest weighted score."""
    terms = [(abs(float(getattr(r, "weight", 1.0)) * v), r, v) for r, v in zip(rewards, vals)]
    _, r, v = max(terms, key=lambda t: t[0])
    name = getattr(r, "name", type(r).__name__)
    raise RewardError(name, f"score {v!r} (weight {float(getattr(r, 'weight', 1.0))!r}) is too large: "
                            f"lam ({lam!r}) x the weighted reward total ({total!r}) is not a finite number; "
                            "scores should stay within the reward's bounds (e.g. [0, 1])")


def _call_reward(reward: Any, name: str, texts: list[str], context: RewardContext) -> list[float]:
    try:
        return read_scores(reward, texts, context)
    except RewardError:
        raise
    except ScoreProblem as exc:
        raise RewardError(name, str(exc)) from None
    except Exception as exc:  # a user reward may raise anything; name it and stop cleanly
        raise RewardError(name, f"{type(exc).__name__}: {exc}") from exc


def ranked_score(logprob: float, tokens: int, reward: float, lam: float, length_penalty: float = 0.0) -> float:
    """The search's score of a hypothesis: its (ranked) log-probability over ``tokens`` generated
    tokens (the end-of-sequence included), divided by ``tokens ** length_penalty``, plus ``lam``
    times its weighted reward.

    >>> ranked_score(-6.0, 4, 0.5, 2.0), ranked_score(-6.0, 4, 0.5, 2.0, length_penalty=1.0)
    (-5.0, -0.5)
    """
    if length_penalty:
        logprob = logprob / max(1, tokens) ** length_penalty
    return logprob + lam * reward


def finalize(group: Group, decode: Callable[[Sequence[int]], str], lam: float,
             length_penalty: float = 0.0) -> list[Hypothesis]:
    """Score every hypothesis on its full text with every reward (terminal ones included);
    return them best first, finished before unfinished (DESIGN §1: the answer is the best
    *finished* beam; an unfinished one is returned only when none finished)."""
    hyps = group.finished + group.unfinished
    if not hyps:
        return []
    texts = [decode(h.tokens) for h in hyps]
    # the breakdown reports what the text really scores, terminal rewards included, even
    # for text cut by the budget
    evaluated = score_texts(group, texts, [True] * len(hyps), lam) if group.rewards else [(0.0, {})] * len(hyps)
    for h, (tot, br) in zip(hyps, evaluated):
        h.reward = tot
        h.rewards = dict(br)
        h.score = ranked_score(h.ranked_logprob, len(h.tokens) + h.finished, tot, lam, length_penalty)
    return best_first(hyps)


def best_first(hyps: Sequence[Hypothesis]) -> list[Hypothesis]:
    """The answer order: finished hypotheses before unfinished ones, each by score (ties keep
    their order); the first is the answer."""
    return sorted(hyps, key=lambda h: (not h.finished, -h.score))
