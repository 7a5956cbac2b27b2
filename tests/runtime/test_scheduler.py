"""The batching scheduler: what is waiting is searched together, split by search config."""

from __future__ import annotations

from queue import SimpleQueue

from deal_chains.runtime.requests import Request
from deal_chains.runtime.scheduler import Job, compatible_groups, take_waiting
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


def test_the_old_adapter_module_warns_and_keeps_its_names():
    import importlib
    import sys

    import pytest

    sys.modules.pop("deal_chains.adapter", None)
    with pytest.warns(DeprecationWarning, match="deal_chains.runtime"):
        adapter = importlib.import_module("deal_chains.adapter")
    from deal_chains.runtime import ModelRuntime

    assert adapter.DeALAdapter is ModelRuntime
