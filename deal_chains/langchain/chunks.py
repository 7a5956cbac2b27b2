"""The chunks a streamed ``ChatDeAL`` call yields: committed text as it comes (the reply text
of an ``{"answer": ...}`` envelope in a tool-calling turn), then one last chunk with the tool
call, usage and metadata."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk

from deal_chains.langchain._base import Call
from deal_chains.runtime.tool_calling import AnswerStream

if TYPE_CHECKING:  # pragma: no cover
    from deal_chains.langchain.chat_models import ChatDeAL


class ChunkEmitter:
    """Chunks of a streamed call: text as it is committed (the reply text of an
    ``{"answer": ...}`` envelope in a tool-calling turn), then a last chunk with the tool
    call, usage and metadata."""

    def __init__(self, model: ChatDeAL, call: Call):
        self.model, self.call = model, call
        self.tools = call.toolset if call.toolset is not None and call.toolset.active else None
        self.answer = AnswerStream() if self.tools is not None else None
        # a reply in the envelope that will be generated again in words is not streamed
        self.hold = model._replies_in_words(call)

    def text(self, delta: str) -> ChatGenerationChunk | None:
        if self.hold:
            return None
        if self.answer is not None:
            delta = self.answer.feed(delta)
        return ChatGenerationChunk(message=AIMessageChunk(content=delta)) if delta else None

    def last(self, message: AIMessage) -> ChatGenerationChunk:
        rest, chunks = "", []
        meta = dict(message.response_metadata)
        if self.answer is not None:
            rest = self.answer.rest(str(message.content))
            for i, c in enumerate(message.tool_calls):
                chunks.append(tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i))
            if message.invalid_tool_calls:
                # aggregating chunks rebuilds tool calls from tool_call_chunks, and would
                # turn a call cut by the token budget into a complete-looking one (its
                # partial arguments parse): the invalid call is this chunk's
                # invalid_tool_calls (args and error, as invoke gives them), and
                # response_metadata["invalid_tool_calls"] keeps it in an aggregated message
                meta["invalid_tool_calls"] = [dict(c) for c in message.invalid_tool_calls]
        chunk = AIMessageChunk(content=rest, tool_call_chunks=chunks, usage_metadata=message.usage_metadata,
                               response_metadata=meta, chunk_position="last")
        if self.answer is not None and message.invalid_tool_calls:
            chunk.invalid_tool_calls = list(message.invalid_tool_calls)
        return ChatGenerationChunk(message=chunk)
