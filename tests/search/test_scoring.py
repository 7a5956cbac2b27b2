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


def test_a_text_is_scored_once_finished_or_not_unless_a_reward_is_terminal():
    from deal_chains.search.state import Group
    from rewards.base import RewardContext

    class Counting:
        def __init__(self, terminal: bool) -> None:
            self.name, self.weight, self.terminal, self.calls = f"r{terminal}", 1.0, terminal, []

        def score(self, texts, context):
            self.calls.append(list(texts))
            return [len(t) / 10 for t in texts]

    plain = Counting(terminal=False)
    group = Group(prompt_row=0, rewards=[plain], context=RewardContext())
    live = scoring.score_texts(group, ["a cut answer"], [False])
    # the final ranking of an answer the budget cut: the search's score, not a second call
    assert scoring.score_texts(group, ["a cut answer"], [True]) == live
    assert plain.calls == [["a cut answer"]]
    # a terminal reward scores only finished text: there the flag still decides
    terminal = Counting(terminal=True)
    group = Group(prompt_row=0, rewards=[plain, terminal], context=RewardContext())
    (live_total, live_parts), = scoring.score_texts(group, ["a cut answer"], [False])
    (final_total, final_parts), = scoring.score_texts(group, ["a cut answer"], [True])
    assert live_parts["rTrue"] == 1.0 and final_parts["rTrue"] == 1.2  # its upper bound, then its score
    assert terminal.calls == [["a cut answer"]]
