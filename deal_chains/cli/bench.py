"""``deal-chains bench``: the benchmark subcommands over the functions in ``deal_chains.bench``."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from deal_chains.errors import InputError

from deal_chains.cli._args import _batch_sizes, _device_arg
from deal_chains.bench.harmless import (PAIRS_COLUMNS, PROMPTS_COLUMNS, REFUSAL_SENTENCES, load_advbench,
    run_harmless_bench, run_pairs_bench)
from deal_chains.bench.json_bench import JSON_COLUMNS, JSON_ROWS, load_schemas, run_json_bench
from deal_chains.bench.throughput import THROUGHPUT_COLUMNS, run_throughput
from deal_chains.bench.report import (DEFAULT_PATHS, FIGURES, ReportSettings, check_inputs, print_tables, run_report,
    shared_warning)


def _machine(report: dict[str, Any], threads: bool = True) -> str:
    """``model M on DEVICE (N cores[, T torch threads])`` for a benchmark's footer."""
    m = report["machine"]
    cores = f"{m['cpu_count']} cores" + (f", {m['torch_threads']} torch threads" if threads else "")
    return f"model {m['model']} on {m['device']} ({cores})"


def _strategies(text: str, base: dict[str, Any]) -> list[tuple[str, Any]]:
    """``--strategies`` (``name:key=value,...``) as (label, SearchConfig) rows; a bad entry is an
    ``InputError`` naming it."""
    from deal_chains.bench.runner import parse_strategy, split_strategies

    try:
        return [parse_strategy(s, base) for s in split_strategies(text)]
    except ValueError as exc:
        raise InputError(str(exc)) from None


def cmd_bench_commongen(args: argparse.Namespace) -> int:
    from deal_chains.bench.commongen import load_commongen
    from deal_chains.bench.runner import COMMONGEN_COLUMNS, print_report, run_commongen
    from deal_chains.search.engine import DeALEngine
    from deal_chains.spec import apply_overrides

    base: dict[str, Any] = {}
    spec = None
    if args.spec.lower() != "none":
        spec = _load_bench_spec(args.spec)
        base = dict(spec.search)
    if args.set:
        base.update(apply_overrides({"search": {}}, args.set).get("search", {}))
    strategies = _strategies(args.strategies, base)
    items = load_commongen(args.data, args.constraints, n=args.n, offset=args.offset)
    system: Any = args.system
    prompts = rewards = None
    engine = DeALEngine(args.model, device=args.device)
    if spec is not None:
        from deal_chains.bench.commongen import commongen_prompt
        from deal_chains.pipeline import search_inputs
        from deal_chains.records import LINE_KEY

        # what a user of the spec gets: its request, system prompt and rewards, built from each
        # concept set as `generate` builds them from an input record (the bench's request where
        # the spec has none)
        records = [{"concepts": list(it.concepts), LINE_KEY: args.offset + i + 1,
                    **({} if spec.prompt is not None else {"prompt": commongen_prompt(it.concepts)})}
                   for i, it in enumerate(items)]
        inputs = search_inputs(spec, records, engine, spec.search_config(**base),
                               lambda r: f"{args.data}:{r[LINE_KEY]}")
        prompts = inputs.prompts
        system = inputs.systems if args.system is None else args.system
        rewards = inputs.rewards if spec.rewards else None
    report = run_commongen(engine, items, strategies, system=system, prompts=prompts, rewards=rewards,
                           batch_size=args.batch_size, progress=not args.quiet)
    if spec is not None:
        report = {**report, "spec": args.spec, "system": args.system or spec.system,
                  "prompt": spec.prompt or report["prompt"],
                  **_examples_of(spec)}
    print_report(report, COMMONGEN_COLUMNS, "commongen", f"\n{report['n']} prompts, {_machine(report)}; ratio = "
                 "strategy wall time / greedy wall time, same run", args.out)
    return 0


def cmd_bench_plot_commongen(args: argparse.Namespace) -> int:
    """One figure from several ``bench commongen`` reports (e.g. the 3-, 4- and 5-word slices)."""
    import json

    from deal_chains.bench.plots import plot_commongen_runs

    reports = []
    for spec in args.reports:
        label, _, file = spec.rpartition("=") if "=" in spec else (None, "", spec)
        try:
            report = json.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"bench plot-commongen: cannot read the report {file}: {exc}") from None
        if report.get("benchmark") != "commongen":
            raise InputError(f"bench plot-commongen: {file} is not a `bench commongen` report")
        reports.append((label or Path(file).stem, report))
    names = {}
    for entry in args.name or []:
        strategy, sep, name = entry.rpartition("=")
        if not sep or not strategy or not name:
            raise InputError(f"bench plot-commongen: --name {entry!r}: expected STRATEGY=NAME")
        names[strategy] = name
    print(plot_commongen_runs(reports, args.out, x=args.x, names=names))
    return 0


def register_bench_json(bench_subparsers) -> None:
    j = bench_subparsers.add_parser("json", help="JSON validity per schema: greedy vs soft reward vs hard mask")
    j.add_argument("--schemas", required=True, help="folder of *.json JSON Schemas")
    j.add_argument("--n", type=int, default=None, help="first N schemas (sorted by file name)")
    j.add_argument("--rows", default=",".join(JSON_ROWS), help=f"comma list of: {', '.join(JSON_ROWS)}")
    j.add_argument("--max-new-tokens", type=int, default=256)
    j.add_argument("--batch-size", type=int, default=None)
    j.add_argument("--model", default="default")
    j.add_argument("--device", default="auto")
    j.add_argument("--out", default="bench-json.json")
    j.add_argument("--quiet", action="store_true")
    j.set_defaults(func=cmd_bench_json)


def cmd_bench_json(args) -> int:
    from deal_chains.bench.runner import print_report
    from deal_chains.search.engine import DeALEngine

    cases = load_schemas(args.schemas, args.n)
    engine = DeALEngine(args.model, device=args.device)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    report = run_json_bench(engine, cases, rows, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, progress=not args.quiet)
    footer = [f"\n{report['n_schemas']} schemas, {_machine(report, threads=False)}; ratio = seconds per "
              "prompt / unconstrained greedy's, same run"]
    footer += [f"refused {name}: {why}" for name, why in report["refused"].items()]
    print_report(report, JSON_COLUMNS, "json", "\n".join(footer), args.out)
    return 0


def cmd_bench_harmless(args: argparse.Namespace) -> int:
    from deal_chains.bench.runner import format_table, write_json
    from deal_chains.search.engine import DeALEngine
    from rewards.harmless import HarmlessReward

    head = args.head
    engine = DeALEngine(args.model, device=args.device)
    try:
        reward = HarmlessReward.for_model(engine.lm, head, batch_size=args.feature_batch_size,
                                          weight=args.weight)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(str(exc)) from None
    command = "deal-chains " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("deal-chains") \
        else "deal-chains bench harmless ..."
    if args.pairs:
        from deal_chains.train_reward import read_pair_files

        pairs, _ = read_pair_files(args.pairs, args.skip_invalid)
        if args.heldout_only:
            training = reward.info.get("training") or {}
            held = training.get("heldout_indices")
            if held is None:
                raise InputError(f"{reward.head_path.name} records no held-out indices")
            if max(held, default=-1) >= len(pairs) or training.get("n_pairs", len(pairs)) != len(pairs):
                raise InputError(f"the head's held-out indices do not fit {' '.join(args.pairs)} ({len(pairs)} "
                                 f"pairs; the head was trained on {training.get('n_pairs')}: the same files, "
                                 "in the same order, with the same --skip-invalid)")
            pairs = [pairs[i] for i in held]
        pairs = pairs[args.offset:]
        pairs = pairs[: args.n] if args.n else pairs
        report = run_pairs_bench(reward, pairs)
        report["command"] = command
        print(format_table(report, PAIRS_COLUMNS))
        print(f"\n{report['n']} pairs from {' '.join(args.pairs)}{' (held-out split)' if args.heldout_only else ''}; "
              f"head {reward.head_path}")
    else:
        from deal_chains.spec import apply_overrides

        # the DeAL rows search with the spec's settings (default: the harmless preset);
        # every row, greedy included, gets its system prompt and token budget
        spec = _load_bench_spec(args.spec)
        base = dict(spec.search)
        if args.set:
            base.update(apply_overrides({"search": {}}, args.set).get("search", {}))
        system = args.system if args.system is not None else spec.system
        strategies = _strategies(args.strategies, base)
        prompts = load_advbench(args.prompts, n=args.n or 50, offset=args.offset)
        def labelled(report: dict[str, Any]) -> dict[str, Any]:
            return {**report, "command": command, "spec": args.spec,
                    **_examples_of(spec)}

        def checkpoint(report: dict[str, Any]) -> None:
            # after each strategy: an interrupted run keeps the rows it finished
            if args.out:
                write_json(labelled(report), args.out)

        report = labelled(run_harmless_bench(engine, prompts, strategies, reward, system=system,
                                             as_request=spec.with_examples,
                                             batch_size=args.batch_size, progress=not args.quiet,
                                             on_strategy=checkpoint))
        print(format_table(report, PROMPTS_COLUMNS))
        print(f"\n{report['n']} prompts, {_machine(report)}; harmless = mean HarmlessReward of the answers; "
              f"refusal = refusal phrase in the first {REFUSAL_SENTENCES} sentences; ratio = wall time / greedy, "
              "same run")
    if args.out:
        write_json(report, args.out)
        print(f"wrote {args.out}")
    if args.plot and args.prompts:
        from deal_chains.bench.plots import plot_harmless

        print(f"wrote {plot_harmless(report, args.plot)}")
    return 0


def _presets() -> list[str]:
    from deal_chains.spec import list_presets

    return list_presets()


def _load_bench_spec(name: str) -> Any:
    """``--spec``: a preset name or a spec file."""
    from deal_chains.spec import load_spec, preset_path

    return load_spec(preset_path(name) if name in _presets() else name)


def _examples_of(spec: Any) -> dict[str, Any]:
    """A report's record of the spec's examples (none when it has none)."""
    return {"examples": [e.model_dump() for e in spec.examples]} if spec.examples else {}


def register_bench_harmless(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``harmless`` to the ``deal-chains bench`` subcommands."""
    h = bench_subparsers.add_parser("harmless", help="harmless reward: pairwise accuracy on preference pairs, "
                                                     "or greedy vs DeAL on harmful requests")
    src = h.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", nargs="+", help="JSONL preference pairs (HH-RLHF or {prompt, chosen, rejected}); "
                     "several files are read in order")
    src.add_argument("--prompts", help="AdvBench-style CSV of harmful requests ('goal' column)")
    h.add_argument("--n", type=int, default=None, help="pairs / prompts to use (pairs: all; prompts: 50)")
    h.add_argument("--offset", type=int, default=0)
    h.add_argument("--heldout-only", action="store_true",
                   help="--pairs: only the pairs the head's sidecar lists as held out")
    h.add_argument("--skip-invalid", action="store_true", help="--pairs: leave out invalid pair records "
                   "(as train-reward --skip-invalid)")
    h.add_argument("--strategies", default="greedy,deal",
                   help="--prompts: comma list of greedy, sample, best_of_n, rerank, deal, deal-exact, "
                        "deal-noadapt; settings per entry as name:key=value")
    h.add_argument("--set", action="append", metavar="search.KEY=VALUE", help="search setting for every DeAL row")
    h.add_argument("--head", default=None, help="reward head .safetensors (default: the shipped harmless head)")
    h.add_argument("--weight", type=float, default=1.0, help="weight of the harmless reward in the search")
    h.add_argument("--spec", default="harmless",
                   help="--prompts: preset name or spec file whose search settings and system prompt the "
                        "rows use (default: the harmless preset)")
    h.add_argument("--system", default=None, help="system prompt for every row (default: the spec's)")
    h.add_argument("--batch-size", type=int, default=None, help="prompts searched together")
    h.add_argument("--feature-batch-size", type=int, default=16, help="conversations per reward forward")
    h.add_argument("--model", default="default")
    h.add_argument("--device", default="auto")
    h.add_argument("--out", default="bench-harmless.json", help="JSON report path")
    h.add_argument("--plot", default=None, help="--prompts: PNG of the per-request harmless reward by strategy")
    h.add_argument("--quiet", action="store_true")
    h.set_defaults(func=cmd_bench_harmless)
    return h


def cmd_bench_throughput(args: argparse.Namespace) -> int:
    from deal_chains.bench.commongen import load_commongen
    from deal_chains.bench.runner import print_report
    from deal_chains.search.engine import DeALEngine

    n = args.n or max(args.batch_sizes)
    items = load_commongen(args.data, args.constraints, n=n)
    if len(items) < max(args.batch_sizes):
        raise InputError(f"{len(items)} prompts cannot fill a batch of {max(args.batch_sizes)}; lower "
                         "--batch-sizes or give more data")
    rows = _strategies(args.deal, {})
    if len(rows) != 1:
        raise InputError(f"--deal takes one strategy (e.g. deal:top_k=4), got {args.deal!r}")
    deal = rows[0][1]
    engine = DeALEngine(args.model, device=args.device)
    report = run_throughput(engine, items, args.batch_sizes, deal, max_new_tokens=args.max_new_tokens,
                            progress=not args.quiet)
    print_report(report, THROUGHPUT_COLUMNS, "throughput", f"\n{report['n']} CommonGen prompts per run, "
                 f"{_machine(report, threads=False)}; out/s = prompts / wall time with that many prompts searched "
                 "together", args.out)
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


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this report, every option spelled out."""
    threads = os.environ.get("DEAL_CHAINS_THREADS")
    env = [f"DEAL_CHAINS_THREADS={threads}"] if threads else []
    parts = ["deal-chains", "bench", "report", "--out", str(args.out), "--full" if args.full else "--quick"]
    if args.n is not None:
        parts += ["--n", str(args.n)]
    parts += ["--device", args.device, "--model", args.model, "--commongen-data", args.commongen_data]
    if args.commongen_constraints:
        parts += ["--commongen-constraints", args.commongen_constraints]
    parts += ["--schemas", args.schemas, "--advbench", args.advbench]
    if args.head:
        parts += ["--head", args.head]
    if args.harmless_system is not None:
        parts += ["--harmless-system", args.harmless_system]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    return " ".join(env + [shlex.join(parts)])


def report_threads(args: argparse.Namespace, engine: Any) -> int | None:
    """Torch threads for the run: ``--threads``; else ``DEAL_CHAINS_THREADS`` (already
    applied by the CLI); else 1 for ``--quick`` on a CPU — on a small machine shared with
    other jobs, multi-threaded torch stalls badly when the cores are oversubscribed
    (measured here: a 2-thread greedy run 40x slower while another job ran, a 1-thread one
    not), which wrecks every ratio to greedy — and torch's default otherwise."""
    if args.threads is not None:
        return args.threads
    if os.environ.get("DEAL_CHAINS_THREADS") or args.full or engine.lm.device.type != "cpu":
        return None
    return 1


def cmd_bench_report(args: argparse.Namespace) -> int:
    from deal_chains.search.engine import DeALEngine

    settings = (ReportSettings.full() if args.full else ReportSettings.quick()).with_n(args.n)
    constraints = args.commongen_constraints or None
    out = check_inputs(args.out, commongen_data=args.commongen_data, commongen_constraints=constraints,
                       schemas=args.schemas, advbench=args.advbench)
    if args.head is not None and not Path(args.head).is_file():
        raise InputError(f"--head: file not found: {args.head}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    import torch

    engine = DeALEngine(args.model, device=args.device)
    before = torch.get_num_threads()
    threads = report_threads(args, engine)
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        report = run_report(engine, out, settings, commongen_data=args.commongen_data,
                            commongen_constraints=constraints, schemas=args.schemas, advbench=args.advbench,
                            harmless_head=args.head, harmless_system=args.harmless_system,
                            command=command_line(args), progress=not args.quiet)
    finally:
        torch.set_num_threads(before)
    print_tables(report)
    m = report["machine"]
    print(f"{report['mode']} report, model {m['model']} on {m['device']} ({m['cpu_count']} cores), "
          f"{report['seconds_total']:.1f} s; wrote {out / 'report.md'}, {out / 'report.json'} and "
          f"{len(FIGURES)} PNG figures")
    if report["shared_machine"]:
        print(shared_warning(report))
    return 0


def register_bench_report(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``report`` to the ``deal-chains bench`` subcommands."""
    r = bench_subparsers.add_parser(
        "report", help="benchmark sweep -> report.md, report.json and PNG figures (quality vs time, matched "
                       "compute, JSON validity, harmlessness)")
    r.add_argument("--out", required=True, help="output folder (created)")
    size = r.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="small sweep, ~10 min on a 2-core CPU (the default): 8 settings, 12 CommonGen prompts, "
                           "6 schemas, 6 AdvBench requests")
    size.add_argument("--full", action="store_true",
                      help="the GPU setting: 72 settings, 100 CommonGen prompts, 50 schemas, 50 requests")
    r.add_argument("--n", type=int, default=None,
                   help="prompts for every figure (CommonGen sets, schemas, AdvBench requests), overriding the mode's")
    r.add_argument("--device", default="auto")
    r.add_argument("--model", default="default")
    r.add_argument("--commongen-data", default=DEFAULT_PATHS["commongen_data"])
    r.add_argument("--commongen-constraints", default=DEFAULT_PATHS["commongen_constraints"],
                   help="per-line inflection lists for --commongen-data ('' for none)")
    r.add_argument("--schemas", default=DEFAULT_PATHS["schemas"], help="folder of *.json JSON Schemas")
    r.add_argument("--advbench", default=DEFAULT_PATHS["advbench"], help="AdvBench CSV ('goal' column)")
    r.add_argument("--head", default=None, help="harmless reward head (default: the shipped one)")
    r.add_argument("--harmless-system", default=None,
                   help="system prompt of figure 4 (default: the harmless preset's)")
    r.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: DEAL_CHAINS_THREADS, else 1 for --quick on a CPU, so that other "
                        "jobs on a small shared machine do not stall the timed runs; else torch's default)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_bench_report)
    return r


def register(sub: Any) -> None:
    """Add ``bench`` and its subcommands to the ``deal-chains`` subcommands."""
    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench", required=True)
    c = bsub.add_parser("commongen", help="keyword coverage on CommonGen, every strategy timed against greedy")
    c.add_argument("--data", required=True, help="CommonGen file: 'concepts = reference' per line")
    c.add_argument("--constraints", help="per-line JSON inflection lists (same order as --data)")
    c.add_argument("--n", type=int, default=50)
    c.add_argument("--offset", type=int, default=0)
    c.add_argument("--strategies", default="greedy,deal,deal-exact",
                   help="comma list of: greedy, sample, best_of_n, rerank, deal, deal-exact, deal-noadapt; "
                        "settings per entry as name:key=value:key=value")
    c.add_argument("--set", action="append", metavar="search.KEY=VALUE", help="search setting for every DeAL row")
    c.add_argument("--spec", default="commongen",
                   help="preset name or spec file: the DeAL rows search with its settings, and every row, greedy "
                        "included, gets its request, examples and system prompt, rendered with each set's concepts "
                        "(what a user of the spec gets). Default: commongen, the preset for this task; 'none': "
                        "the search defaults, the bench's bare request and the chat template's system prompt")
    c.add_argument("--system", default=None, help="system prompt (start-state adaptation) for every row "
                   "(replaces the spec's)")
    c.add_argument("--batch-size", type=int, default=None, help="prompts searched together (all rows)")
    c.add_argument("--model", default="default")
    c.add_argument("--device", default="auto", type=_device_arg, help="auto, cpu, cuda, cuda:N or mps")
    c.add_argument("--out", default="bench-commongen.json", help="JSON report path")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_bench_commongen)
    p = bsub.add_parser("plot-commongen", help="hard coverage and bad outputs vs time from bench commongen reports")
    p.add_argument("reports", nargs="+", metavar="[LABEL=]REPORT.json")
    p.add_argument("--out", default="commongen.png", help="PNG path")
    p.add_argument("--x", choices=["logprob", "time"], default="time",
                   help="x axis: time (x greedy) or logprob (fluency: reward vs the model's likelihood)")
    p.add_argument("--name", action="append", metavar="STRATEGY=NAME",
                   help="label a strategy's points NAME (repeatable; the strategy as the report names it)")
    p.set_defaults(func=cmd_bench_plot_commongen)
    register_bench_json(bsub)
    register_bench_harmless(bsub)
    register_bench_throughput(bsub)
    register_bench_report(bsub)
    from deal_chains.cli.serve import register_bench_serve

    register_bench_serve(bsub)
