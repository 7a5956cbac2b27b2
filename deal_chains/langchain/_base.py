"""Settings shared by ``ChatDeAL`` and ``DeALLLM``, and turning one LangChain call into an
adapter ``Request`` (``deal_chains.runtime`` is the only package that runs the engine)."""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from deal_chains.runtime import SEARCH_FIELDS, Handle, ModelRuntime, Request, resolve_spec
from deal_chains.runtime.calls import TOOL_CONTENT, prepare_call  # noqa: F401 - TOOL_CONTENT: its former home
from deal_chains.runtime.options import (
    CallRules,
    ModelDefaults,
    call_config,
    call_spec,
    check_call_options,
    read_call_options,
    search_overrides,
)

# settings of hosted chat models that mean nothing for a local one; accepted (and ignored)
# so code written for those runs unchanged
_HOSTED_ONLY = ("api_key", "base_url", "timeout", "max_retries")

_ADAPTERS: dict[tuple, ModelRuntime] = {}
_ADAPTERS_LOCK = threading.Lock()


def adapter_for(model: Any, device: str, dtype: Any, trust_remote_code: bool = False) -> ModelRuntime:
    """One adapter per model name (loaded models are shared by object)."""
    key = (model if isinstance(model, str) else id(model), device, str(dtype), bool(trust_remote_code))
    with _ADAPTERS_LOCK:
        adapter = _ADAPTERS.get(key)
        if adapter is None or (not isinstance(model, str) and adapter.model is not model):
            adapter = ModelRuntime(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
            _ADAPTERS[key] = adapter
        return adapter


# ---------------------------------------------------------------------------- batch plans

PLAN: ContextVar["Plan | None"] = ContextVar("deal_chains_batch_plan", default=None)


class Plan:
    """The calls of one ``batch``/``abatch``/``generate`` (or a ``with_reward_vars``
    batch): submitted together on the first claim (so they are one batched search), then
    handed to each per-input call by content. ``calls`` may hold None for an input that
    could not be prepared (its own call then reports the error)."""

    def __init__(self, owner: Any, calls: Sequence["Call | None"]):
        self.owner, self.calls = owner, list(calls)
        self.handles: list[Handle | None] | None = None
        self.claimed = [c is None for c in self.calls]
        self.lock = threading.Lock()

    def claim(self, owner: Any, call: "Call") -> Handle | None:
        if owner is not self.owner:
            return None
        with self.lock:
            if self.handles is None:
                self.handles = [None] * len(self.calls)
                by_adapter: dict[int, list[int]] = {}
                for i, c in enumerate(self.calls):
                    if c is not None:
                        by_adapter.setdefault(id(c.adapter), []).append(i)
                for idxs in by_adapter.values():
                    handles = self.calls[idxs[0]].adapter.submit([self.calls[i].request for i in idxs])
                    for i, h in zip(idxs, handles):
                        self.handles[i] = h
            for i, c in enumerate(self.calls):
                if not self.claimed[i] and c is not None and c.request.key == call.request.key:
                    self.claimed[i] = True
                    return self.handles[i]
        return None

    def submit(self, owner: Any, call: "Call") -> Handle:
        """The plan's handle for ``call``, or a new search of it."""
        handle = self.claim(owner, call)
        return handle if handle is not None else call.adapter.submit([call.request])[0]


def submit(owner: Any, call: "Call") -> Handle:
    plan = PLAN.get()
    return plan.submit(owner, call) if plan is not None else call.adapter.submit([call.request])[0]


@dataclass
class Call:
    """One prepared LangChain call."""

    adapter: ModelRuntime
    request: Request
    toolset: Any = None  # ToolSet for a tool-calling turn
    structured: bool = False
    source: Any = None  # what the call was prepared from: (messages, stop, kwargs)


class DeALParams(BaseModel):
    """Fields of the DeAL LangChain models (see ``ChatDeAL``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True,
                              protected_namespaces=())

    model: Any = Field("default", description="'default' (the embedded SmolLM2-135M-Instruct), a Hugging Face id, "
                       "a local directory, or an already loaded LoadedModel / DeALEngine")
    spec: Any = Field(None, description="reward spec: a YAML file path, YAML text, a preset name, a mapping or a "
                      "RewardSpec; None searches by log-probability alone")
    step: Optional[str] = Field(None, description="the step of a multi-step spec to use")
    reward_vars: dict[str, Any] = Field(default_factory=dict,
                                        description="default values of the spec's {variables} (per call: "
                                        ".bind(reward_vars=...) or with_reward_vars)")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', ...")
    dtype: Optional[str] = Field("auto", description="'auto', 'float32', 'bfloat16', ...")
    trust_remote_code: bool = Field(False, description="let transformers run the model repository's own code "
                                    "(only for a model whose code you trust)")
    search: dict[str, Any] = Field(default_factory=dict, description="search settings over the spec's")
    strategy: Optional[str] = None
    top_k: Optional[int] = None
    lookahead: Optional[int] = None
    beam: Optional[int] = None
    lam: Optional[float] = None
    commit: Optional[int] = None
    seed: Optional[int] = Field(None, description="seed of a sampled search; None (the default): a fresh "
                                "seed per request, reported in response_metadata['seed']")
    n: Optional[int] = Field(None, description="generations returned per prompt (as OpenAI's n): the n best "
                             "distinct answers of one search, best first (invoke returns the best). Samples of "
                             "best_of_n: search={'n': ...}")
    temperature: Optional[float] = Field(None, description="0: deterministic search; > 0 samples candidates")
    max_tokens: Optional[int] = Field(None, alias="max_new_tokens", description="token budget of an answer")
    stop: Optional[list[str]] = Field(None, description="stop sequences: the answer ends before the first one")
    streaming: bool = Field(False, description="stream through callbacks even when invoked")

    _spec_obj: Any = PrivateAttr(None)
    _config: Any = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _drop_hosted_settings(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(k in data for k in _HOSTED_ONLY):
            data = {k: v for k, v in data.items() if k not in _HOSTED_ONLY}
        if isinstance(data, dict) and "model_name" in data:
            # the partner packages' name for the model: the same field here
            if "model" in data and data["model"] != data["model_name"]:
                raise ValueError(f"model={data['model']!r} and model_name={data['model_name']!r} disagree; give one")
            data = {**{k: v for k, v in data.items() if k != "model_name"}, "model": data["model_name"]}
        if isinstance(data, dict) and "model_kwargs" in data:
            raise ValueError("model_kwargs is not used by deal-chains (the model is loaded locally): pass device=, "
                             "dtype= or trust_remote_code= for loading, and search settings (top_k=, lam=, "
                             "temperature=, max_tokens=, ...) or search={...} for decoding")
        return data

    def _setup(self) -> None:
        """Load and check the spec and the search settings (raises ``SpecError`` /
        ``ConfigError`` directly, not wrapped by pydantic)."""
        self._spec_obj = resolve_spec(self.spec, self.step)
        rules = CallRules(type(self).__name__)
        self._config = call_config(self._spec_obj, self._overrides({}, rules), rules)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy; with ``update``, the spec and search settings are loaded and checked
        again (pydantic's copy would keep the old ones)."""
        copy = super().model_copy(update=update, deep=deep)
        if update:
            copy._setup()
        return copy

    # ------------------------------------------------------------------ helpers
    @property
    def _adapter(self) -> ModelRuntime:
        return adapter_for(self.model, self.device, self.dtype, self.trust_remote_code)

    @property
    def _model_name(self) -> str:
        return self._adapter.model_name

    # shared by ChatDeAL and DeALLLM (super() is LangChain's BaseChatModel / BaseLLM)
    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "deal_chains"
        model = kwargs.get("model")
        params["ls_model_name"] = model if isinstance(model, str) else self._model_name
        if "ls_max_tokens" not in params and self._config is not None:
            params["ls_max_tokens"] = self._config.max_new_tokens
        if "ls_temperature" not in params and self._config is not None:
            params["ls_temperature"] = self._config.temperature
        if not stop and self.stop:
            params["ls_stop"] = self.stop
        return params

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` by the model's own tokenizer (LangChain's default would
        fetch GPT-2's from the network)."""
        return list(self._adapter.lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _defaults(self) -> ModelDefaults:
        """The model's own settings, as every call falls back to them."""
        own = {name: getattr(self, name, None) for name in SEARCH_FIELDS if name in type(self).model_fields}
        return ModelDefaults(spec=self.spec, step=self.step, loaded_spec=self._spec_obj, search=self.search,
                             fields={**own, "max_tokens": self.max_tokens}, reward_vars=self.reward_vars,
                             stop=self.stop)

    def _overrides(self, kwargs: Mapping[str, Any], rules: CallRules | None = None) -> dict[str, Any]:
        defaults = self._defaults()
        rules = rules or CallRules(type(self).__name__)
        return search_overrides(defaults.search, defaults.fields, kwargs, rules.n_field)

    def _resolve_call_spec(self, kwargs: Mapping[str, Any]) -> Any:
        return call_spec(self._defaults(), kwargs, CallRules(type(self).__name__))

    def _returns(self, kwargs: Mapping[str, Any]) -> int:
        """Generations a call with ``kwargs`` returns per prompt (``n``); 1 when the options
        are invalid (the call itself then reports them)."""
        rules = CallRules(type(self).__name__)
        try:
            return call_config(call_spec(self._defaults(), kwargs, rules), self._overrides(kwargs, rules),
                               rules).returns
        except Exception:
            return 1

    def _validate_binding(self, kwargs: dict[str, Any], where: str) -> dict[str, Any]:
        """Check per-call options now (``.bind``): a bad spec or search setting fails at
        bind time. A spec given as text is replaced by the loaded spec."""
        rules = CallRules(where)
        check_call_options(kwargs, rules)
        spec = call_spec(self._defaults(), kwargs, rules)
        if "spec" in kwargs or "step" in kwargs:
            kwargs = {**kwargs, "spec": spec}
            kwargs.pop("step", None)
        call_config(spec, self._overrides(kwargs, rules), rules)
        return kwargs

    def _prepare(self, messages: list[dict[str, str]], stop: Sequence[str] | None, kwargs: Mapping[str, Any],
                 toolset: Any = None, reply: bool = False) -> Call:
        """A ``Call`` for engine-format ``messages`` and the call's keyword arguments.
        ``reply``: a plain-text turn that must read as an answer for the user (after tool
        use: no tool-call syntax, no bare JSON value), unless the spec has its own hard
        constraint."""
        options = read_call_options(self._defaults(), kwargs, CallRules(type(self).__name__), stop=stop)
        adapter = adapter_for(options.model, self.device, self.dtype, self.trust_remote_code) \
            if options.model is not None else self._adapter
        prepared = prepare_call(adapter, messages, options, toolset, reply=reply)
        return Call(adapter=adapter, request=prepared.request, toolset=prepared.toolset,
                    structured=prepared.structured)
