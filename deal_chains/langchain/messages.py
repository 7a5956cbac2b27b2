"""LangChain messages in the engine's chat format, and what the tool-calling loop reads from them
(which calls were answered, which would feed a tool its own result back)."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from deal_chains.errors import InputError
from deal_chains.runtime.tool_calling import answer_text, called_text, envelope_text


_NON_TEXT_BLOCKS = {"image", "image_url", "file", "audio", "input_audio", "video", "document"}


_SKIPPED_BLOCKS = {"tool_use", "tool_call", "tool_call_chunk", "reasoning", "thinking", "function_call"}


def _text(content: Any, what: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            continue
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif kind in _SKIPPED_BLOCKS:
            continue
        elif kind in _NON_TEXT_BLOCKS:
            raise InputError(f"{what} has a {kind!r} content block: ChatDeAL runs a text-only local model "
                             "(images, audio and files are not supported)")
        else:
            raise InputError(f"{what} has an unsupported content block {block!r:.80}")
    return "".join(parts)


def to_engine_messages(messages: Sequence[BaseMessage], tool_mode: bool = False) -> list[dict[str, str]]:
    """LangChain messages -> the engine's ``{"role", "content"}`` chat messages.

    Roles: system, user, assistant, tool (``ChatMessage`` keeps its role). In a tool-calling
    turn (``tool_mode``) an assistant message's tool calls are shown as the JSON envelope
    ChatDeAL generates them in, and a text reply as ``{"answer": ...}``, so the model sees
    one consistent format. In a plain-text turn the calls are shown in words
    (``called_text``): the model answers in text, and copies what it sees.
    """
    out = []
    for i, m in enumerate(messages):
        what = f"message {i} ({type(m).__name__})"
        text = _text(m.content, what)
        if isinstance(m, SystemMessage):
            role = "system"
        elif isinstance(m, HumanMessage):
            role = "user"
        elif isinstance(m, AIMessage):
            role = "assistant"
            if m.tool_calls and tool_mode:
                text = envelope_text(m.tool_calls)
            elif m.tool_calls:
                calls = called_text(m.tool_calls)
                text = f"{text}\n{calls}" if text.strip() else calls
            elif tool_mode:
                text = answer_text(text)
        elif isinstance(m, (ToolMessage, FunctionMessage)):
            role = "tool"
        elif isinstance(m, ChatMessage):
            role = m.role
        else:
            raise InputError(f"{what}: unsupported message type")
        out.append({"role": role, "content": text})
    return out


def _call_key(call: Mapping[str, Any]) -> str:
    return json.dumps([call.get("name"), call.get("args")], sort_keys=True, default=str)


def _feeds_back(call: Mapping[str, Any], messages: Sequence[BaseMessage]) -> bool:
    """True when an argument of ``call`` is the latest result (since the last human
    message) of a call to the same tool: the model is treating the answer as new input."""
    names: dict[str, str] = {}  # tool call id -> tool name
    latest: str | None = None
    for m in messages:
        if isinstance(m, HumanMessage):
            names, latest = {}, None
        elif isinstance(m, AIMessage):
            names.update({c.get("id"): c.get("name") for c in m.tool_calls})
        elif isinstance(m, ToolMessage) and names.get(m.tool_call_id) == call.get("name"):
            latest = m.content.strip() if isinstance(m.content, str) else None
    if not latest:
        return False

    def same(value: Any) -> bool:
        if isinstance(value, bool) or value is None:
            return False
        if isinstance(value, (int, float)):
            try:
                return float(latest) == float(value)
            except ValueError:
                return False
        return isinstance(value, str) and value.strip() == latest

    return any(same(v) for v in (call.get("args") or {}).values())


def after_tool_use(messages: Sequence[BaseMessage]) -> bool:
    """Whether the conversation has tool calls or tool results: a plain-text turn after them
    is an answer for the user, and must read as one (``tool_calling.REPLY_START``)."""
    return any(isinstance(m, (ToolMessage, FunctionMessage)) or (isinstance(m, AIMessage) and m.tool_calls)
               for m in messages)
