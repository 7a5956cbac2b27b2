"""Serving benchmark: requests/s and latency of the HTTP server under 1, 4 and 16 concurrent
clients, beside the same requests through ``ModelRuntime`` in-process (``deal-chains bench
serve``; the command starts the server, this module only drives it).

>>> latency_summary([1.0, 2.0, 3.0, 4.0])
{'p50': 2.5, 'p95': 3.85}

Each request is a CommonGen prompt aligned with the ``commongen`` preset (per-request
``deal.preset`` and ``deal.vars``), so every row runs real DeAL searches. At a concurrency
level C, C clients (threads) take the N prompts from one queue, each request waiting for its
answer before the client sends the next; requests/s = N / wall time. In-process, C threads do
the same through the runtime directly (no HTTP, no JSON): the gap between the two rows is the
server's cost. Both share the runtime's batching worker, so concurrent requests are searched
together either way.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

SERVE_COLUMNS = [
    ("clients", "clients"), ("served_rps", "served req/s"), ("served_p50", "served p50 s"),
    ("served_p95", "served p95 s"), ("inprocess_rps", "in-process req/s"), ("inprocess_p50", "in-process p50 s"),
    ("inprocess_p95", "in-process p95 s"), ("served_over_inprocess", "served/in-process time"),
    ("same_answers", "same answers"),
]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Median and 95th percentile (linear interpolation) of latencies."""
    ordered = sorted(seconds)

    def at(q: float) -> float:
        pos = q * (len(ordered) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo), 4)

    return {"p50": at(0.5), "p95": at(0.95)}


def _timed_run(task: Callable[[int], str], n: int, clients: int) -> tuple[float, list[float], list[str]]:
    latencies = [0.0] * n
    texts = [""] * n

    def one(i: int) -> None:
        t0 = time.perf_counter()
        texts[i] = task(i)
        latencies[i] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - t0, latencies, texts


def run_serve_bench(base_url: str, api_key: str, model_name: str, runtime: Any, items: Sequence[Any],
                    clients: Sequence[int] = (1, 4, 16), max_tokens: int = 32, progress: bool = True) -> dict[str, Any]:
    """The report: one row per concurrency level (see the module docstring). ``runtime``:
    the ``ModelRuntime`` the server at ``base_url`` serves ``model_name`` with."""
    from openai import OpenAI

    from deal_chains.bench.commongen import commongen_prompt
    from deal_chains.bench.runner import machine_info
    from deal_chains.runtime.calls import prepare_call
    from deal_chains.runtime.options import CallRules, ModelDefaults, read_call_options
    from deal_chains.spec import load_spec

    prompts = [commongen_prompt(it.concepts) for it in items]
    spec = load_spec("commongen")

    def served(i: int) -> str:
        client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
        r = client.chat.completions.create(
            model=model_name, messages=[{"role": "user", "content": prompts[i]}], max_tokens=max_tokens,
            extra_body={"deal": {"preset": "commongen", "vars": {"concepts": list(items[i].concepts)}}})
        return r.choices[0].message.content or ""

    def inprocess(i: int) -> str:
        options = read_call_options(ModelDefaults(), {"spec": spec, "max_tokens": max_tokens,
                                                      "reward_vars": {"concepts": list(items[i].concepts)}},
                                    CallRules("bench serve"))
        prepared = prepare_call(runtime, [{"role": "user", "content": prompts[i]}], options)
        return runtime.submit([prepared.request])[0].result().text

    served(0), inprocess(0)  # warm-up: first-use costs (grammar engine, tokenizer caches) out of the timing
    from tqdm.auto import tqdm

    rows = []
    with tqdm(total=2 * len(clients), desc="bench serve", unit="run", leave=False, disable=not progress) as bar:
        for c in clients:
            row: dict[str, Any] = {"clients": c, "n": len(prompts)}
            texts = {}
            for label, task in (("served", served), ("inprocess", inprocess)):
                wall, latencies, texts[label] = _timed_run(task, len(prompts), c)
                summary = latency_summary(latencies)
                row.update({f"{label}_seconds": round(wall, 3), f"{label}_rps": round(len(prompts) / wall, 3),
                            f"{label}_p50": summary["p50"], f"{label}_p95": summary["p95"]})
                bar.update(1)
            row["served_over_inprocess"] = round(row["served_seconds"] / row["inprocess_seconds"], 3)
            # batches differ between runs, and a CPU's float sums depend on the batch shape:
            # most answers match, not necessarily all
            same = sum(a == b for a, b in zip(texts["served"], texts["inprocess"]))
            row["same_answers"] = f"{same}/{len(prompts)}"
            rows.append(row)
    return {"benchmark": "serve", "n": len(prompts), "clients": list(clients), "max_tokens": max_tokens,
            "spec": "preset commongen", "machine": machine_info(runtime.worker.engine), "rows": rows}
