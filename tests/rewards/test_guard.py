"""Reward failure policies: ``on_error: fail | zero | skip``."""

from __future__ import annotations

import logging
import math

import pytest

from deal_chains import DeALEngine, SearchConfig
from deal_chains.errors import RewardError
from deal_chains.spec import load_spec
from rewards.base import BaseReward, RewardContext
from rewards.guard import Guarded

CTX = RewardContext(prompt="p")


class Flaky(BaseReward):
    """Fails on texts containing ``trigger`` in the way ``mode`` says."""

    def __init__(self, mode: str, trigger: str = "x", name: str = "flaky"):
        self.mode, self.trigger, self.name, self.calls = mode, trigger, name, 0

    def score(self, texts, context):
        self.calls += 1
        if any(self.trigger in t for t in texts):
            if self.mode == "raise":
                raise ValueError("boom")
            if self.mode == "nan":
                return [math.nan if self.trigger in t else 0.5 for t in texts]
            if self.mode == "count":
                return [0.5] * (len(texts) + 1)
            if self.mode == "type":
                return ["high"] * len(texts)
        return [0.5] * len(texts)


@pytest.mark.parametrize("mode", ["raise", "nan", "count", "type"])
def test_zero_scores_only_the_failing_texts(mode, caplog):
    g = Guarded(Flaky(mode), on_error="zero")
    with caplog.at_level(logging.WARNING, logger="deal_chains.rewards"):
        assert g.score(["ok", "x here", "fine"], CTX) == [0.5, 0.0, 0.5]
    assert g.failures >= 1 and "flaky" in caplog.text
    assert g.score(["ok"], CTX) == [0.5]  # later calls still score


@pytest.mark.parametrize("mode", ["raise", "nan", "count", "type"])
def test_skip_switches_the_reward_off(mode):
    inner = Flaky(mode)
    g = Guarded(inner, on_error="skip")
    assert g.score(["ok", "x"], CTX) == [0.0, 0.0]
    calls = inner.calls
    assert g.score(["ok"], CTX) == [0.0] and inner.calls == calls and g.disabled


@pytest.mark.parametrize("mode", ["raise", "nan", "count", "type"])
def test_fail_raises(mode):
    with pytest.raises(RuntimeError, match="flaky|boom|scores|number"):
        Guarded(Flaky(mode), on_error="fail").score(["x"], CTX)


def test_bad_policy_and_bounds():
    with pytest.raises(ValueError, match="on_error must be one of"):
        Guarded(Flaky("raise"), on_error="ignore")
    inner = Flaky("raise")
    inner.bounds = (0.5, 2.0)
    assert Guarded(inner, on_error="zero").bounds == (0.0, 2.0)  # a failed text scores 0


@pytest.fixture(scope="module")
def engine(tiny_lm):
    return DeALEngine(tiny_lm)


def test_search_goes_on_under_zero_and_stops_under_fail(engine):
    cfg = SearchConfig(strategy="deal", top_k=3, lookahead=2, beam=2, max_new_tokens=10)
    # the random tiny model writes random bytes; "`" is among some of its candidates
    zero = Guarded(Flaky("raise", trigger="`"), on_error="zero")
    results = engine.generate(["hello", "world"], [zero], cfg)
    assert len(results) == 2 and all(r.text is not None for r in results)
    assert zero.failures > 0  # the policy was exercised, not bypassed
    for r in results:
        assert r.rewards["flaky"] == (0.0 if "`" in r.text else 0.5)
    with pytest.raises(RewardError, match="flaky"):
        engine.generate(["hello", "world"], [Flaky("raise", trigger="")], cfg)
    with pytest.raises(RewardError, match="flaky"):
        engine.generate(["hello"], [Guarded(Flaky("nan", trigger=""), on_error="fail")], cfg)


def test_spec_on_error(tmp_path):
    spec = load_spec("rewards:\n  - length: {max_words: 5}\n    on_error: zero\n  - regex: {must_match: a}\n")
    first, second = spec.build_rewards({})
    assert isinstance(first, Guarded) and first.on_error == "zero" and first.name == "length"
    assert not isinstance(second, Guarded)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rewards:\n  - length: {max_words: 5}\n    on_error: ignore\n", encoding="utf-8")
    with pytest.raises(Exception) as info:
        load_spec(bad)
    assert f"{bad}:3" in str(info.value) and "on_error" in str(info.value)


class Gives(BaseReward):
    """Returns ``make(texts)``: a generator, a string, a dict, ..."""

    def __init__(self, make, name: str = "gives"):
        self.make, self.name, self.calls = make, name, 0

    def score(self, texts, context):
        self.calls += 1
        return self.make(texts)


@pytest.mark.parametrize("policy", ["fail", "zero", "skip"])
@pytest.mark.parametrize("make", [lambda ts: (0.25 for _ in ts), lambda ts: iter([0.25] * len(ts)),
                                  lambda ts: tuple(0.25 for _ in ts)])
def test_any_iterable_of_valid_scores_is_accepted(policy, make):
    g = Guarded(Gives(make), on_error=policy)
    assert g.score(["a", "b", "c"], CTX) == [0.25, 0.25, 0.25]
    assert g.failures == 0 and not g.disabled


@pytest.mark.parametrize("make,why", [(lambda ts: "0.5", "returned str"), (lambda ts: b"1", "returned bytes"),
                                      (lambda ts: {t: 0.5 for t in ts}, "returned dict"),
                                      (lambda ts: 0.5, "returned float"), (lambda ts: None, "returned NoneType")])
def test_a_string_dict_or_scalar_is_still_a_failure(make, why):
    with pytest.raises(RuntimeError, match=why):
        Guarded(Gives(make), on_error="fail").score(["a"], CTX)
    zero = Guarded(Gives(make), on_error="zero")
    assert zero.score(["a"], CTX) == [0.0] and zero.failures == 1


def test_a_generator_that_raises_midway_is_a_failure_of_the_reward():
    def make(ts):
        yield 0.5
        raise KeyError("missing")

    with pytest.raises(RuntimeError, match="raised KeyError"):
        Guarded(Gives(make), on_error="fail").score(["a", "b"], CTX)
    zero = Guarded(Gives(make), on_error="zero")
    # read to the end, so a partial answer is never taken for a whole one: every text scores 0
    assert zero.score(["a", "b"], CTX) == [0.0, 0.0] and zero.failures == 3


def test_an_int_past_float_range_is_a_failure_not_an_overflow():
    with pytest.raises(RuntimeError, match="score 0 is 1000.*not a finite number"):
        Guarded(Gives(lambda ts: [10**400] * len(ts)), on_error="fail").score(["a"], CTX)
    zero = Guarded(Gives(lambda ts: [10**400] * len(ts)), on_error="zero")
    assert zero.score(["a", "b"], CTX) == [0.0, 0.0] and zero.failures == 3
