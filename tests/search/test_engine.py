"""The search engine on a tiny random-weight Llama (built in the test, float64)."""

from __future__ import annotations

import math

import pytest
import torch

from deal_chains import ConfigError, DeALEngine, InputError, PromptTooLongError, RewardError, SearchConfig
from reference import reference_deal
from rewards import BaseReward, RewardContext

from search_fixtures import PROMPTS, REWARDS, CharShare  # noqa: F401


@pytest.fixture(scope="module")
def engine(tiny_lm):
    return DeALEngine(tiny_lm)


def test_deal_with_top1_beam1_equals_greedy_token_for_token(engine, tiny_lm):
    greedy = engine.generate(PROMPTS, REWARDS, SearchConfig(strategy="greedy", max_new_tokens=30))
    deal = engine.generate(PROMPTS, REWARDS, SearchConfig(strategy="deal", top_k=1, beam=1, lookahead=4,
                                                          commit=2, max_new_tokens=30))
    for g, d in zip(greedy, deal):
        assert g.token_ids == d.token_ids
        assert g.finished == d.finished
        assert d.logprob == pytest.approx(g.logprob, abs=1e-9)


def test_greedy_matches_transformers_generate(engine, tiny_lm):
    results = engine.generate(PROMPTS, None, SearchConfig(strategy="greedy", max_new_tokens=25))
    for prompt, res in zip(PROMPTS, results):
        ids = torch.tensor([tiny_lm.format_prompt(prompt)])
        out = tiny_lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=25,
                                     do_sample=False, eos_token_id=sorted(tiny_lm.eos_token_ids),
                                     pad_token_id=tiny_lm.pad_token_id)
        new = out[0, ids.shape[1]:].tolist()
        expected = [t for t in new if t not in tiny_lm.eos_token_ids]
        if len(expected) < len(new):  # generate stopped at EOS
            expected = new[: new.index(next(t for t in new if t in tiny_lm.eos_token_ids))]
        assert res.token_ids == expected
        assert res.finished == (len(new) < 25 or new[-1] in tiny_lm.eos_token_ids)


@pytest.mark.parametrize("top_k,beam,lookahead,commit", [(3, 2, 2, 1), (4, 2, 3, 3), (2, 3, 0, 1), (3, 1, 4, 2)])
def test_kv_engine_equals_no_cache_reference(engine, tiny_lm, top_k, beam, lookahead, commit):
    cfg = SearchConfig(strategy="deal", top_k=top_k, beam=beam, lookahead=lookahead, commit=commit, lam=3.0,
                       max_new_tokens=12, prune=False, adaptive=False)
    results = engine.generate(PROMPTS[:3], REWARDS, cfg)
    for prompt, res in zip(PROMPTS[:3], results):
        tokens, logprob, finished = reference_deal(
            tiny_lm, tiny_lm.format_prompt(prompt), REWARDS, RewardContext(prompt=prompt),
            top_k=top_k, beam=beam, lookahead=lookahead, commit=commit, lam=3.0, max_new_tokens=12)
        assert res.token_ids == tokens
        assert res.logprob == pytest.approx(logprob, abs=1e-7)
        assert res.finished == finished


def test_batch_equals_one_by_one(engine):
    cfg = SearchConfig(strategy="deal", top_k=3, beam=2, lookahead=3, commit=1, lam=3.0, max_new_tokens=15)
    batched = engine.generate(PROMPTS, REWARDS, cfg, batch_size=len(PROMPTS))
    for prompt, b in zip(PROMPTS, batched):
        [single] = engine.generate([prompt], REWARDS, cfg)
        assert single.token_ids == b.token_ids
        assert single.score == pytest.approx(b.score, abs=1e-7)
        assert single.rewards == pytest.approx(b.rewards)
    assert batched[0].stats.batch_size == len(PROMPTS)


def test_pruning_changes_work_not_results_for_exact_commit(engine):
    base = dict(strategy="deal", top_k=6, beam=2, lookahead=3, commit=1, lam=0.5, max_new_tokens=12, adaptive=False)
    pruned = engine.generate(PROMPTS, REWARDS, SearchConfig(**base, prune=True))
    full = engine.generate(PROMPTS, REWARDS, SearchConfig(**base, prune=False))
    assert [r.token_ids for r in pruned] == [r.token_ids for r in full]
    # with a small lam most candidates cannot win: pruning must have skipped real work
    assert sum(r.stats.candidates_scored for r in pruned) < sum(r.stats.candidates_scored for r in full)


def _check_finish_invariants(results, tiny_lm, budget):
    special = tiny_lm.eos_token_ids | {tiny_lm.pad_token_id}
    for r in results:
        assert not special & set(r.token_ids), "EOS/pad must never appear in the output tokens"
        if r.finished:
            assert r.finish_reason == "stop" and len(r.token_ids) <= budget
        else:
            assert r.finish_reason == "length" and len(r.token_ids) == budget
    return {r.finish_reason for r in results}


def test_eos_and_budget_handling(engine, tiny_lm):
    deal = engine.generate(PROMPTS, REWARDS, SearchConfig(strategy="deal", top_k=3, beam=2, lookahead=2,
                                                          commit=1, max_new_tokens=40))
    assert "stop" in _check_finish_invariants(deal, tiny_lm, 40)
    greedy = engine.generate(PROMPTS, REWARDS, SearchConfig(strategy="greedy", max_new_tokens=40))
    assert "length" in _check_finish_invariants(greedy, tiny_lm, 40)
    # a budget that cuts the answer: reported as cut, never as finished
    short = engine.generate(PROMPTS, REWARDS, SearchConfig(strategy="greedy", max_new_tokens=3))
    assert "length" in _check_finish_invariants(short, tiny_lm, 3)
    for s, g in zip(short, greedy):
        assert g.token_ids[:3] == s.token_ids[:3]


def test_pad_is_not_eos_in_tiny_model(tiny_lm):
    assert tiny_lm.pad_token_id not in tiny_lm.eos_token_ids


def test_seeded_sampling_is_reproducible_and_batch_invariant(engine):
    cfg = SearchConfig(strategy="sample", temperature=1.0, seed=7, max_new_tokens=12)
    a = engine.generate(PROMPTS, REWARDS, cfg)
    b = engine.generate(PROMPTS, REWARDS, cfg)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    single = engine.generate(PROMPTS[2:3], REWARDS, cfg)
    assert single[0].token_ids == a[2].token_ids
    other = engine.generate(PROMPTS, REWARDS, cfg.updated(seed=8))
    assert [r.token_ids for r in other] != [r.token_ids for r in a]


def test_best_of_n_picks_the_best_sample(engine):
    n = 5
    cfg = SearchConfig(strategy="best_of_n", n=n, temperature=1.0, seed=3, max_new_tokens=10, lam=2.0)
    [best] = engine.generate(PROMPTS[:1], REWARDS, cfg)
    assert math.isfinite(best.score)
    one = engine.generate(PROMPTS[:1], REWARDS, SearchConfig(strategy="sample", temperature=1.0, seed=3,
                                                             max_new_tokens=10, lam=2.0))[0]
    # sample 0 of best_of_n is the plain sample with the same seed; the best is no worse
    # when both are finished (finished answers are preferred over cut ones)
    if best.finished == one.finished:
        assert best.score >= one.score - 1e-9


def test_rerank_returns_the_best_of_the_beam_hypotheses(engine):
    cfg = SearchConfig(strategy="rerank", n=4, max_new_tokens=10, lam=5.0)
    [r] = engine.generate(PROMPTS[:1], REWARDS, cfg)
    assert r.strategy == "rerank"
    assert r.score == pytest.approx(r.logprob + 5.0 * r.reward)


def test_result_reports_rewards_and_stats(engine):
    [r] = engine.generate(PROMPTS[:1], REWARDS, SearchConfig(strategy="deal", top_k=3, beam=2, lookahead=2,
                                                             max_new_tokens=10, lam=2.0))
    assert set(r.rewards) == {"share_e", "share_ "}
    assert r.reward == pytest.approx(r.rewards["share_e"] + 0.5 * r.rewards["share_ "])
    assert r.score == pytest.approx(r.logprob + 2.0 * r.reward)
    assert r.stats.forward_passes > 0 and r.stats.new_tokens == len(r.token_ids)
    assert r.stats.candidates_scored > 0 and r.stats.seconds > 0
    assert r.as_dict()["finish_reason"] in ("stop", "length")


def test_terminal_reward_only_scores_final_text(engine):
    calls = []

    class Final(BaseReward):
        name, weight, terminal = "final", 1.0, True

        def score(self, texts, context):
            calls.append(list(texts))
            return [0.5] * len(texts)

    [r] = engine.generate(PROMPTS[:1], [CharShare("e"), Final()],
                          SearchConfig(strategy="deal", top_k=3, beam=2, lookahead=2, max_new_tokens=8))
    assert r.rewards["final"] == 0.5
    assert calls, "the terminal reward must score the final text"


# ------------------------------------------------------------------ bad input


def test_empty_prompt_is_a_clear_error(engine):
    with pytest.raises(InputError, match="prompt 1 is empty"):
        engine.generate(["ok", "   "], REWARDS, SearchConfig(strategy="greedy"))


def test_prompt_longer_than_context_is_a_clear_error(engine):
    with pytest.raises(PromptTooLongError, match="context of 256 tokens"):
        engine.generate(["x" * 300], REWARDS, SearchConfig(strategy="greedy", max_new_tokens=8))
    with pytest.raises(PromptTooLongError, match="lower max_new_tokens"):
        engine.generate(["short"], REWARDS, SearchConfig(strategy="greedy", max_new_tokens=250))


def test_reward_that_raises_names_the_reward(engine):
    class Broken(BaseReward):
        name, weight, terminal = "broken_reward", 1.0, False

        def score(self, texts, context):
            raise ZeroDivisionError("oops")

    with pytest.raises(RewardError, match="broken_reward.*ZeroDivisionError: oops"):
        engine.generate(PROMPTS[:1], [Broken()], SearchConfig(strategy="deal", top_k=2, beam=1, lookahead=2))


@pytest.mark.parametrize("bad,match", [(lambda t: [0.1], "returned 1 scores for"),
                                       (lambda t: [float("nan")] * len(t), "non-finite"),
                                       (lambda t: ["x"] * len(t), "must be numbers")])
def test_reward_returning_garbage_is_caught(engine, bad, match):
    class Bad(BaseReward):
        name, weight, terminal = "bad", 1.0, False

        def score(self, texts, context):
            return bad(texts)

    with pytest.raises(RewardError, match=match):
        engine.generate(PROMPTS[:1], [Bad()], SearchConfig(strategy="deal", top_k=3, beam=1, lookahead=2))


@pytest.mark.parametrize("values,match", [
    ({"strategy": "beam_me_up"}, "search.strategy"),
    ({"top_k": 0}, "search.top_k"),
    ({"beam": -1}, "search.beam"),
    ({"strategy": "sample", "temperature": 0}, "temperature > 0"),
    ({"lookahead": 2, "commit": 5}, "commit"),
    ({"topk": 3}, "topk"),
])
def test_bad_search_config_is_a_clear_error(values, match):
    with pytest.raises(ConfigError, match=match):
        SearchConfig.build(**values)


def test_non_reward_object_is_rejected(engine):
    with pytest.raises(InputError, match="not a reward"):
        engine.generate(PROMPTS[:1], [object()], SearchConfig(strategy="greedy"))
