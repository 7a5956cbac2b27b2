"""Batch sizing: the worst case first, then the rows the search actually kept."""

from __future__ import annotations

import pytest
from search_fixtures import PROMPTS, REWARDS  # noqa: F401

from deal_chains import DeALEngine, SearchConfig
from deal_chains.search.batching import CPU_KV_MEMORY_FRACTION, MAX_ROWS, BatchPlanner, batch_budget


def _planner(**kw):
    base = dict(worst_rows=16, max_rows=128, max_row_tokens=10**6)
    return BatchPlanner(**{**base, **kw})


def test_first_batch_is_sized_for_the_worst_case():
    planner = _planner()
    assert planner.expected_rows == 16
    assert len(planner.take([100] * 40)) == 8  # 8 x 16 rows = 128


def test_later_batches_are_sized_by_the_rows_kept_so_far():
    planner = _planner()
    planner.observe(row_forwards=2_000, prompt_forwards=800)  # 2.5 rows per live prompt
    assert planner.expected_rows == 2.5
    assert len(planner.take([100] * 80)) == 51  # 51 x 2.5 = 127.5 rows
    # a batch that kept more rows than the worst case allows reads as the worst case
    assert _planner(row_forwards=10**6, prompt_forwards=1).expected_rows == 16
    # and never less than one row
    assert _planner(row_forwards=0, prompt_forwards=5).expected_rows == 1


def test_worst_case_stays_within_the_memory_budget():
    # 2.5 rows expected, but 16 x 100 row-tokens per prompt if every prompt kept its worst case
    planner = _planner(max_row_tokens=16 * 100 * 10, row_forwards=250, prompt_forwards=100)
    assert len(planner.take([100] * 40)) == 10
    # longer prompts share a batch with fewer others; the longest one so far counts
    assert len(planner.take([200] * 40)) == 5
    assert len(planner.take([100, 100, 100, 400, 100])) == 3  # the 400-token prompt waits
    # one prompt always goes, even over every budget
    assert len(_planner(max_rows=1, max_row_tokens=1).take([100, 100])) == 1


def test_cpu_batches_are_sized_from_free_memory():
    per_token = 46_080  # SmolLM2-135M in float32
    rows, row_tokens = batch_budget("cpu", 20 * 1024**3, per_token)
    assert (rows, row_tokens) == (MAX_ROWS, int(20 * 1024**3 * CPU_KV_MEMORY_FRACTION) // per_token)
    assert batch_budget("cpu", 40 * 1024**3, per_token)[1] > 1.9 * row_tokens  # more memory, more prompts
    # 40 harmless-preset requests (16 rows at worst, ~240 tokens each) go in one batch on 20 GiB
    assert len(BatchPlanner(worst_rows=16, max_rows=rows, max_row_tokens=row_tokens).take([240] * 40)) == 40


def test_engine_batches_more_prompts_once_the_search_kept_few_rows(tiny_lm):
    # top_k 4 x beam 2 = 8 rows at worst, but a 0.05-nat bound leaves ~1 candidate per beam
    engine = DeALEngine(tiny_lm, max_rows=16)
    cfg = SearchConfig(strategy="deal", top_k=4, beam=2, lookahead=2, commit=2, max_new_tokens=8,
                       max_logprob_drop=0.05)
    prompts = (PROMPTS * 4)[:12]
    results = engine.generate(prompts, REWARDS, cfg)
    sizes = [r.stats.batch_size for r in results]
    assert sizes[:2] == [2, 2]  # 16 rows / 8 at worst
    assert max(sizes) > 2  # later batches carry the prompts the bound left room for
    # batching changes the work, never an answer
    one_by_one = engine.generate(prompts, REWARDS, cfg, batch_size=1)
    assert [r.token_ids for r in results] == [r.token_ids for r in one_by_one]
    assert [r.logprob for r in results] == pytest.approx([r.logprob for r in one_by_one], abs=1e-9)


def test_progress_bar_counts_prompts_as_each_ends_inside_a_batch(tiny_lm, monkeypatch):
    import tqdm.auto

    steps: list[int] = []

    class Bar:
        def __init__(self, total, **kw):
            self.total = total

        def update(self, n):
            steps.append(n)

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    engine = DeALEngine(tiny_lm)
    cfg = SearchConfig(strategy="deal", top_k=3, beam=2, lookahead=2, commit=2, max_new_tokens=12)
    prompts = (PROMPTS * 6)[:6]
    # prompt 0's caller ends it at once (a stop sequence): it is done steps before the others
    results = engine.generate(prompts, REWARDS, cfg, progress=True, on_tokens=lambda i, ids: i == 0)
    assert {r.stats.batch_size for r in results} == {6}
    assert sum(steps) == 6
    assert len(steps) > 1, steps  # the bar moved before the batch's end
