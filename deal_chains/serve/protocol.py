"""OpenAI request bodies read into runtime requests: every check a client can fail runs here,
before anything is queued (fields, types, budgets, the request's own spec).

>>> ServeLimits().max_tokens
512

A body is refused (``ApiError``, 4xx) for an unknown field, a field of the wrong type, an
OpenAI option the search cannot honour (``logprobs``, ``top_p`` < 1, penalties, ``logit_bias``,
``echo``, ``best_of``...), a ``max_tokens`` over the server's cap, a spec naming a file or a
model, and a search larger than the server's limits. Per-request alignment comes in the
``deal`` field (what ``openai`` sends as ``extra_body={"deal": {...}}``): ``preset`` (a
bundled preset's name) or ``spec`` (an inline spec, as a JSON object), ``step`` (of a
multi-step spec), ``vars`` (the spec's template variables) and ``search`` (search settings).
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from deal_chains.runtime import ModelRuntime, resolve_spec
from deal_chains.runtime.calls import Prepared, prepare_call
from deal_chains.runtime.options import CallOptions, CallRules, ModelDefaults, read_call_options
from deal_chains.runtime.tool_calling import ToolSet, answer_text, called_text, envelope_text
from deal_chains.serve.errors import ApiError, api_error

COMMON_FIELDS = frozenset({
    "model", "stream", "stream_options", "n", "max_tokens", "stop", "temperature", "seed", "top_p",
    "logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "user", "deal",
})
CHAT_FIELDS = COMMON_FIELDS | {
    "messages", "max_completion_tokens", "top_logprobs", "response_format", "tools", "tool_choice",
    "parallel_tool_calls", "metadata", "store", "service_tier",
}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt", "echo", "suffix", "best_of"}
DEAL_FIELDS = ("preset", "spec", "step", "vars", "search")


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, checked before it is queued.

    - ``max_body_bytes``: the request body;
    - ``max_tokens``: the token budget of an answer (a request's ``max_tokens`` and a spec's
      ``search.max_new_tokens``);
    - ``max_rows_per_prompt``, ``max_lookahead_tokens``: the search's size per prompt
      (``top_k x beam``, and that times ``lookahead``; see ``SearchLimits``);
    - ``max_prompts``: prompts in one ``/v1/completions`` request;
    - ``timeout_s``: a request's time from arrival to its last token (then 408).
    """

    max_body_bytes: int = 1 << 20
    max_tokens: int = 512
    max_rows_per_prompt: int = 64
    max_lookahead_tokens: int = 4096
    max_prompts: int = 16
    timeout_s: float = 300.0


@dataclass
class ServedModel:
    """A model the server answers for: its name (the requests' ``model``), its runtime (one
    per model: every request for it shares its batching worker) and its default settings
    (from ``deal-chains serve --spec``)."""

    name: str
    runtime: ModelRuntime
    defaults: ModelDefaults = field(default_factory=ModelDefaults)


@dataclass
class Plan:
    """One HTTP request, read: its searches (one per prompt), what the response needs."""

    model: ServedModel
    calls: list[Prepared]
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    # a plain-text turn to generate instead when a tool-calling turn replies after tool
    # results (small models reply tersely in the JSON envelope; in words they answer)
    reply_call: Any = None


# ---------------------------------------------------------------------------- small checks


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(value), type(value).__name__)


def _int(body: Mapping[str, Any], name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer, got {_kind(value)} {value!r:.40}", param=name)
    if value < low or (high is not None and value > high):
        top = f" and at most {high}" if high is not None else ""
        raise ApiError(400, f"{name} must be at least {low}{top}, got {value}", param=name)
    return value


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
        raise ApiError(400, f"{name} must be a number from {low:g} to {high:g}, got {value!r:.40}", param=name)
    return float(value)


def _bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false, got {value!r:.40}", param=name)
    return value


def _check_fields(body: Mapping[str, Any], known: frozenset[str], endpoint: str) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, f"unrecognized request argument(s) for {endpoint}: {', '.join(unknown)} (per-request "
                       f"alignment goes in the 'deal' field: {', '.join(DEAL_FIELDS)})", param=unknown[0])


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    """OpenAI options the search cannot honour: refused with the reason, not ignored."""
    logprobs = body.get("logprobs")
    if logprobs not in (None, False, 0):
        raise ApiError(400, "logprobs are not available: the search ranks whole hypotheses, not tokens; each choice "
                       "reports its answer's total log-probability in choices[i].deal.logprob", param="logprobs")
    if body.get("top_logprobs") is not None:
        raise ApiError(400, "top_logprobs is not available (see logprobs)", param="top_logprobs")
    if body.get("top_p") not in (None, 1, 1.0):
        raise ApiError(400, "top_p must be 1 (nucleus sampling is not part of the search; use temperature, or the "
                       "search settings in deal.search)", param="top_p")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise ApiError(400, f"{name} is not supported: express it as a reward in the spec (deal.spec)", param=name)
    if body.get("logit_bias"):
        raise ApiError(400, "logit_bias is not supported (use a regex or keywords reward in deal.spec)",
                       param="logit_bias")
    if body.get("echo"):
        raise ApiError(400, "echo is not supported", param="echo")
    if body.get("suffix") is not None:
        raise ApiError(400, "suffix is not supported (no fill-in-the-middle)", param="suffix")
    if body.get("best_of") not in (None, 1):
        raise ApiError(400, "best_of is not supported: use n (the n best distinct answers of one search), or "
                       "deal.search {strategy: best_of_n, n: ...}", param="best_of")


def _served(models: Mapping[str, ServedModel], body: Mapping[str, Any]) -> ServedModel:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "model is required: the name of a served model (GET /v1/models lists them)",
                       param="model")
    if name not in models:
        raise ApiError(404, f"The model {name!r} does not exist on this server; it serves: {', '.join(models)}",
                       param="model", code="model_not_found")
    return models[name]


# ---------------------------------------------------------------------------- the spec


def request_spec(deal: Any) -> Any:
    """The spec a request's ``deal`` field names (loaded), or None when it names none.
    ``preset`` names a bundled preset; ``spec`` is an inline spec (a JSON object, validated
    like a YAML file, with the same messages); neither may point at a file or a model."""
    from deal_chains.spec import list_presets
    from deal_chains.spec.merge import external_references
    from deal_chains.spec.source import dotted

    preset, inline, step = deal.get("preset"), deal.get("spec"), deal.get("step")
    if preset is not None and inline is not None:
        raise ApiError(400, "deal: give preset or spec, not both (an inline spec can start from a preset with its "
                       "own 'preset' key)", param="deal.preset")
    if step is not None and not isinstance(step, str):
        raise ApiError(400, f"deal.step must be a step name, got {step!r:.40}", param="deal.step")
    if preset is not None:
        if not isinstance(preset, str) or preset not in list_presets():
            raise ApiError(400, f"deal.preset: unknown preset {preset!r:.60}; available presets: "
                           f"{', '.join(list_presets())}", param="deal.preset", code="invalid_spec")
        source: Any = {"preset": preset}
    elif inline is not None:
        if not isinstance(inline, Mapping):
            # a string would be read as YAML text or a file name: only objects come over HTTP
            raise ApiError(400, f"deal.spec must be a spec as a JSON object, got {_kind(inline)}", param="deal.spec")
        for path, value in external_references(inline):
            where = "deal.spec." + dotted(path)
            raise ApiError(400, f"{where}: a request's spec may not name a file, a model or a base spec "
                           f"(got {value!r:.80}); use a preset, inline values (e.g. json_schema.schema), or give "
                           "the spec to the server (deal-chains serve --spec FILE)", param=where, code="invalid_spec")
        source = inline
    else:
        if step is not None:
            raise ApiError(400, "deal.step needs a spec with steps (deal.spec or deal.preset)", param="deal.step")
        return None
    try:
        return resolve_spec(source, step)
    except Exception as exc:
        raise api_error(exc, "deal.preset" if preset is not None else "deal.spec") from None


def _deal(body: Mapping[str, Any]) -> dict[str, Any]:
    """The call options of the ``deal`` field: the spec (loaded), vars, search settings."""
    deal = body.get("deal")
    if deal is None:
        return {}
    if not isinstance(deal, Mapping):
        raise ApiError(400, f"deal must be an object with {', '.join(DEAL_FIELDS)}, got {_kind(deal)}", param="deal")
    unknown = sorted(set(deal) - set(DEAL_FIELDS))
    if unknown:
        raise ApiError(400, f"deal: unknown field(s) {', '.join(unknown)}; known: {', '.join(DEAL_FIELDS)}",
                       param=f"deal.{unknown[0]}")
    call: dict[str, Any] = {}
    spec = request_spec(deal)
    if spec is not None:
        call["spec"] = spec
    if deal.get("vars") is not None:
        if not isinstance(deal["vars"], Mapping):
            raise ApiError(400, f"deal.vars must be an object of spec variables, got {_kind(deal['vars'])}",
                           param="deal.vars")
        call["reward_vars"] = dict(deal["vars"])
    if deal.get("search") is not None:
        if not isinstance(deal["search"], Mapping):
            raise ApiError(400, f"deal.search must be an object of search settings, got {_kind(deal['search'])}",
                           param="deal.search")
        call["search"] = dict(deal["search"])
    return call


# ---------------------------------------------------------------------------- options


def read_options(model: ServedModel, body: Mapping[str, Any], limits: ServeLimits, endpoint: str) -> CallOptions:
    """The call options of a body (search settings, spec, stop, n, response format, tools),
    with the token budget checked against the server's cap."""
    _refuse_unsupported(body)
    n = _int(body, "n", 1)
    max_tokens = _int(body, "max_tokens", 1)
    if "max_completion_tokens" in body:
        newer = _int(body, "max_completion_tokens", 1)
        if max_tokens is not None and newer is not None and newer != max_tokens:
            raise ApiError(400, f"max_tokens={max_tokens} and max_completion_tokens={newer} disagree; give one",
                           param="max_completion_tokens")
        max_tokens = newer if newer is not None else max_tokens
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise ApiError(400, f"max_tokens={max_tokens} is over this server's limit of {limits.max_tokens} tokens "
                       "(deal-chains serve --max-tokens)", param="max_tokens")
    call: dict[str, Any] = _deal(body)
    for name, value in (("n", n), ("max_tokens", max_tokens), ("temperature", _number(body, "temperature", 0, 2)),
                        ("seed", _int(body, "seed", 0))):
        if value is not None:
            call[name] = value
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
            raise ApiError(400, f"stop must be a string or an array of up to 4 strings, got {stop!r:.80}",
                           param="stop")
        call["stop"] = stop
    for name in ("response_format", "tools", "tool_choice"):
        if body.get(name) is not None:
            call[name] = body[name]
    try:
        options = read_call_options(model.defaults, call, CallRules(endpoint))
    except Exception as exc:
        raise api_error(exc, "deal.search" if "search" in call else None) from None
    if options.config.max_new_tokens > limits.max_tokens:
        raise ApiError(400, f"the spec's token budget (search.max_new_tokens={options.config.max_new_tokens}) is over "
                       f"this server's limit of {limits.max_tokens} tokens; pass max_tokens", param="max_tokens")
    return options


def check_budget(model: ServedModel, prepared: Prepared, limits: ServeLimits) -> None:
    """Refuse a search larger than the server's limits (before it is queued)."""
    from deal_chains.search.engine import check_search
    from deal_chains.search.limits import SearchLimits

    request = prepared.request
    if request.config.max_new_tokens > limits.max_tokens:  # a JSON answer's budget sized from its schema
        raise ApiError(400, f"the answer's token budget ({request.config.max_new_tokens}, sized from its schema) is "
                       f"over this server's limit of {limits.max_tokens} tokens; pass a smaller max_tokens",
                       param="max_tokens")
    caps = SearchLimits(max_new_tokens=limits.max_tokens, max_rows_per_prompt=limits.max_rows_per_prompt,
                        max_lookahead_tokens=limits.max_lookahead_tokens)
    try:
        check_search(caps, model.runtime.lm, request.config, [request.prompt_tokens])
    except Exception as exc:
        raise api_error(exc, "deal.search") from None


# ---------------------------------------------------------------------------- messages


def _content(value: Any, where: str) -> str:
    """A message's text: a string, or an array of text parts (others are refused)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"{where}[{i}]: only text parts are supported (a local text-only model), got "
                               f"{kind or _kind(part)!r}", param=f"{where}[{i}]")
            parts.append(part["text"])
        return "".join(parts)
    raise ApiError(400, f"{where} must be a string or an array of text parts, got {_kind(value)}", param=where)


def _tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise ApiError(400, f"{where} must be an array", param=where)
    out = []
    for j, c in enumerate(calls):
        fn = c.get("function") if isinstance(c, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise ApiError(400, f"{where}[{j}] must be {{'type': 'function', 'function': {{'name', 'arguments'}}}}",
                           param=f"{where}[{j}]")
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except (TypeError, json.JSONDecodeError):
            raise ApiError(400, f"{where}[{j}].function.arguments must be a JSON object as a string",
                           param=f"{where}[{j}].function.arguments") from None
        out.append({"name": fn["name"], "args": args, "id": c.get("id")})
    return out


def engine_messages(messages: Any, tool_mode: bool) -> tuple[list[dict[str, str]], bool, bool]:
    """OpenAI chat messages as the engine's ``{"role", "content"}`` ones, whether the
    conversation has used tools, and whether there are tool results since the last user
    message. Earlier tool calls are shown in the JSON envelope in a tool-calling turn (the
    format the model must produce) and in words otherwise (``called_text``), as the
    LangChain shell shows them."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty array of messages", param="messages")
    out: list[dict[str, str]] = []
    used_tools = results_since_user = False
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise ApiError(400, f"{where} must be an object with role and content", param=where)
        role = m.get("role")
        text = _content(m.get("content"), f"{where}.content")
        if role in ("system", "developer"):
            role = "system"
        elif role == "user":
            results_since_user = False
        elif role == "assistant":
            if m.get("tool_calls"):
                used_tools = True
                calls = _tool_calls(m["tool_calls"], f"{where}.tool_calls")
                shown = envelope_text(calls) if tool_mode else called_text(calls)
                text = shown if tool_mode or not text.strip() else f"{text}\n{shown}"
            elif tool_mode:
                text = answer_text(text)
        elif role in ("tool", "function"):
            role, used_tools, results_since_user = "tool", True, True
        else:
            raise ApiError(400, f"{where}.role must be system, developer, user, assistant or tool, got {role!r:.40}",
                           param=f"{where}.role")
        out.append({"role": role, "content": text})
    return out, used_tools, results_since_user


# ---------------------------------------------------------------------------- requests


def _stream_flags(body: Mapping[str, Any], n: int) -> tuple[bool, bool]:
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise ApiError(400, "stream_options must be an object", param="stream_options")
    if stream and n > 1:
        raise ApiError(400, "stream with n > 1 is not supported: the n answers come from one search and are ranked "
                       "at its end; ask without stream", param="n")
    return stream, bool(stream and options and options.get("include_usage"))


def read_chat(models: Mapping[str, ServedModel], body: Mapping[str, Any], limits: ServeLimits) -> Plan:
    """A ``/v1/chat/completions`` body as a plan (one search), every check done."""
    _check_fields(body, CHAT_FIELDS, "/v1/chat/completions")
    model = _served(models, body)
    options = read_options(model, body, limits, "chat.completions")
    toolset = None
    if options.tools is not None:
        if not isinstance(options.tools, list):
            raise ApiError(400, "tools must be an array of function tools", param="tools")
        try:
            toolset = ToolSet.build(options.tools, options.tool_choice)
        except Exception as exc:
            raise api_error(exc, "tools") from None
    elif options.tool_choice not in (None, "none", "auto"):
        raise ApiError(400, "tool_choice needs tools", param="tool_choice")
    tool_mode = bool(toolset and toolset.active)
    messages, used_tools, results = engine_messages(body.get("messages"), tool_mode)
    n = options.config.returns
    stream, include_usage = _stream_flags(body, n)
    try:
        prepared = prepare_call(model.runtime, messages, options, toolset, reply=not tool_mode and used_tools)
        reply_call = None
        if tool_mode and toolset.choice == "auto" and options.response_schema is None and results:
            plain = CallOptions(spec=options.spec, config=options.config, reward_vars=options.reward_vars,
                                stop=options.stop)
            words, _, _ = engine_messages(body.get("messages"), False)
            reply_call = prepare_call(model.runtime, words, plain, reply=True)
    except ApiError:
        raise
    except Exception as exc:
        raise api_error(exc) from None
    check_budget(model, prepared, limits)
    return Plan(model=model, calls=[prepared], n=n, stream=stream, include_usage=include_usage, reply_call=reply_call)


def read_completion(models: Mapping[str, ServedModel], body: Mapping[str, Any], limits: ServeLimits) -> Plan:
    """A ``/v1/completions`` body as a plan: each prompt is one user message, and every
    prompt of the request is one batched search."""
    _check_fields(body, COMPLETION_FIELDS, "/v1/completions")
    model = _served(models, body)
    prompt = body.get("prompt")
    prompts: Sequence[Any] = [prompt] if isinstance(prompt, str) else prompt if isinstance(prompt, list) else []
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ApiError(400, "prompt must be a string or a non-empty array of strings (token arrays are not "
                       "supported)", param="prompt")
    if len(prompts) > limits.max_prompts:
        raise ApiError(400, f"{len(prompts)} prompts is over this server's limit of {limits.max_prompts} per request",
                       param="prompt")
    options = read_options(model, body, limits, "completions")
    n = options.config.returns
    stream, include_usage = _stream_flags(body, n)
    if stream and len(prompts) > 1:
        raise ApiError(400, "stream with several prompts is not supported; send one prompt per request",
                       param="prompt")
    calls = []
    for p in prompts:
        try:
            calls.append(prepare_call(model.runtime, [{"role": "user", "content": p}], options))
        except Exception as exc:
            raise api_error(exc, "prompt") from None
        check_budget(model, calls[-1], limits)
    return Plan(model=model, calls=calls, n=n, stream=stream, include_usage=include_usage)
