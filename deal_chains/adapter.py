"""The one place the LangChain and DSPy integrations talk to ``DeALEngine``.

>>> from deal_chains.adapter import DeALAdapter                       # doctest: +SKIP
>>> adapter = DeALAdapter("default")                                  # doctest: +SKIP
>>> req = adapter.request([{"role": "user", "content": "Write a sentence about a dog."}],
...                       spec="commongen", reward_vars={"concepts": ["dog", "park"]})  # doctest: +SKIP
>>> [out] = adapter.generate([req])                                   # doctest: +SKIP
>>> out.text, out.metadata()["rewards"]                               # doctest: +SKIP

A *request* is everything one generation needs, prepared (and checked) in the caller's
thread before any search runs: chat messages in the engine's format, the spec's rewards
built for the call's variables, the search config, an optional hard constraint and stop
sequences. Requests go to one worker thread per loaded model, which searches every
request that is waiting together (one batched ``DeALEngine`` call per search config), so
concurrent calls from threads or asyncio tasks are safe and batch themselves. Each
request gets a ``Handle``: its result (blocking or awaitable) and, while the search runs,
its committed text as it is committed (``texts()`` / ``atexts()``).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Sequence

from deal_chains.errors import InputError, SpecError
from deal_chains.search.config import SearchConfig

# search knobs a caller may override per call, besides a whole ``search`` mapping
SEARCH_FIELDS: tuple[str, ...] = tuple(SearchConfig.model_fields)
_IDLE_SECONDS = 30.0  # a worker thread with nothing to do for this long exits


def resolve_spec(spec: Any, step: str | None = None) -> Any:
    """A ``RewardSpec`` from a path, YAML text, preset name, mapping or spec object (or None).

    Raises ``SpecError`` (file, line, field) for an invalid spec, and for a multi-step spec
    given without ``step``."""
    if spec is None:
        if step is not None:
            raise SpecError(f"step {step!r} given without a spec")
        return None
    from deal_chains.spec import RewardSpec, load_spec

    if isinstance(spec, RewardSpec):
        loaded = spec
    elif isinstance(spec, (str, os.PathLike, Mapping)):
        loaded = load_spec(Path(spec) if isinstance(spec, os.PathLike) else spec)
    else:
        raise SpecError(f"a spec must be a file path, YAML text, a preset name, a mapping or a RewardSpec "
                        f"(got {type(spec).__name__})")
    if step is not None:
        return loaded.step(step)
    if loaded.steps:
        raise SpecError(f"the spec has steps ({', '.join(loaded.step_names)}); choose one with step=NAME")
    return loaded


def search_config(spec: Any, overrides: Mapping[str, Any]) -> SearchConfig:
    """The spec's search settings (or the defaults) with ``overrides`` (None values ignored)."""
    unknown = sorted(set(overrides) - set(SEARCH_FIELDS))
    if unknown:
        raise InputError(f"unknown search setting(s) {', '.join(unknown)}; known: {', '.join(SEARCH_FIELDS)}")
    if spec is not None:
        return spec.search_config(**overrides)
    return SearchConfig.build(**{k: v for k, v in overrides.items() if v is not None})


@dataclass
class Request:
    """One prepared generation (see the module docstring)."""

    messages: list[dict[str, str]]
    rewards: list[Any]
    context: Any
    config: SearchConfig
    constraint: Any = None
    stop: tuple[str, ...] = ()
    prompt_tokens: int = 0
    key: str = ""

    @property
    def config_key(self) -> str:
        return self.config.model_dump_json()


@dataclass
class Outcome:
    """A finished request: the text (cut at a stop sequence if one was generated) and the
    engine's ``GenerationResult``."""

    text: str
    result: Any
    prompt_tokens: int
    finish_reason: str  # "stop" (end of answer or stop sequence) | "length" | "cancelled"
    model_name: str
    stop_sequence: str | None = None

    def usage(self) -> dict[str, int]:
        out = len(self.result.token_ids)
        return {"input_tokens": self.prompt_tokens, "output_tokens": out, "total_tokens": self.prompt_tokens + out}

    def metadata(self) -> dict[str, Any]:
        """Reward breakdown, total reward and score, strategy, search statistics and, for a
        sampled search, the seed it used (pass it back as ``seed`` to reproduce the answer)."""
        r = self.result
        meta: dict[str, Any] = {
            "model_name": self.model_name, "finish_reason": self.finish_reason,
            "rewards": dict(r.rewards), "reward": r.reward, "score": r.score, "logprob": r.logprob,
            "strategy": r.strategy, "stats": r.stats.as_dict(),
        }
        seed = getattr(r, "seed", None)
        if seed is None:
            seed = getattr(r.stats, "seed", None)
        if seed is not None:
            meta["seed"] = seed
        if self.stop_sequence is not None:
            meta["stop_sequence"] = self.stop_sequence
        return meta


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


class ContentView:
    """A reward that scores the content of a JSON answer (``json_content``) rather than its
    raw text.

    Under a JSON constraint (tools, structured output, DSPy's JSON adapter) the text is an
    envelope: keywords would match its keys, a length reward would count its punctuation.
    Wrapped rewards see the string values and numbers instead, as the search extends the
    JSON; everything else (name, weight, bounds, terminal) is the wrapped reward's.
    ``json_schema`` rewards are never wrapped: they judge the JSON itself."""

    def __init__(self, reward: Any, view: Callable[[str], str]):
        self._reward, self._view = reward, view

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reward, name)

    def score(self, texts: Sequence[str], context: Any) -> list[float]:
        return self._reward.score([self._view(t) for t in texts], context)

    def settled(self, text: str, context: Any) -> bool:
        fn = getattr(self._reward, "settled", None)
        return bool(fn(self._view(text), context)) if fn is not None else False

    def __repr__(self) -> str:
        return f"ContentView({self._reward!r})"


def content_view(rewards: Sequence[Any], view: Callable[[str], str]) -> list[Any]:
    """``rewards`` with every reward but ``json_schema`` ones wrapped in ``ContentView``."""
    from rewards.json_schema import JsonSchemaReward

    def judges_json(reward: Any) -> bool:
        inner = getattr(reward, "reward", None)  # a rewards.guard.Guarded wraps the reward
        return isinstance(reward, JsonSchemaReward) or isinstance(inner, JsonSchemaReward)

    return [r if judges_json(r) else ContentView(r, view) for r in rewards]


class CancelledRequest(InputError):
    """The caller abandoned the request (a cancelled task or a closed stream)."""


@dataclass
class _Job:
    request: Request
    handle: Handle = field(default_factory=Handle)


class _Worker:
    """Runs the searches of one loaded model on one thread, batching what is waiting."""

    def __init__(self, lm: Any):
        from deal_chains.search.engine import DeALEngine

        self.lm = lm
        self.engine = DeALEngine(lm)
        self._queue: queue.SimpleQueue[list[_Job]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.engine_calls = 0  # for tests and diagnostics: batched engine calls made

    def submit(self, jobs: list[_Job]) -> None:
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
            while True:  # everything waiting now is searched together
                try:
                    jobs = jobs + self._queue.get_nowait()
                except queue.Empty:
                    break
            groups: dict[str, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.request.config_key, []).append(job)
            for group in groups.values():
                try:
                    self._run(group)
                except BaseException as exc:  # never leave a caller waiting
                    for job in group:
                        if not job.handle.done:
                            job.handle._finish(error=exc)
                    if not isinstance(exc, Exception):
                        raise

    def _run(self, group: list[_Job]) -> None:
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
                                       stop_sequence=stream.stop_sequence))


_WORKERS: dict[int, tuple[Any, _Worker]] = {}
_WORKERS_LOCK = threading.Lock()


def _worker_for(lm: Any) -> _Worker:
    with _WORKERS_LOCK:
        entry = _WORKERS.get(id(lm))
        if entry is None or entry[0] is not lm:
            entry = (lm, _Worker(lm))
            _WORKERS[id(lm)] = entry
        return entry[1]


class DeALAdapter:
    """A model (loaded on first use) and the worker that searches for it.

    ``model``: ``"default"``, a Hugging Face id or local path, a ``LoadedModel`` or a
    ``DeALEngine``. Adapters of the same loaded model share one worker.
    ``trust_remote_code``: let transformers run the model repository's own code (off unless
    asked: only for a model whose code you trust).
    """

    def __init__(self, model: Any = "default", *, device: str = "auto", dtype: str | None = "auto",
                 trust_remote_code: bool = False):
        self.model, self.device, self.dtype = model, device, dtype
        self.trust_remote_code = bool(trust_remote_code)
        self._lm: Any = None
        self._lock = threading.Lock()

    @property
    def lm(self) -> Any:
        if self._lm is None:
            with self._lock:
                if self._lm is None:
                    from deal_chains.models.loader import load_model

                    model = getattr(self.model, "lm", self.model)  # a DeALEngine
                    self._lm = load_model(model, device=self.device, dtype=self.dtype,
                                          trust_remote_code=self.trust_remote_code)
        return self._lm

    @property
    def model_name(self) -> str:
        if self._lm is not None:
            return self._lm.name
        model = getattr(self.model, "lm", self.model)
        if isinstance(model, str) and model == "default":
            from deal_chains.models.default import DEFAULT_MODEL_NAME

            return DEFAULT_MODEL_NAME
        return model if isinstance(model, str) else getattr(model, "name", type(model).__name__)

    @property
    def worker(self) -> _Worker:
        return _worker_for(self.lm)

    def count_tokens(self, text: str) -> int:
        return len(self.lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    def request(self, messages: Sequence[Mapping[str, str]], *, spec: Any = None,
                reward_vars: Mapping[str, Any] | None = None, config: SearchConfig | None = None,
                constraint: Any = None, stop: Sequence[str] | None = None, instructions: str | None = None,
                view: Callable[[str], str] | None = None, tool_turn: bool = False) -> Request:
        """Prepare one generation; every error a caller can cause is raised here.

        ``messages``: ``{"role", "content"}`` dicts (roles ``system``, ``user``,
        ``assistant``, ``tool``). System prompt: the spec's ``system`` (rendered with
        ``reward_vars``: DeAL's start-state adaptation) comes first, then the caller's own
        system message (when the messages start with one), in one system message, then
        ``instructions`` (what a tool or structured-output call needs the model to know).
        ``constraint``: a ``GrammarConstraint``; the spec's hard constraint applies when
        none is given (giving both is an error). ``view``: what the spec's rewards score
        instead of the raw text (``json_content`` for an answer under a JSON constraint;
        see ``ContentView``). ``tool_turn``: the answer is a tool call or a reply under the
        tool-calling mask (see ``_format``).
        """
        from deal_chains.search.constraints import GrammarConstraint
        from rewards.base import RewardContext

        spec = resolve_spec(spec) if spec is not None and not _is_spec(spec) else spec
        variables = dict(reward_vars or {})
        config = config or search_config(spec, {})
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
        if not msgs:
            raise InputError("no messages to answer")
        text = "\n".join(m["content"] for m in msgs if m["role"] != "system")
        if not text.strip():
            raise InputError("the messages have no text to answer")
        rewards: list[Any] = []
        if spec is not None:
            rewards = spec.build_rewards(variables, count_tokens=self.count_tokens, lm=self.lm)
            if view is not None:
                rewards = content_view(rewards, view)
            spec_constraint = spec.build_constraint(variables)
            if spec_constraint is not None:
                if constraint is not None:
                    raise InputError("the spec has a hard json_schema constraint; it cannot be combined with "
                                     "tools or a structured-output schema (drop `mode: hard` from the spec)")
                constraint = spec_constraint
        if constraint is not None and not isinstance(constraint, GrammarConstraint):
            raise InputError(f"constraint must be a GrammarConstraint, got {type(constraint).__name__}")
        # one system message at the start: the spec's instruction, the caller's, then the
        # call's instructions (chat templates expect at most one, first)
        own = msgs.pop(0)["content"] if msgs[0]["role"] == "system" else None
        parts = [spec.render_system(variables) if spec is not None else None, own, instructions]
        system = "\n\n".join(p for p in parts if p and p.strip())
        if system or own is not None:
            msgs.insert(0, {"role": "system", "content": system if system else (own or "")})
        msgs, ids = self._format(msgs, tool_turn=tool_turn)
        self.lm.check_fits(len(ids), config.max_new_tokens)
        # by content, not identity: a spec given as text is parsed again by every call, and
        # two calls with the same spec must match (batch plans claim requests by key)
        key = json.dumps([msgs, config.model_dump(), constraint and [constraint.kind, constraint.source],
                          list(stop or ()), repr(sorted(variables.items())), _spec_key(spec),
                          view is not None and getattr(view, "__qualname__", repr(view))], default=repr)
        return Request(messages=msgs, rewards=rewards, context=RewardContext(prompt=text, variables=variables),
                       config=config, constraint=constraint, stop=tuple(stop or ()), prompt_tokens=len(ids), key=key)

    def _format(self, msgs: list[dict[str, str]], tool_turn: bool = False) -> tuple[list[dict[str, str]], list[int]]:
        """Token ids of the prompt. A chat template that refuses the ``tool`` role gets tool
        results as user messages ("Tool result: ..."). So does a tool-calling turn
        (``tool_turn``) on a generic template that does not name the role (SmolLM2's): it
        renders any role, but its model was not trained on ``tool`` turns and, deciding
        between calling again and replying, keeps calling or garbles the result (add(2, 40)
        -> "42" then add(42, 42), ...); as a user message it replies "42". A plain reply
        after tool results reads them better in the ``tool`` role, so that stays."""
        if tool_turn and any(m["role"] == "tool" for m in msgs) and not self._template_has_tool_role():
            msgs = _tool_results_as_user(msgs)
        try:
            return msgs, self.lm.format_prompt(msgs)
        except Exception:
            if not any(m["role"] == "tool" for m in msgs):
                raise
        msgs = _tool_results_as_user(msgs)
        return msgs, self.lm.format_prompt(msgs)

    def _template_has_tool_role(self) -> bool:
        template = getattr(self.lm.tokenizer, "chat_template", None)
        if isinstance(template, Mapping):  # named templates
            template = " ".join(str(t) for t in template.values())
        return isinstance(template, str) and "tool" in template

    def submit(self, requests: Sequence[Request]) -> list[Handle]:
        """Queue requests to be searched together; returns one ``Handle`` each."""
        jobs = [_Job(r) for r in requests]
        if jobs:
            self.worker.submit(jobs)
        return [j.handle for j in jobs]

    def generate(self, requests: Sequence[Request]) -> list[Outcome]:
        return [h.result() for h in self.submit(requests)]

    async def agenerate(self, requests: Sequence[Request]) -> list[Outcome]:
        return [await h.aresult() for h in self.submit(requests)]


def _tool_results_as_user(msgs: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Tool result:\n{m['content']}"} if m["role"] == "tool" else m
            for m in msgs]


def _is_spec(obj: Any) -> bool:
    from deal_chains.spec import RewardSpec

    return isinstance(obj, RewardSpec)


def _spec_key(spec: Any) -> Any:
    """What identifies a spec's effect on a request: its content."""
    if spec is None:
        return None
    try:
        return spec.model_dump_json()
    except Exception:  # a spec holding something pydantic cannot serialise: fall back to identity
        return f"id:{id(spec)}"


def score_text(adapter: DeALAdapter | None, spec: Any, variables: Mapping[str, Any], text: str,
               prompt: str = "") -> tuple[float, dict[str, float]]:
    """The weighted reward of ``text`` under ``spec`` (and the per-reward breakdown), as the
    search would score a finished answer."""
    from rewards.base import RewardContext

    lm = adapter.lm if adapter is not None else None
    rewards = spec.build_rewards(dict(variables), count_tokens=adapter.count_tokens if adapter is not None else None,
                                 lm=lm)
    context = RewardContext(prompt=prompt, variables=dict(variables))
    breakdown: dict[str, float] = {}
    total = 0.0
    for reward in rewards:
        value = float(reward.score([text], context)[0])
        breakdown[getattr(reward, "name", type(reward).__name__)] = value
        total += float(getattr(reward, "weight", 1.0)) * value
    return total, breakdown
