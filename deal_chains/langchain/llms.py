"""``DeALLLM``: the text-in, text-out LangChain LLM over the same DeAL search.

>>> from deal_chains.langchain import DeALLLM                               # doctest: +SKIP
>>> llm = DeALLLM(spec="commongen", reward_vars={"concepts": ["dog", "park"]})  # doctest: +SKIP
>>> llm.invoke("Write one short sentence about a dog in a park.")           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Iterator, Mapping

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict

from deal_chains.langchain._base import PLAN, Call, DeALParams


class DeALLLM(DeALParams, BaseLLM):
    """A LangChain LLM (string prompt -> string) decoded by DeAL under a reward spec.

    >>> from langchain_core.prompts import PromptTemplate                   # doctest: +SKIP
    >>> from deal_chains.langchain import DeALLLM, with_reward_vars          # doctest: +SKIP
    >>> llm = DeALLLM(spec="commongen", max_tokens=32)                       # doctest: +SKIP
    >>> chain = with_reward_vars(PromptTemplate.from_template(
    ...     "Write one short sentence that uses: {concepts}."), llm)       # doctest: +SKIP
    >>> chain.invoke({"concepts": ["dog", "frisbee"]})                       # doctest: +SKIP

    The prompt is the user turn of the model's chat template (the spec's ``system``, if
    any, is the system turn). Fields, per-call options and metadata are those of
    ``ChatDeAL``; ``generation_info`` carries the reward breakdown, score, strategy, search
    statistics and token usage. ``batch``/``generate`` search all prompts as one batch.
    ``get_num_tokens`` counts with the model's own tokenizer.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True,
                              protected_namespaces=())

    def __init__(self, **data: Any):
        super().__init__(**data)
        self._setup()

    @property
    def _llm_type(self) -> str:
        return "deal-chains"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self._model_name,
                "search": self._config.model_dump() if self._config is not None else None}

    def bind(self, **kwargs: Any) -> Any:
        """Per-call settings, checked now (see ``ChatDeAL.bind``)."""
        return super().bind(**self._validate_binding(dict(kwargs), "DeALLLM.bind"))

    def _call_for(self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]) -> Call:
        return self._prepare([{"role": "user", "content": prompt}], stop, kwargs)

    def _plan_call(self, value: Any, kwargs: Mapping[str, Any]) -> Call:
        """The call an input would make with ``kwargs`` (for ``with_reward_vars`` batches)."""
        kw = {k: v for k, v in kwargs.items() if k != "stop"}
        return self._call_for(self._convert_input(value).to_string(), kwargs.get("stop"), kw)

    def _handles(self, calls: list[Call]) -> list[Any]:
        """A running batch plan's handles where it has them; the rest searched together."""
        plan = PLAN.get()
        handles = [plan.claim(self, c) if plan is not None else None for c in calls]
        rest = [i for i, h in enumerate(handles) if h is None]
        if rest:
            for i, h in zip(rest, calls[rest[0]].adapter.submit([calls[i].request for i in rest])):
                handles[i] = h
        return handles

    @staticmethod
    def _generation(call: Call, outcome: Any) -> Generation:
        return Generation(text=outcome.text, generation_info={**outcome.metadata(), "usage": outcome.usage()})

    @classmethod
    def _generations(cls, call: Call, outcome: Any) -> list[Generation]:
        """The answer, then (``n`` > 1) its alternatives, best first."""
        return [cls._generation(call, o) for o in (outcome, *outcome.alternatives)]

    def _generate(self, prompts: list[str], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> LLMResult:
        calls = [self._call_for(p, stop, kwargs) for p in prompts]
        handles = self._handles(calls)
        gens = [self._generations(c, h.result()) for c, h in zip(calls, handles)]
        return LLMResult(generations=gens, llm_output={"model_name": calls[0].adapter.model_name if calls else None})

    async def _agenerate(self, prompts: list[str], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> LLMResult:
        calls = await asyncio.to_thread(lambda: [self._call_for(p, stop, kwargs) for p in prompts])
        handles = self._handles(calls)
        gens = [self._generations(c, await h.aresult()) for c, h in zip(calls, handles)]
        return LLMResult(generations=gens, llm_output={"model_name": calls[0].adapter.model_name if calls else None})

    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[GenerationChunk]:
        call = self._call_for(prompt, stop, kwargs)
        [handle] = self._handles([call])
        try:
            for text in handle.texts():
                chunk = GenerationChunk(text=text)
                if run_manager is not None:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
            outcome = handle.result()
            yield GenerationChunk(text="", generation_info={**outcome.metadata(), "usage": outcome.usage()})
        finally:
            if not handle.done:
                handle.cancel()

    async def _astream(self, prompt: str, stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[GenerationChunk]:
        call = await asyncio.to_thread(self._call_for, prompt, stop, kwargs)
        [handle] = self._handles([call])
        try:
            async for text in handle.atexts():
                chunk = GenerationChunk(text=text)
                if run_manager is not None:
                    await run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
            outcome = await handle.aresult()
            yield GenerationChunk(text="", generation_info={**outcome.metadata(), "usage": outcome.usage()})
        finally:
            if not handle.done:
                handle.cancel()
