"""Batch sizing: the worst case first, then the rows the search actually kept."""

from __future__ import annotations

import pytest
from search_fixtures import PROMPTS, REWARDS  # noqa: F401

from deal_chains import DeALEngine, SearchConfig
from deal_chains.search.batching import BatchPlanner, memory_row_tokens


def _planner(**kw):
    base = dict(worst_rows=16, max_rows=128, max_row_tokens=10**6, memory_row_tokens=10**6)
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
    planner = _planner(memory_row_tokens=16 * 100 * 10, row_forwards=250, prompt_forwards=100)
    assert len(planner.take([100] * 40)) == 10
    # row-tokens at the expected rows: longer prompts share a batch with fewer others
    planner = _planner(max_row_tokens=2.5 * 100 * 12, row_forwards=250, prompt_forwards=100)
    assert len(planner.take([100] * 40)) == 12
    assert len(planner.take([200] * 40)) == 6
    # one prompt always goes, even over every budget
    assert len(_planner(max_rows=1, memory_row_tokens=1).take([100, 100])) == 1


def test_cpu_memory_budget_never_refuses_what_the_fixed_budget_allows():
    assert memory_row_tokens("cpu", 20 * 1024**3, 46_080, 24_576) == int(20 * 1024**3 * 0.5) // 46_080
    assert memory_row_tokens("cpu", 1024**2, 46_080, 24_576) == 24_576
    assert memory_row_tokens("cpu", None, 46_080, 24_576) == 24_576
    assert memory_row_tokens("cuda", 80 * 1024**3, 46_080, 1000) == 1000  # the GPU budget is memory already


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
