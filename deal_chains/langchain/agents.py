"""Aligned generation inside agents: a spec-driven step as a tool, and a spec guarding an
agent's final answer.

>>> from deal_chains.langchain import ChatDeAL, aligned_tool, guard_final_answer  # doctest: +SKIP
>>> write = aligned_tool("write_sentence", "Write one sentence that uses the given words.",
...                      spec="commongen")                                        # doctest: +SKIP
>>> write.invoke({"concepts": "dog, frisbee, catch"})                             # doctest: +SKIP
>>> from langchain.agents import create_agent                                     # doctest: +SKIP
>>> agent = create_agent(ChatDeAL(), tools=[write])                               # doctest: +SKIP
>>> guarded = agent | guard_final_answer(ChatDeAL(), spec="concise")              # doctest: +SKIP
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field, create_model

from deal_chains.errors import InputError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _model(llm: Any, spec: Any, kwargs: Mapping[str, Any]) -> Any:
    from deal_chains.langchain.chat_models import ChatDeAL

    if llm is None:
        return ChatDeAL(spec=spec, **kwargs)
    if kwargs:
        raise InputError(f"give model settings ({', '.join(sorted(kwargs))}) to the llm you pass, not here")
    return llm.bind(spec=spec) if spec is not None else llm


def _describe_variable(var: str, prompt_vars: set[str], spec_obj: Any) -> str:
    """What an auto-built tool argument is for: the model reads this to fill it in."""
    uses, words = [], False
    if var in prompt_vars or (spec_obj is not None and spec_obj.prompt and f"{{{var}}}" in spec_obj.prompt):
        uses.append("the request")
    for entry in (spec_obj.rewards if spec_obj is not None else []):
        dumped = entry.model_dump_json()
        if f"{{{var}}}" in dumped:
            uses.append(f"the {entry.name} reward")
            words = words or '"words"' in dumped
    text = f"{var.replace('_', ' ')}: fills {{{var}}} in {' and '.join(dict.fromkeys(uses)) or 'this step'}"
    return text + ("; list every word, comma-separated" if words else "")


def aligned_tool(name: str, description: str, *, spec: Any = None, prompt: Any = None, llm: Any = None,
                 args_schema: type[BaseModel] | None = None, return_direct: bool = False,
                 **model_settings: Any) -> StructuredTool:
    """A LangChain ``StructuredTool`` that runs one aligned generation step.

    >>> tool = aligned_tool("write_sentence", "Write a sentence using the given words.",
    ...                     spec="commongen", max_tokens=32)                   # doctest: +SKIP
    >>> tool.invoke({"concepts": "dog, frisbee"})                              # doctest: +SKIP
    'The dog caught the frisbee.'

    ``prompt``: a template string (``"Describe {topic}."``) or a LangChain prompt template;
    default: the spec's ``prompt``. ``spec``: the reward spec of this step (validated
    now). ``llm``: a ``ChatDeAL`` to run on (default: a new one with ``model_settings``).
    ``args_schema``: the tool's pydantic arguments; default: one string field per
    variable of the prompt and the spec. The tool's arguments are the spec's reward
    variables too. It returns the text, with the generation's metadata (rewards, score,
    search stats) as the ToolMessage ``artifact``.
    """
    from langchain_core.prompts import BasePromptTemplate, ChatPromptTemplate

    from deal_chains.runtime import resolve_spec

    if not _IDENT.fullmatch(name or ""):
        raise InputError(f"aligned_tool: name {name!r} must be letters, digits and _ (a valid tool name)")
    spec_obj = resolve_spec(spec) if spec is not None else None
    model = _model(llm, spec_obj, model_settings)
    spec_vars = set(spec_obj.variables()) if spec_obj is not None else set()
    if prompt is None:
        if spec_obj is None or spec_obj.prompt is None:
            raise InputError("aligned_tool: give a prompt, or a spec that has one (`prompt:`)")
        template = None
        prompt_vars: set[str] = set()
    elif isinstance(prompt, str):
        template = ChatPromptTemplate.from_messages([("human", prompt)])
        prompt_vars = set(template.input_variables)
    elif isinstance(prompt, BasePromptTemplate):
        template = prompt
        prompt_vars = set(prompt.input_variables)
    else:
        raise InputError(f"aligned_tool: prompt must be a template string or a prompt template, got "
                         f"{type(prompt).__name__}")
    variables = sorted(prompt_vars | spec_vars)
    if args_schema is None:
        fields: dict[str, Any] = {v: (str, Field(description=_describe_variable(v, prompt_vars, spec_obj)))
                                  for v in variables}
        args_schema = create_model(f"{''.join(p.title() for p in name.split('_'))}Args", **fields)

    def messages(args: Mapping[str, Any]) -> list[BaseMessage]:
        if template is None:
            return [HumanMessage(spec_obj.render_prompt(args))]
        return template.invoke({k: v for k, v in args.items() if k in prompt_vars}).to_messages()

    def reply(msg: Any) -> tuple[str, dict]:
        text = msg.content if isinstance(msg, BaseMessage) else str(msg)
        meta = dict(getattr(msg, "response_metadata", {}) or {})
        return str(text), meta

    def run(**args: Any) -> tuple[str, dict]:
        with _arguments_at_fault(name):
            return reply(model.bind(reward_vars=args).invoke(messages(args)))

    async def arun(**args: Any) -> tuple[str, dict]:
        with _arguments_at_fault(name):
            return reply(await model.bind(reward_vars=args).ainvoke(messages(args)))

    # errors caused by the arguments go back to the agent as the tool's answer (a ToolMessage
    # with status "error") so the model can call again; anything else still raises
    return StructuredTool.from_function(func=run, coroutine=arun, name=name, description=description,
                                        args_schema=args_schema, return_direct=return_direct,
                                        response_format="content_and_artifact", handle_tool_error=True)


@contextmanager
def _arguments_at_fault(name: str) -> Iterator[None]:
    """Turn the errors that a tool call's arguments cause (a template variable missing, a
    reward that cannot be built from them, e.g. no words to cover; a prompt too long) into
    a ``ToolException`` that names the tool."""
    from langchain_core.tools import ToolException

    from deal_chains.errors import PromptTooLongError, SpecError

    try:
        yield
    except (SpecError, InputError, PromptTooLongError) as exc:
        raise ToolException(f"{name}: these arguments cannot be used: {exc}") from exc


def guard_final_answer(llm: Any, spec: Any, *, reward_vars: Mapping[str, Any] | None = None,
                       threshold: float | None = None) -> Runnable:
    """A runnable to put after an agent: its final answer must satisfy ``spec``.

    >>> guarded = agent | guard_final_answer(ChatDeAL(), spec="concise")      # doctest: +SKIP
    >>> guarded.invoke({"messages": [("human", "What is the weather in Paris?")]})  # doctest: +SKIP

    Input: an agent state (a dict with ``messages``) or a list of messages, ending with
    the agent's final answer (an AI message without tool calls). The answer is generated
    again from the conversation before it (tool calls and results included), by ``llm``
    with the spec's rewards (and hard constraint, if any); it is plain text for the user
    (no tool-call syntax, no bare JSON value: see ``tool_calling.REPLY_START``). With
    ``threshold``, the agent's own answer is kept when its weighted reward under the spec
    already reaches it and the token budget did not cut it. The
    output has the input's shape, with the last message replaced; its
    ``response_metadata["guard"]`` says whether it was ``kept`` or ``regenerated`` and the
    original answer's reward.
    """
    from deal_chains.runtime import resolve_spec

    spec_obj = resolve_spec(spec)
    variables = dict(reward_vars or {})
    # a variable nothing sets would fail every call at run time: say so now
    known = set(variables) | set(_model_reward_vars(llm))
    missing = sorted(spec_obj.variables() - known) if spec_obj is not None else []
    if missing:
        raise InputError("guard_final_answer: the spec uses " + ", ".join("{" + v + "}" for v in missing)
                         + " but reward_vars does not set " + ("it" if len(missing) == 1 else "them")
                         + ": give reward_vars={" + ", ".join(f"{v!r}: ..." for v in missing) + "}")
    bound = llm.bind(spec=spec_obj, reward_vars=variables)

    def split(state: Any) -> tuple[list[BaseMessage], Any]:
        from langchain_core.messages import convert_to_messages

        messages = state.get("messages") if isinstance(state, Mapping) else state
        if not isinstance(messages, Sequence) or not messages:
            raise InputError("guard_final_answer: the input must be an agent state with 'messages' or a list of "
                             "messages ending with the final answer")
        messages = convert_to_messages(messages)
        last = messages[-1]
        if not isinstance(last, AIMessage) or last.tool_calls:
            raise InputError("guard_final_answer: the last message must be the agent's final answer (an AI "
                             f"message without tool calls), got {type(last).__name__}")
        return list(messages), state

    def rebuild(state: Any, messages: list[BaseMessage], answer: AIMessage) -> Any:
        new = messages[:-1] + [answer]
        return {**state, "messages": new} if isinstance(state, Mapping) else new

    def current_reward(text: str, history: list[BaseMessage]) -> float:
        from deal_chains.runtime import score_text

        adapter = getattr(llm, "_adapter", None)
        return score_text(adapter, spec_obj, variables, text, _prompt_of(history))[0]

    def check(state: Any) -> tuple[list[BaseMessage], Any, float | None, Any]:
        """(messages, state, the answer's reward, the state to return as is or None)."""
        messages, state = split(state)
        original = messages[-1]
        before = None
        # an answer the token budget cut is never kept, whatever it scores
        cut = (original.response_metadata or {}).get("finish_reason") == "length"
        if threshold is not None and not cut:
            before = current_reward(str(original.content), messages[:-1])
            if before >= threshold:
                kept = original.model_copy(update={"response_metadata": {
                    **original.response_metadata, "guard": {"action": "kept", "reward": before}}})
                return messages, state, before, rebuild(state, messages, kept)
        return messages, state, before, None

    def regenerated(state: Any, messages: list[BaseMessage], before: float | None, answer: AIMessage) -> Any:
        answer.response_metadata["guard"] = {"action": "regenerated", "original_reward": before,
                                             "original": messages[-1].content}
        return rebuild(state, messages, answer)

    def guard(state: Any) -> Any:
        messages, state, before, kept = check(state)
        if kept is not None:
            return kept
        return regenerated(state, messages, before, bound.invoke(messages[:-1]))

    async def aguard(state: Any) -> Any:
        messages, state, before, kept = check(state)
        if kept is not None:
            return kept
        return regenerated(state, messages, before, await bound.ainvoke(messages[:-1]))

    return RunnableLambda(guard, afunc=aguard, name="guard_final_answer")


def _model_reward_vars(llm: Any) -> Mapping[str, Any]:
    """The default reward variables of the DeAL model under ``llm`` (a model or bindings
    of one): a guard's own ``reward_vars`` replace a binding's, but merge with these."""
    from langchain_core.runnables.base import RunnableBindingBase

    while isinstance(llm, RunnableBindingBase):
        llm = llm.bound
    return dict(getattr(llm, "reward_vars", None) or {})


def _prompt_of(messages: Sequence[BaseMessage]) -> str:
    return "\n".join(str(m.content) for m in messages if m.type != "system")
