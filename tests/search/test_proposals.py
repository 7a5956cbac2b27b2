"""The candidates a row proposes (search/proposals.py): the bound for tokens that start a
requested item, on the tiny random-weight Llama."""

from __future__ import annotations

import pytest
import torch

from deal_chains.search import tree
from deal_chains.search.state import TreeParams
from search_fixtures import CharShare, tree_state


def _params(**kw):
    base = dict(top_k=12, beam=2, lookahead=2, commit=2, lam=4.0, max_new_tokens=8, prune=False)
    return TreeParams(**{**base, **kw})


def test_a_requested_token_gets_the_looser_bound_and_the_others_the_tight_one(tiny_lm):
    state = tree_state(tiny_lm, _params(max_logprob_drop=0.05, requested_logprob_drop=50.0), [CharShare("e")],
                       ("hello world", "abc"))
    logp = torch.log_softmax(state.logits, dim=-1)
    top = [logp[row].topk(12) for row in (0, 1)]
    far = [int(top[0].indices[-1]), int(top[1].indices[-2])]  # well below the tight bound in each row
    assert all(float(logp[row, far[row]]) < float(top[row].values[0]) - 0.05 for row in (0, 1))
    state.requested = [frozenset({far[0]}), frozenset({far[1]})]  # group 0's and group 1's requested tokens
    proposals = tree.propose(state, tree.plan(state))
    for row in (0, 1):
        mine = [t for p, t in zip(proposals.parent, proposals.token) if p == row]
        tight = [int(t) for t, v in zip(top[row].indices, top[row].values) if v >= top[row].values[0] - 0.05]
        assert mine == tight + [far[row]]  # in rank order: the bounded ones, then the requested one


def test_requested_tokens_are_bounded_like_the_rest_without_their_own_bound(tiny_lm):
    state = tree_state(tiny_lm, _params(max_logprob_drop=0.05), [CharShare("e")], ("hello world", "abc"))
    logp = torch.log_softmax(state.logits, dim=-1)
    far = int(logp[0].topk(12).indices[-1])
    state.requested = [frozenset({far}), frozenset()]
    proposals = tree.propose(state, tree.plan(state))
    assert far not in [t for p, t in zip(proposals.parent, proposals.token) if p == 0]


def test_a_requested_bound_that_would_change_nothing_is_refused():
    from deal_chains.errors import ConfigError
    from deal_chains.search.config import SearchConfig

    for bad in ({"requested_logprob_drop": 3.0}, {"requested_logprob_drop": 1.0, "max_logprob_drop": 2.0}):
        with pytest.raises(ConfigError, match="requested_logprob_drop.*needs max_logprob_drop"):
            SearchConfig.build(strategy="deal", **bad)
    assert SearchConfig.build(strategy="deal", max_logprob_drop=2.0, requested_logprob_drop=2.0).requested_logprob_drop == 2.0


def test_the_search_finds_its_requested_tokens_from_the_rewards(tiny_lm):
    from deal_chains import DeALEngine, SearchConfig
    from rewards.keywords import KeywordCoverage

    engine = DeALEngine(tiny_lm)
    cfg = dict(strategy="deal", top_k=4, lookahead=2, beam=2, max_new_tokens=6, lam=4.0)
    seen: list[list[frozenset[int]] | None] = []
    original = tree.propose

    def spy(state, step):
        seen.append(state.requested)
        return original(state, step)

    tree.propose = spy
    try:
        engine.generate(["hello"], [KeywordCoverage(["dog"])], SearchConfig(**cfg, max_logprob_drop=1.0,
                                                                             requested_logprob_drop=3.0))
        with_bound = list(seen)
        seen.clear()
        engine.generate(["hello"], [KeywordCoverage(["dog"])], SearchConfig(**cfg, max_logprob_drop=1.0))
    finally:
        tree.propose = original
    wanted = set(engine.lm.tokenizer.encode(" dog", add_special_tokens=False)[:1])
    assert with_bound and all(r is not None and wanted <= r[0] for r in with_bound)
    assert seen and all(r is None for r in seen)  # no bound of their own: not looked up
