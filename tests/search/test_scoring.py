"""The search's score and the final ranking (``search/scoring.py``)."""

from __future__ import annotations

import doctest

import pytest

from deal_chains.search import scoring


def test_module_examples_run():
    assert doctest.testmod(scoring).failed == 0


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_ranked_score_divides_the_log_probability_by_tokens_to_the_alpha(alpha):
    assert scoring.ranked_score(-8.0, 4, 0.25, 4.0, alpha) == pytest.approx(-8.0 / 4 ** alpha + 1.0)
    # no tokens (an empty answer's end alone counts as one): never a division by zero
    assert scoring.ranked_score(-2.0, 0, 0.0, 4.0, alpha) == -2.0
