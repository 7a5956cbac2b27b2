"""The batching scheduler: what is waiting is searched together, split by search config."""

from __future__ import annotations

from queue import SimpleQueue

from deal_chains.runtime import ModelRuntime
from deal_chains.runtime.requests import Request
from deal_chains.runtime.scheduler import Job, compatible_groups, take_waiting
from deal_chains.runtime.worker import Worker
from deal_chains.search.config import SearchConfig


def _job(**config) -> Job:
    return Job(Request(messages=[{"role": "user", "content": "hi"}], rewards=[], context=None,
                       config=SearchConfig(**config)))


def test_everything_waiting_is_taken_at_once():
    waiting: SimpleQueue = SimpleQueue()
    waiting.put([2, 3])
    waiting.put([4])
    assert take_waiting(waiting, [1]) == [1, 2, 3, 4] and waiting.empty()


def test_jobs_with_the_same_search_config_share_one_group_in_arrival_order():
    a, b, c, d = _job(top_k=4), _job(top_k=8), _job(top_k=4), _job(top_k=4, max_new_tokens=9)
    groups = compatible_groups([a, b, c, d])
    assert groups == [[a, c], [b], [d]]


def test_compatible_requests_share_one_engine_call_and_incompatible_ones_do_not(tiny_lm):
    runtime = ModelRuntime(tiny_lm)
    short, longer = SearchConfig(strategy="greedy", max_new_tokens=4), SearchConfig(strategy="greedy", max_new_tokens=5)
    # different prompts and stop sequences, one search config: one batched search
    same = [runtime.request([{"role": "user", "content": p}], config=short, stop=stop)
            for p, stop in (("hello world", ()), ("abc", ("x",)), ("Why?", ()))]
    worker = Worker(tiny_lm)
    jobs = [Job(r) for r in same]
    worker.submit(jobs)
    batched = [j.handle.result() for j in jobs]
    assert worker.engine_calls == 1
    # each answer is the one its request gets alone
    assert [o.text for o in batched] == [runtime.generate([r])[0].text for r in same]
    mixed = [Job(same[0]), Job(runtime.request([{"role": "user", "content": "abc"}], config=longer)), Job(same[2])]
    worker.submit(mixed)
    [j.handle.result() for j in mixed]
    assert worker.engine_calls == 1 + 2  # two search configs: two engine calls
