"""Search budgets: checked before any work, each a clear error with the numbers."""

from __future__ import annotations

import pytest

from deal_chains import DeALEngine, SearchConfig
from deal_chains.errors import ConfigError
from deal_chains.search.limits import SearchLimits, estimate, kv_bytes_per_token


class Counting:
    name, weight, terminal = "counting", 1.0, False

    def __init__(self):
        self.calls = 0

    def score(self, texts, context):
        self.calls += 1
        return [0.0] * len(texts)


@pytest.fixture(scope="module")
def lm(tiny_lm):
    return tiny_lm


@pytest.mark.parametrize("limits, config, words", [
    (SearchLimits(max_new_tokens=8), SearchConfig(strategy="greedy", max_new_tokens=9), ["max_new_tokens 9", "8"]),
    (SearchLimits(max_rows_per_prompt=5), SearchConfig(strategy="deal", top_k=3, beam=2), ["= 6", "limit 5"]),
    (SearchLimits(max_lookahead_tokens=10), SearchConfig(strategy="deal", top_k=3, beam=2, lookahead=2),
     ["= 12 tokens", "limit 10"]),
    (SearchLimits(max_prompt_tokens=3), SearchConfig(strategy="greedy"), ["tokens is over the limit 3"]),
    (SearchLimits(max_kv_bytes=1000), SearchConfig(strategy="deal", top_k=2, beam=1, lookahead=2), ["GiB of KV cache"]),
])
def test_each_limit_is_checked_before_any_work(lm, limits, config, words):
    engine = DeALEngine(lm, limits=limits)
    reward = Counting()
    with pytest.raises(ConfigError) as info:
        engine.generate(["hello there"], [reward], config)
    for w in words:
        assert w in str(info.value)
    assert reward.calls == 0  # nothing ran


def test_within_limits_runs(lm):
    engine = DeALEngine(lm, limits=SearchLimits(max_new_tokens=8, max_rows_per_prompt=4))
    [r] = engine.generate(["hi"], None, SearchConfig(strategy="deal", top_k=2, beam=2, max_new_tokens=4,
                                                         lookahead=2))
    assert len(r.token_ids) <= 4


def test_kv_estimate_matches_the_model_shape(lm):
    cfg = lm.model.config
    per = kv_bytes_per_token(lm.model, 8)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    assert per == 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 8
    est = estimate(lm, rows=6, lookahead=4, max_new_tokens=10, prompt_lens=[5, 20])
    assert est.longest_row_tokens == 20 + 10 + 4 and est.kv_bytes_per_prompt == 6 * 34 * per


@pytest.mark.parametrize("bad", [0, -1, 1.5, "8", True])
def test_bad_limits(bad):
    with pytest.raises(ConfigError, match="max_new_tokens"):
        SearchLimits(max_new_tokens=bad)


def test_batches_sized_from_free_gpu_memory():
    from deal_chains.search.batching import (
        DEFAULT_MAX_ROW_TOKENS,
        DEFAULT_MAX_ROWS,
        GPU_KV_MEMORY_FRACTION,
        MAX_ROWS,
        batch_budget,
    )

    per_token = 2 * 30 * 3 * 64 * 2  # SmolLM2-135M in bfloat16: 23 KiB per row-token
    assert batch_budget("cpu", None, per_token) == (DEFAULT_MAX_ROWS, DEFAULT_MAX_ROW_TOKENS)
    small = batch_budget("cuda", 2 * 1024**3, per_token)
    big = batch_budget("cuda", 80 * 1024**3, per_token)
    assert small[0] == big[0] == MAX_ROWS
    assert big[1] == int(80 * 1024**3 * GPU_KV_MEMORY_FRACTION) // per_token  # ~1.8M row-tokens
    assert big[1] > 30 * small[1]  # a bigger card batches more
    assert batch_budget("cuda", None, per_token) == (DEFAULT_MAX_ROWS, DEFAULT_MAX_ROW_TOKENS)


def test_engine_sizes_batches_from_free_memory_unless_given(tiny_lm, monkeypatch):
    from deal_chains import DeALEngine
    from deal_chains.search import engine as engine_module
    from deal_chains.search.batching import CPU_KV_MEMORY_FRACTION, MAX_ROWS

    monkeypatch.setattr(engine_module, "available_bytes", lambda device: 8 * 1024**3)
    engine = DeALEngine(tiny_lm)
    per_token = kv_bytes_per_token(engine.lm.model, engine.lm.dtype.itemsize)
    assert (engine.max_rows, engine.max_row_tokens) == (MAX_ROWS, int(8 * 1024**3 * CPU_KV_MEMORY_FRACTION) // per_token)
    assert DeALEngine(tiny_lm, max_rows=8).max_rows == 8
    assert DeALEngine(tiny_lm, max_row_tokens=500).max_row_tokens == 500
