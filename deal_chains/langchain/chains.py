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

from typing import Any, Mapping, Sequence

from langchain_core.runnables import Runnable, RunnableLambda

from deal_chains.errors import InputError


def with_reward_vars(prompt: Runnable, llm: Runnable, keys: Sequence[str] | None = None) -> Runnable:
    """``prompt | llm``, where ``llm`` gets ``reward_vars`` from the chain's input dict.

    ``llm``: a ``ChatDeAL``/``DeALLLM``, or a binding of one (``bind_tools``, ``bind``,
    ``with_structured_output`` without ``include_raw``). ``keys``: the input variables to
    forward (default: all of them; the spec ignores the ones it does not use). Streaming,
    async and batch calls go through as usual.
    """
    keys = list(keys) if keys is not None else None

    def route(inputs: Any) -> Runnable:
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
        return prompt | llm.bind(reward_vars=variables)

    return RunnableLambda(route, name="with_reward_vars")
