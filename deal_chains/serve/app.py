"""The FastAPI application: OpenAI's routes over the runtime.

>>> from deal_chains.serve import ServedModel, create_app          # doctest: +SKIP
>>> from deal_chains.runtime import ModelRuntime                     # doctest: +SKIP
>>> app = create_app([ServedModel("default", ModelRuntime("default"))])  # doctest: +SKIP

Routes: ``POST /v1/chat/completions`` (``stream: true``: server-sent events), ``POST
/v1/completions``, ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus). Every
request for a model goes to that model's ``ModelRuntime``, whose one worker searches
everything waiting together: concurrent clients share batched forwards. With ``api_key``,
the ``/v1`` routes and ``/metrics`` need ``Authorization: Bearer <key>``.

A request is read and checked in full (``protocol``) before its search is queued; a refused
one gets an OpenAI error body with a 4xx status. A client that disconnects, or a request
past ``ServeLimits.timeout_s`` (408), cancels its search at the next commit.
"""

# no ``from __future__ import annotations``: FastAPI reads the routes' annotations (``Request``,
# imported inside ``create_app`` so a missing extra is a clear error) as objects
import asyncio
import hmac
import json
import logging
import time
from typing import Any, AsyncIterator, Callable, Sequence

from deal_chains.runtime import Handle, Outcome
from deal_chains.serve._deps import require
from deal_chains.serve.errors import ApiError, api_error
from deal_chains.serve.metrics import Metrics
from deal_chains.serve.protocol import Plan, ServedModel, ServeLimits, read_chat, read_completion
from deal_chains.serve.responses import DONE, ChunkWriter, chat_completion, text_completion

log = logging.getLogger("deal_chains.serve")
_POLL_SECONDS = 0.2  # how often a waiting non-streamed request looks for its client's disconnect


async def read_body(request: Any, limit: int) -> dict[str, Any]:
    """The JSON object of a request body, refused past ``limit`` bytes before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body ({declared} bytes) is over this server's limit of {limit} bytes",
                       code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the request body is over this server's limit of {limit} bytes",
                           code="request_too_large")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


class Service:
    """What the routes share: the models, limits, key and metrics."""

    def __init__(self, models: Sequence[ServedModel], limits: ServeLimits, api_key: str | None):
        self.models = {m.name: m for m in models}
        self.limits, self.api_key, self.metrics = limits, api_key, Metrics()

    def authorize(self, request: Any) -> None:
        if not self.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise ApiError(401, "Incorrect or missing API key: send Authorization: Bearer <key>",
                           code="invalid_api_key")

    # ------------------------------------------------------------------ searches
    def submit(self, plan: Plan) -> list[Handle]:
        handles = plan.model.runtime.submit([c.request for c in plan.calls])
        self.metrics.queue_depth.inc(len(handles))
        return handles

    def settle(self, handles: Sequence[Handle], reason: str | None = None) -> None:
        """A request is over: cancel what still runs (``reason``: why), count it out of the queue."""
        for h in handles:
            if not h.done:
                h.cancel()
                self.metrics.cancelled.labels(reason=reason or "abandoned").inc()
        self.metrics.queue_depth.dec(len(handles))

    async def outcomes(self, request: Any, handles: Sequence[Handle], deadline: float) -> list[Outcome]:
        """The outcomes, waiting while the client stays connected and the deadline is ahead."""
        waits = [asyncio.ensure_future(h.aresult()) for h in handles]
        try:
            while True:
                done, _ = await asyncio.wait(waits, timeout=_POLL_SECONDS)
                if len(done) == len(waits):
                    outs = [w.result() for w in waits]
                    for o in outs:
                        self.metrics.finished(o)
                    return outs
                if time.monotonic() > deadline:
                    raise _timeout(self.limits)
                if await request.is_disconnected():
                    raise ClientGone()
        finally:
            for w in waits:
                w.cancel()

    async def answer(self, request: Any, plan: Plan, handles: list[Handle], deadline: float,
                     endpoint: str) -> dict[str, Any]:
        outs = await self.outcomes(request, handles, deadline)
        if endpoint == "/v1/completions":
            return text_completion(plan.model.name, outs, plan.n)
        call, outcome, spent = plan.calls[0], outs[0], None
        if plan.reply_call is not None and _is_envelope_reply(call, outcome):
            # after tool results, an "auto" turn that replies: answered again in words
            [again] = plan.model.runtime.submit([plan.reply_call.request])
            self.metrics.queue_depth.inc()
            reason = "client gone"
            try:
                [outcome] = await self.outcomes(request, [again], deadline)
            except ApiError:  # past the deadline
                reason = "timeout"
                raise
            finally:
                self.settle([again], reason)
            call, spent = plan.reply_call, outs[0]
        return chat_completion(plan.model.name, call, outcome, plan.n, spent=spent)

    async def stream(self, request: Any, plan: Plan, handles: list[Handle] | None, deadline: float,
                     chat: bool) -> AsyncIterator[str]:
        """The server-sent events of a streamed request (one prompt, one answer); the search is
        submitted here when ``handles`` is None."""
        writer = ChunkWriter(plan.model.name, plan.calls[0], chat=chat)
        writer.hold = plan.reply_call is not None
        handles = handles if handles is not None else self.submit(plan)
        handle, live = handles[0], list(handles)
        try:
            first = writer.start()
            if first:
                yield first
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                async for event in _relay(handle, writer):
                    yield event
                outcome = await self.finished(handle)
                call, spent = plan.calls[0], 0
                if plan.reply_call is not None and _is_envelope_reply(call, outcome):
                    call, spent = plan.reply_call, len(outcome.result.token_ids)
                    [handle] = plan.model.runtime.submit([call.request])
                    live.append(handle)
                    self.metrics.queue_depth.inc()
                    writer.switch(call)
                    async for event in _relay(handle, writer):
                        yield event
                    outcome = await self.finished(handle)
            yield writer.last(outcome)
            if plan.include_usage:
                yield writer.usage(outcome.prompt_tokens, spent + len(outcome.result.token_ids))
            yield DONE
        except TimeoutError:
            self.settle(live, "timeout")
            live = []
            yield writer.error(_timeout(self.limits).body())
            yield DONE
        except Exception as exc:  # the search failed (a reward raised): say so in the stream
            err = api_error(exc)
            if err.status >= 500:
                log.exception("streamed request failed")
            yield writer.error(err.body())
            yield DONE
        finally:
            # a client gone mid-stream cancels this generator: its search ends at the next commit
            self.settle(live, "client gone")


    async def finished(self, handle: Handle) -> Outcome:
        outcome = await handle.aresult()
        self.metrics.finished(outcome)
        return outcome


async def _relay(handle: Handle, writer: ChunkWriter) -> AsyncIterator[str]:
    """The events of a search's text as it is committed."""
    async for text in handle.atexts():
        event = writer.text(text)
        if event:
            yield event


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


def _timeout(limits: ServeLimits) -> ApiError:
    return ApiError(408, f"the request took longer than this server's limit of {limits.timeout_s:g} s "
                    "(deal-chains serve --timeout); its search was cancelled", type="timeout", code="timeout")


def _loop_deadline(deadline: float) -> float:
    """``deadline`` (``time.monotonic``) on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def _is_envelope_reply(call: Any, outcome: Outcome) -> bool:
    """Whether a tool-calling turn's answer is a reply (no tool call, complete)."""
    if outcome.finish_reason != "stop" or call.toolset is None:
        return False
    _, calls, invalid = call.toolset.parse(outcome.text, True)
    return not calls and not invalid


def create_app(models: Sequence[ServedModel], limits: ServeLimits | None = None, api_key: str | None = None) -> Any:
    """The FastAPI app serving ``models`` (see the module docstring)."""
    require("fastapi")
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException

    if not models:
        raise ValueError("create_app needs at least one model")
    service = Service(models, limits or ServeLimits(), api_key)
    app = FastAPI(title="deal-chains", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    def error_response(err: ApiError, endpoint: str) -> Any:
        service.metrics.requests.labels(endpoint=endpoint, status=str(err.status)).inc()
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Any:
        return error_response(exc, request.url.path)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Any:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                       code=code), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Any:
        log.error("request to %s failed", request.url.path, exc_info=exc)
        return error_response(api_error(exc), request.url.path)

    async def completion(request: Request, endpoint: str,
                         read: Callable[[Any, Any, ServeLimits], Plan]) -> Any:
        started = time.monotonic()
        service.authorize(request)
        body = await read_body(request, service.limits.max_body_bytes)
        # reading a request loads its spec, builds its rewards, compiles its grammar and
        # tokenizes its prompt: work for a thread, not the event loop
        plan = await asyncio.to_thread(read, service.models, body, service.limits)
        deadline = started + service.limits.timeout_s
        if plan.stream:
            service.metrics.requests.labels(endpoint=endpoint, status="200").inc()
            # the stream submits its search when it starts: a client gone before then leaves
            # nothing running
            events = service.stream(request, plan, None, deadline, chat=endpoint.endswith("chat/completions"))
            return StreamingResponse(_timed(events, service, endpoint, started), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        handles = service.submit(plan)
        reason = "client gone"
        try:
            result = await service.answer(request, plan, handles, deadline, endpoint)
        except ClientGone:
            service.metrics.requests.labels(endpoint=endpoint, status="499").inc()
            return Response(status_code=499)
        except ApiError as err:
            reason = "timeout" if err.status == 408 else reason
            raise
        except Exception as exc:
            err = api_error(exc)
            if err.status >= 500:
                log.error("request to %s failed", endpoint, exc_info=exc)
            raise err from exc
        finally:
            service.settle(handles, reason)
        service.metrics.requests.labels(endpoint=endpoint, status="200").inc()
        service.metrics.request_seconds.labels(endpoint=endpoint).observe(time.monotonic() - started)
        return JSONResponse(result)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await completion(request, "/v1/chat/completions", read_chat)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await completion(request, "/v1/completions", read_completion)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Any:
        service.authorize(request)
        service.metrics.requests.labels(endpoint="/v1/models", status="200").inc()
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "deal-chains"}
                                           for name in service.models]}

    @app.get("/v1/models/{name:path}")
    async def get_model(request: Request, name: str) -> Any:
        service.authorize(request)
        if name not in service.models:
            raise ApiError(404, f"The model {name!r} does not exist on this server; it serves: "
                           f"{', '.join(service.models)}", param="model", code="model_not_found")
        return {"id": name, "object": "model", "created": 0, "owned_by": "deal-chains"}

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "models": list(service.models)}

    @app.get("/metrics")
    async def metrics(request: Request) -> Any:
        service.authorize(request)
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _timed(events: AsyncIterator[str], service: Service, endpoint: str,
                 started: float) -> AsyncIterator[str]:
    async for event in events:
        yield event
    service.metrics.request_seconds.labels(endpoint=endpoint).observe(time.monotonic() - started)


__all__ = ["ClientGone", "Service", "create_app", "read_body"]
