"""The batching scheduler: what a worker searches together. Everything waiting when the worker
looks is taken at once, then split into groups that can share one batched engine call (the
same search config: top_k, lookahead, budgets...). Requests with different rewards, prompts,
constraints or stop sequences still share a group.

>>> from queue import SimpleQueue
>>> q = SimpleQueue(); q.put(["b"]); q.put(["c"])
>>> take_waiting(q, ["a"])
['a', 'b', 'c']
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Any

from deal_chains.runtime.requests import Request
from deal_chains.runtime.streaming import Handle


@dataclass
class Job:
    request: Request
    handle: Handle = field(default_factory=Handle)


def take_waiting(waiting: "queue.SimpleQueue[list[Any]]", first: list[Any]) -> list[Any]:
    """``first`` and every batch of jobs already waiting in ``waiting`` (without blocking)."""
    jobs = list(first)
    while True:
        try:
            jobs += waiting.get_nowait()
        except queue.Empty:
            return jobs


def compatible_groups(jobs: list[Job]) -> list[list[Job]]:
    """``jobs`` split by search config, in order of arrival: each group is one engine call."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.request.config_key, []).append(job)
    return list(groups.values())
