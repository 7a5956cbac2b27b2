"""DSPy adapter: ``DeALLM``, a ``dspy.BaseLM`` that decodes with DeAL under a reward spec.

>>> import dspy                                                             # doctest: +SKIP
>>> from deal_chains.dspy import DeALLM                                     # doctest: +SKIP
>>> dspy.configure(lm=DeALLM(spec="commongen", max_tokens=48), adapter=dspy.JSONAdapter())  # doctest: +SKIP
>>> write = dspy.Predict("concepts: list[str] -> sentence: str")            # doctest: +SKIP
>>> write(concepts=["dog", "frisbee"], config={"reward_vars": {"concepts": ["dog", "frisbee"]}}).sentence  # doctest: +SKIP

Install with ``pip install 'deal-chains[dspy]'``; DSPy is imported only when ``DeALLM`` is
first used, and a missing DSPy is a clear ``ImportError``. The model runs locally through
the same adapter (``deal_chains.adapter``) as the LangChain integration.

``DeALLM`` advertises ``response_format``: with ``dspy.JSONAdapter`` (or when
``ChatAdapter`` falls back to it) the signature's output fields are generated under their
JSON schema as a hard grammar constraint, so a small model's output always parses. The
spec's ``{variables}`` come from ``DeALLM(reward_vars=...)`` and, per call, from
``config={"reward_vars": {...}}`` (``dspy.Predict`` passes ``config`` to the LM). The
spec's ``system`` is appended to the system message DSPy writes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DeALLM"]

_CLASS: Any = None


def _dspy() -> Any:
    try:
        import dspy
    except ImportError as exc:
        raise ImportError("deal_chains.dspy needs DSPy: pip install 'deal-chains[dspy]'") from exc
    return dspy


def __getattr__(name: str) -> Any:
    if name == "DeALLM":
        global _CLASS
        if _CLASS is None:
            _CLASS = _build()
        return _CLASS
    raise AttributeError(f"module 'deal_chains.dspy' has no attribute {name!r}")


class _Obj:
    """The OpenAI-shaped response DSPy's BaseLM reads (attributes and ``.get``)."""

    def __init__(self, **fields: Any):
        self.__dict__.update(fields)

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)


def _build() -> type:
    dspy = _dspy()
    from deal_chains.adapter import SEARCH_FIELDS, DeALAdapter, resolve_spec, search_config

    class DeALLM(dspy.BaseLM):
        """A local model decoded by DeAL, as a DSPy LM.

        >>> lm = DeALLM("default", spec="concise", max_tokens=64)          # doctest: +SKIP
        >>> lm("Say hello.")                                                # doctest: +SKIP
        ['Hello! How can I help you today?']

        ``model``: ``"default"``, a Hugging Face id, a local path or a loaded model.
        ``spec`` (+ ``step``): the reward spec (validated now: ``SpecError``).
        ``reward_vars``: default values of the spec's variables. Other keyword arguments
        are search settings (``strategy``, ``top_k``, ``beam``, ``lam``, ...). Per call:
        ``temperature``, ``max_tokens``, ``n``, ``stop``, ``response_format``,
        ``reward_vars``, ``spec``, ``search`` and the search settings; other DSPy call
        options are ignored. Each response carries the reward breakdown, score and
        search stats under ``response.deal`` (``lm.history[-1]["response"].deal``).
        """

        def __init__(self, model: Any = "default", *, spec: Any = None, step: str | None = None,
                     reward_vars: dict[str, Any] | None = None, device: str = "auto", dtype: str | None = "auto",
                     temperature: float | None = None, max_tokens: int | None = None, cache: bool = False,
                     **search: Any):
            self.adapter = DeALAdapter(model, device=device, dtype=dtype)
            self.spec = resolve_spec(spec, step)
            self.reward_vars = dict(reward_vars or {})
            self.search = dict(search)
            search_config(self.spec, self.search)  # bad settings fail here
            super().__init__(model=f"deal-chains/{self.adapter.model_name}", model_type="chat",
                             temperature=temperature, max_tokens=max_tokens, cache=cache)

        @property
        def supported_params(self) -> set[str]:
            return {"response_format"}

        @property
        def supports_response_schema(self) -> bool:
            return True

        def _requests(self, prompt: Any, messages: Any, kwargs: dict[str, Any]) -> list[Any]:
            from deal_chains.search.constraints import GrammarConstraint

            merged = {**self.kwargs, **kwargs}
            msgs = messages or [{"role": "user", "content": prompt}]
            msgs = [{"role": m["role"], "content": _content(m.get("content"))} for m in msgs]
            overrides = dict(self.search)
            overrides.update(merged.get("search") or {})
            overrides.update({k: merged[k] for k in SEARCH_FIELDS if merged.get(k) is not None})
            if merged.get("temperature") is not None:
                overrides["temperature"] = merged["temperature"]
            if merged.get("max_tokens") is not None:
                overrides["max_new_tokens"] = merged["max_tokens"]
            spec = resolve_spec(merged["spec"]) if merged.get("spec") is not None else self.spec
            config = search_config(spec, overrides)
            constraint = None
            fmt = merged.get("response_format")
            if fmt is not None:
                schema = _schema(fmt)
                if schema is not None:
                    constraint = GrammarConstraint.json_schema(schema)
            variables = {**self.reward_vars, **dict(merged.get("reward_vars") or {})}
            n = int(merged.get("n") or 1)
            stop = merged.get("stop")
            stop = [stop] if isinstance(stop, str) else list(stop or [])
            # DSPy writes the system message (its field format); the spec's system prompt
            # (start-state adaptation) is appended to it rather than dropped
            has_system = any(m["role"] == "system" for m in msgs)
            instructions = spec.render_system(variables) if spec is not None and has_system else None
            requests = []
            for i in range(n):
                # n > 1: distinct seeds, so sampled searches give distinct answers
                cfg = config if i == 0 else config.updated(seed=config.seed + i)
                requests.append(self.adapter.request(msgs, spec=spec, reward_vars=variables, config=cfg,
                                                     constraint=constraint, stop=stop, instructions=instructions))
            return requests

        def _response(self, outcomes: list[Any]) -> _Obj:
            usage = {"prompt_tokens": outcomes[0].prompt_tokens,
                     "completion_tokens": sum(len(o.result.token_ids) for o in outcomes)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            choices = [_Obj(index=i, message=_Obj(role="assistant", content=o.text, tool_calls=None),
                            finish_reason=o.finish_reason) for i, o in enumerate(outcomes)]
            return _Obj(choices=choices, usage=usage, model=self.model, cache_hit=False, _hidden_params={},
                        deal=[o.metadata() for o in outcomes])

        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> _Obj:
            return self._response(self.adapter.generate(self._requests(prompt, messages, kwargs)))

        async def aforward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> _Obj:
            import asyncio

            requests = await asyncio.to_thread(self._requests, prompt, messages, kwargs)
            return self._response(await self.adapter.agenerate(requests))

        def dump_state(self) -> dict[str, Any]:
            state = super().dump_state()
            state.update(search=self.search, reward_vars=self.reward_vars)
            return state

    DeALLM.__module__ = __name__
    return DeALLM


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style content parts
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            else:
                from deal_chains.errors import InputError

                raise InputError(f"DeALLM runs a text-only local model; got a {part.get('type')!r} content part")
        return "".join(parts)
    return "" if content is None else str(content)


def _schema(fmt: Any) -> dict[str, Any] | None:
    """The JSON schema of a DSPy/OpenAI ``response_format`` (a pydantic class or a dict)."""
    if isinstance(fmt, type) and hasattr(fmt, "model_json_schema"):
        return fmt.model_json_schema()
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            inner = fmt.get("json_schema") or {}
            return dict(inner.get("schema") or {"type": "object"})
        if fmt.get("type") == "json_object":
            return {"type": "object"}
    return None
