"""rewards.base: the one weighted total and its range, shared by the search and WeightedSum."""

from __future__ import annotations

import doctest
import math

import rewards.base
from rewards import CallableReward, LengthReward, WeightedSum
from rewards.base import weighted_range, weighted_total


def test_weighted_range_bounds_every_weighted_total():
    rs = [LengthReward(max_words=3, weight=2.0), CallableReward(lambda t: 0.5, name="c", weight=-3.0,
                                                                bounds=(-1.0, 1.0))]
    lo, hi = weighted_range(rs)
    assert (lo, hi) == (-3.0, 5.0)
    for scores in ([0.0, -1.0], [1.0, 1.0], [0.0, 1.0], [1.0, -1.0]):
        assert lo <= weighted_total(rs, scores) <= hi
    assert weighted_total(rs, [1.0, -1.0]) == hi and weighted_total(rs, [0.0, 1.0]) == lo


def test_a_zero_weight_reward_adds_nothing_even_when_unbounded():
    unbounded = CallableReward(lambda t: 0.0, name="free", weight=0.0, bounds=(-math.inf, math.inf))
    assert weighted_range([LengthReward(max_words=3), unbounded]) == (0.0, 1.0)


def test_weighted_sum_bounds_are_the_weighted_range_over_the_total_weight():
    a = LengthReward(max_words=3, name="a", weight=3.0)
    b = CallableReward(lambda t: 0.0, name="b", weight=-1.0)
    assert WeightedSum([a, b]).bounds == (-0.25, 0.75)


def test_docstring_examples_run():
    result = doctest.testmod(rewards.base)
    assert result.attempted > 0 and result.failed == 0


def test_a_reward_that_runs_a_model_is_known_through_combinations_and_wrappers():
    from rewards import KeywordCoverage
    from rewards.base import BaseReward, reward_uses_model
    from rewards.compose import WeightedSum
    from rewards.guard import Guarded

    class Scored(BaseReward):
        name = "scored"
        uses_model = True

        def score(self, texts, context):
            return [0.5 for _ in texts]

    words = KeywordCoverage(["dog"])
    assert not reward_uses_model(words)
    assert reward_uses_model(Scored())
    assert reward_uses_model(WeightedSum([words, Scored()]))
    assert not reward_uses_model(WeightedSum([words]))
    assert reward_uses_model(Guarded(Scored(), on_error="zero"))
