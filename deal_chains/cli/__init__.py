"""``deal-chains`` command line: generate | bench | spec | serve | models | demo | train-reward.

The only place that builds the command line; nothing in the package imports it. Each
subcommand group lives in its own module (``generate``, ``bench``, ``spec``, ``tools``) as a
``register(subparsers)`` function over plain library functions.

>>> from deal_chains.cli import main
>>> main(["spec", "validate", "rewards/presets/concise.yaml"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from deal_chains.errors import DealChainsError


def _set_threads() -> None:
    # torch loads only when a thread count is given: light commands start fast
    if os.environ.get("DEAL_CHAINS_THREADS"):
        from deal_chains.models.loader import apply_thread_setting

        apply_thread_setting()


def build_parser() -> argparse.ArgumentParser:
    """The ``deal-chains`` parser with every subcommand registered."""
    from deal_chains.cli import bench, generate, serve, spec, tools

    p = argparse.ArgumentParser(prog="deal-chains", description="Decoding-time alignment for LLM pipelines.")
    sub = p.add_subparsers(dest="command", required=True)
    generate.register(sub)
    bench.register(sub)
    spec.register(sub)
    serve.register(sub)
    tools.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``deal-chains`` command; a ``DealChainsError`` is one ``error:`` line and exit 2."""
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
