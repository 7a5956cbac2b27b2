"""Filling a spec's ``{variables}`` from a chain's input.

>>> from langchain_core.prompts import ChatPromptTemplate                    # doctest: +SKIP
>>> from langchain_core.output_parsers import StrOutputParser                # doctest: +SKIP
>>> from deal_chains.langchain import ChatDeAL, with_reward_vars             # doctest: +SKIP
>>> prompt = ChatPromptTemplate.from_messages([("human", "Use these words: {concepts}.")])  # doctest: +SKIP
>>> chain = with_reward_vars(prompt, ChatDeAL(spec="commongen")) | StrOutputParser()  # doctest: +SKIP
>>> chain.invoke({"concepts": ["dog", "frisbee", "catch"]})                  # doctest: +SKIP

In ``prompt | llm | parser`` the model only sees the formatted prompt, not the input
dict, so a spec reward such as ``keywords: {words: "{concepts}"}`` needs the variables
handed over: ``with_reward_vars(prompt, llm)`` is ``prompt | llm`` with ``llm`` bound, per
input, to ``reward_vars`` taken from that input; for a fixed value use
``llm.bind(reward_vars={...})``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Mapping, Sequence

from langchain_core.runnables import Runnable, RunnableLambda, RunnableSequence, RunnableWithFallbacks
from langchain_core.runnables.base import RunnableBindingBase

from deal_chains.errors import InputError
from deal_chains.langchain._base import PLAN, Plan


def with_reward_vars(prompt: Runnable, llm: Runnable, keys: Sequence[str] | None = None) -> Runnable:
    """``prompt | llm``, where ``llm`` gets ``reward_vars`` from the chain's input dict.

    ``llm``: a ``ChatDeAL``/``DeALLLM``, or a binding of one (``bind_tools``, ``bind``,
    ``with_structured_output``, ``with_retry``, ``with_fallbacks``). ``keys``: the input
    variables to forward (default: all of them; the spec ignores the ones it does not use).
    Streaming and async calls go through as usual; ``batch``/``abatch`` search every input
    as one batch (each with its own variables), whatever ``max_concurrency`` says.
    """
    keys = list(keys) if keys is not None else None

    def variables_of(inputs: Any) -> dict[str, Any]:
        if not isinstance(inputs, Mapping):
            raise InputError(f"with_reward_vars: the chain input must be a dict of variables, got "
                             f"{type(inputs).__name__}")
        if keys is None:
            variables = dict(inputs)
        else:
            missing = [k for k in keys if k not in inputs]
            if missing:
                raise InputError(f"with_reward_vars: the input has no {', '.join(map(repr, missing))} "
                                 f"(it has {', '.join(map(repr, inputs)) or 'no keys'})")
            variables = {k: inputs[k] for k in keys}
        return variables

    def route(inputs: Any) -> Runnable:
        return prompt | llm.bind(reward_vars=variables_of(inputs))

    return _RewardVarsRouter(route, prompt, llm, variables_of)


def _unwrap(runnable: Any) -> tuple[Any, dict[str, Any]] | None:
    """(the DeAL model a runnable calls first, the keyword arguments it calls it with), or
    None when it is not a known shape of binding over one."""
    from deal_chains.langchain._base import DeALParams
    from deal_chains.langchain.structured import _RawStructured

    if isinstance(runnable, DeALParams):
        return runnable, {}
    if isinstance(runnable, RunnableBindingBase):  # bind, bind_tools, with_retry, with_config
        inner = _unwrap(runnable.bound)
        return (inner[0], {**inner[1], **runnable.kwargs}) if inner is not None else None
    if isinstance(runnable, RunnableSequence):  # llm | parser
        return _unwrap(runnable.first)
    if isinstance(runnable, RunnableWithFallbacks):  # the primary runs first
        return _unwrap(runnable.runnable)
    if isinstance(runnable, _RawStructured):
        return _unwrap(runnable.llm)
    return None


class _RewardVarsRouter(RunnableLambda):
    """``with_reward_vars``'s runnable: per input, ``prompt | llm.bind(reward_vars=...)``;
    a batch prepares every input's model call first, so the per-input runs (threads,
    tasks, or one by one under ``max_concurrency=1``) claim one batched search."""

    def __init__(self, route: Callable[[Any], Runnable], prompt: Runnable, llm: Runnable,
                 variables_of: Callable[[Any], dict[str, Any]]):
        super().__init__(route, name="with_reward_vars")
        self._prompt, self._llm, self._variables_of = prompt, llm, variables_of

    def _plan(self, inputs: Sequence[Any]) -> Plan | None:
        if len(inputs) < 2 or PLAN.get() is not None:
            return PLAN.get()
        target = _unwrap(self._llm)
        if target is None or not hasattr(target[0], "_plan_call"):
            return None
        model, bound = target
        calls = []
        for x in inputs:
            try:
                kwargs = {**bound, "reward_vars": self._variables_of(x)}
                calls.append(model._plan_call(self._prompt.invoke(x), kwargs))
            except Exception:  # that input's own run reports it; the others still batch
                calls.append(None)
        return Plan(model, calls) if any(c is not None for c in calls) else None

    def batch(self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False,
              **kwargs: Any) -> list[Any]:
        token = PLAN.set(self._plan(inputs))
        try:
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        finally:
            PLAN.reset(token)

    async def abatch(self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False,
                     **kwargs: Any) -> list[Any]:
        token = PLAN.set(await asyncio.to_thread(self._plan, inputs))
        try:
            return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        finally:
            PLAN.reset(token)
