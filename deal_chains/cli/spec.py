"""``deal-chains spec``: validate spec files, export the spec language's JSON Schema and reference."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from deal_chains.errors import DealChainsError, InputError


def cmd_spec_validate(args: argparse.Namespace) -> int:
    from deal_chains.spec import load_spec

    records = None
    if getattr(args, "input", None):
        from deal_chains.records import read_jsonl

        records = read_jsonl(args.input)  # a bad input file is one error for every spec
    bad = 0
    for f in args.files:
        try:
            spec = load_spec(Path(f))
            checked = ""
            if records is not None:
                checked = f", {_check_input(spec, records, args.input, getattr(args, 'step', None))}"
        except DealChainsError as exc:
            bad += 1
            print(str(exc), file=sys.stderr)
            continue
        print(f"{f}: ok ({len(spec.rewards)} rewards, strategy {spec.search_config().strategy}{checked})")
    return 1 if bad else 0


def _check_input(spec: Any, records: list[dict[str, Any]], source: str, step: str | None) -> str:
    """Every record's prompt and template variables against ``spec`` (the model is not loaded)."""
    from deal_chains.pipeline import check_records
    from deal_chains.records import LINE_KEY

    if step is not None:
        spec = spec.step(step)
    elif spec.steps:
        raise InputError(f"the spec has steps ({', '.join(spec.step_names)}); pick the one to check "
                         "--input against with --step NAME")
    check_records(spec, records, lambda rec: f"{source}:{rec[LINE_KEY]}")
    return f"{len(records)} input records fit its templates"


def cmd_spec_schema(args: argparse.Namespace) -> int:
    from deal_chains.spec.schema import spec_json_schema

    return _write_out(json.dumps(spec_json_schema(), indent=2) + "\n", args.out)


def cmd_spec_reference(args: argparse.Namespace) -> int:
    from deal_chains.spec.reference import render_reference

    return _write_out(render_reference(), args.out)


def _write_out(text: str, out: str | None) -> int:
    """``text`` into the file ``out`` (``--out``), else onto stdout."""
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def register(sub: Any) -> None:
    """Add ``spec`` and its subcommands to the ``deal-chains`` subcommands."""
    s = sub.add_parser("spec", help="reward-spec tools")
    ssub = s.add_subparsers(dest="spec_cmd", required=True)
    v = ssub.add_parser("validate", help="validate spec files; every error with file:line:column and field")
    v.add_argument("files", nargs="+")
    v.add_argument("--input", metavar="FILE", help="also check every record of this JSONL file against the "
                   "spec: its prompt and every template variable (no model is loaded)")
    v.add_argument("--step", metavar="NAME", help="with --input: the step of a multi-step spec to check")
    v.set_defaults(func=cmd_spec_validate)
    sc = ssub.add_parser("schema", help="print the JSON Schema of the spec language")
    sc.add_argument("--out")
    sc.set_defaults(func=cmd_spec_schema)
    ref = ssub.add_parser("reference", help="print the Markdown reference of every reward type and field "
                                            "(docs/spec-reference.md)")
    ref.add_argument("--out")
    ref.set_defaults(func=cmd_spec_reference)
