"""Throughput benchmark: aligned outputs per second against the number of prompts searched
together, next to greedy's, on CommonGen prompts (``deal-chains bench throughput``).

For each batch size B, the same N prompts run through greedy and DeAL in batches of B;
outputs/second = N / wall time. Both rows use the same prompts and rewards, in the same run,
so the DeAL/greedy ratio per batch size is comparable across machines even when absolute
figures are not.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Sequence

from deal_chains.errors import InputError

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


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes must be a comma list of integers, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return sizes


def cmd_bench_throughput(args: argparse.Namespace) -> int:
    from deal_chains.bench.commongen import load_commongen
    from deal_chains.bench.runner import parse_strategy, print_report
    from deal_chains.search.engine import DeALEngine

    n = args.n or max(args.batch_sizes)
    items = load_commongen(args.data, args.constraints, n=n)
    if len(items) < max(args.batch_sizes):
        raise InputError(f"{len(items)} prompts cannot fill a batch of {max(args.batch_sizes)}; lower "
                         "--batch-sizes or give more data")
    try:
        _, deal = parse_strategy(args.deal, {})
    except ValueError as exc:
        raise InputError(str(exc)) from None
    engine = DeALEngine(args.model, device=args.device)
    report = run_throughput(engine, items, args.batch_sizes, deal, max_new_tokens=args.max_new_tokens,
                            progress=not args.quiet)
    m = report["machine"]
    print_report(report, THROUGHPUT_COLUMNS, "throughput", f"\n{report['n']} CommonGen prompts per run, model "
                 f"{m['model']} on {m['device']} ({m['cpu_count']} cores); out/s = prompts / wall time with that "
                 "many prompts searched together", args.out)
    return 0


def register_bench_throughput(bench_subparsers: Any) -> argparse.ArgumentParser:
    t = bench_subparsers.add_parser("throughput", help="aligned outputs per second vs prompts batched together")
    t.add_argument("--data", required=True, help="CommonGen dev.txt")
    t.add_argument("--constraints", required=True, help="CommonGen dev.constraint.json")
    t.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 4, 16, 64])
    t.add_argument("--n", type=int, default=None, help="prompts per run (default: the largest batch size)")
    t.add_argument("--deal", default="deal", help="the DeAL row, e.g. deal:top_k=4")
    t.add_argument("--max-new-tokens", type=int, default=None)
    t.add_argument("--model", default="default")
    t.add_argument("--device", default="auto")
    t.add_argument("--out", default="bench-throughput.json")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_bench_throughput)
    return t
