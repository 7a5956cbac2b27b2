"""The worker: one thread per loaded model that searches what is waiting in batches, exits
when idle, and lets one request be cancelled while the rest of its batch finishes."""

from __future__ import annotations

import asyncio
import time

import pytest

from deal_chains.runtime import CancelledRequest, ModelRuntime
from deal_chains.runtime import worker as worker_module
from deal_chains.runtime.scheduler import Job
from deal_chains.runtime.worker import Worker
from deal_chains.search.config import SearchConfig
from rewards import BaseReward

GREEDY = SearchConfig(strategy="greedy", max_new_tokens=6)


def _request(lm, prompt, config=GREEDY):
    return ModelRuntime(lm).request([{"role": "user", "content": prompt}], config=config)


def test_an_idle_worker_thread_exits_and_a_new_request_starts_another(tiny_lm, monkeypatch):
    monkeypatch.setattr(worker_module, "_IDLE_SECONDS", 0.05)
    worker = Worker(tiny_lm)
    first = Job(_request(tiny_lm, "hello world"))
    worker.submit([first])
    assert first.handle.result().finish_reason in ("stop", "length")
    thread = worker._thread
    deadline = time.monotonic() + 10
    while worker._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker._thread is None and not thread.is_alive()  # nothing waiting: the thread ended
    again = Job(_request(tiny_lm, "hello world"))
    worker.submit([again])
    assert again.handle.result().text == first.handle.result().text
    assert worker._thread is not thread and worker.engine_calls == 2


def _slow_requests(lm, prompts, max_new_tokens=120):
    """Requests whose search takes a while (a reward that sleeps), so a test can cancel one
    mid-search."""

    class Slow(BaseReward):
        name = "slow"

        def score(self, texts, context):
            time.sleep(0.005)
            return [float("e" in t) for t in texts]

    adapter = ModelRuntime(lm)
    cfg = SearchConfig(strategy="deal", top_k=2, beam=1, lookahead=2, max_new_tokens=max_new_tokens)
    reqs = [adapter.request([{"role": "user", "content": p}], config=cfg) for p in prompts]
    for r in reqs:
        r.rewards = [Slow()]
    return adapter, reqs


async def test_cancelling_an_awaiting_task_ends_its_search_and_spares_the_others(tiny_lm):
    adapter, reqs = _slow_requests(tiny_lm, ["hello world", "abc"])
    [full_a, full_b] = adapter.generate(reqs)
    assert len(full_a.result.token_ids) > 20  # long enough to be cut
    a, b = adapter.submit(reqs)  # searched together in one batch
    task = asyncio.create_task(a.aresult())
    async for _ in a.atexts():  # its search is running: tokens are being committed
        break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cut = await asyncio.to_thread(a.result)
    # the cancelled request stopped at a commit soon after (its slot in the batch freed);
    # the other request in the same batch finished exactly as when searched alone
    assert cut.finish_reason == "cancelled"
    assert len(cut.result.token_ids) < len(full_a.result.token_ids)
    assert full_a.result.token_ids[:len(cut.result.token_ids)] == cut.result.token_ids
    assert (await b.aresult()).text == full_b.text


async def test_a_request_cancelled_while_queued_is_never_searched(tiny_lm):
    adapter, reqs = _slow_requests(tiny_lm, ["hello world", "abc", "Why?"], max_new_tokens=40)
    first = adapter.submit(reqs[:1])[0]
    async for _ in first.atexts():  # the worker is busy with it: later requests wait
        break
    queued = adapter.submit(reqs[1:])
    task = asyncio.create_task(queued[0].aresult())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(CancelledRequest):
        await asyncio.to_thread(queued[0].result)
    assert (await queued[1].aresult()).finish_reason in ("stop", "length")
    assert (await first.aresult()).finish_reason in ("stop", "length")


def test_a_failing_request_does_not_fail_the_others_in_its_batch(tiny_lm):
    class Fails(BaseReward):
        name = "fails"

        def score(self, texts, context):
            if "boom" in context.prompt:
                raise RuntimeError("boom")
            return [0.5] * len(texts)

    adapter = ModelRuntime(tiny_lm)
    cfg = SearchConfig(strategy="deal", top_k=2, beam=1, lookahead=2, max_new_tokens=8)
    reqs = [adapter.request([{"role": "user", "content": p}], config=cfg) for p in ("ok", "boom", "fine")]
    for r in reqs:
        r.rewards = [Fails()]
    good, bad, fine = adapter.submit(reqs)
    assert good.result().text == adapter.generate([reqs[0]])[0].text
    assert fine.result().result.rewards == {"fails": 0.5}
    with pytest.raises(Exception, match="boom"):
        bad.result()
