"""DSPy adapter: ``DeALLM``, a ``dspy.BaseLM`` that decodes with DeAL under a reward spec.

>>> import dspy                                                             # doctest: +SKIP
>>> from deal_chains.dspy import DeALLM                                     # doctest: +SKIP
>>> dspy.configure(lm=DeALLM(spec="commongen", max_tokens=48))          # doctest: +SKIP
>>> write = dspy.Predict("concepts: list[str] -> sentence: str")            # doctest: +SKIP
>>> write(concepts=["dog", "frisbee"], config={"reward_vars": {"concepts": ["dog", "frisbee"]}}).sentence  # doctest: +SKIP

Install with ``pip install 'deal-chains[dspy]'``; DSPy is imported only when ``DeALLM`` is
first used, and a missing DSPy is a clear ``ImportError``. The model runs locally through
the same runtime (``deal_chains.runtime``) as the LangChain integration.

Output formats are enforced, so a small model's output parses on the first call and one
``Predict`` (or ``ChainOfThought``) is one LM call. ``DeALLM`` advertises
``response_format``: with ``dspy.JSONAdapter`` the signature's output fields are generated
under their JSON schema as a hard grammar constraint. With DSPy's default ``ChatAdapter``
the request is recognised (the called module's signature, checked against the messages
ChatAdapter's own functions write) and decoded under a grammar of its
``[[ ## field ## ]]`` ... ``[[ ## completed ## ]]`` format with typed fields
(``deal_chains.dspy_formats``); ``max_text_chars`` caps its free-text fields. Requests
not recognised are decoded unconstrained. ``response.deal[i]["format"]`` says which
format was enforced (``"chat_adapter"``, ``"json"`` or None). The
spec's ``{variables}`` come from ``DeALLM(reward_vars=...)`` and, per call, from
``config={"reward_vars": {...}}`` (``dspy.Predict`` passes ``config`` to the LM). The
spec's ``system`` comes first in the system message, then the one DSPy writes (as with
``ChatDeAL``). Under either format, the spec's rewards score the output fields' values
(``deal_chains.jsonkit.lexer.json_content`` for JSON, the sections' text for ChatAdapter),
not the JSON's keys or the markers; ``json_schema`` rewards see the JSON.

Sampling (``temperature > 0``): with no ``seed`` set, every request gets a fresh one
(reported in ``response.deal[i]["seed"]``); ``n > 1`` completions are one batched search.
With a fixed ``seed``, ``rollout_id`` and each of the ``n`` completions get their own seed
derived from it, so they differ and stay reproducible.
"""

from __future__ import annotations

from typing import Any

from deal_chains.errors import InputError

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
    from deal_chains.runtime import ModelRuntime, resolve_spec, search_config
    from deal_chains.runtime.options import DSPY_RULES, ModelDefaults, read_call_options
    from deal_chains.jsonkit.lexer import json_content
    from deal_chains.dspy_formats import chat_format, chat_output_fields, check_text_cap, json_answer_schema

    quiet = _quiet_call()
    # method bodies cannot see class-level names: the call steps are closure variables
    prepare, execute, aexecute, finalize, warn_messages, with_callbacks = quiet or (None,) * 6

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
        ``reward_vars``, ``spec``, ``search``, ``rollout_id`` and the search settings;
        other DSPy call options are ignored. Each response carries the reward breakdown,
        score, search stats and the enforced output format (``"chat_adapter"``, ``"json"``
        or None) under ``response.deal``
        (``lm.history[-1]["response"].deal``). ``trust_remote_code``: let transformers run
        the model repository's own code (off unless asked). ``max_text_chars``: cap each
        free-text output field of DSPy's ChatAdapter format (1 to 400 characters; None, the
        default: no cap but the token budget).
        """

        def __init__(self, model: Any = "default", *, spec: Any = None, step: str | None = None,
                     reward_vars: dict[str, Any] | None = None, device: str = "auto", dtype: str | None = "auto",
                     temperature: float | None = None, max_tokens: int | None = None, cache: bool = False,
                     trust_remote_code: bool = False, max_text_chars: int | None = None, **search: Any):
            check_text_cap(max_text_chars)  # a bad cap fails here
            self.max_text_chars = max_text_chars
            self.adapter = ModelRuntime(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
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
            return self._plan(prompt, messages, kwargs)[0]

        def _plan(self, prompt: Any, messages: Any, kwargs: dict[str, Any]) -> tuple[list[Any], str | None]:
            """The call's requests, and the output format they enforce (None: free text)."""
            from deal_chains.jsonkit.schema_shape import typical_tokens
            from deal_chains.runtime.options import budget_for_json
            from deal_chains.search.constraints import GrammarConstraint

            merged = {**self.kwargs, **kwargs}
            msgs = messages or [{"role": "user", "content": prompt}]
            msgs = [{"role": m["role"], "content": _content(m.get("content"))} for m in msgs]
            defaults = ModelDefaults(loaded_spec=self.spec, search=self.search, reward_vars=self.reward_vars)
            options = read_call_options(defaults, merged, DSPY_RULES)
            constraint, view, fmt_name = None, None, None
            configs = options.completion_configs()
            if options.response_schema is not None:  # JSONAdapter (or ChatAdapter's fallback to it)
                constraint, view = GrammarConstraint.json_schema(json_answer_schema(options.response_schema)), json_content
                fmt_name = "json"
                # a budget left unset is sized from the schema, as for LangChain's structured output
                wanted = typical_tokens(options.response_schema)
                configs = [budget_for_json(config, wanted) for config in configs]
            else:  # ChatAdapter: its [[ ## field ## ]] format, when the request is recognised
                fmt = chat_request_format(msgs, options, self.max_text_chars)
                if fmt is not None:
                    constraint, view, fmt_name = fmt.constraint(), fmt.view, "chat_adapter"
            # DSPy writes the system message (its field format); the adapter puts the spec's
            # system prompt (start-state adaptation) before it, as for ChatDeAL. The spec's
            # examples are written for its own prompt: a program's demos (in DSPy's format)
            # take their place
            return [self.adapter.request(msgs, spec=options.spec, reward_vars=options.reward_vars, config=config,
                                         constraint=constraint, stop=options.stop, view=view, examples=False)
                    for config in configs], fmt_name

        def _response(self, outcomes: list[Any], fmt_name: str | None) -> _Obj:
            usage = {"prompt_tokens": outcomes[0].prompt_tokens,
                     "completion_tokens": sum(len(o.result.token_ids) for o in outcomes)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            choices = [_Obj(index=i, message=_Obj(role="assistant", content=o.text, tool_calls=None),
                            finish_reason=o.finish_reason) for i, o in enumerate(outcomes)]
            return _Obj(choices=choices, usage=usage, model=self.model, cache_hit=False, _hidden_params={},
                        deal=[{**o.metadata(), "format": fmt_name} for o in outcomes])

        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> _Obj:
            requests, fmt_name = self._plan(prompt, messages, kwargs)
            return self._response(self.adapter.generate(requests), fmt_name)

        async def aforward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> _Obj:
            import asyncio

            requests, fmt_name = await asyncio.to_thread(self._plan, prompt, messages, kwargs)
            return self._response(await self.adapter.agenerate(requests), fmt_name)

        def dump_state(self) -> dict[str, Any]:
            state = super().dump_state()
            state.update(search=self.search, reward_vars=self.reward_vars, max_text_chars=self.max_text_chars)
            return state

        if quiet is not None:
            # DSPy 3.4 warns on every call that LMs implementing forward() are deprecated:
            # a warning to this class's authors, not to its users (the supported
            # DSPy range, < 3.5, keeps forward()). These are BaseLM's __call__/acall
            # without that one warning; DSPy's other warnings still apply.
            @with_callbacks
            def __call__(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
                call = prepare(self, prompt, messages, kwargs)
                warn_messages(self, messages)
                return finalize(self, call, execute(self, call))

            @with_callbacks
            async def acall(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
                import asyncio

                call = await asyncio.to_thread(prepare, self, prompt, messages, kwargs, asynchronous=True)
                warn_messages(self, messages)
                return finalize(self, call, await aexecute(self, call))

    def chat_request_format(msgs: list[dict[str, str]], options: Any, max_text_chars: int | None) -> Any:
        """The grammar of ChatAdapter's answer to ``msgs`` (None: not a recognised ChatAdapter
        request, or the spec brings its own hard constraint, which then applies)."""
        found = chat_output_fields(msgs)
        if found is None:
            return None
        fields, input_names = found
        if options.spec is not None and options.spec.build_constraint(options.reward_vars) is not None:
            return None
        return chat_format(fields, max_text_chars=max_text_chars, input_names=input_names)

    DeALLM.__module__ = __name__
    return DeALLM


def _quiet_call() -> tuple | None:
    """DSPy 3.4's LM call steps, when its BaseLM.__call__ warns about forward() (None for
    other DSPy versions, whose BaseLM is used as is)."""
    try:
        from dspy.clients import base_lm
        from dspy.clients._deprecation import warn_openai_messages
        from dspy.clients.execution import aexecute, execute, finalize, prepare
        from dspy.utils.callback import with_callbacks
    except ImportError:
        return None
    if not hasattr(base_lm, "warn_legacy_lm"):
        return None
    return prepare, execute, aexecute, finalize, warn_openai_messages, with_callbacks


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

                raise InputError(f"DeALLM runs a text-only local model; got a {part.get('type')!r} content part")
        return "".join(parts)
    return "" if content is None else str(content)


