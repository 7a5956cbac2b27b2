"""Time the harmless preset's DeAL search on AdvBench requests at two batch budgets, in one
process, interleaved with greedy: the budget sized from free memory (the default) and the
fixed budget of 128 rows x 24,576 row-tokens held to the worst case (small batches).

    python benchmarks/batch_size_timing.py ../shared/data/advbench/harmful_behaviors_dev.csv 40

Prints each run's seconds, the batch sizes it used, and whether its answers equal the first
DeAL run's (batching changes the work, never an answer). The order (memory, fixed, greedy,
memory) shows run-to-run noise on a shared machine: compare runs, not single seconds.
"""

from __future__ import annotations

import sys
import time

from deal_chains.bench.harmless import load_advbench
from deal_chains.bench.runner import parse_strategy
from deal_chains.search.batching import DEFAULT_MAX_ROW_TOKENS, DEFAULT_MAX_ROWS
from deal_chains.search.config import SearchConfig
from deal_chains.search.engine import DeALEngine
from deal_chains.spec import load_spec, preset_path
from rewards.base import RewardContext
from rewards.harmless import HarmlessReward


def main(path: str, n: int) -> None:
    engine = DeALEngine("default")
    memory_budget = engine.max_rows, engine.max_row_tokens
    print(f"budget from free memory: {memory_budget[0]} rows, {memory_budget[1]} row-tokens", flush=True)
    reward = HarmlessReward.for_model(engine.lm, None)
    spec = load_spec(preset_path("harmless"))
    prompts = load_advbench(path, n=n)
    contexts = [RewardContext(prompt=p) for p in prompts]
    engine.generate(prompts[:2], [reward], SearchConfig(strategy="greedy", max_new_tokens=4),
                    system=spec.system, contexts=contexts[:2])
    _, greedy = parse_strategy("greedy", dict(spec.search))
    _, deal = parse_strategy("deal", dict(spec.search))
    first = None
    for label, config, budget in [("deal, memory budget", deal, memory_budget),
                                  ("deal, fixed budget", deal, (DEFAULT_MAX_ROWS, DEFAULT_MAX_ROW_TOKENS)),
                                  ("greedy", greedy, memory_budget),
                                  ("deal, memory budget", deal, memory_budget)]:
        engine.max_rows, engine.max_row_tokens = budget
        t0 = time.perf_counter()
        results = engine.generate(prompts, [reward], config, system=spec.system, contexts=contexts)
        seconds = time.perf_counter() - t0
        texts = [r.text for r in results]
        if config.strategy == "deal" and first is None:
            first = texts
        same = "" if config.strategy != "deal" else f", same answers: {texts == first}"
        sizes = [r.stats.batch_size for r in results]
        print(f"{label}: {seconds:.1f} s, batch sizes {sorted(set(sizes))}{same}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40)
