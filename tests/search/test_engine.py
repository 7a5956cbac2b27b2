"""The search engine on a tiny random-weight Llama (built in the test, float64)."""

from __future__ import annotations

import math

import pytest
import torch
from reference import reference_deal
from search_fixtures import PROMPTS, REWARDS, CharShare  # noqa: F401

from deal_chains import ConfigError, DeALEngine, InputError, PromptTooLongError, RewardError, SearchConfig
from deal_chains.spec import load_spec
from rewards import BaseReward, RewardContext


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


@pytest.mark.parametrize("length_penalty,lam", [(0.0, 0.5), (1.0, 0.1)])
def test_pruning_changes_work_not_results_for_exact_commit(engine, length_penalty, lam):
    base = dict(strategy="deal", top_k=6, beam=2, lookahead=3, commit=1, lam=lam, max_new_tokens=12, adaptive=False,
                length_penalty=length_penalty)
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


# ---- merged from test_engine_more.py: Engine behaviour beyond the core search: strategy temperatures, per-request seeds,


TWO_PROMPTS = ["hello world", "abc"]


class Share(BaseReward):
    def __init__(self, char: str = "e", name: str = "share", weight: float = 1.0):
        self.char, self.name, self.weight, self.terminal = char, name, weight, False

    def score(self, texts, context):
        return [min(1.0, 4 * t.count(self.char) / max(1, len(t))) for t in texts]


@pytest.mark.parametrize("strategy", ["sample", "best_of_n"])
def test_sampling_strategies_default_to_temperature_one(strategy):
    cfg = SearchConfig.build(strategy=strategy)
    assert cfg.temperature == 1.0
    assert "temperature" not in cfg.model_fields_set  # still a default


def test_temperature_default_follows_the_strategy_through_updates():
    assert SearchConfig().temperature == 0.0
    # updated() keeps a filled-in default a default: switching strategy re-derives it
    assert SearchConfig().updated(strategy="sample").temperature == 1.0
    assert SearchConfig.build(strategy="sample").updated(strategy="greedy").temperature == 0.0
    assert SearchConfig.build(strategy="sample").updated(seed=3).temperature == 1.0
    # an explicit value survives updates
    assert SearchConfig.build(temperature=0.5).updated(strategy="sample").temperature == 0.5
    cfg = SearchConfig.build(strategy="deal")
    cfg.strategy = "sample"  # assignment is validated too
    assert cfg.temperature == 1.0


def test_explicit_zero_temperature_with_sample_is_still_an_error():
    with pytest.raises(ConfigError, match=r"search: .*strategy 'sample' needs temperature > 0"):
        SearchConfig.build(strategy="sample", temperature=0)
    with pytest.raises(ConfigError, match="temperature > 0"):
        SearchConfig.build(temperature=0.0).updated(strategy="sample")


def test_spec_with_sample_strategy_runs_and_explicit_zero_is_located(tmp_path, engine):
    spec = load_spec("rewards: [{length: {max_words: 5}}]\nsearch: {strategy: sample, max_new_tokens: 4}")
    cfg = spec.search_config()
    assert cfg.strategy == "sample" and cfg.temperature == 1.0
    [r] = engine.generate(["hi"], None, cfg)
    assert r.strategy == "sample" and r.stats.seed is not None
    # a spec setting temperature 0, then asked for sampling: the explicit 0 is refused
    zero = load_spec("rewards: [{length: {max_words: 5}}]\nsearch: {temperature: 0}")
    with pytest.raises(ConfigError, match="temperature > 0"):
        zero.search_config(strategy="sample")
    assert load_spec("rewards: [{length: {max_words: 5}}]").search_config(strategy="sample").temperature == 1.0


@pytest.mark.parametrize("field,value", [
    ("top_k", True), ("top_k", "4"), ("top_k", 4.0), ("beam", False), ("lookahead", "2"),
    ("max_new_tokens", 8.5), ("n", "3"), ("commit", "1"), ("seed", True), ("seed", "7"),
    ("lam", True), ("lam", "2.0"), ("temperature", "0.5"), ("temperature", False),
    ("prune", "yes"), ("prune", 1), ("adaptive", "false"), ("adaptive", 0), ("top_k", [4]),
    ("lam", 10**400), ("temperature", -10**400),  # past float range: a located error, not OverflowError
])
def test_search_config_types_are_strict_and_errors_are_located(field, value):
    with pytest.raises(ConfigError) as err:
        SearchConfig.build(**{field: value})
    msg = str(err.value)
    assert f"search.{field}: " in msg and repr(value) in msg, msg


def test_spec_search_types_are_strict(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("rewards: [{length: {max_words: 5}}]\nsearch:\n  top_k: \"4\"\n  prune: yes_please\n",
                    encoding="utf-8")
    with pytest.raises(Exception) as err:
        load_spec(str(path))
    msg = str(err.value)
    assert "search.top_k" in msg and "search.prune" in msg


def test_search_config_accepts_real_numbers():
    np = pytest.importorskip("numpy")
    cfg = SearchConfig.build(top_k=np.int64(3), lam=2, temperature=np.float32(0.5), lookahead=2,
                             commit=np.int32(1), prune=False, seed=5)
    assert (cfg.top_k, cfg.lam, cfg.temperature, cfg.commit, cfg.seed) == (3, 2.0, 0.5, 1, 5)
    assert type(cfg.top_k) is int and type(cfg.lam) is float


def test_documented_defaults_hold():
    cfg = SearchConfig()
    assert (cfg.strategy, cfg.top_k, cfg.lookahead, cfg.commit_tokens, cfg.beam, cfg.lam) == \
        ("deal", 6, 4, 4, 2, 48.0)
    assert (cfg.max_new_tokens, cfg.temperature, cfg.seed, cfg.n, cfg.prune, cfg.adaptive) == \
        (48, 0.0, None, 4, True, True)


def test_sampling_without_a_seed_differs_per_call_and_per_prompt(engine):
    cfg = SearchConfig.build(strategy="sample", max_new_tokens=12)
    runs = [engine.generate(["hello world"] * 3, None, cfg) for _ in range(2)]
    texts = [r.token_ids for run in runs for r in run]
    seeds = [r.stats.seed for run in runs for r in run]
    assert all(isinstance(s, int) for s in seeds)
    assert len(set(seeds)) == len(seeds)  # a fresh seed per prompt, identical prompts included
    assert len({tuple(t) for t in texts}) > 1


def test_recorded_seed_replays_the_result_whatever_the_batch(engine):
    cfg = SearchConfig.build(strategy="sample", max_new_tokens=12)
    first = engine.generate(TWO_PROMPTS, [Share()], cfg)
    for i, res in enumerate(first):
        [again] = engine.generate([TWO_PROMPTS[i]], [Share()], cfg.updated(seed=res.stats.seed))
        assert again.token_ids == res.token_ids and again.stats.seed == res.stats.seed
    # best_of_n too: the recorded seed replays all n samples
    bon = SearchConfig.build(strategy="best_of_n", n=3, max_new_tokens=8, lam=2.0)
    [b] = engine.generate(TWO_PROMPTS[:1], [Share()], bon)
    [b2] = engine.generate(TWO_PROMPTS[:1], [Share()], bon.updated(seed=b.stats.seed))
    assert b2.token_ids == b.token_ids and b2.score == b.score


def test_explicit_seed_is_reproducible_and_reported(engine):
    cfg = SearchConfig.build(strategy="deal", temperature=0.8, top_k=2, beam=2, lookahead=2, seed=11,
                             max_new_tokens=8)
    a = engine.generate(TWO_PROMPTS, [Share()], cfg)
    b = engine.generate(TWO_PROMPTS[::-1], [Share()], cfg)
    assert [r.token_ids for r in a] == [r.token_ids for r in b[::-1]]
    assert all(r.stats.seed == 11 for r in a)
    assert a[0].as_dict()["stats"]["seed"] == 11


def test_deterministic_search_reports_no_seed(engine):
    [g] = engine.generate(TWO_PROMPTS[:1], None, SearchConfig(strategy="greedy", max_new_tokens=4))
    [d] = engine.generate(TWO_PROMPTS[:1], [Share()], SearchConfig(max_new_tokens=4, top_k=2, lookahead=2))
    assert g.stats.seed is None and d.stats.seed is None


class Returns(BaseReward):
    def __init__(self, make, name="odd"):
        self.make, self.name, self.weight, self.terminal = make, name, 1.0, False

    def score(self, texts, context):
        return self.make(texts)


@pytest.mark.parametrize("make", [lambda ts: (0.5 for _ in ts), lambda ts: tuple(0.5 for _ in ts),
                                  lambda ts: map(lambda t: 0.5, ts)])
def test_reward_returning_any_iterable_of_scores_works(engine, make):
    [r] = engine.generate(TWO_PROMPTS[:1], [Returns(make)],
                          SearchConfig(strategy="deal", top_k=2, beam=1, lookahead=2, max_new_tokens=6))
    assert r.rewards == {"odd": 0.5}


@pytest.mark.parametrize("make,match", [(lambda ts: "0.5", "returned str"), (lambda ts: {t: 1.0 for t in ts},
                                                                              "returned dict"),
                                        (lambda ts: 0.5, "returned float")])
def test_reward_returning_a_non_list_is_named(engine, make, match):
    with pytest.raises(RewardError, match=f"'odd' failed: {match}"):
        engine.generate(TWO_PROMPTS[:1], [Returns(make)],
                        SearchConfig(strategy="deal", top_k=2, beam=1, lookahead=2, max_new_tokens=6))


def test_guarded_generator_reward_with_on_error_zero_keeps_its_scores(engine, tmp_path):
    from rewards.guard import Guarded

    g = Guarded(Returns(lambda ts: (0.25 for _ in ts)), on_error="zero")
    [r] = engine.generate(TWO_PROMPTS[:1], [g], SearchConfig(strategy="deal", top_k=2, beam=1, lookahead=2,
                                                         max_new_tokens=6))
    assert r.rewards == {"odd": 0.25} and g.failures == 0


@pytest.mark.parametrize("value,weight,lam", [(1e308, 1.0, 24.0), (1e300, 1e10, 1.0), (-1e308, 1.0, 2.0)])
def test_huge_finite_reward_is_a_named_error_not_an_infinite_score(engine, value, weight, lam):
    huge = Returns(lambda ts: [value] * len(ts), name="huge")
    huge.weight = weight
    with pytest.raises(RewardError, match=r"reward 'huge' failed: score .* too large.*not a finite number"):
        engine.generate(TWO_PROMPTS[:1], [Share(), huge],
                        SearchConfig(strategy="deal", top_k=2, beam=1, lookahead=2, max_new_tokens=6, lam=lam))


def test_reward_int_past_float_range_is_a_named_error(engine):
    from rewards.guard import Guarded

    huge = Returns(lambda ts: [10**400] * len(ts), name="bigint")
    with pytest.raises(RewardError, match="reward 'bigint' failed: scores must be numbers"):
        engine.generate(TWO_PROMPTS[:1], [huge], SearchConfig(strategy="greedy", max_new_tokens=3))
    # under on_error: zero it is a failure of the reward, scored 0, never a raw OverflowError
    g = Guarded(huge, on_error="zero")
    [r] = engine.generate(TWO_PROMPTS[:1], [g], SearchConfig(strategy="greedy", max_new_tokens=3))
    assert r.rewards == {"bigint": 0.0} and g.failures >= 1


def test_large_but_representable_reward_still_scores(engine):
    big = Returns(lambda ts: [1e100] * len(ts), name="big")
    [r] = engine.generate(TWO_PROMPTS[:1], [big], SearchConfig(strategy="greedy", max_new_tokens=3))
    assert math.isfinite(r.score) and r.reward == 1e100


def test_two_rewards_whose_sum_overflows_name_the_larger(engine):
    a = Returns(lambda ts: [1e308] * len(ts), name="a")
    b = Returns(lambda ts: [1.5e308] * len(ts), name="b")
    with pytest.raises(RewardError, match="reward 'b' failed"):
        engine.generate(TWO_PROMPTS[:1], [a, b], SearchConfig(strategy="greedy", max_new_tokens=3, lam=1.0))


def test_engine_trust_remote_code_is_explicit_and_off_by_default(tiny_model_dir, tmp_path):
    import inspect
    import json
    import shutil

    from deal_chains.errors import ModelLoadError

    assert inspect.signature(DeALEngine).parameters["trust_remote_code"].default is False
    custom = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, custom)
    cfg = json.loads((custom / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM", "AutoConfig": "configuration_x.XConfig"}
    cfg["model_type"] = "x-custom"
    (custom / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "ran"
    for f in ("modeling_x.py", "configuration_x.py"):
        (custom / f).write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(ModelLoadError):
        DeALEngine(str(custom), device="cpu")
    assert not marker.exists()
    with pytest.raises(ConfigError, match="trust_remote_code"):
        DeALEngine(str(custom), device="cpu", trust_remote_code="yes")


def test_engine_passes_trust_remote_code_to_the_loader(monkeypatch, tiny_lm):
    from deal_chains.search import engine as engine_mod

    seen = []
    monkeypatch.setattr(engine_mod, "load_model", lambda model, **kw: (seen.append(kw), tiny_lm)[1])
    DeALEngine("some/model", device="cpu", trust_remote_code=True)
    DeALEngine("some/model", device="cpu")
    assert [kw["trust_remote_code"] for kw in seen] == [True, False]


def test_time_in_rewards_is_reported_per_prompt(engine):
    import time as _time

    class Slow(BaseReward):
        name = "slow"

        def __init__(self):
            self.calls = 0

        def score(self, texts, context=None):
            self.calls += 1
            _time.sleep(0.01)
            return [0.5 for _ in texts]

    slow = Slow()
    cfg = SearchConfig(strategy="deal", max_new_tokens=6, top_k=2, beam=1, lookahead=2)
    [res] = engine.generate(["hi"], [slow], cfg)
    assert res.stats.reward_seconds >= 0.01 * slow.calls > 0
    assert res.stats.reward_seconds <= res.stats.batch_seconds
    [plain] = engine.generate(["hi"], None, cfg)
    assert plain.stats.reward_seconds == 0.0
