"""``deal-chains generate``: a JSONL file of inputs through a spec, records written as they finish."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from deal_chains.errors import DealChainsError, InputError

from deal_chains.cli._args import _device_arg, _positive_int
from deal_chains.pipeline import check_records, load_generate_spec, records_to_generate, run_records
from deal_chains.records import (
    LINE_KEY,
    check_batch_size,
    check_field_names,
    check_output_path,
    jsonl_line,
    read_jsonl,
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
    locate = lambda rec: f"{args.input}:{rec[LINE_KEY]}"  # noqa: E731
    check_field_names(records, result_field, locate)
    check_records(spec, records, locate)  # prompts and template variables: before the model loads
    out_path = check_output_path(args.output, [args.input])
    fingerprint = settings_fingerprint(spec, config)
    todo = records_to_generate(out_path, records, resume=args.resume, result_field=result_field,
                               fingerprint=fingerprint, strategy=config.strategy)
    if args.resume and not args.quiet:
        print(f"resuming {out_path}: {len(records) - len(todo)} records already there, {len(todo)} to generate",
              file=sys.stderr)
    if not todo:  # a finished file: nothing to load the model for
        if not args.quiet:
            print(f"wrote 0 records to {out_path}", file=sys.stderr)
        return 0

    # a spec without `model:` runs on the embedded default model, as DeALEngine() does
    engine = DeALEngine(args.model or spec.model or "default", device=args.device,
                        trust_remote_code=bool(getattr(args, "trust_remote_code", False)))
    out = _LazyOutput(out_path, append=args.resume)
    written = 0
    try:
        for _, record in run_records(engine, spec, config, todo, locate=locate,
                                     batch_size=args.batch_size, progress=not args.quiet,
                                     result_field=result_field, fingerprint=fingerprint, on_step=out.open):
            out.write(jsonl_line(record))
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


def register(sub: Any) -> None:
    """Add ``generate`` to the ``deal-chains`` subcommands."""
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
