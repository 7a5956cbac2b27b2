"""``deal-chains serve``: the OpenAI-compatible server (``deal_chains.serve``)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from deal_chains.cli._args import _device_arg, _positive_int


def cmd_serve(args: argparse.Namespace) -> int:
    from deal_chains.serve.protocol import ServeLimits
    from deal_chains.serve.server import run, served_model

    limits = ServeLimits(max_body_bytes=args.max_body_bytes, max_tokens=args.max_tokens,
                         max_rows_per_prompt=args.max_rows, max_lookahead_tokens=args.max_lookahead_tokens,
                         max_prompts=args.max_prompts, timeout_s=args.timeout)
    model = served_model(args.model, name=args.model_name, spec=args.spec, device=args.device, dtype=args.dtype,
                         trust_remote_code=args.trust_remote_code)
    api_key = args.api_key or os.environ.get("DEAL_CHAINS_API_KEY") or None
    print(f"serving {model.name!r} on http://{args.host}:{args.port}/v1"
          + (" (API key required)" if api_key else ""), flush=True)
    run([model], host=args.host, port=args.port, api_key=api_key, limits=limits, log_level=args.log_level)
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def register(sub: Any) -> None:
    """Add ``serve`` to the ``deal-chains`` subcommands."""
    s = sub.add_parser("serve", help="serve a model with DeAL behind an OpenAI-compatible API",
                       description="An OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, "
                       "/v1/models, /health, /metrics). Requests align with the server's --spec, or name a "
                       "preset / an inline spec in the body's 'deal' field. Needs the serve extra: "
                       "pip install 'deal-chains[serve]'.")
    s.add_argument("--model", default="default", help="'default' (the embedded model), a Hugging Face id or a "
                   "local path")
    s.add_argument("--model-name", help="the name requests give as 'model' (default: the model's own name)")
    s.add_argument("--spec", help="the reward spec of requests that give none (a YAML file or a preset name)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $DEAL_CHAINS_API_KEY; none)")
    s.add_argument("--device", default="auto", type=_device_arg, help="auto, cpu, cuda, cuda:N or mps")
    s.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, ...")
    s.add_argument("--trust-remote-code", action="store_true", help="let transformers run the model "
                   "repository's own code (only for a model whose code you trust)")
    s.add_argument("--max-tokens", type=_positive_int, default=512, help="most tokens one answer may ask for")
    s.add_argument("--max-rows", type=_positive_int, default=64, help="most hypotheses one prompt's search "
                   "keeps (top_k x beam)")
    s.add_argument("--max-lookahead-tokens", type=_positive_int, default=4096,
                   help="most tokens one prompt's search rolls out per step (top_k x beam x lookahead)")
    s.add_argument("--max-prompts", type=_positive_int, default=16, help="most prompts in one /v1/completions "
                   "request")
    s.add_argument("--max-body-bytes", type=_positive_int, default=1 << 20, help="largest request body")
    s.add_argument("--timeout", type=_seconds, default=300.0, help="seconds a request may take (then 408, and "
                   "its search is cancelled)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.set_defaults(func=cmd_serve)


def cmd_bench_serve(args: argparse.Namespace) -> int:
    """Start the server in-process on a free port and measure it (``deal_chains.bench.serve_load``)."""
    import secrets

    from deal_chains.bench.commongen import load_commongen
    from deal_chains.bench.runner import print_report
    from deal_chains.bench.serve_load import SERVE_COLUMNS, run_serve_bench
    from deal_chains.serve.app import create_app
    from deal_chains.serve.protocol import ServeLimits
    from deal_chains.serve.server import ServerThread, served_model

    items = load_commongen(args.data, n=args.n)
    model = served_model(args.model, device=args.device)
    key = secrets.token_hex(16)
    with ServerThread(create_app([model], ServeLimits(max_tokens=max(512, args.max_tokens)), api_key=key)) as server:
        report = run_serve_bench(server.base_url, key, model.name, model.runtime, items, clients=args.clients,
                                 max_tokens=args.max_tokens, progress=not args.quiet)
    m = report["machine"]
    print_report(report, SERVE_COLUMNS, "serve",
                 f"\n{report['n']} CommonGen prompts per row (preset commongen, max_tokens {args.max_tokens}), model "
                 f"{m['model']} on {m['device']} ({m['cpu_count']} cores, {m['torch_threads']} torch threads)",
                 args.out)
    return 0


def register_bench_serve(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench serve`` to the ``deal-chains bench`` subcommands."""
    from deal_chains.cli._args import _batch_sizes

    b = bench_subparsers.add_parser("serve", help="the HTTP server under 1, 4 and 16 concurrent clients: requests/s "
                                    "and p50/p95 latency beside the same requests in-process")
    b.add_argument("--data", required=True, help="CommonGen file: 'concepts = reference' per line")
    b.add_argument("--n", type=_positive_int, default=16, help="prompts per row")
    b.add_argument("--clients", type=_batch_sizes, default=[1, 4, 16], help="comma list of concurrency levels")
    b.add_argument("--max-tokens", type=_positive_int, default=32)
    b.add_argument("--model", default="default")
    b.add_argument("--device", default="auto", type=_device_arg, help="auto, cpu, cuda, cuda:N or mps")
    b.add_argument("--out", default="bench-serve.json", help="JSON report path")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_bench_serve)
    return b
