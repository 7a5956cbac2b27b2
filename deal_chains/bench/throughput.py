"""Throughput benchmark: aligned outputs per second against the number of prompts searched
together, next to greedy's, on CommonGen prompts (``deal-chains bench throughput``).

For each batch size B, the same N prompts run through greedy and DeAL in batches of B;
outputs/second = N / wall time. Both rows use the same prompts and rewards, in the same run,
so the DeAL/greedy ratio per batch size is comparable across machines even when absolute
figures are not.
"""

from __future__ import annotations

import time
from typing import Any, Sequence


THROUGHPUT_COLUMNS = [
    ("batch_size", "batch"), ("greedy_outputs_per_s", "greedy out/s"), ("deal_outputs_per_s", "DeAL out/s"),
    ("deal_over_greedy_time", "DeAL/greedy time"), ("greedy_soft_coverage", "greedy soft cov"),
    ("deal_soft_coverage", "DeAL soft cov"), ("deal_hard_coverage", "DeAL hard cov"),
]


def run_throughput(engine: Any, items: Sequence[Any], batch_sizes: Sequence[int], deal: Any, *,
                   max_new_tokens: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Greedy and ``deal`` over ``items`` once per batch size; returns the report."""
    from deal_chains.bench.commongen import commongen_prompt, concept_coverage
    from deal_chains.bench.runner import machine_info
    from deal_chains.search.config import SearchConfig
    from rewards.keywords import KeywordCoverage

    prompts = [commongen_prompt(it.concepts) for it in items]
    rewards = [[KeywordCoverage(it.concepts, inflections=True)] for it in items]
    budget = max_new_tokens or deal.max_new_tokens
    greedy = SearchConfig(strategy="greedy", max_new_tokens=budget)
    deal = deal.updated(max_new_tokens=budget)
    engine.generate(prompts[:2], rewards[:2], SearchConfig(strategy="greedy", max_new_tokens=4))  # warm-up
    rows = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=2 * len(batch_sizes), desc="throughput", unit="run", leave=False)
    try:
        for b in batch_sizes:
            row: dict[str, Any] = {"batch_size": b, "n": len(prompts)}
            for label, cfg in (("greedy", greedy), ("deal", deal)):
                t0 = time.perf_counter()
                results = engine.generate(prompts, rewards, cfg, batch_size=b)
                seconds = time.perf_counter() - t0
                covs = [concept_coverage(r.text, it) for r, it in zip(results, items)]
                row[f"{label}_seconds"] = round(seconds, 3)
                row[f"{label}_outputs_per_s"] = round(len(prompts) / seconds, 3)
                row[f"{label}_soft_coverage"] = round(sum(sum(c) / len(c) for c in covs) / len(covs), 4)
                row[f"{label}_hard_coverage"] = round(sum(float(all(c)) for c in covs) / len(covs), 4)
                if bar is not None:
                    bar.update(1)
            row["deal_over_greedy_time"] = round(row["deal_seconds"] / row["greedy_seconds"], 3)
            rows.append(row)
    finally:
        if bar is not None:
            bar.close()
    return {"benchmark": "throughput", "n": len(prompts), "batch_sizes": list(batch_sizes),
            "deal_config": deal.model_dump(), "machine": machine_info(engine), "rows": rows}


