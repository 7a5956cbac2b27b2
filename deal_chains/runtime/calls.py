"""One shell call's options as a ``Request`` (tools, structured output, a reply after tool use),
and the wording that says what cut an answer: shared by the LangChain shell and the server.

>>> cut_reason({"finish_reason": "length", "stats": {"new_tokens": 7}}, "the tool call").split(" (")[0]
'the tool call was cut by the token budget after 7 tokens'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping, Sequence

from deal_chains.jsonkit.lexer import json_content
from deal_chains.runtime.model_runtime import ModelRuntime
from deal_chains.runtime.options import CallOptions, budget_for_json
from deal_chains.runtime.requests import Request
from deal_chains.runtime.tool_calling import ToolSet, reply_constraint, without_titles

# what rewards score in a tool-calling turn: the arguments' values and the reply, not the
# tool's name or the envelope's keys (a module-level object: request keys compare it)
TOOL_CONTENT = partial(json_content, skip_keys=("name",))


@dataclass
class Prepared:
    """A request ready to submit, with what reading its outcome needs: the tool set of a
    tool-calling turn (None otherwise) and whether the answer is structured output."""

    request: Request
    toolset: ToolSet | None = None
    structured: bool = False


def prepare_call(adapter: ModelRuntime, messages: Sequence[Mapping[str, str]], options: CallOptions,
                 toolset: ToolSet | None = None, reply: bool = False) -> Prepared:
    """The request for engine-format ``messages`` under ``options``.

    A tool-calling turn (``toolset`` active) is generated under the tools' envelope mask (with
    ``options.response_schema`` as the schema of a reply, if given); structured output
    (``response_schema`` alone) under the schema's mask; ``reply``: a plain-text turn that
    must read as an answer for the user (after tool use: no tool-call syntax, no bare JSON
    value), unless the spec has its own hard constraint. The token budget of a JSON answer is
    sized from its schema when the caller set none."""
    constraint, instructions, structured, view = None, None, False, None
    schema, config = options.response_schema, options.config
    if toolset is not None and toolset.active:
        if schema is not None:
            # tools and a response format (create_agent's ProviderStrategy): a reply
            # must match the schema, so the answer branch of the mask is the schema
            toolset = toolset.with_answer_schema(schema)
        constraint, instructions, view = toolset.constraint(), toolset.instructions(), TOOL_CONTENT
        config = budget_for_json(config, toolset.typical_tokens())
    elif schema is not None:
        from deal_chains.jsonkit.schema_shape import typical_tokens
        from deal_chains.search.constraints import GrammarConstraint

        constraint = GrammarConstraint.json_schema(schema)
        config = budget_for_json(config, typical_tokens(schema))
        instructions = ("Reply with only a JSON object that matches this JSON schema: "
                        + json.dumps(without_titles(schema), ensure_ascii=False, separators=(",", ":")))
        structured, view = True, json_content
    elif reply and (options.spec is None or options.spec.build_constraint() is None):
        constraint = reply_constraint()
    request = adapter.request(messages, spec=options.spec, reward_vars=options.reward_vars, config=config,
                              constraint=constraint, stop=options.stop, instructions=instructions, view=view,
                              tool_turn=toolset is not None and toolset.active)
    return Prepared(request=request, toolset=toolset, structured=structured)


def cut_reason(meta: Any, what: str, raise_hint: str = "") -> str:
    """What cut an answer (its metadata, ``finish_reason: length``) and the knob that helps:
    one wording for structured output and tool calls. ``raise_hint``: where the caller sets
    ``max_tokens``, in its own terms."""
    if meta.get("closed_by") == "string_cap":
        from deal_chains.jsonkit.schema_rewrite import STRING_CAP

        return (f"{what} was cut: a string reached the {STRING_CAP}-character cap the mask puts on strings without "
                "maxLength (the model would have gone on); give that field a larger maxLength in the schema, or ask "
                "for a shorter value")
    spent = (meta.get("stats") or {}).get("new_tokens")
    how = ("a value was closed early to end the JSON in time" if meta.get("closed_by") == "budget"
           else "the JSON is unfinished")
    return (f"{what} was cut by the token budget after {spent} tokens ({how}): raise max_tokens"
            + (f" {raise_hint}" if raise_hint else ""))
