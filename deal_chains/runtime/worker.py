"""One worker thread per loaded model: it takes every request that is waiting, groups them into
compatible search batches (``scheduler``) and runs one batched engine call per group."""

from __future__ import annotations

import queue
import threading
from typing import Any

from deal_chains.runtime.requests import CancelledRequest, Outcome
from deal_chains.runtime.scheduler import Job, compatible_groups, take_waiting
from deal_chains.runtime.streaming import TextStream

_IDLE_SECONDS = 30.0  # a worker thread with nothing to do for this long exits


class Worker:
    """Runs the searches of one loaded model on one thread, batching what is waiting."""

    def __init__(self, lm: Any):
        from deal_chains.search.engine import DeALEngine

        self.lm = lm
        self.engine = DeALEngine(lm)
        self._queue: queue.SimpleQueue[list[Job]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.engine_calls = 0  # for tests and diagnostics: batched engine calls made

    def submit(self, jobs: list[Job]) -> None:
        with self._lock:
            self._queue.put(jobs)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=f"deal-chains:{self.lm.name}", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                jobs = self._queue.get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            for group in compatible_groups(take_waiting(self._queue, jobs)):
                try:
                    self._run(group)
                except BaseException as exc:  # never leave a caller waiting
                    for job in group:
                        if not job.handle.done:
                            job.handle._finish(error=exc)
                    if not isinstance(exc, Exception):
                        raise

    def _run(self, group: list[Job]) -> None:
        for job in group:
            if job.handle.cancelled:  # abandoned while it waited: never searched
                job.handle._finish(error=CancelledRequest("the request was cancelled before its search started"))
        group = [job for job in group if not job.handle.done]
        if not group:
            return
        streams = [TextStream(self.lm.decode, job.request.stop) for job in group]

        def on_tokens(i: int, ids: list[int]) -> bool:
            delta, stop = streams[i].feed(ids)
            if delta:
                group[i].handle._push(delta)
            return stop or group[i].handle.cancelled

        reqs = [job.request for job in group]
        try:
            self.engine_calls += 1
            results = self.engine.generate(
                [r.messages for r in reqs], [r.rewards for r in reqs], reqs[0].config,
                contexts=[r.context for r in reqs], constraints=[r.constraint for r in reqs],
                on_tokens=on_tokens,
            )
        except Exception as exc:
            if len(group) == 1:
                group[0].handle._finish(error=exc)
                return
            # one request's failure (a reward that raises) must not fail the others:
            # search them one by one (those that have not streamed anything yet)
            for job, stream in zip(group, streams):
                if stream.sent:
                    job.handle._finish(error=exc)
                else:
                    self._run([job])
            return
        for job, stream, res in zip(group, streams, results):
            delta = stream.finish(res.token_ids)
            if delta:
                job.handle._push(delta)
            if stream.stop_sequence is not None:
                reason = "stop"
            elif res.finish_reason == "ended":
                reason = "cancelled"
            else:
                reason = res.finish_reason
            job.handle._finish(Outcome(text=stream.sent, result=res, prompt_tokens=job.request.prompt_tokens,
                                       finish_reason=reason, model_name=self.lm.name,
                                       stop_sequence=stream.stop_sequence,
                                       alternatives=self._alternatives(job, stream.sent, res.alternatives)))

    def _alternatives(self, job: Job, best_text: str, results: list[Any]) -> list[Outcome]:
        """Outcomes of the next best answers (``SearchConfig.returns`` > 1), cut at the stop
        sequences like the answer; one whose text repeats an earlier one is left out. An
        answer cut because the search ended early (the best answer reached a stop sequence)
        reports ``length``: its text is incomplete."""
        out: list[Outcome] = []
        seen = {best_text}
        for res in results:
            stream = TextStream(self.lm.decode, job.request.stop)
            stream.finish(res.token_ids)
            if stream.sent in seen:
                continue
            seen.add(stream.sent)
            if stream.stop_sequence is not None:
                reason = "stop"
            elif res.finish_reason == "ended":
                reason = "cancelled" if job.handle.cancelled else "length"
            else:
                reason = res.finish_reason
            out.append(Outcome(text=stream.sent, result=res, prompt_tokens=job.request.prompt_tokens,
                               finish_reason=reason, model_name=self.lm.name, stop_sequence=stream.stop_sequence))
        return out


_WORKERS: dict[int, tuple[Any, Worker]] = {}


_WORKERS_LOCK = threading.Lock()


def worker_for(lm: Any) -> Worker:
    with _WORKERS_LOCK:
        entry = _WORKERS.get(id(lm))
        if entry is None or entry[0] is not lm:
            entry = (lm, Worker(lm))
            _WORKERS[id(lm)] = entry
        return entry[1]
