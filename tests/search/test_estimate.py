"""The completion estimate: the chance a candidate's rollout gave what its rewards still miss."""

from __future__ import annotations

import math

import pytest
import torch

from deal_chains.search.estimate import CompletionEstimate, first_token_variants, pending_items
from deal_chains.search.state import Group
from rewards import KeywordCoverage, RewardContext


def _encode(text: str) -> list[int]:
    # one token per character: a word's first token is its first character (with the space)
    return [ord(ch) for ch in text]


def test_the_first_tokens_of_a_form_cover_spacing_and_capitals():
    assert first_token_variants("ice cream") == (" ice cream", "ice cream", " Ice cream", "Ice cream")
    est = CompletionEstimate(_encode)
    assert set(est.first_ids(["dog"])) == {ord(" "), ord("d"), ord("D")}


def test_credit_is_gain_times_the_best_chance_of_each_missing_word():
    kw = KeywordCoverage(["dog", "ball", "park"], inflections=False)
    group = Group(prompt_row=0, rewards=[kw], context=RewardContext())
    est = CompletionEstimate(lambda t: [{"dog": 10, "Dog": 11, "ball": 20, "Ball": 21, "park": 30,
                                         "Park": 31}[t.strip()]])
    step = est.start([group], parents=[0, 0], parent_group=[0], parent_text=lambda p: "The", device=torch.device("cpu"))
    vocab = 40
    first = torch.full((2, vocab), -20.0)
    first[0, 20] = math.log(0.3)  # row 0: "ball" likely next at the first position
    second = torch.full((2, vocab), -20.0)
    second[0, 21] = math.log(0.6)  # ... and "Ball" more likely one token later
    second[1, 30] = math.log(0.5)  # row 1: "park"
    live = torch.tensor([True, True])
    step.observe(first, live)
    step.observe(second, live)
    # row 0's lookahead text already has "dog": only ball and park are credited
    items = pending_items(group, "The dog")
    assert step.credit(0, items) == pytest.approx(0.6 / 3 + math.exp(-20) / 3)
    assert step.credit(1, items) == pytest.approx(0.5 / 3 + math.exp(-20) / 3)
    # a text with every word has nothing left to credit
    assert step.credit(0, pending_items(group, "dog ball park")) == 0.0


def test_an_ended_rollout_gains_nothing_after_its_end():
    kw = KeywordCoverage(["dog"], inflections=False)
    group = Group(prompt_row=0, rewards=[kw], context=RewardContext())
    est = CompletionEstimate(lambda t: [7])
    step = est.start([group], parents=[0], parent_group=[0], parent_text=lambda p: "", device=torch.device("cpu"))
    lp = torch.full((1, 10), -30.0)
    lp[0, 7] = 0.0
    step.observe(lp, torch.tensor([False]))
    assert step.credit(0, pending_items(group, "")) == pytest.approx(0.0, abs=1e-12)


def test_the_search_reports_the_true_reward_not_the_estimate(tiny_lm):
    from deal_chains import DeALEngine, SearchConfig

    engine = DeALEngine(tiny_lm)
    words = ["ab", "cd"]
    cfg = dict(strategy="deal", top_k=4, beam=2, lookahead=3, max_new_tokens=12)
    [with_estimate] = engine.generate(["hello world"], [KeywordCoverage(words, inflections=False)],
                                      SearchConfig(**cfg, estimate=True))
    assert with_estimate.rewards["keywords"] == KeywordCoverage(words, inflections=False).score(
        [with_estimate.text])[0]
