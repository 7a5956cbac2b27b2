"""The one place that maps a shell's call options (LangChain, DSPy) onto what a request needs:
the spec, the search config, the reward variables, stop sequences, the answer schema and how
many completions.

>>> opts = read_call_options(ModelDefaults(fields={"top_k": 4}), {"max_tokens": 16, "stop": "###"},
...                          CallRules(where="example"))
>>> opts.config.top_k, opts.config.max_new_tokens, opts.stop, opts.completions
(4, 16, ['###'], 1)

Precedence of search settings, lowest first: the model's ``search`` mapping, its search
fields (``top_k``..., ``temperature``), its ``max_tokens``; then per call, in the same order.
``max_tokens`` is the public name of the token budget and wins over ``max_new_tokens`` at
the same level. None means "not given".

Where the shells read an option differently today, the difference is a field of
``CallRules`` (so one place shows it and one place changes it): what ``n`` means, whether
unknown options are refused, how a per-call ``spec`` and ``response_format`` are read.

``n``: LangChain's (as OpenAI's) is the number of generations returned per prompt, the
search's ``returns`` (the n best distinct answers of one search); best_of_n's samples and
rerank's hypotheses stay ``SearchConfig.n``, given as ``search={"n": ...}``. DSPy's ``n``
is that many completions, each its own request.

>>> search_overrides({"n": 8}, {"n": 2}, {}, n_field="returns")
{'n': 8, 'returns': 2}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from deal_chains.errors import InputError
from deal_chains.runtime.requests import SEARCH_FIELDS, is_spec, resolve_spec, search_config
from deal_chains.search.config import MAX_RETURNS, SearchConfig

# LangChain's per-call keyword arguments (``invoke(..., **kw)``, ``.bind(**kw)``) besides the
# search knobs
LANGCHAIN_CALL_OPTIONS = frozenset({
    "reward_vars", "spec", "step", "search", "model", "max_tokens", "temperature", "stop",
    "tools", "tool_choice", "parallel_tool_calls", "response_format",
    # passed by LangChain itself
    "stream", "ls_structured_output_format", "structured_output_format",
})


@dataclass(frozen=True)
class ModelDefaults:
    """A model's own settings: what each call falls back to."""

    spec: Any = None  # as the model was given it (path, YAML text, preset, mapping, RewardSpec)
    step: str | None = None
    loaded_spec: Any = None  # ``spec`` loaded with ``step``: used when a call names neither
    search: Mapping[str, Any] = field(default_factory=dict)  # the model's ``search`` mapping
    fields: Mapping[str, Any] = field(default_factory=dict)  # its search fields and ``max_tokens``
    reward_vars: Mapping[str, Any] = field(default_factory=dict)
    stop: Sequence[str] | None = None


@dataclass(frozen=True)
class CallRules:
    """How one shell reads its options (the LangChain models: the defaults; DSPy: ``DSPY_RULES``)."""

    where: str  # names the caller in error messages
    # accepted per-call options besides the search fields; None: others are ignored
    known: frozenset[str] | None = LANGCHAIN_CALL_OPTIONS
    # "returns": n (given outside a ``search`` mapping) is SearchConfig.returns, the answers
    # returned per prompt (best_of_n samples: search={"n": ...}); "completions": n is
    # SearchConfig.n and also n requests, each its own answer (DSPy)
    n: Literal["returns", "completions"] = "returns"
    # True: a per-call ``spec`` (even None) and ``step`` replace the model's; False: only a
    # spec that is not None does, and ``step`` is not read per call
    spec_per_call_replaces: bool = True
    # True: a response_format that is no JSON schema is an error; False: free text
    strict_response_format: bool = True

    @property
    def n_field(self) -> str:
        """The search setting a top-level ``n`` option sets."""
        return "returns" if self.n == "returns" else "n"


DSPY_RULES = CallRules(where="DeALLM", known=None, n="completions", spec_per_call_replaces=False,
                       strict_response_format=False)


@dataclass(frozen=True)
class CallOptions:
    """One call's options, read and checked: everything ``ModelRuntime.request`` needs from them."""

    spec: Any
    config: SearchConfig
    reward_vars: dict[str, Any]
    stop: list[str]
    response_schema: dict[str, Any] | None = None
    completions: int = 1
    rollout_id: Any = None
    model: Any = None  # a per-call model (LangChain ``model=``); None: the shell's own
    tools: Any = None
    tool_choice: Any = None

    def completion_configs(self) -> list[SearchConfig]:
        """One search config per completion. A sampled search with a fixed seed gives each
        (rollout, completion) its own seed derived from it, so they differ and stay
        reproducible; without a seed each request draws a fresh one, and identical requests
        stay one batched search."""
        config = self.config
        sampled = config.temperature > 0 or config.strategy in ("sample", "best_of_n")
        configs = []
        for i in range(self.completions):
            if sampled and config.seed is not None and (i or self.rollout_id is not None):
                configs.append(config.updated(seed=derived_seed(config.seed, self.rollout_id, i)))
            else:
                configs.append(config)
        return configs


def read_call_options(defaults: ModelDefaults, call: Mapping[str, Any], rules: CallRules,
                      stop: Sequence[str] | str | None = None) -> CallOptions:
    """``call``'s options over the model's ``defaults``, read as ``rules`` say; ``stop``: a stop
    argument given apart from the options (LangChain's), used before ``call["stop"]``.
    Raises ``InputError``, ``SpecError`` or ``ConfigError`` for what the caller got wrong."""
    check_call_options(call, rules)
    spec = call_spec(defaults, call, rules)
    config = call_config(spec, search_overrides(defaults.search, defaults.fields, call, rules.n_field), rules)
    variables = {**defaults.reward_vars, **dict(call.get("reward_vars") or {})}
    schema = None
    if call.get("response_format") is not None:
        try:
            schema = response_schema(call["response_format"])
        except InputError:
            if rules.strict_response_format:
                raise
    stop = stop if stop else call.get("stop")
    stops = stop_list(stop, rules.where) if stop else stop_list(defaults.stop, rules.where)
    completions = int(call.get("n") or 1) if rules.n == "completions" else 1
    return CallOptions(spec=spec, config=config, reward_vars=variables, stop=stops, response_schema=schema,
                       completions=completions, rollout_id=call.get("rollout_id"), model=call.get("model"),
                       tools=call.get("tools"), tool_choice=call.get("tool_choice"))


def check_call_options(call: Mapping[str, Any], rules: CallRules) -> None:
    """Refuse an unknown option and a badly typed ``stop``, ``search`` or ``reward_vars``
    (only where ``rules.known`` lists the options: DSPy passes options of its own, ignored)."""
    if rules.known is None:
        return
    where = rules.where
    unknown = sorted(set(call) - rules.known - set(SEARCH_FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown argument(s) {', '.join(unknown)}; known: reward_vars, spec, step, "
                         f"search, model, max_tokens, stop, tools, tool_choice, response_format, "
                         f"{', '.join(SEARCH_FIELDS)}")
    if "stop" in call:
        stop_list(call["stop"], where)
    if "search" in call and not isinstance(call["search"], Mapping):
        raise InputError(f"{where}: search must be a mapping of search settings, got {call['search']!r}")
    if "reward_vars" in call and not isinstance(call["reward_vars"], Mapping):
        raise InputError(f"{where}: reward_vars must be a mapping of spec variables, got {call['reward_vars']!r}")


def call_spec(defaults: ModelDefaults, call: Mapping[str, Any], rules: CallRules) -> Any:
    """The spec in force for ``call`` (loaded; None: log-probability alone)."""
    if not rules.spec_per_call_replaces:
        return resolve_spec(call["spec"]) if call.get("spec") is not None else defaults.loaded_spec
    if "spec" in call and "step" not in call and is_spec(call["spec"]) and not call["spec"].steps:
        return call["spec"]  # loaded at bind time (its step already chosen)
    if "spec" in call or "step" in call:
        return resolve_spec(call.get("spec", defaults.spec), call.get("step", defaults.step))
    return defaults.loaded_spec


def call_config(spec: Any, overrides: Mapping[str, Any], rules: CallRules) -> SearchConfig:
    """The call's search config. Under ``n="returns"`` the generations asked per prompt
    (``returns``, LangChain's ``n``) are checked here, so a bad ``n`` is refused in
    LangChain's terms: a whole number from 1 to ``MAX_RETURNS``, and 1 under greedy (one
    answer by definition)."""
    returns = overrides.get("returns")
    if rules.n != "returns" or returns is None:
        return search_config(spec, overrides)
    if isinstance(returns, bool) or not isinstance(returns, int) or not 1 <= returns <= MAX_RETURNS:
        raise InputError(f"{rules.where}: n={returns!r}: n is the number of generations returned per prompt, "
                         f"a whole number from 1 to {MAX_RETURNS}")
    config = search_config(spec, {**overrides, "returns": None})
    if returns > 1 and config.strategy == "greedy":
        raise InputError(f"{rules.where}: n={returns}: strategy 'greedy' has one answer per prompt, so it "
                         "cannot return several generations. Use strategy='deal' (it keeps at least n beams), "
                         "'rerank', 'best_of_n' or 'sample', or n=1")
    return config.updated(returns=returns)


def _layer(fields: Mapping[str, Any], n_field: str = "n") -> dict[str, Any]:
    """One level's settings: its ``search`` mapping, then its search fields, then ``max_tokens``.
    A top-level ``n`` sets ``n_field`` (``returns`` for LangChain); ``n`` inside ``search`` is
    always ``SearchConfig.n``."""
    values: dict[str, Any] = dict(fields.get("search") or {})
    own = {name: fields[name] for name in SEARCH_FIELDS if fields.get(name) is not None}
    if n_field != "n" and "n" in own:
        n = own.pop("n")
        if own.get(n_field, n) != n:
            raise InputError(f"n={n!r} and {n_field}={own[n_field]!r} disagree: n is the {n_field} setting, "
                             "give one")
        own[n_field] = n
    values.update(own)
    if fields.get("max_tokens") is not None:
        values["max_new_tokens"] = fields["max_tokens"]
    return values


def search_overrides(base_search: Mapping[str, Any], model_fields: Mapping[str, Any],
                     call: Mapping[str, Any], n_field: str = "n") -> dict[str, Any]:
    """The search overrides of one call: the model's settings (``base_search`` and its
    ``model_fields``), then the call's own (see the module docstring for the order).
    ``n_field``: the setting a top-level ``n`` sets (``CallRules.n_field``).

    >>> search_overrides({"top_k": 4}, {"max_tokens": 32, "beam": None},
    ...                  {"search": {"lam": 8.0}, "max_tokens": 16})
    {'top_k': 4, 'max_new_tokens': 16, 'lam': 8.0}
    """
    values = _layer({"search": base_search, **{k: v for k, v in model_fields.items() if k != "search"}}, n_field)
    values.update(_layer(call, n_field))
    return values


def stop_list(stop: Any, where: str) -> list[str]:
    """Stop sequences as a list (a single string is one sequence, not its characters)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise InputError(f"{where}: stop must be a string or a list of strings, got {stop!r:.80}")


def response_schema(response_format: Any) -> dict[str, Any]:
    """The JSON schema of an OpenAI-style ``response_format`` (or of a pydantic class, as DSPy
    passes it); ``InputError`` for anything else."""
    if isinstance(response_format, type) and hasattr(response_format, "model_json_schema"):
        return response_format.model_json_schema()
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind == "json_schema":
            inner = response_format.get("json_schema") or {}
            schema = inner.get("schema") if isinstance(inner, Mapping) else None
            if isinstance(schema, Mapping):
                return dict(schema)
        elif kind == "json_object":
            return {"type": "object"}
    raise InputError("response_format must be {'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}} "
                     f"or {{'type': 'json_object'}}, got {response_format!r:.120}")


def derived_seed(seed: int, rollout_id: Any, index: int) -> int:
    """A seed for completion ``index`` of rollout ``rollout_id`` under a fixed ``seed``."""
    h = hashlib.sha256(f"{seed}|{rollout_id!r}|{index}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFF_FFFF


def budget_for_json(config: SearchConfig, typical_tokens: int) -> SearchConfig:
    """``config`` with a token budget that fits a JSON answer of about ``typical_tokens``
    (``jsonkit.schema_shape.typical_tokens``), when the caller set no budget: half again
    as much plus a margin, never below the default and at most 512. A budget the caller set
    (``max_tokens``, the spec's ``search.max_new_tokens``) is kept as given.

    >>> budget_for_json(SearchConfig(), 109).max_new_tokens, budget_for_json(SearchConfig(), 10).max_new_tokens
    (172, 48)
    """
    if "max_new_tokens" in config.model_fields_set:
        return config
    wanted = min(512, (3 * typical_tokens + 1) // 2 + 8)
    return config.updated(max_new_tokens=wanted) if wanted > config.max_new_tokens else config
