"""Requests and outcomes: one prepared generation (messages, rewards, search config, constraint,
stop sequences), checked in the caller's thread before any search runs, and what comes back."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from deal_chains.errors import InputError, SpecError
from deal_chains.search.config import SearchConfig

# search knobs a caller may override per call, besides a whole ``search`` mapping
SEARCH_FIELDS: tuple[str, ...] = tuple(SearchConfig.model_fields)


def resolve_spec(spec: Any, step: str | None = None) -> Any:
    """A ``RewardSpec`` from a path, YAML text, preset name, mapping or spec object (or None).

    Raises ``SpecError`` (file, line, field) for an invalid spec, and for a multi-step spec
    given without ``step``."""
    if spec is None:
        if step is not None:
            raise SpecError(f"step {step!r} given without a spec")
        return None
    from deal_chains.spec import RewardSpec, load_spec

    if isinstance(spec, RewardSpec):
        loaded = spec
    elif isinstance(spec, (str, os.PathLike, Mapping)):
        loaded = load_spec(Path(spec) if isinstance(spec, os.PathLike) else spec)
    else:
        raise SpecError(f"a spec must be a file path, YAML text, a preset name, a mapping or a RewardSpec "
                        f"(got {type(spec).__name__})")
    if step is not None:
        return loaded.step(step)
    if loaded.steps:
        raise SpecError(f"the spec has steps ({', '.join(loaded.step_names)}); choose one with step=NAME")
    return loaded


def search_config(spec: Any, overrides: Mapping[str, Any]) -> SearchConfig:
    """The spec's search settings (or the defaults) with ``overrides`` (None values ignored)."""
    unknown = sorted(set(overrides) - set(SEARCH_FIELDS))
    if unknown:
        raise InputError(f"unknown search setting(s) {', '.join(unknown)}; known: {', '.join(SEARCH_FIELDS)}")
    if spec is not None:
        return spec.search_config(**overrides)
    return SearchConfig.build(**{k: v for k, v in overrides.items() if v is not None})


@dataclass
class Request:
    """One prepared generation (see the module docstring)."""

    messages: list[dict[str, str]]
    rewards: list[Any]
    context: Any
    config: SearchConfig
    constraint: Any = None
    stop: tuple[str, ...] = ()
    prompt_tokens: int = 0
    key: str = ""

    @property
    def config_key(self) -> str:
        return self.config.model_dump_json()


@dataclass
class Outcome:
    """A finished request: the text (cut at a stop sequence if one was generated) and the
    engine's ``GenerationResult``. ``alternatives`` (``SearchConfig.returns`` > 1): the
    outcomes of the result's next best answers, best first, each cut at the stop sequences
    the same way (an answer whose cut text repeats an earlier one's is left out)."""

    text: str
    result: Any
    prompt_tokens: int
    finish_reason: str  # "stop" (end of answer or stop sequence) | "length" | "cancelled"
    model_name: str
    stop_sequence: str | None = None
    alternatives: list["Outcome"] = field(default_factory=list)

    def usage(self) -> dict[str, int]:
        out = len(self.result.token_ids)
        return {"input_tokens": self.prompt_tokens, "output_tokens": out, "total_tokens": self.prompt_tokens + out}

    def metadata(self) -> dict[str, Any]:
        """Reward breakdown, total reward and score, strategy, search statistics and, for a
        sampled search, the seed it used (pass it back as ``seed`` to reproduce the answer)."""
        r = self.result
        meta: dict[str, Any] = {
            "model_name": self.model_name, "finish_reason": self.finish_reason,
            "rewards": dict(r.rewards), "reward": r.reward, "score": r.score, "logprob": r.logprob,
            "strategy": r.strategy, "stats": r.stats.as_dict(),
        }
        seed = getattr(r, "seed", None)
        if seed is None:
            seed = getattr(r.stats, "seed", None)
        if seed is not None:
            meta["seed"] = seed
        if self.stop_sequence is not None:
            meta["stop_sequence"] = self.stop_sequence
        if getattr(r, "closed_by", None):
            meta["closed_by"] = r.closed_by  # valid JSON, but a limit closed a value in it
        return meta


class CancelledRequest(InputError):
    """The caller abandoned the request (a cancelled task or a closed stream)."""


def is_spec(obj: Any) -> bool:
    from deal_chains.spec import RewardSpec

    return isinstance(obj, RewardSpec)


def spec_key(spec: Any) -> Any:
    """What identifies a spec's effect on a request: its content."""
    if spec is None:
        return None
    try:
        return spec.model_dump_json()
    except Exception:  # a spec holding something pydantic cannot serialise: fall back to identity
        return f"id:{id(spec)}"
