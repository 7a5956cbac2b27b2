"""Prometheus metrics of one server (its own registry, so two servers in one process, as in
the tests and ``bench serve``, count apart).

>>> m = Metrics(); m.requests.labels(endpoint="/v1/models", status="200").inc()
>>> b"deal_requests_total" in m.render()
True
"""

from __future__ import annotations

from typing import Any

from deal_chains.serve._deps import require


class Metrics:
    """Requests (by endpoint and status), searches queued or running, tokens, time spent in
    searches and in reward calls, abandoned searches."""

    def __init__(self) -> None:
        prometheus = require("prometheus_client")
        reg = self.registry = prometheus.CollectorRegistry()
        self.requests = prometheus.Counter("deal_requests", "HTTP requests answered", ["endpoint", "status"],
                                           registry=reg)
        self.queue_depth = prometheus.Gauge("deal_queue_depth", "searches submitted to the runtime and not "
                                            "finished (queued or running)", registry=reg)
        self.prompt_tokens = prometheus.Counter("deal_prompt_tokens", "prompt tokens of finished searches",
                                                registry=reg)
        self.completion_tokens = prometheus.Counter("deal_completion_tokens", "tokens generated", registry=reg)
        self.search_seconds = prometheus.Histogram("deal_search_seconds", "search wall time per prompt",
                                                   registry=reg)
        self.reward_seconds = prometheus.Histogram("deal_reward_seconds", "time in reward calls per prompt",
                                                   registry=reg)
        self.request_seconds = prometheus.Histogram("deal_request_seconds", "time from arrival to the last byte "
                                                    "of a completion request", ["endpoint"], registry=reg)
        self.cancelled = prometheus.Counter("deal_cancelled_searches", "searches ended early: client gone or "
                                            "timeout", ["reason"], registry=reg)

    def finished(self, outcome: Any) -> None:
        """Count a finished search (its answer and alternatives' tokens, its time)."""
        stats = outcome.result.stats
        self.prompt_tokens.inc(outcome.prompt_tokens)
        self.completion_tokens.inc(len(outcome.result.token_ids)
                                   + sum(len(a.result.token_ids) for a in outcome.alternatives))
        self.search_seconds.observe(stats.seconds)
        self.reward_seconds.observe(stats.reward_seconds)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
