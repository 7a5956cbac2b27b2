"""SearchConfig.returns: several ranked answers per prompt (GenerationResult.alternatives), on the
tiny random-weight model (float64: searches are deterministic token for token)."""

from __future__ import annotations

import pytest
from search_fixtures import PROMPTS, REWARDS

from deal_chains import ConfigError, DeALEngine, SearchConfig
from deal_chains.search.engine import distinct_answers, samples_per_prompt, tree_params
from deal_chains.search.state import Hypothesis


@pytest.fixture(scope="module")
def engine(tiny_lm):
    return DeALEngine(tiny_lm)


def answers(result):
    return [result, *result.alternatives]


def assert_ranked(results):
    """Finished before unfinished, each by score, as the engine's answer order says."""
    keys = [(not r.finished, -r.score) for r in results]
    assert keys == sorted(keys)


DEAL = dict(strategy="deal", top_k=3, beam=3, lookahead=2, lam=3.0, max_new_tokens=10)


def test_deal_returns_the_n_best_distinct_hypotheses_best_first(engine):
    one = engine.generate(PROMPTS[:2], REWARDS, SearchConfig(**DEAL))
    three = engine.generate(PROMPTS[:2], REWARDS, SearchConfig(**DEAL, returns=3))
    for single, res in zip(one, three):
        assert single.alternatives == []
        got = answers(res)
        assert len(got) == 3
        assert len({r.text for r in got}) == 3  # distinct texts
        assert_ranked(got)
        # the same search (same beams): the best is the one answer of returns=1
        assert (res.text, res.token_ids, res.score) == (single.text, single.token_ids, single.score)
        assert all(r.alternatives == [] for r in got[1:])
        for r in got:
            assert r.strategy == "deal"
            assert r.finish_reason == ("stop" if r.finished else "length")
            assert r.stats.new_tokens == len(r.token_ids)
            assert r.rewards and set(r.rewards) == set(res.rewards)
            assert r.score == pytest.approx(r.logprob + 3.0 * r.reward)


def test_deal_keeps_at_least_returns_beams(engine):
    cfg = SearchConfig(**{**DEAL, "beam": 1}, returns=3)
    assert tree_params(cfg).beam == 3 and tree_params(SearchConfig(**{**DEAL, "beam": 1})).beam == 1
    [res] = engine.generate(PROMPTS[:1], REWARDS, cfg)
    # beam 1 alone keeps one hypothesis; the search widened to 3 beams to return 3
    assert len(answers(res)) == 3 and len({r.text for r in answers(res)}) == 3


def test_rerank_and_best_of_n_widen_to_returns(engine):
    assert tree_params(SearchConfig(strategy="rerank", n=2, returns=5)).beam == 5
    assert samples_per_prompt(SearchConfig(strategy="best_of_n", n=2, returns=3)) == 3
    assert samples_per_prompt(SearchConfig(strategy="best_of_n", n=6, returns=3)) == 6
    assert samples_per_prompt(SearchConfig(strategy="sample", returns=3)) == 3
    [res] = engine.generate(PROMPTS[1:2], REWARDS, SearchConfig(strategy="rerank", n=2, returns=3,
                                                               max_new_tokens=8, lam=3.0))
    assert len(answers(res)) == 3 and len({r.text for r in answers(res)}) == 3
    assert_ranked(answers(res))


def test_best_of_n_returns_its_best_samples_and_keeps_its_answer(engine):
    base = dict(strategy="best_of_n", n=4, temperature=1.0, seed=3, max_new_tokens=10, lam=2.0)
    [one] = engine.generate(PROMPTS[:1], REWARDS, SearchConfig(**base))
    [three] = engine.generate(PROMPTS[:1], REWARDS, SearchConfig(**base, returns=3))
    assert three.token_ids == one.token_ids and three.stats.seed == 3
    got = answers(three)
    assert len(got) == 3 and len({r.text for r in got}) == 3
    assert_ranked(got)


def test_sample_draws_returns_independent_samples(engine):
    base = dict(strategy="sample", temperature=1.0, seed=7, max_new_tokens=12)
    [one] = engine.generate(PROMPTS[:1], REWARDS, SearchConfig(**base))
    [three] = engine.generate(PROMPTS[:1], REWARDS, SearchConfig(**base, returns=3))
    got = answers(three)
    assert len(got) == 3 and len({r.text for r in got}) == 3
    assert_ranked(got)
    # sample 0 is the one sample of returns=1 (seeds derived per sample as best_of_n's)
    assert one.token_ids in [r.token_ids for r in got]
    [again] = engine.generate(PROMPTS[:1], REWARDS, SearchConfig(**base, returns=3))
    assert [r.token_ids for r in answers(again)] == [r.token_ids for r in got]


def test_greedy_refuses_several_answers():
    with pytest.raises(ConfigError, match=r"'greedy' has one answer.*returns=2.*deal.*rerank.*best_of_n"):
        SearchConfig.build(strategy="greedy", returns=2)
    with pytest.raises(ConfigError, match="returns"):
        SearchConfig.build(returns=0)
    assert SearchConfig.build(strategy="greedy", returns=1).returns == 1


def test_streaming_sends_the_best_answer(engine):
    sent: dict[int, list[int]] = {}

    def on_tokens(i, ids):
        sent.setdefault(i, []).extend(ids)

    results = engine.generate(PROMPTS[:2], REWARDS, SearchConfig(**DEAL, returns=3), on_tokens=on_tokens)
    assert [sent[i] for i in range(2)] == [r.token_ids for r in results]
    assert all(len(answers(r)) == 3 for r in results)


def test_alternatives_are_in_the_record_only_when_asked(engine):
    [one] = engine.generate(PROMPTS[:1], REWARDS, SearchConfig(**DEAL))
    [two] = engine.generate(PROMPTS[:1], REWARDS, SearchConfig(**DEAL, returns=2))
    assert "alternatives" not in one.as_dict()
    [alt] = two.as_dict()["alternatives"]
    assert alt["text"] == two.alternatives[0].text and alt["text"] != two.text


def test_distinct_answers_skips_repeated_texts_and_returns_what_exists():
    def hyp(tokens, finished=True, score=0.0):
        return Hypothesis(tokens=tokens, logprob=score, finished=finished, score=score)

    decode = {(1,): "a", (2,): "a", (3,): "b", (4,): "c"}.__getitem__
    ranked = [hyp([1], score=-1), hyp([2], score=-2), hyp([3], score=-3), hyp([4], finished=False)]
    picked = distinct_answers(ranked, 3, lambda t: decode(tuple(t)))
    assert [(h.tokens, text) for h, text in picked] == [([1], "a"), ([3], "b"), ([4], "c")]
    assert len(distinct_answers(ranked, 9, lambda t: decode(tuple(t)))) == 3  # what exists
    assert [t for _, t in distinct_answers(ranked, 1, lambda t: decode(tuple(t)))] == ["a"]
