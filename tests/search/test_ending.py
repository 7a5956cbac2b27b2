"""Where an answer may end: the end-of-sequence candidates inside a rollout, and holding the end."""

from __future__ import annotations

import doctest

import torch

from deal_chains.search import ending


def test_module_examples_run():
    assert doctest.testmod(ending).failed == 0


def test_ends_here_follows_the_first_token_rule():
    # rows: the end second (0.5 nats down); the end fourth; the end greedy; a row already ended
    logits = torch.tensor([[2.0, 1.5, 0.0, -1.0],
                           [3.0, -2.0, 2.5, 2.0],
                           [0.0, 4.0, 1.0, 0.0],
                           [2.0, 1.9, 0.0, 0.0]])
    lp = torch.log_softmax(logits, dim=-1)
    ended = torch.tensor([False, False, False, True])
    eos = torch.tensor([1])
    found = ending.ends_here(lp, lp.argmax(-1), ended, eos, (2, None))
    assert [r for r, _ in found] == [0]  # row 1: not in the top 2; row 2: the rollout ends there itself
    assert found[0][1] == lp[0, 1].item()
    assert [r for r, _ in ending.ends_here(lp, lp.argmax(-1), ended, eos, (4, None))] == [0, 1]
    # within max_logprob_drop of the likeliest only: 0.5 and 5 nats down
    assert [r for r, _ in ending.ends_here(lp, lp.argmax(-1), ended, eos, (4, 1.0))] == [0]
    # a held end is never a candidate: the same row, owing 3 tokens with 10 left, and owing none
    same = logits[[0, 0]]
    held = torch.log_softmax(ending.hold_eos(same, [3, 0], [10, 10], frozenset({1})), dim=-1)
    assert [r for r, _ in ending.ends_here(held, held.argmax(-1), torch.tensor([False, False]), eos, (4, None))] == [1]



def test_rollout_owed_rereads_a_rollout_as_its_text_grows():
    from types import SimpleNamespace

    from deal_chains.search.state import Group
    from rewards import KeywordCoverage
    from rewards.base import RewardContext

    words = ["the", "dog", "ran", "ball", "."]
    group = Group(prompt_row=0, rewards=[KeywordCoverage(["dog", "ball"])], context=RewardContext())
    state = SimpleNamespace(rows=SimpleNamespace(tokens=[[0]], group=[0]), groups=[group],
                            decode=lambda ids: " ".join(words[i] for i in ids))
    # two rollouts of the one row: "the dog ran ball", "the ran ran ran"
    toks = torch.tensor([[1, 2, 3], [2, 2, 2]])
    start = group.tokens_owed("the")
    assert start > 0
    after_one = ending.rollout_owed(state, [0, 0], toks, 1, [start, start])
    assert after_one[0] < start and after_one[1] == start  # "dog" is in the first
    assert ending.rollout_owed(state, [0, 0], toks, 3, after_one) == [0, start]  # and then "ball"
    # a paid debt is not re-read, nor the debt of a rollout that has ended
    assert ending.rollout_owed(state, [0, 0], toks, 3, [0, 0]) == [0, 0]
    assert ending.rollout_owed(state, [0, 0], toks, 3, after_one, ended=[True, False]) == [after_one[0], start]


def test_hold_eos_masks_held_rows_only_and_lets_a_row_that_may_only_end_end():
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.5],
                           [1.0, 2.0, 3.0, 0.5],
                           [1.0, 2.0, 3.0, 0.5],
                           [float("-inf"), 4.0, float("-inf"), 1.0]])
    held = frozenset({1, 3, 99})  # an id past the vocabulary is ignored
    # row 0 owes 2 of 10 tokens: held; row 1 owes nothing; row 2 owes more than its budget;
    # row 3 (a hard constraint's finished document) may only end: it still ends
    out = ending.hold_eos(logits, [2, 0, 5, 1], [10, 10, 4, 10], held)
    inf = float("-inf")
    assert out[0].tolist() == [1.0, inf, 3.0, inf]
    assert out[1].tolist() == out[2].tolist() == [1.0, 2.0, 3.0, 0.5]
    assert out[3].tolist() == logits[3].tolist()
    assert logits[0, 1] == 2.0  # not written into
    # without a hard constraint no row can be stuck: the check is skipped, in place as asked
    free = logits[:3].clone()
    same = ending.hold_eos(free, [2, 0, 5], [10, 10, 4], held, may_stick=False, inplace=True)
    assert same is free and same.tolist() == out[:3].tolist()
