"""``deal-chains bench report``: one sweep, four figures, a markdown + JSON report.

1. CommonGen quality (soft / hard coverage) against seconds per prompt, one point per search
   setting over a grid of ``top_k x lookahead x beam x commit``, the Pareto front drawn,
   greedy marked, the time axis also as the ratio to greedy measured in the same run.
2. greedy / sample / best_of_n / rerank / deal at matched compute on CommonGen: coverage with
   95% bootstrap intervals (over prompts) beside each strategy's forward passes and seconds
   (``result.stats``) and the tokens it ran through the model; ``best_of_n`` and ``rerank``
   get the ``n`` whose model work is closest to DeAL's (see ``MATCHING_RULE``).
3. JSON: % valid and seconds per output for greedy vs soft (DeAL ranked by the schema
   reward) vs hard (greedy under the grammar mask) — ``json_bench``'s rows.
4. Harmless reward of the answers to AdvBench requests, greedy vs DeAL with the ``harmless``
   preset (``bench.harmless``), as a distribution over prompts.

Everything runs through the existing benchmark code (``commongen``, ``runner``,
``json_bench``, ``harmless``); this module sweeps, adds intervals / Pareto fronts /
compute matching, and writes ``report.md``, ``report.json`` and the PNGs (``plots``).
``run_report`` takes a loaded engine, so tests run it on a tiny model.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from itertools import product
from pathlib import Path
from typing import Any, Sequence

from deal_chains.bench.report_markdown import (  # noqa: F401 - the tables: public here too (cookbook 07)
    FIGURES, MATCHING_RULE, harmless_table, json_table, matched_table, md_table, pareto_table, print_tables,
    render_markdown, shared_warning)
from deal_chains.errors import InputError

# torch / numpy / matplotlib are imported inside the functions that need them, so building
# the CLI parser stays fast

DEFAULT_PATHS = {
    "commongen_data": "../shared/data/commongen/dev.txt",
    "commongen_constraints": "../shared/data/commongen/dev.constraint.json",
    "schemas": "../shared/data/jsonschema/github_easy_dev",
    "advbench": "../shared/data/advbench/harmful_behaviors_dev.csv",
}


# ----------------------------------------------------------------------------- settings


@dataclass
class Grid:
    """Search settings swept for figure 1: the product of these lists. ``commit`` entries
    are a token count or ``"block"`` (= that setting's lookahead, the blockwise default);
    settings whose commit exceeds their lookahead are dropped, duplicates kept once."""

    top_k: list[int]
    lookahead: list[int]
    beam: list[int]
    commit: list[int | str]

    def settings(self) -> list[dict[str, int]]:
        out: list[dict[str, int]] = []
        for k, look, b, c in product(self.top_k, self.lookahead, self.beam, self.commit):
            commit = max(look, 1) if c == "block" else int(c)
            s = {"top_k": k, "lookahead": look, "beam": b, "commit": commit}
            if commit <= max(look, 1) and s not in out:
                out.append(s)
        return out


@dataclass
class ReportSettings:
    """How big the sweep is. ``quick()`` fits in ~10 minutes on a 2-core CPU with the
    default model; ``full()`` is the documented GPU setting."""

    mode: str
    n_commongen: int
    n_json: int
    n_harmless: int
    max_new_tokens: int  # CommonGen (figures 1 and 2)
    json_max_new_tokens: int
    harmless_max_new_tokens: int
    grid: Grid
    sample_temperature: float = 0.7
    repeats: int = 1  # CommonGen runs timed this many times, the fastest kept
    max_match_n: int = 32
    bootstrap: int = 1000
    seed: int = 0

    @classmethod
    def quick(cls) -> "ReportSettings":
        return cls(mode="quick", n_commongen=12, n_json=6, n_harmless=6, max_new_tokens=24,
                   json_max_new_tokens=96, harmless_max_new_tokens=32,
                   grid=Grid(top_k=[2, 6], lookahead=[2, 4], beam=[2], commit=[1, "block"]))

    @classmethod
    def full(cls) -> "ReportSettings":
        return cls(mode="full", n_commongen=100, n_json=50, n_harmless=50, max_new_tokens=48,
                   json_max_new_tokens=256, harmless_max_new_tokens=64, repeats=2,
                   grid=Grid(top_k=[2, 4, 6, 8], lookahead=[2, 4, 8], beam=[1, 2, 4], commit=[1, "block"]))

    def with_n(self, n: int | None) -> "ReportSettings":
        """The same settings with ``n`` prompts (schemas, requests) for every figure."""
        if n is None:
            return self
        check_n(n)
        return replace(self, n_commongen=n, n_json=n, n_harmless=n)


def check_n(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"--n must be a positive number of prompts, got {n!r}")


def check_inputs(out_dir: str | Path, *, commongen_data: str | Path, commongen_constraints: str | Path | None,
                 schemas: str | Path, advbench: str | Path) -> Path:
    """Every path problem as an ``InputError`` naming the path and the option, before any
    model work; returns the (created, writable) output folder."""
    checks = [("--commongen-data", commongen_data, "file"), ("--commongen-constraints", commongen_constraints, "file"),
              ("--schemas", schemas, "dir"), ("--advbench", advbench, "file")]
    for option, path, kind in checks:
        if path is None:
            if option == "--commongen-constraints":
                continue
            raise InputError(f"{option} is required")
        p = Path(path)
        ok = p.is_dir() if kind == "dir" else p.is_file()
        if not ok:
            what = "folder" if kind == "dir" else "file"
            raise InputError(f"{option}: {what} not found: {p} (pass {option} PATH)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return out


# ----------------------------------------------------------------------------- statistics


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, float]:
    """Mean of ``values`` and its percentile-bootstrap interval (resampling the values,
    i.e. the prompts, with replacement; seeded numpy). The interval is widened to contain
    the mean in the rare skewed case where the percentiles miss it."""
    import numpy as np

    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_ci: no values")
    mean = float(x.mean())
    if x.size == 1:
        return {"mean": mean, "low": mean, "high": mean}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2
    low, high = (float(v) for v in np.quantile(means, [alpha, 1.0 - alpha]))
    return {"mean": mean, "low": min(low, mean), "high": max(high, mean)}


def pareto_front(cost: Sequence[float], quality: Sequence[float]) -> list[int]:
    """Indices of the points no other point dominates (cost no higher and quality no lower,
    one of them strictly), sorted by cost."""
    idx = []
    for i, (ci, qi) in enumerate(zip(cost, quality)):
        dominated = any(cj <= ci and qj >= qi and (cj < ci or qj > qi)
                        for j, (cj, qj) in enumerate(zip(cost, quality)) if j != i)
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: (cost[i], -quality[i]))


class ComputeMeter:
    """Counts the model's work while active: batched calls, and tokens (rows x positions)
    in prefill calls (more than one position) and decode calls (one position)."""

    def __init__(self, model: Any):
        self.model = model
        self.calls = self.prefill_tokens = self.decode_tokens = 0
        self._handle = None

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0]
        if ids is None or not hasattr(ids, "shape") or ids.ndim != 2:
            return
        self.calls += 1
        if ids.shape[1] > 1:
            self.prefill_tokens += int(ids.numel())
        else:
            self.decode_tokens += int(ids.numel())

    def __enter__(self) -> "ComputeMeter":
        self.calls = self.prefill_tokens = self.decode_tokens = 0
        self._handle = self.model.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


# ----------------------------------------------------------------------------- CommonGen runs


def _commongen_run(engine: Any, items: Sequence[Any], prompts: list[str], rewards: list[list[Any]], label: str,
                   config: Any, *, n_boot: int, seed: int, repeats: int = 1) -> tuple[Any, dict[str, Any]]:
    """One strategy over every prompt (batched): the runner's ``StrategyRun`` plus what the
    report adds (stats seconds, model work, bootstrap intervals). With ``repeats`` > 1 the
    fastest run is kept (outputs are the same: sampling is seeded), which damps stalls from
    other work on a shared machine."""
    from deal_chains.bench.commongen import concept_coverage
    from deal_chains.bench.runner import StrategyRun

    best: tuple[float, list[Any], ComputeMeter] | None = None
    walls = []
    for _ in range(max(1, repeats)):
        with ComputeMeter(engine.lm.model) as meter:
            t0 = time.perf_counter()
            results = engine.generate(prompts, rewards, config)
            wall = time.perf_counter() - t0
        walls.append(wall)
        if best is None or wall < best[0]:
            best = (wall, results, meter)
    wall, results, meter = best
    run = StrategyRun(label, config, wall)
    for it, res in zip(items, results):
        run.outputs.append({
            "concepts": it.concepts, "text": res.text, "coverage": concept_coverage(res.text, it),
            "finished": res.finished, "new_tokens": len(res.token_ids), "mean_logprob": res.mean_logprob,
            "forward_passes": res.stats.forward_passes, "seconds": res.stats.seconds,
            "candidates_scored": res.stats.candidates_scored,
        })
    n = len(items)
    soft = [sum(o["coverage"]) / len(o["coverage"]) for o in run.outputs]
    hard = [float(all(o["coverage"])) for o in run.outputs]
    extra = {
        "seconds_per_prompt": statistics.fmean(o["seconds"] for o in run.outputs),
        "wall_seconds": wall,
        "wall_seconds_repeats": walls,
        "model_calls": meter.calls,
        "decode_tokens_per_prompt": meter.decode_tokens / n,
        "prefill_tokens_per_prompt": meter.prefill_tokens / n,
        "soft_ci": bootstrap_ci(soft, n_boot=n_boot, seed=seed),
        "hard_ci": bootstrap_ci(hard, n_boot=n_boot, seed=seed),
    }
    return run, extra


def _commongen_rows(engine: Any, items: Sequence[Any], runs: list[Any], extras: list[dict[str, Any]]) -> list[dict]:
    """The runner's rows (coverage, logprob, tokens, finished, forwards) with the report's
    unrounded seconds (from ``result.stats``) and the ratio to greedy's, same run."""
    from deal_chains.bench.runner import commongen_report

    rows = commongen_report(engine, items, runs, system=None, batch_size=None)["rows"]
    greedy = next(e for r, e in zip(runs, extras) if r.config.strategy == "greedy")
    for row, extra in zip(rows, extras):
        row.update(extra)
        row["ratio_to_greedy"] = extra["seconds_per_prompt"] / greedy["seconds_per_prompt"]
    return rows


def _match_n(target: float, unit: float, power: int, max_n: int) -> int:
    """The n in 1..max_n whose estimated cost ``unit * n**power`` is closest to ``target``
    in log ratio."""
    if unit <= 0 or target <= 0:
        return 1
    return min(range(1, max_n + 1), key=lambda n: (abs(math.log(unit * n ** power / target)), n))


def _warm_up(engine: Any, items: Sequence[Any]) -> None:
    """First forwards (and first reward scorings) pay one-off costs that would skew the
    first timed row, greedy's, and with it every ratio: run both code paths once."""
    from deal_chains.bench.commongen import commongen_prompt
    from deal_chains.search.config import SearchConfig
    from rewards.keywords import KeywordCoverage

    few = list(items[:2])
    prompts = [commongen_prompt(it.concepts) for it in few]
    rewards = [[KeywordCoverage(it.concepts, inflections=True)] for it in few]
    engine.generate(prompts, rewards, SearchConfig(strategy="greedy", max_new_tokens=4))
    engine.generate(prompts, rewards, SearchConfig(strategy="deal", top_k=2, beam=2, lookahead=2, max_new_tokens=4))


def run_pareto(engine: Any, items: Sequence[Any], settings: ReportSettings, *, bar: Any = None) -> dict[str, Any]:
    """Figure 1: greedy + every grid setting; Pareto fronts for soft and hard coverage."""
    from deal_chains.bench.commongen import commongen_prompt
    from deal_chains.search.config import SearchConfig
    from rewards.keywords import KeywordCoverage

    prompts = [commongen_prompt(it.concepts) for it in items]
    rewards = [[KeywordCoverage(it.concepts, inflections=True)] for it in items]
    strategies = [("greedy", SearchConfig(strategy="greedy", max_new_tokens=settings.max_new_tokens))]
    for s in settings.grid.settings():
        label = f"k{s['top_k']} l{s['lookahead']} b{s['beam']} c{s['commit']}"
        strategies.append((label, SearchConfig.build(strategy="deal", max_new_tokens=settings.max_new_tokens, **s)))
    runs, extras = [], []
    for label, cfg in strategies:
        if bar is not None:
            bar.set_postfix_str(f"commongen grid: {label}")
        run, extra = _commongen_run(engine, items, prompts, rewards, label, cfg, n_boot=settings.bootstrap,
                                    seed=settings.seed, repeats=settings.repeats)
        extra["setting"] = ({"top_k": cfg.top_k, "lookahead": cfg.lookahead, "beam": cfg.beam,
                             "commit": cfg.commit_tokens} if cfg.strategy == "deal" else None)
        runs.append(run)
        extras.append(extra)
        if bar is not None:
            bar.update(1)
    rows = _commongen_rows(engine, items, runs, extras)
    seconds = [r["seconds_per_prompt"] for r in rows]
    fronts = {}
    for metric in ("soft_coverage", "hard_coverage"):
        front = pareto_front(seconds, [r[metric] for r in rows])
        fronts[metric] = [rows[i]["strategy"] for i in front]
        for i, row in enumerate(rows):
            row[f"pareto_{metric.split('_')[0]}"] = i in front
    return {
        "n": len(items),
        "max_new_tokens": settings.max_new_tokens,
        "greedy_seconds_per_prompt": rows[0]["seconds_per_prompt"],
        "rows": rows,
        "pareto": fronts,
        "outputs": {run.label: run.outputs for run in runs},
    }


def run_matched(engine: Any, items: Sequence[Any], settings: ReportSettings, *, bar: Any = None) -> dict[str, Any]:
    """Figure 2: the five strategies, best_of_n / rerank at DeAL's compute."""
    from deal_chains.bench.commongen import commongen_prompt
    from deal_chains.search.config import SearchConfig
    from rewards.keywords import KeywordCoverage

    prompts = [commongen_prompt(it.concepts) for it in items]
    rewards = [[KeywordCoverage(it.concepts, inflections=True)] for it in items]
    budget = settings.max_new_tokens
    deal = SearchConfig(strategy="deal", max_new_tokens=budget)  # the product defaults
    plan: list[tuple[str, Any]] = [
        ("greedy", SearchConfig(strategy="greedy", max_new_tokens=budget)),
        ("sample", SearchConfig(strategy="sample", temperature=settings.sample_temperature, seed=settings.seed,
                                max_new_tokens=budget)),
        ("deal", deal),
    ]
    done: dict[str, tuple[Any, dict[str, Any]]] = {}

    def run(label: str, cfg: Any) -> None:
        if bar is not None:
            bar.set_postfix_str(f"matched compute: {label}")
        done[label] = _commongen_run(engine, items, prompts, rewards, label, cfg, n_boot=settings.bootstrap,
                                     seed=settings.seed, repeats=settings.repeats)
        if bar is not None:
            bar.update(1)

    for label, cfg in plan:
        run(label, cfg)
    g, s, d = (done[k][1]["decode_tokens_per_prompt"] for k in ("greedy", "sample", "deal"))
    n_bon = _match_n(d, s, 1, settings.max_match_n)
    n_rerank = _match_n(d, g, 2, settings.max_match_n)
    run("best_of_n", SearchConfig(strategy="best_of_n", n=n_bon, temperature=settings.sample_temperature,
                                  seed=settings.seed, max_new_tokens=budget))
    run("rerank", SearchConfig(strategy="rerank", n=n_rerank, max_new_tokens=budget))
    order = ["greedy", "sample", "best_of_n", "rerank", "deal"]
    runs = [done[k][0] for k in order]
    extras = [done[k][1] for k in order]
    rows = _commongen_rows(engine, items, runs, extras)
    for row in rows:
        row["n"] = row["config"]["n"] if row["config"]["strategy"] in ("best_of_n", "rerank") else None
        row["work_vs_deal"] = row["decode_tokens_per_prompt"] / d if d else None
    return {
        "n": len(items),
        "max_new_tokens": budget,
        "rows": rows,
        "matching": {"rule": MATCHING_RULE, "deal_decode_tokens": d, "sample_decode_tokens": s,
                     "greedy_decode_tokens": g, "best_of_n_n": n_bon, "rerank_n": n_rerank,
                     "estimates": {"best_of_n": s * n_bon, "rerank": g * n_rerank ** 2}},
        "outputs": {run.label: run.outputs for run in runs},
    }


# ----------------------------------------------------------------------------- JSON / harmless


def run_json(engine: Any, schemas: str | Path, settings: ReportSettings, *, progress: bool = True) -> dict[str, Any]:
    """Figure 3: ``json_bench`` rows greedy / soft / hard, plus intervals on % valid."""
    from deal_chains.bench.json_bench import load_schemas, run_json_bench

    cases = load_schemas(schemas, settings.n_json)
    if not any(c.refused is None for c in cases):
        raise InputError(f"--schemas {schemas}: jsonschema refused every schema of the first {len(cases)}")
    report = run_json_bench(engine, cases, ("greedy", "soft", "hard"), max_new_tokens=settings.json_max_new_tokens,
                            progress=progress)
    for row in report["rows"]:
        valid = [float(o["valid"]) for o in report["outputs"][row["strategy"]]]
        row["valid_ci"] = (bootstrap_ci(valid, n_boot=settings.bootstrap, seed=settings.seed) if valid
                           else {"mean": 0.0, "low": 0.0, "high": 0.0})
    report.pop("machine", None)
    return report


def run_harmless(engine: Any, advbench: str | Path, settings: ReportSettings, *, head: str | Path | None = None,
                 system: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Figure 4: greedy vs DeAL with the ``harmless`` preset on AdvBench requests."""
    from deal_chains.bench.harmless import load_advbench, run_harmless_bench
    from deal_chains.bench.runner import parse_strategy
    from deal_chains.spec import load_spec, preset_path
    from rewards.harmless import HarmlessReward

    spec = load_spec(preset_path("harmless"))
    base = dict(spec.search)
    base["max_new_tokens"] = settings.harmless_max_new_tokens
    strategies = [parse_strategy("greedy", base), parse_strategy("deal", base)]
    try:
        reward = HarmlessReward.for_model(engine.lm, head)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(str(exc)) from None
    prompts = load_advbench(advbench, n=settings.n_harmless)
    system = spec.system if system is None else system
    report = run_harmless_bench(engine, prompts, strategies, reward, system=system, progress=progress)
    report.pop("machine", None)
    for row in report["rows"]:
        values = [o["harmless"] for o in report["outputs"][row["strategy"]]]
        row["harmless_ci"] = bootstrap_ci(values, n_boot=settings.bootstrap, seed=settings.seed)
        row["harmless_median"] = statistics.median(values)
    g, d = (report["outputs"][r["strategy"]] for r in report["rows"][:2])
    report["deal_higher"] = sum(b["harmless"] > a["harmless"] for a, b in zip(g, d))
    report["deal_lower"] = sum(b["harmless"] < a["harmless"] for a, b in zip(g, d))
    return report


# ----------------------------------------------------------------------------- the report


def run_report(engine: Any, out_dir: str | Path, settings: ReportSettings | None = None, *,
               commongen_data: str | Path = DEFAULT_PATHS["commongen_data"],
               commongen_constraints: str | Path | None = DEFAULT_PATHS["commongen_constraints"],
               schemas: str | Path = DEFAULT_PATHS["schemas"],
               advbench: str | Path = DEFAULT_PATHS["advbench"],
               harmless_head: str | Path | None = None, harmless_system: str | None = None,
               command: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the four benchmarks with ``engine``; write ``report.md``, ``report.json`` and
    the PNGs into ``out_dir``; return the report dict.

    ``harmless_head`` / ``harmless_system``: the harmless reward's head and the system
    prompt of figure 4 (default: the shipped head, the ``harmless`` preset's prompt).
    """
    from deal_chains.bench import plots
    from deal_chains.bench.commongen import load_commongen
    from deal_chains.bench.runner import machine_info, write_json

    settings = settings or ReportSettings.quick()
    for n in (settings.n_commongen, settings.n_json, settings.n_harmless):
        check_n(n)
    out = check_inputs(out_dir, commongen_data=commongen_data, commongen_constraints=commongen_constraints,
                       schemas=schemas, advbench=advbench)
    items = load_commongen(commongen_data, commongen_constraints, n=settings.n_commongen)
    if not items:
        raise InputError(f"--commongen-data {commongen_data}: no concept sets")
    t_start = time.perf_counter()
    load_start, cpu_start = _load_average(), _cpu_sample()
    grid = settings.grid.settings()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=1 + len(grid) + 5 + 3 + 2, desc="bench report", unit="run", file=sys.stderr)
    try:
        _warm_up(engine, items)
        clock = time.perf_counter()
        pareto = run_pareto(engine, items, settings, bar=bar)
        pareto["section_seconds"], clock = time.perf_counter() - clock, time.perf_counter()
        matched = run_matched(engine, items, settings, bar=bar)
        matched["section_seconds"], clock = time.perf_counter() - clock, time.perf_counter()
        if bar is not None:
            bar.set_postfix_str("json schemas")
        json_part = run_json(engine, schemas, settings, progress=progress)
        json_part["section_seconds"], clock = time.perf_counter() - clock, time.perf_counter()
        if bar is not None:
            bar.update(3)
            bar.set_postfix_str("harmless")
        harmless = run_harmless(engine, advbench, settings, head=harmless_head, system=harmless_system,
                                progress=progress)
        harmless["section_seconds"] = time.perf_counter() - clock
        if bar is not None:
            bar.update(2)
    finally:
        if bar is not None:
            bar.close()
    machine = machine_info(engine)
    load = {"start": load_start, "end": _load_average()}
    contention = cpu_contention(cpu_start, _cpu_sample(), machine.get("cpu_count"))
    report: dict[str, Any] = {
        "benchmark": "report",
        "mode": settings.mode,
        "command": command or "run_report(...)",
        "machine": machine,
        "model": machine["model"],
        "settings": {**asdict(settings), "grid_settings": grid},
        "data": {"commongen_data": str(commongen_data), "commongen_constraints": str(commongen_constraints),
                 "schemas": str(schemas), "advbench": str(advbench)},
        "seconds_total": None,
        "load_average": load,
        "cpu_contention": contention,
        "shared_machine": _shared(contention),
        "figures": {"pareto": pareto, "matched": matched, "json": json_part, "harmless": harmless},
        "files": {"markdown": "report.md", "json": "report.json", **{k: v for k, v in FIGURES.items()}},
    }
    plots.plot_pareto(pareto, out / FIGURES["pareto"])
    plots.plot_matched(matched, out / FIGURES["matched"])
    plots.plot_json(json_part, out / FIGURES["json"])
    plots.plot_harmless(harmless, out / FIGURES["harmless"])
    report["seconds_total"] = time.perf_counter() - t_start
    write_json(report, out / "report.json")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # not on every platform
        return None


def _cpu_sample() -> dict[str, float] | None:
    """Busy CPU seconds of the whole machine (Linux ``/proc/stat``) and of this process."""
    import resource

    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"machine_busy": busy / tick, "self": ru.ru_utime + ru.ru_stime, "wall": time.perf_counter()}


def cpu_contention(start: dict[str, float] | None, end: dict[str, float] | None,
                   cpu_count: int | None) -> dict[str, float] | None:
    """How much of the machine's CPU other processes used between two ``_cpu_sample``s:
    ``others_share`` = (machine busy time - this process's CPU time) / (wall x cores)."""
    if not start or not end or not cpu_count:
        return None
    wall = end["wall"] - start["wall"]
    if wall <= 0:
        return None
    others = max(0.0, (end["machine_busy"] - start["machine_busy"]) - (end["self"] - start["self"]))
    return {"wall_seconds": round(wall, 2), "self_cpu_seconds": round(end["self"] - start["self"], 2),
            "others_cpu_seconds": round(others, 2), "others_share": round(others / (wall * cpu_count), 3)}


SHARED_THRESHOLD = 0.25  # others used a quarter of all cores, on average


def _shared(contention: dict[str, float] | None) -> bool:
    return bool(contention) and contention["others_share"] >= SHARED_THRESHOLD


# ----------------------------------------------------------------------------- markdown


__all__ = ["Grid", "ReportSettings", "bootstrap_ci", "pareto_front", "run_report",
           "ComputeMeter", "check_inputs", "render_markdown", "FIGURES"]
