"""Benchmark runner: the same prompts through several strategies in one run, timed against
greedy measured in that same run, with quality beside speed."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from deal_chains.bench.commongen import CommonGenItem, commongen_prompt, concept_coverage, reads_badly
from deal_chains.search.config import SearchConfig
from deal_chains.search.engine import DeALEngine
from rewards.keywords import KeywordCoverage

# Named settings a benchmark row can ask for; `deal` is the product default (blockwise
# commit), `deal-exact` the paper's one-token commit so the speed levers stay visible.
NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    "greedy": {"strategy": "greedy"},
    "sample": {"strategy": "sample", "temperature": 0.7},
    "best_of_n": {"strategy": "best_of_n", "temperature": 0.7, "n": 4},
    "rerank": {"strategy": "rerank", "n": 4},
    "deal": {"strategy": "deal"},
    "deal-exact": {"strategy": "deal", "commit": 1},
    "deal-noadapt": {"strategy": "deal", "adaptive": False, "prune": False},
}


def split_strategies(text: str) -> list[str]:
    """``--strategies`` split at the commas between entries, not those inside a value's
    brackets or quotes (a list such as ``hold_ends=[".", "!"]``).

    >>> split_strategies('greedy,deal:hold_eos=true:hold_ends=[".", "!"],deal-exact')
    ['greedy', 'deal:hold_eos=true:hold_ends=[".", "!"]', 'deal-exact']
    """
    out, current, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            out.append("".join(current))
            current = []
            continue
        current.append(ch)
    out.append("".join(current))
    return [entry.strip() for entry in out if entry.strip()]


def parse_strategy(entry: str, base: dict[str, Any]) -> tuple[str, SearchConfig]:
    """``name`` or ``name:key=value:key=value`` -> (label, config).

    >>> parse_strategy("deal:top_k=4", {})[1].top_k
    4
    """
    name, *assignments = entry.strip().split(":")
    if name not in NAMED_CONFIGS:
        raise ValueError(f"unknown benchmark strategy {name!r}; known: {', '.join(NAMED_CONFIGS)}")
    values = dict(base) if NAMED_CONFIGS[name]["strategy"] == "deal" else {
        k: v for k, v in base.items() if k in ("max_new_tokens", "lam", "seed")}
    values.update(NAMED_CONFIGS[name])
    if values["strategy"] in ("sample", "best_of_n"):
        # the engine's default is a fresh seed per prompt; a benchmark must replay exactly
        values.setdefault("seed", 0)
    for a in assignments:
        if "=" not in a:
            raise ValueError(f"bad setting {a!r} in strategy {entry!r}: expected key=value")
        k, v = a.split("=", 1)
        values[k] = _scalar(v)
    return entry.strip(), SearchConfig.build(**values)


def _scalar(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def machine_info(engine: DeALEngine) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(engine.lm.device),
        "gpu": torch.cuda.get_device_name(0) if engine.lm.device.type == "cuda" else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "model": engine.lm.name,
        "dtype": str(engine.lm.dtype).replace("torch.", ""),
    }


@dataclass
class StrategyRun:
    label: str
    config: SearchConfig
    seconds: float
    outputs: list[dict[str, Any]] = field(default_factory=list)


def reward_time_share(outputs: Sequence[dict[str, Any]], seconds: float) -> float:
    """The share of a run's wall time spent in reward calls (each output's
    ``reward_seconds``, summed): how much of DeAL's cost the rewards are.

    >>> reward_time_share([{"reward_seconds": 0.5}, {"reward_seconds": 1.0}], 6.0)
    0.25
    """
    if seconds <= 0:
        return 0.0
    return round(min(1.0, sum(o.get("reward_seconds", 0.0) for o in outputs) / seconds), 4)


def run_commongen(
    engine: DeALEngine,
    items: Sequence[CommonGenItem],
    strategies: Sequence[tuple[str, SearchConfig]],
    *,
    system: str | Sequence[str | None] | None = None,
    prompts: Sequence[Any] | None = None,
    rewards: Sequence[Sequence[Any]] | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every strategy over ``items``; return the report dict (rows + per-item outputs).

    ``system``: one system prompt for every item, or one per item (a spec's, rendered with the
    item's concepts); ``prompts``: one request per item, a string or chat turns (default:
    ``commongen_prompt``);
    ``rewards``: the search's rewards per item (default: the concepts' keyword coverage)."""
    if prompts is None:
        prompts = [commongen_prompt(it.concepts) for it in items]
    if rewards is None:
        # the reward a user would declare: the concepts, with lemminflect inflections; the metric
        # (concept_coverage) also accepts the data set's own inflection lists
        rewards = [[KeywordCoverage(it.concepts, inflections=True)] for it in items]
    for name, given in (("prompts", prompts), ("rewards", rewards), ("system", system)):
        if given is not None and not isinstance(given, str) and len(given) != len(items):
            raise ValueError(f"run_commongen: {len(given)} {name} for {len(items)} items")
    # warm-up: first forwards pay one-off allocation costs that would skew the first row
    engine.generate(prompts[:2], rewards[:2], SearchConfig(strategy="greedy", max_new_tokens=4),
                    system=system if system is None or isinstance(system, str) else system[:2])
    runs: list[StrategyRun] = []
    for label, config in strategies:
        t0 = time.perf_counter()
        results = engine.generate(prompts, rewards, config, system=system, batch_size=batch_size,
                                  progress=progress)
        seconds = time.perf_counter() - t0
        run = StrategyRun(label, config, seconds)
        for it, res in zip(items, results):
            cov = concept_coverage(res.text, it)
            run.outputs.append({
                "concepts": it.concepts, "text": res.text, "coverage": cov,
                "finished": res.finished, "new_tokens": len(res.token_ids),
                "mean_logprob": res.mean_logprob, "forward_passes": res.stats.forward_passes,
                "words": len(res.text.split()), **reads_badly(res.text),
                "reward_seconds": res.stats.reward_seconds,
            })
        runs.append(run)
    return commongen_report(engine, items, runs, system=system, batch_size=batch_size)


def good_rate(outputs: Sequence[dict[str, Any]]) -> float:
    """The share of answers a user asked for: every concept placed, and not reading badly
    (``reads_badly``: a word list, talk about the instruction, no sentence end)."""
    return statistics.fmean(float(all(o["coverage"]) and not o.get("bad", False)) for o in outputs)


def commongen_report(engine: DeALEngine, items: Sequence[CommonGenItem], runs: list[StrategyRun], *,
                     system: str | Sequence[str | None] | None, batch_size: int | None) -> dict[str, Any]:
    greedy = next((r for r in runs if r.config.strategy == "greedy"), None)
    rows = []
    n = len(items)
    for run in runs:
        covs = [o["coverage"] for o in run.outputs]
        soft = statistics.fmean(sum(c) / len(c) for c in covs)
        hard = statistics.fmean(float(all(c)) for c in covs)
        sec = run.seconds / n
        rows.append({
            "strategy": run.label,
            "soft_coverage": round(soft, 4),
            "hard_coverage": round(hard, 4),
            "good_rate": round(good_rate(run.outputs), 4),
            "seconds_per_prompt": round(sec, 4),
            "ratio_to_greedy": round(run.seconds / greedy.seconds, 3) if greedy else None,
            "mean_logprob_per_token": round(statistics.fmean(o["mean_logprob"] for o in run.outputs), 4),
            "mean_new_tokens": round(statistics.fmean(o["new_tokens"] for o in run.outputs), 2),
            "finished_rate": round(statistics.fmean(float(o["finished"]) for o in run.outputs), 4),
            "mean_words": round(statistics.fmean(o.get("words", 0) for o in run.outputs), 2),
            **{f"{key}_rate": round(statistics.fmean(float(o.get(key, False)) for o in run.outputs), 4)
               for key in ("word_list", "mentions_instruction", "unended", "bad")},
            "mean_forward_passes": round(statistics.fmean(o["forward_passes"] for o in run.outputs), 2),
            "reward_time_share": reward_time_share(run.outputs, run.seconds),
            "config": run.config.model_dump(),
        })
    return {
        "benchmark": "commongen",
        "n": n,
        "prompt": "Write one short sentence that uses all of these words: a, b, c.",
        "system": system if system is None or isinstance(system, str) else list(system),
        "batch_size": batch_size,
        "machine": machine_info(engine),
        "rows": rows,
        "outputs": {run.label: run.outputs for run in runs},
    }


def format_table(report: dict[str, Any], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub-markdown table of ``report['rows']``."""
    head = "| " + " | ".join(title for _, title in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for row in report["rows"]:
        cells = []
        for key, _ in columns:
            v = row.get(key)
            cells.append("-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COMMONGEN_COLUMNS = [
    ("strategy", "strategy"), ("soft_coverage", "soft cov"), ("hard_coverage", "hard cov"),
    ("good_rate", "good"), ("seconds_per_prompt", "s/prompt"), ("ratio_to_greedy", "x greedy"),
    ("mean_logprob_per_token", "logprob/tok"), ("mean_new_tokens", "tokens"),
    ("finished_rate", "finished"), ("bad_rate", "reads badly"), ("word_list_rate", "word list"),
    ("mentions_instruction_rate", "instruction"), ("unended_rate", "unended"), ("mean_words", "words"),
    ("mean_forward_passes", "forwards"), ("reward_time_share", "in rewards"),
]


def write_json(report: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def print_report(report: dict[str, Any], columns: Sequence[tuple[str, str]], name: str, footer: str,
                 out: str | Path | None) -> None:
    """Record the command line in ``report``, print its table and ``footer``, write it to
    ``out`` as JSON if given (the shared tail of every ``deal-chains bench`` command)."""
    import sys

    report["command"] = "deal-chains " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("deal-chains") \
        else f"deal-chains bench {name} ..."
    print(format_table(report, columns))
    print(footer)
    if out:
        write_json(report, out)
        print(f"wrote {out}")
