"""The one place the LangChain and DSPy integrations talk to ``DeALEngine``.

>>> from deal_chains.runtime import ModelRuntime                       # doctest: +SKIP
>>> adapter = ModelRuntime("default")                                  # doctest: +SKIP
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

import json
import threading
from typing import Any, Callable, Mapping, Sequence

from deal_chains.errors import InputError
from deal_chains.runtime.requests import Outcome, Request, is_spec, resolve_spec, search_config, spec_key
from deal_chains.runtime.scheduler import Job
from deal_chains.runtime.streaming import Handle
from deal_chains.runtime.views import content_view
from deal_chains.runtime.worker import Worker, worker_for
from deal_chains.search.config import SearchConfig


class ModelRuntime:
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
    def worker(self) -> Worker:
        return worker_for(self.lm)

    def count_tokens(self, text: str) -> int:
        return len(self.lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    def request(self, messages: Sequence[Mapping[str, str]], *, spec: Any = None,
                reward_vars: Mapping[str, Any] | None = None, config: SearchConfig | None = None,
                constraint: Any = None, stop: Sequence[str] | None = None, instructions: str | None = None,
                view: Callable[[str], str] | None = None, tool_turn: bool = False,
                examples: bool = True) -> Request:
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
        tool-calling mask (see ``_format``). ``examples``: the spec's example turns follow
        the system message (off for DSPy, whose programs carry demos in their adapter's
        format).
        """
        from deal_chains.search.constraints import GrammarConstraint
        from rewards.base import RewardContext

        spec = resolve_spec(spec) if spec is not None and not is_spec(spec) else spec
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
        if spec is not None and examples:  # the spec's demonstrations open the conversation
            msgs[:0] = spec.example_turns()
        if system or own is not None:
            msgs.insert(0, {"role": "system", "content": system if system else (own or "")})
        msgs, ids = self._format(msgs, tool_turn=tool_turn)
        self.lm.check_fits(len(ids), config.max_new_tokens)
        # by content, not identity: a spec given as text is parsed again by every call, and
        # two calls with the same spec must match (batch plans claim requests by key)
        key = json.dumps([msgs, config.model_dump(), constraint and [constraint.kind, constraint.source],
                          list(stop or ()), repr(sorted(variables.items())), spec_key(spec),
                          view is not None and getattr(view, "__qualname__", repr(view))], default=repr)
        return Request(messages=msgs, rewards=rewards, context=RewardContext(prompt=text, variables=variables),
                       config=config, constraint=constraint, stop=tuple(stop or ()), prompt_tokens=len(ids), key=key)

    def _format(self, msgs: list[dict[str, str]], tool_turn: bool = False) -> tuple[list[dict[str, str]], list[int]]:
        """Token ids of the prompt. A chat template that refuses the ``tool`` role, or a
        generic one that renders any role but never names it (SmolLM2's), gets tool results
        as user messages ("Tool result: ..."): such a model was not trained on ``tool`` turns.
        In a tool-calling turn (``tool_turn``), deciding between calling again and replying,
        it kept calling or garbled the result (add(2, 40) -> "42" then add(42, 42), ...); in a
        plain reply after a weather tool's result it apologised that it has no weather data,
        or switched language. As a user message it replies from the result."""
        if any(m["role"] == "tool" for m in msgs) and not self._template_has_tool_role():
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
        jobs = [Job(r) for r in requests]
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


def score_text(adapter: ModelRuntime | None, spec: Any, variables: Mapping[str, Any], text: str,
               prompt: str = "") -> tuple[float, dict[str, float]]:
    """The weighted reward of ``text`` under ``spec`` (and the per-reward breakdown), as the
    search would score a finished answer."""
    from deal_chains.search.scoring import score_texts
    from deal_chains.search.state import Group
    from rewards.base import RewardContext

    lm = adapter.lm if adapter is not None else None
    rewards = spec.build_rewards(dict(variables), count_tokens=adapter.count_tokens if adapter is not None else None,
                                 lm=lm)
    group = Group(prompt_row=0, rewards=rewards, context=RewardContext(prompt=prompt, variables=dict(variables)))
    [(total, breakdown)] = score_texts(group, [text], [True])
    return total, breakdown

