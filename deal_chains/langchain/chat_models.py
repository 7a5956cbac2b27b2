"""``ChatDeAL``: a LangChain chat model that decodes with DeAL under a reward spec.

>>> from deal_chains.langchain import ChatDeAL                                 # doctest: +SKIP
>>> llm = ChatDeAL(spec="commongen", reward_vars={"concepts": ["dog", "frisbee"]})  # doctest: +SKIP
>>> msg = llm.invoke("Write one short sentence about a dog and a frisbee.")    # doctest: +SKIP
>>> msg.content, msg.response_metadata["rewards"], msg.usage_metadata          # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Optional, Sequence

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict, Field

from deal_chains.runtime import Handle, Outcome
from deal_chains.runtime.options import response_schema
from deal_chains.errors import InputError
from deal_chains.langchain._base import PLAN, Call, DeALParams, Plan, submit
from deal_chains.langchain.chunks import ChunkEmitter
from deal_chains.langchain.messages import _call_key, _feeds_back, after_tool_use, to_engine_messages
from deal_chains.langchain.structured import WHOLE_ANSWER, _RawStructured, cut_reason
from deal_chains.runtime.tool_calling import ToolSet


# --------------------------------------------------------------------------- batching


def _input_messages(model: "ChatDeAL", inputs: Sequence[Any]) -> list[list[BaseMessage]]:
    return [model._convert_input(x).to_messages() for x in inputs]


# --------------------------------------------------------------------------- the model


class ChatDeAL(DeALParams, BaseChatModel):
    """A LangChain chat model over a local transformers model, decoded by DeAL under a
    reward spec.

    >>> from langchain_core.prompts import ChatPromptTemplate      # doctest: +SKIP
    >>> from deal_chains.langchain import ChatDeAL, with_reward_vars  # doctest: +SKIP
    >>> llm = ChatDeAL(spec="commongen", max_tokens=32)           # doctest: +SKIP
    >>> prompt = ChatPromptTemplate.from_messages(
    ...     [("human", "Write one short sentence that uses: {concepts}.")])  # doctest: +SKIP
    >>> chain = with_reward_vars(prompt, llm)                     # doctest: +SKIP
    >>> chain.invoke({"concepts": ["dog", "frisbee", "catch"]}).content  # doctest: +SKIP

    Fields: ``model`` (``"default"``, a Hugging Face id, a local path, or a loaded model),
    ``spec`` (YAML path, YAML text, preset name, mapping or ``RewardSpec``; validated at
    construction, ``SpecError`` naming file, line and field), ``step`` (of a multi-step
    spec), ``reward_vars`` (default values of the spec's ``{variables}``), search
    overrides (``search={...}`` or ``strategy``, ``top_k``, ``lookahead``, ``beam``,
    ``lam``, ``commit``, ``seed``, ``temperature``), ``max_tokens`` (alias
    ``max_new_tokens``), ``stop``, ``n`` (generations per prompt from ``generate``, the n best
    distinct answers of one search; best_of_n's samples are ``search={"n": ...}``). Each of
    these but ``model``/``device`` also works per call: ``llm.bind(reward_vars=..., spec=...,
    top_k=4)`` or ``invoke(..., **kw)``.

    System prompt: the spec's ``system`` (rendered with the reward variables; DeAL's
    start-state adaptation) is never dropped: it comes first, then the input's own system
    message (a leading ``SystemMessage``, e.g. from a prompt template or create_agent's
    ``system_prompt``), then tool and structured-output instructions, as one system
    message.

    Tool calling with ``tool_choice="auto"``: ``max_tool_rounds`` (default 4) tool calls
    after the last human message make the next turn a reply (small models otherwise chain
    calls on their own results without end); a call identical to one already answered is
    replaced by a reply too (``allow_repeated_tool_calls``), and so is a call that feeds a
    tool's latest result back into the same tool (``allow_chained_tool_calls``).

    Rewards under a JSON constraint (tools, structured output) score the answer's content
    (its string values and numbers, see ``deal_chains.jsonkit.lexer.json_content``), not the
    JSON's keys and punctuation; ``json_schema`` rewards still see the JSON.

    ``response_metadata``: ``rewards`` (name -> score), ``reward`` (weighted sum),
    ``score`` (the search's, ``GenerationResult.score``), ``logprob``, ``strategy``, ``stats`` (search
    statistics), ``finish_reason`` (``stop``, ``length``, ``tool_calls``),
    ``stop_sequence`` when one ended the answer, ``model_name``. ``usage_metadata``:
    prompt and answer token counts.

    Concurrency: calls from threads and asyncio tasks on one instance (or on instances of
    the same model) are queued to one worker per model, which searches everything waiting
    as one batch; ``batch``/``abatch`` are one batched search.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True,
                              protected_namespaces=())

    allow_repeated_tool_calls: bool = Field(
        False, description="with tool_choice='auto', a tool call identical to one already answered in the "
        "conversation is replaced by a reply unless this is True")
    allow_chained_tool_calls: bool = Field(
        False, description="with tool_choice='auto', a call that passes a tool's latest result (since the last "
        "human message) as an argument to the same tool is replaced by a reply unless this is True: small "
        "models do it when the result already answers (add(2, 40) -> 42, then add(42, 42)); set it for "
        "models that chain a tool on purpose")
    max_tool_rounds: Optional[int] = Field(
        4, ge=0, description="with tool_choice='auto', once the conversation has this many tool calls after "
        "its last human message the next turn must reply (None: no limit)")

    def __init__(self, **data: Any):
        super().__init__(**data)
        self._setup()

    # ------------------------------------------------------------------ LangChain plumbing
    @property
    def _llm_type(self) -> str:
        return "deal-chains-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        spec = self._spec_obj
        return {"model_name": self._model_name,
                "spec": getattr(getattr(spec, "_source", None), "file", None) or (spec is not None and "inline") or None,
                "search": self._config.model_dump() if self._config is not None else None}

    # ------------------------------------------------------------------ token counting
    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Tokens of ``messages`` as the model's chat template formats them (with the
        generation prompt, and the tool instructions when ``tools`` are given); the spec's
        ``system`` is not counted (it is not part of the messages). This is the
        ``token_counter`` for ``trim_messages(token_counter=llm)``."""
        if not messages:
            return 0
        from langchain_core.messages import convert_to_messages

        toolset = ToolSet.build(tools) if tools else None
        msgs = to_engine_messages(convert_to_messages(messages), tool_mode=bool(toolset and toolset.active))
        if toolset is not None and toolset.active:
            if msgs[0]["role"] == "system":
                msgs[0] = {"role": "system", "content": f"{msgs[0]['content']}\n\n{toolset.instructions()}"}
            else:
                msgs.insert(0, {"role": "system", "content": toolset.instructions()})
        return len(self._adapter._format(msgs, tool_turn=bool(toolset and toolset.active))[1])

    def bind(self, **kwargs: Any) -> Any:
        """Per-call settings, checked now: an unknown argument, a spec that fails validation
        or a bad search setting raise here, not when the chain runs."""
        return super().bind(**self._validate_binding(dict(kwargs), "ChatDeAL.bind"))

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, parallel_tool_calls: bool | None = None,
                   strict: bool | None = None, **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: tool calls are generated under a JSON-schema mask built from the
        tools' argument schemas (see ``deal_chains.runtime.tool_calling``).

        >>> from langchain_core.tools import tool                      # doctest: +SKIP
        >>> @tool
        ... def get_weather(city: str) -> str:
        ...     '''Get the weather in a city.'''
        ...     return "sunny"                                          # doctest: +SKIP
        >>> msg = ChatDeAL().bind_tools([get_weather], tool_choice="any").invoke(
        ...     "What is the weather in Paris?")                        # doctest: +SKIP
        >>> msg.tool_calls[0]["name"], msg.tool_calls[0]["args"]        # doctest: +SKIP

        Every tool's schema is checked and compiled now: an unknown schema type, a remote
        ``$ref`` or a schema the grammar engine refuses raise with the tool's name. One
        tool call per message (``parallel_tool_calls`` is accepted; calls are never
        parallel).
        """
        toolset = ToolSet.build(tools, tool_choice)
        self._check_no_spec_constraint("bind_tools", kwargs)
        if toolset.active:
            if kwargs.get("response_format") is not None:
                toolset = toolset.with_answer_schema(response_schema(kwargs["response_format"]))
            toolset.check(self._adapter.lm)
        elif kwargs.get("response_format") is not None:
            # tools off (tool_choice="none"): the reply is structured output; check it now too
            from deal_chains.search.constraints import GrammarConstraint

            GrammarConstraint.json_schema(response_schema(kwargs["response_format"])).compile(self._adapter.lm)
        return self.bind(tools=toolset.tools, tool_choice=toolset.choice, **kwargs)

    def with_structured_output(self, schema: Any = None, *, include_raw: bool = False,
                               method: str = "json_schema", strict: bool | None = None,
                               **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """Outputs parsed into ``schema`` (a pydantic class, a ``TypedDict``, a JSON schema or
        an OpenAI tool schema), generated under the schema as a hard grammar constraint, so
        a finished answer always parses and validates.

        >>> from pydantic import BaseModel                              # doctest: +SKIP
        >>> class Person(BaseModel):
        ...     name: str
        ...     age: int                                                # doctest: +SKIP
        >>> ChatDeAL().with_structured_output(Person).invoke("Invent a person.")  # doctest: +SKIP
        Person(name='John', age=25)

        ``method`` (``json_schema``, ``function_calling``, ``json_mode``) is accepted for
        compatibility; all use the grammar mask (``json_mode`` without a schema: any JSON
        object). The schema is compiled now: one the grammar engine refuses raises
        ``ConstraintError`` here. ``include_raw=True`` returns ``{"raw", "parsed",
        "parsing_error"}`` (a parse error then is returned, e.g. an answer cut by
        ``max_tokens``, instead of raised). Per-call arguments (``reward_vars``, search
        settings; ``with_reward_vars``) reach the model either way, and ``batch`` is one
        batched search.
        """
        from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
        from langchain_core.utils.function_calling import convert_to_json_schema

        if kwargs:
            raise InputError(f"with_structured_output: unknown argument(s) {', '.join(sorted(kwargs))}")
        if method not in ("json_schema", "function_calling", "json_mode"):
            raise InputError(f"with_structured_output: unknown method {method!r} "
                             "(json_schema, function_calling or json_mode)")
        if schema is None and method != "json_mode":
            raise InputError("with_structured_output needs a schema (or method='json_mode')")
        from langchain_core.utils.pydantic import is_basemodel_subclass

        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if schema is None:
            json_schema: dict[str, Any] = {"type": "object"}
        elif is_pydantic and hasattr(schema, "model_json_schema"):
            json_schema = schema.model_json_schema()
        elif is_pydantic:  # pydantic.v1
            json_schema = schema.schema()
        elif isinstance(schema, Mapping) and not ({"function", "parameters"} & set(schema)) \
                and ("type" in schema or "properties" in schema or "$schema" in schema or "anyOf" in schema):
            json_schema = dict(schema)  # a JSON schema already
        else:
            try:
                json_schema = convert_to_json_schema(schema)
            except Exception as exc:
                raise InputError(f"with_structured_output: cannot turn {schema!r:.80} into a JSON schema: "
                                 f"{exc}") from None
        name = json_schema.get("title") or getattr(schema, "__name__", None) or "output"
        self._check_no_spec_constraint("with_structured_output", {})
        from deal_chains.search.constraints import GrammarConstraint

        GrammarConstraint.json_schema(json_schema).compile(self._adapter.lm)  # fails now, not mid-generation
        llm = self.bind(
            response_format={"type": "json_schema", "json_schema": {"name": name, "schema": json_schema}},
            ls_structured_output_format={"kwargs": {"method": method, "strict": strict},
                                         "schema": schema if schema is not None else json_schema},
        )
        parser = WHOLE_ANSWER | (PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser())
        if include_raw:
            return _RawStructured(llm=llm, parser=parser)
        return llm | parser

    def _check_no_spec_constraint(self, what: str, kwargs: Mapping[str, Any]) -> None:
        spec = self._resolve_call_spec(kwargs)
        if spec is not None and not spec.steps and spec.build_constraint() is not None:
            raise InputError(f"{what}: the spec has a hard json_schema constraint, which would conflict with the "
                             "tool / output schema (drop `mode: hard` from the spec, or use the spec alone)")

    # ------------------------------------------------------------------ calls
    def _call(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any],
              toolset: ToolSet | None = None) -> Call:
        if toolset is None and kwargs.get("tools"):
            toolset = ToolSet.build(kwargs["tools"], kwargs.get("tool_choice"))
            if self._rounds_spent(toolset, messages):
                if kwargs.get("response_format") is None:
                    return self._call(messages, stop, _without_tools(kwargs))
                toolset = toolset.answering()
        tool_mode = bool(toolset and toolset.active)
        engine_messages = to_engine_messages(messages, tool_mode=tool_mode)
        call = self._prepare(engine_messages, stop, kwargs, toolset, reply=not tool_mode and after_tool_use(messages))
        call.source = (messages, stop, kwargs)
        return call

    def _rounds_spent(self, toolset: ToolSet, messages: Sequence[BaseMessage]) -> bool:
        """True when an ``auto`` turn has had ``max_tool_rounds`` tool calls since the last
        human message: it must reply now. Small models chain calls on their own results
        (add(2, 40), then add(42, 42), ...) where the first result already answered; a
        limit per user turn ends that without guessing which result is the answer."""
        if self.max_tool_rounds is None or toolset.choice != "auto" or toolset.answer_only:
            return False
        rounds = 0
        for m in reversed(messages):
            if isinstance(m, HumanMessage):
                break
            if isinstance(m, AIMessage) and m.tool_calls:
                rounds += 1
        return rounds >= self.max_tool_rounds

    def _repeats(self, call: Call, message: AIMessage) -> bool:
        """True when ``message`` (an ``auto`` turn) repeats a tool call whose result is
        already in the conversation, or feeds a tool's latest result back into the same
        tool (``_feeds_back``): the turn is then answered instead (small models otherwise
        call the same tool forever)."""
        ts = call.toolset
        if ts is None or ts.choice != "auto" or ts.answer_only or not message.tool_calls:
            return False
        messages = call.source[0]
        if not self.allow_repeated_tool_calls:
            answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
            done = {_call_key(c) for m in messages if isinstance(m, AIMessage) for c in m.tool_calls
                    if c.get("id") in answered}
            if any(_call_key(c) in done for c in message.tool_calls):
                return True
        return not self.allow_chained_tool_calls and any(_feeds_back(c, messages) for c in message.tool_calls)

    def _answer_call(self, call: Call) -> Call:
        """The call that replies instead of ``call`` (a tool-calling turn): a plain-text turn
        (see ``_replies_in_words``), or the envelope's reply when it must match a
        ``response_format``."""
        messages, stop, kwargs = call.source
        if call.toolset.answer_schema is None:
            return self._call(messages, stop, _without_tools(kwargs))
        return self._call(messages, stop, kwargs, toolset=call.toolset.answering())

    @staticmethod
    def _replies_in_words(call: Call) -> bool:
        """Whether a reply in this tool-calling turn is generated again as plain text: an
        ``auto`` turn with tool results since the last human message, whose reply is text
        (no ``response_format``). In the JSON envelope a small model replies tersely ("24"
        for "It is sunny and 24 degrees in Paris."); as a plain-text turn after the results
        it answers in a sentence. The envelope still decides call-or-reply (it calls tools
        where plain text would not), and its reply costs a few tokens."""
        ts = call.toolset
        if ts is None or ts.choice != "auto" or ts.answer_schema is not None:
            return False
        for m in reversed(call.source[0]):
            if isinstance(m, HumanMessage):
                return False
            if isinstance(m, ToolMessage):
                return True
        return False

    def _follow_up(self, call: Call, message: AIMessage) -> Call | None:
        """The call to make instead of ``call``'s answer ``message``, if any: a reply when
        the turn repeated an answered tool call (``_repeats``), a plain-text reply when it
        replied in the envelope after tool results (``_replies_in_words``)."""
        if self._repeats(call, message):
            return self._answer_call(call)
        if not message.tool_calls and not message.invalid_tool_calls and self._replies_in_words(call):
            return self._answer_call(call)
        return None

    def _submit(self, call: Call) -> Handle:
        return submit(self, call)

    def _message(self, call: Call, outcome: Outcome, first: AIMessage | None = None) -> AIMessage:
        meta = outcome.metadata()
        usage = outcome.usage()
        if call.toolset is not None and call.toolset.active:
            finished = outcome.finish_reason == "stop"
            content, tool_calls, invalid = call.toolset.parse(
                outcome.text, finished, None if finished else cut_reason(meta, "the tool call"))
            if tool_calls:
                meta["finish_reason"] = "tool_calls"
        else:
            content, tool_calls, invalid = outcome.text, [], []
        if first is not None:
            # this answers instead of a first generation (a repeated tool call, or a reply in
            # the envelope): count its tokens too
            if first.tool_calls:
                meta["repeated_tool_call"] = {"name": first.tool_calls[0]["name"], "args": first.tool_calls[0]["args"]}
            else:
                meta["envelope_reply"] = first.content
            spent = first.usage_metadata or {}
            usage = {k: usage[k] + int(spent.get(k, 0)) for k in usage}  # type: ignore[literal-required]
        return AIMessage(content=content, tool_calls=tool_calls, invalid_tool_calls=invalid,
                         usage_metadata=usage, response_metadata=meta)

    def _messages(self, call: Call, outcome: Outcome, first: AIMessage | None = None) -> list[AIMessage]:
        """The generations of one call: the answer, then (``n`` > 1) its alternatives, each
        parsed as the answer is (tool calls, structured JSON) with its own metadata and usage."""
        return [self._message(call, outcome, first), *(self._message(call, alt) for alt in outcome.alternatives)]

    @staticmethod
    def _chat_result(message: AIMessage, *alternatives: AIMessage) -> ChatResult:
        """The result with ``llm_output`` as the partner chat models fill it (model name and
        token usage), so ``on_llm_end`` callbacks see them too, not only the message. With
        ``n`` > 1 (``alternatives``), one generation each; each message's usage counts its own
        answer, ``llm_output`` counts the prompt once and the answers' tokens summed."""
        messages = [message, *alternatives]
        usage = message.usage_metadata or {}
        prompt = int(usage.get("input_tokens", 0))
        completion = sum(int((m.usage_metadata or {}).get("output_tokens", 0)) for m in messages)
        # total_tokens of the answer (a repeated tool call's tokens included), plus the others'
        total = int(usage.get("total_tokens", 0)) + completion - int(usage.get("output_tokens", 0))
        token_usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
        return ChatResult(generations=[ChatGeneration(message=m) for m in messages],
                          llm_output={"model_name": message.response_metadata.get("model_name"),
                                      "token_usage": token_usage})

    def _combine_llm_outputs(self, llm_outputs: list[dict | None]) -> dict:
        """One ``llm_output`` for a batch: the model name and the summed token usage."""
        total = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        name = None
        for out in llm_outputs:
            if not out:
                continue
            name = name or out.get("model_name")
            for key, value in (out.get("token_usage") or {}).items():
                total[key] = total.get(key, 0) + int(value)
        return {"model_name": name, "token_usage": total}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        call = self._call(messages, stop, kwargs)
        generations = self._messages(call, self._submit(call).result())
        again = self._follow_up(call, generations[0])
        if again is not None:
            generations = self._messages(again, again.adapter.submit([again.request])[0].result(),
                                         first=generations[0])
        return self._chat_result(*generations)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        call = await asyncio.to_thread(self._call, messages, stop, kwargs)
        generations = self._messages(call, await self._submit(call).aresult())
        again = await asyncio.to_thread(self._follow_up, call, generations[0])
        if again is not None:
            generations = self._messages(again, await again.adapter.submit([again.request])[0].aresult(),
                                         first=generations[0])
        return self._chat_result(*generations)

    def _should_stream(self, *, async_api: bool, run_manager: Any = None, **kwargs: Any) -> bool:
        """LangChain streams a call when a streaming callback or ``streaming=True`` asks,
        and a streamed call builds one generation: with ``n`` > 1, ``generate``/``invoke``
        are not streamed, so they return all n. ``stream()``/``astream()`` (which pass
        ``stream=True``) still stream, the best generation only."""
        if not super()._should_stream(async_api=async_api, run_manager=run_manager, **kwargs):
            return False
        return bool(kwargs.get("stream")) or self._returns(kwargs) <= 1

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        call = self._call(messages, stop, kwargs)
        handle = self._submit(call)
        emit = ChunkEmitter(self, call)
        try:
            for text in handle.texts():
                chunk = emit.text(text)
                if chunk is not None:
                    yield chunk
            message = self._message(call, handle.result())
            again = self._follow_up(call, message)
            if again is not None:
                handle = again.adapter.submit([again.request])[0]
                emit = ChunkEmitter(self, again)
                for text in handle.texts():
                    chunk = emit.text(text)
                    if chunk is not None:
                        yield chunk
                message = self._message(again, handle.result(), first=message)
            yield emit.last(message)
        finally:
            if not handle.done:
                handle.cancel()

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        call = await asyncio.to_thread(self._call, messages, stop, kwargs)
        handle = self._submit(call)
        emit = ChunkEmitter(self, call)
        try:
            async for text in handle.atexts():
                chunk = emit.text(text)
                if chunk is not None:
                    yield chunk
            message = self._message(call, await handle.aresult())
            again = await asyncio.to_thread(self._follow_up, call, message)
            if again is not None:
                handle = again.adapter.submit([again.request])[0]
                emit = ChunkEmitter(self, again)
                async for text in handle.atexts():
                    chunk = emit.text(text)
                    if chunk is not None:
                        yield chunk
                message = self._message(again, await handle.aresult(), first=message)
            yield emit.last(message)
        finally:
            if not handle.done:
                handle.cancel()

    # ------------------------------------------------------------------ batching
    def _plan(self, messages: list[list[BaseMessage]], kwargs: Mapping[str, Any]) -> Plan | None:
        """Prepare every input of a batch now, so they can be searched together (an input
        that cannot be prepared is left out: its own call then reports the error)."""
        kw = {k: v for k, v in kwargs.items()
              if k not in ("stop", "ls_structured_output_format", "structured_output_format")}
        calls: list[Call | None] = []
        for m in messages:
            try:
                calls.append(self._call(m, kwargs.get("stop"), kw))
            except Exception:  # that input's own call reports it; the others still batch
                calls.append(None)
        return Plan(self, calls) if any(c is not None for c in calls) else None

    def _plan_call(self, value: Any, kwargs: Mapping[str, Any]) -> Call:
        """The call an input (a prompt value, messages or a string) would make with the
        call's ``kwargs`` (for plans built outside ``batch``: ``with_reward_vars``)."""
        kw = {k: v for k, v in kwargs.items()
              if k not in ("stop", "ls_structured_output_format", "structured_output_format")}
        return self._call(self._convert_input(value).to_messages(), kwargs.get("stop"), kw)

    def batch(self, inputs: list[LanguageModelInput], config: RunnableConfig | list[RunnableConfig] | None = None,
              *, return_exceptions: bool = False, **kwargs: Any) -> list[AIMessage]:
        """All inputs are searched as one batch (one engine call per search config)."""
        kwargs = self._batch_kwargs(kwargs)
        return self._with_plan(lambda: _input_messages(self, inputs), kwargs, len(inputs),
                               lambda: super(ChatDeAL, self).batch(inputs, config, return_exceptions=return_exceptions,
                                                                   **kwargs))

    async def abatch(self, inputs: list[LanguageModelInput],
                     config: RunnableConfig | list[RunnableConfig] | None = None,
                     *, return_exceptions: bool = False, **kwargs: Any) -> list[AIMessage]:
        kwargs = await asyncio.to_thread(self._batch_kwargs, kwargs)
        plan = await asyncio.to_thread(self._plan_for, lambda: _input_messages(self, inputs), kwargs, len(inputs))
        token = PLAN.set(plan)
        try:
            return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        finally:
            PLAN.reset(token)

    def generate(self, messages: list[list[BaseMessage]], stop: list[str] | None = None, callbacks: Any = None,
                 **kwargs: Any) -> LLMResult:
        return self._with_plan(lambda: messages, {**kwargs, "stop": stop}, len(messages),
                               lambda: super(ChatDeAL, self).generate(messages, stop=stop, callbacks=callbacks,
                                                                      **kwargs))

    async def agenerate(self, messages: list[list[BaseMessage]], stop: list[str] | None = None,
                        callbacks: Any = None, **kwargs: Any) -> LLMResult:
        plan = await asyncio.to_thread(self._plan_for, lambda: messages, {**kwargs, "stop": stop}, len(messages))
        token = PLAN.set(plan)
        try:
            return await super().agenerate(messages, stop=stop, callbacks=callbacks, **kwargs)
        finally:
            PLAN.reset(token)

    def _batch_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """A batch's ``spec=`` text loaded once, not once per input and again per call."""
        if "spec" in kwargs or "step" in kwargs:
            try:
                return self._validate_binding(dict(kwargs), "ChatDeAL.batch")
            except Exception:  # each input's call reports it (return_exceptions applies)
                return kwargs
        return kwargs

    def _plan_for(self, messages: Callable[[], list[list[BaseMessage]]], kwargs: Mapping[str, Any],
                  n: int) -> Plan | None:
        if n < 2 or PLAN.get() is not None:
            return PLAN.get()
        try:
            msgs = messages()
        except Exception:
            return None
        return self._plan(msgs, kwargs)

    def _with_plan(self, messages: Callable[[], list[list[BaseMessage]]], kwargs: Mapping[str, Any], n: int,
                   run: Callable[[], Any]) -> Any:
        token = PLAN.set(self._plan_for(messages, kwargs, n))
        try:
            return run()
        finally:
            PLAN.reset(token)


def _without_tools(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A call's options for a plain-text turn instead of a tool-calling one."""
    return {k: v for k, v in kwargs.items() if k not in ("tools", "tool_choice", "parallel_tool_calls")}
