"""A request's handle (its committed text as it comes, then its outcome; blocking or awaitable)
and the incremental decoding that cuts at stop sequences."""

from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator, Callable, Iterator, Sequence

from deal_chains.runtime.requests import Outcome


class Handle:
    """A submitted request: its committed text as it comes, then its ``Outcome``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._chunks: list[str] = []
        self._outcome: Outcome | None = None
        self._error: BaseException | None = None
        self._done = False
        self._listeners: list[Callable[[], None]] = []
        self.cancelled = False

    @property
    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Ask the search to end this request at its next commit (a stream was abandoned)."""
        self.cancelled = True

    # ---- worker side
    def _notify(self) -> None:
        self._cond.notify_all()
        for wake in list(self._listeners):
            try:
                wake()
            except RuntimeError:  # the listener's event loop is closed
                pass

    def _push(self, text: str) -> None:
        with self._cond:
            self._chunks.append(text)
            self._notify()

    def _finish(self, outcome: Outcome | None = None, error: BaseException | None = None) -> None:
        with self._cond:
            self._outcome, self._error, self._done = outcome, error, True
            self._notify()

    # ---- caller side
    def result(self) -> Outcome:
        with self._cond:
            while not self._done:
                self._cond.wait()
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._outcome

    def texts(self) -> Iterator[str]:
        """The request's text, piece by piece, as the search commits it."""
        i = 0
        while True:
            with self._cond:
                while i >= len(self._chunks) and not self._done:
                    self._cond.wait()
                new, done = self._chunks[i:], self._done
            i += len(new)
            yield from new
            if done and i >= len(self._chunks):
                return

    async def aresult(self) -> Outcome:
        try:
            async for _ in self.atexts():
                pass
        except asyncio.CancelledError:
            # the awaiting task was cancelled: end this request's search at its next
            # commit (or skip it if it has not started), so its batch slot is freed
            self.cancel()
            raise
        return self.result()

    async def atexts(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(event.set)

        with self._cond:
            self._listeners.append(wake)
        try:
            i = 0
            while True:
                with self._cond:
                    new, done = self._chunks[i:], self._done
                i += len(new)
                for text in new:
                    yield text
                if done:
                    with self._cond:
                        rest = self._chunks[i:]
                    for text in rest:
                        yield text
                    return
                await event.wait()
                event.clear()
        finally:
            with self._cond:
                self._listeners.remove(wake)


class TextStream:
    """Token ids in, text out: decodes incrementally without splitting a multi-byte
    character, and cuts at the first stop sequence (holding back text that may be the
    start of one)."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stops: Sequence[str] = ()):
        self.decode = decode
        self.stops = [s for s in stops if s]
        self.ids: list[int] = []
        self.sent = ""
        self.stop_sequence: str | None = None

    def feed(self, ids: Sequence[int]) -> tuple[str, bool]:
        """New text to send, and whether a stop sequence has been generated."""
        if self.stop_sequence is not None:
            return "", True
        self.ids.extend(ids)
        # a character whose bytes are split across tokens decodes to U+FFFD until complete
        return self._advance(self.decode(self.ids).rstrip("\ufffd"), final=False)

    def finish(self, ids: Sequence[int]) -> str:
        """The rest of the text once the search is over (``ids``: all final token ids)."""
        self.ids = list(ids)
        delta, _ = self._advance(self.decode(self.ids), final=True)
        return delta

    def _advance(self, text: str, final: bool) -> tuple[str, bool]:
        cut = None
        for s in self.stops:
            at = text.find(s)
            if at >= 0 and (cut is None or at < cut[0]):
                cut = (at, s)
        if cut is not None:
            text = text[:cut[0]]
            self.stop_sequence = cut[1]
        elif not final and self.stops:
            text = text[:len(text) - self._partial_stop(text)]
        if not text.startswith(self.sent):
            # decoding more tokens changed earlier text (a tokenizer clean-up rule): hold
            # back until the end, where the final text is authoritative
            if final:
                self.sent = text
            return "", cut is not None
        delta, self.sent = text[len(self.sent):], text
        return delta, cut is not None

    def _partial_stop(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some stop sequence."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best
