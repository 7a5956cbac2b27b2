"""Response bodies from outcomes, as OpenAI writes them: ``chat.completion``,
``chat.completion.chunk`` (server-sent events) and ``text_completion``, with ``usage``.

>>> usage(12, 30)
{'prompt_tokens': 12, 'completion_tokens': 30, 'total_tokens': 42}

Each choice also carries ``deal``: the answer's rewards, total reward, score, log-probability,
strategy and search statistics (and the seed of a sampled search). Honest results:

- a tool call whose arguments the token budget cut (or that is not a complete call) is not
  returned as a tool call: the choice has ``finish_reason: "length"``, no ``tool_calls``,
  ``content: null``, and ``deal.invalid_tool_calls`` (name, the arguments as generated, the
  error saying what cut them);
- structured output cut by the budget keeps OpenAI's convention (the text as generated,
  ``finish_reason: "length"``) and adds ``deal.cut``, which says what cut it.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from deal_chains.runtime import Outcome
from deal_chains.runtime.calls import Prepared, cut_reason
from deal_chains.runtime.tool_calling import AnswerStream

RAISE_HINT = "(the request's max_tokens)"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def deal_metadata(outcome: Outcome) -> dict[str, Any]:
    meta = outcome.metadata()
    meta.pop("model_name", None)
    meta.pop("finish_reason", None)
    return meta


def chat_choice(prepared: Prepared, outcome: Outcome, index: int) -> dict[str, Any]:
    """One ``chat.completion`` choice: the message (text, or a tool call under the honest
    rules above), ``finish_reason`` and ``deal``."""
    deal = deal_metadata(outcome)
    finish = outcome.finish_reason
    message: dict[str, Any] = {"role": "assistant", "content": outcome.text, "refusal": None}
    toolset = prepared.toolset
    if toolset is not None and toolset.active:
        finished = finish == "stop"
        content, calls, invalid = toolset.parse(
            outcome.text, finished, None if finished else cut_reason(deal, "the tool call", RAISE_HINT))
        message["content"] = content if not (calls or invalid) else None
        if calls:
            message["tool_calls"] = [{"id": c["id"], "type": "function",
                                      "function": {"name": c["name"],
                                                   "arguments": json.dumps(c["args"], ensure_ascii=False)}}
                                     for c in calls]
            finish = "tool_calls"
        elif invalid:
            deal["invalid_tool_calls"] = [{"name": c.get("name"), "arguments": c.get("args"), "error": c.get("error")}
                                          for c in invalid]
            finish = "length"
    elif prepared.structured and finish == "length":
        deal["cut"] = cut_reason(deal, "the structured output", RAISE_HINT)
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish, "deal": deal}


def answers(outcome: Outcome, n: int) -> list[Outcome]:
    """The answer and its next best distinct ones, at most ``n`` (fewer when the search
    found fewer distinct answers)."""
    return [outcome, *outcome.alternatives][:n]


def chat_completion(model: str, prepared: Prepared, outcome: Outcome, n: int,
                    spent: Outcome | None = None) -> dict[str, Any]:
    """The ``chat.completion`` body. ``spent``: an earlier generation of the same request
    (a tool-calling turn answered again in words), whose tokens count in usage."""
    chosen = answers(outcome, n)
    completion = sum(len(o.result.token_ids) for o in chosen)
    if spent is not None:
        completion += len(spent.result.token_ids)
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [chat_choice(prepared, o, i) for i, o in enumerate(chosen)],
            "usage": usage(outcome.prompt_tokens, completion), "system_fingerprint": None}


def text_completion(model: str, outcomes: list[Outcome], n: int) -> dict[str, Any]:
    """The ``text_completion`` body: ``n`` choices per prompt, in prompt order."""
    choices, prompt_tokens, completion = [], 0, 0
    for outcome in outcomes:
        prompt_tokens += outcome.prompt_tokens
        for o in answers(outcome, n):
            completion += len(o.result.token_ids)
            choices.append({"index": len(choices), "text": o.text, "logprobs": None,
                            "finish_reason": o.finish_reason, "deal": deal_metadata(o)})
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(prompt_tokens, completion)}


class ChunkWriter:
    """The server-sent events of one streamed request: a first chunk with the role, text as
    the search commits it (for a tool-calling turn, the reply text of an ``{"answer": ...}``
    envelope; a tool call is sent whole once complete), a last chunk with the finish reason,
    then usage (``stream_options.include_usage``) and ``[DONE]``."""

    def __init__(self, model: str, prepared: Prepared, chat: bool = True):
        self.model, self.prepared, self.chat = model, prepared, chat
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())
        active = prepared.toolset is not None and prepared.toolset.active
        self.answer = AnswerStream() if chat and active else None
        self.hold = False  # a reply that may be generated again in words is not streamed
        self.sent = ""  # the plain text streamed so far

    def _event(self, data: dict[str, Any]) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    def _chunk(self, delta: dict[str, Any] | str, finish: str | None = None, **extra: Any) -> str:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        choice.update(extra)
        return self._event({"id": self.id, "object": obj, "created": self.created, "model": self.model,
                            "choices": [choice]})

    def start(self) -> str | None:
        return self._chunk({"role": "assistant", "content": ""}) if self.chat else None

    def text(self, delta: str) -> str | None:
        if self.hold:
            return None
        if self.answer is not None:
            delta = self.answer.feed(delta)
        else:
            self.sent += delta
        if not delta:
            return None
        return self._chunk({"content": delta} if self.chat else delta)

    def switch(self, prepared: Prepared) -> None:
        """Stream another generation of the same request instead (a tool-calling turn that
        replied after tool results, answered again as a plain-text turn)."""
        self.prepared, self.hold, self.answer, self.sent = prepared, False, None, ""

    def last(self, outcome: Outcome) -> str:
        """The closing chunk: what the text chunks have not sent, the tool call, the reason."""
        if not self.chat:
            return self._chunk("", outcome.finish_reason, deal=deal_metadata(outcome))
        choice = chat_choice(self.prepared, outcome, 0)
        message = choice["message"]
        content = message["content"] or ""
        if self.answer is not None:  # the reply text of the envelope (all of it, if it was held back)
            rest = self.answer.rest(content)
        else:
            rest = content[len(self.sent):] if content.startswith(self.sent) else ""
        delta: dict[str, Any] = {"content": rest} if rest else {}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
        return self._chunk(delta, choice["finish_reason"], deal=choice["deal"])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> str:
        return self._event({"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                            "created": self.created, "model": self.model, "choices": [],
                            "usage": usage(prompt_tokens, completion_tokens)})

    def error(self, body: dict[str, Any]) -> str:
        return self._event(body)


DONE = "data: [DONE]\n\n"
