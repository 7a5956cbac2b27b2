"""``no_repeat_ngram``: the answer never repeats one of its own n-grams."""

from __future__ import annotations

import doctest

import pytest
import torch
from search_fixtures import PROMPTS, REWARDS  # noqa: F401

from deal_chains import ConfigError, DeALEngine, SearchConfig
from deal_chains.search import repetition
from deal_chains.search.repetition import ban_repeats, repeated_next


def _repeats(tokens: list[int], n: int) -> bool:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.fixture(scope="module")
def engine(tiny_lm):
    return DeALEngine(tiny_lm)


def test_module_examples_run():
    assert doctest.testmod(repetition).failed == 0


def test_repeated_next_names_every_token_that_completes_a_seen_ngram():
    seq = [1, 2, 3, 9, 1, 2, 4, 1, 2]
    assert repeated_next(seq, 3) == {3, 4}
    assert repeated_next(seq, 2) == {3, 4}  # "2" was followed by 3 and by 4
    assert repeated_next(seq, 1) == {1, 2, 3, 4, 9}
    assert repeated_next(seq, 4) == set()  # "4 1 2" was never followed
    assert repeated_next([], 3) == set()


def test_ban_repeats_masks_per_row_and_keeps_a_row_it_would_kill():
    logits = torch.zeros(3, 6)
    out = ban_repeats(logits, [[1, 2, 3, 1, 2], [5], [0, 4, 0]], 3)
    assert torch.isinf(out[0, 3]) and torch.isfinite(out[0]).sum() == 5
    assert torch.isfinite(out[1]).all() and torch.isfinite(out[2]).all()
    assert torch.isfinite(logits).all()  # not in place unless asked
    # a hard constraint left only the repeating token: the row keeps it rather than dying
    only = torch.full((1, 6), float("-inf"))
    only[0, 3] = 0.0
    assert ban_repeats(only, [[1, 2, 3, 1, 2]], 3)[0, 3] == 0.0
    # token ids past the logits (a tokenizer larger than the head) are ignored
    assert torch.isfinite(ban_repeats(torch.zeros(1, 4), [[1, 7, 1]], 2)[0]).all()


def test_greedy_and_deal_answers_never_repeat_an_ngram(engine):
    # the tiny random model loops: without the setting its greedy answers repeat 3-grams
    plain = engine.generate(PROMPTS, None, SearchConfig(strategy="greedy", max_new_tokens=40))
    assert any(_repeats(r.token_ids, 3) for r in plain)
    greedy = engine.generate(PROMPTS, None, SearchConfig(strategy="greedy", max_new_tokens=40, no_repeat_ngram=3))
    deal = engine.generate(PROMPTS, REWARDS, SearchConfig(strategy="deal", top_k=3, beam=2, lookahead=3,
                                                          max_new_tokens=40, no_repeat_ngram=3, returns=2))
    for r in greedy + deal + [a for r in deal for a in r.alternatives]:
        assert not _repeats(r.token_ids, 3), r.text
    # where greedy did not loop, the setting changes nothing
    for p, g in zip(plain, greedy):
        if not _repeats(p.token_ids, 3):
            assert p.token_ids == g.token_ids


@pytest.mark.parametrize("value", [0, 17, 2.5, True])
def test_no_repeat_ngram_must_be_a_small_whole_number(value):
    with pytest.raises(ConfigError, match="no_repeat_ngram"):
        SearchConfig.build(no_repeat_ngram=value)
