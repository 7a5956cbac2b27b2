"""``with_structured_output(..., include_raw=True)``: the raw message beside the parsed object."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

from deal_chains.runtime.calls import cut_reason as _cut_reason


def _whole(message: Any) -> Any:
    """``message`` if its answer is whole; an ``OutputParserException`` that says what cut it
    otherwise (the token budget: unfinished JSON or a value the closing pressure closed; or
    the mask's string cap)."""
    from langchain_core.exceptions import OutputParserException

    meta = getattr(message, "response_metadata", None) or {}
    if meta.get("finish_reason") != "length":
        return message
    raise OutputParserException(cut_reason(meta, "the structured output"), llm_output=str(message.content))


def cut_reason(meta: Any, what: str) -> str:
    """What cut an answer (``response_metadata`` with ``finish_reason: length``), in
    LangChain's terms (``deal_chains.runtime.calls.cut_reason``)."""
    return _cut_reason(meta, what, "(ChatDeAL(max_tokens=...), or .invoke(..., max_tokens=...))")


# between the model and the parser: a cut answer is an error that says so, not a parse
# failure (or a parse of a value the budget cut)
WHOLE_ANSWER = RunnableLambda(_whole, name="whole_answer")


class _RawStructured(Runnable):
    """``with_structured_output(..., include_raw=True)``: ``{"raw", "parsed",
    "parsing_error"}``. A runnable of its own rather than a ``RunnableMap`` chain so that
    call arguments (``reward_vars`` from ``with_reward_vars``, search settings) reach the
    model, and ``batch``/``abatch`` are the model's one batched search."""

    def __init__(self, llm: Runnable, parser: Runnable):
        self.llm, self.parser = llm, parser
        self.name = "structured_output_raw"

    @property
    def InputType(self) -> Any:  # noqa: N802 - LangChain's name
        return self.llm.InputType

    @property
    def OutputType(self) -> Any:  # noqa: N802
        return dict

    def _wrap(self, raw: Any) -> dict[str, Any]:
        try:
            return {"raw": raw, "parsed": self.parser.invoke(raw), "parsing_error": None}
        except Exception as exc:  # e.g. an answer cut by max_tokens: returned, not raised
            return {"raw": raw, "parsed": None, "parsing_error": exc}

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        return self._wrap(self.llm.invoke(input, config, **kwargs))

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        return self._wrap(await self.llm.ainvoke(input, config, **kwargs))

    def batch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        raws = self.llm.batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        return [r if isinstance(r, Exception) else self._wrap(r) for r in raws]

    async def abatch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
                     return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        raws = await self.llm.abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        return [r if isinstance(r, Exception) else self._wrap(r) for r in raws]
