"""Composite entries over nested rewards: ``all_of``, ``any_of``, ``threshold``, ``gated``,
``normalize``. Their ``"RewardEntry"`` fields resolve when the registry builds that model."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    model_validator,
)

from deal_chains.spec.entries.common import _STRICT, BuildContext, _error, _raise_all
from deal_chains.spec.entries.json_schema import _is_hard

if TYPE_CHECKING:
    from deal_chains.spec.entries.registry import RewardEntry
    from rewards.base import Reward


def _check_children(entries: list[tuple[str, Any]]) -> None:
    """Nested entries (with their dotted paths): distinct names, no hard constraint."""
    seen: dict[str, str] = {}
    errors = []
    for at, entry in entries:
        if _is_hard(entry):
            errors.append(_error("spec_nested_hard", "mode: hard is only allowed in a top-level reward (a "
                                 "hard constraint applies to the whole output); use mode: soft here",
                                 f"{at}.json_schema.mode"))
        if entry.name in seen:
            errors.append(_error("spec_duplicate_name", f"{seen[entry.name]} and {at} are both named "
                                 f"{entry.name!r}; give each a distinct 'name:'", at))
        else:
            seen[entry.name] = at
    _raise_all(errors, "rewards")


def _check_thresholds(value: Any) -> Any:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if number(value) or (isinstance(value, list) and value and all(number(v) for v in value)):
        return value
    raise ValueError(f"thresholds must be a number or a list of numbers, one per reward (got {value!r})")


class AllOfParams(BaseModel):
    """``all_of``: 1 when every nested reward meets its threshold, else the fraction that do."""

    model_config = _STRICT

    rewards: list["RewardEntry"] = Field(min_length=1, description="nested reward entries")  # type: ignore[name-defined]
    thresholds: Annotated[float | list[float], BeforeValidator(_check_thresholds)] = Field(
        1.0, description="one threshold for all, or one per nested reward")

    @model_validator(mode="after")
    def _check(self) -> "AllOfParams":
        _check_children([(f"rewards.{i}", e) for i, e in enumerate(self.rewards)])
        if isinstance(self.thresholds, list) and len(self.thresholds) != len(self.rewards):
            raise _error("spec_thresholds", f"{len(self.thresholds)} thresholds for {len(self.rewards)} "
                         "rewards; give one per reward or a single number", "thresholds")
        return self


class AnyOfParams(AllOfParams):
    """``any_of``: 1 when some nested reward meets its threshold, else the best one's progress
    towards it."""


class ThresholdParams(BaseModel):
    """``threshold``: 1 when the nested reward scores at least ``min``, else 0 (``soft``:
    score / min)."""

    model_config = _STRICT

    reward: "RewardEntry" = Field(description="the reward entry to test")  # type: ignore[name-defined]
    min: float = Field(allow_inf_nan=False, description="the score to reach")
    soft: bool = Field(False, description="partial credit below min (needs min > 0)")

    @model_validator(mode="after")
    def _check(self) -> "ThresholdParams":
        _check_children([("reward", self.reward)])
        if self.soft and self.min <= 0:
            raise _error("spec_threshold_min", f"soft: true needs min > 0 (got {self.min})", "min")
        return self


class GatedParams(BaseModel):
    """``gated``: the nested ``reward``'s score where ``gate`` scores at least ``threshold``,
    else the reward's minimum."""

    model_config = _STRICT

    gate: "RewardEntry" = Field(  # type: ignore[name-defined]
        description="the reward entry that must pass first")
    reward: "RewardEntry" = Field(  # type: ignore[name-defined]
        description="the reward entry scored once the gate opens")
    threshold: float = Field(1.0, allow_inf_nan=False, description="the gate score that opens the gate")

    @model_validator(mode="after")
    def _check(self) -> "GatedParams":
        _check_children([("gate", self.gate), ("reward", self.reward)])
        return self


class NormalizeParams(BaseModel):
    """``normalize``: rescale the nested reward's range [lo, hi] to [0, 1]."""

    model_config = _STRICT

    reward: "RewardEntry" = Field(description="the reward entry to rescale")  # type: ignore[name-defined]
    lo: float = Field(allow_inf_nan=False, description="the nested score that maps to 0")
    hi: float = Field(allow_inf_nan=False, description="the nested score that maps to 1 (must exceed lo)")
    clip: bool = Field(True, description="clip the result to [0, 1]")

    @model_validator(mode="after")
    def _check(self) -> "NormalizeParams":
        _check_children([("reward", self.reward)])
        if not self.lo < self.hi:
            raise _error("spec_range", f"lo ({self.lo}) must be less than hi ({self.hi})", "hi")
        return self


def _build_all_of(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    from rewards.compose import AllOf

    return AllOf(params["rewards"], params["thresholds"], name=ctx.name, weight=ctx.weight,
                 terminal=ctx.composite_terminal)


def _build_any_of(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    from rewards.compose import AnyOf

    return AnyOf(params["rewards"], params["thresholds"], name=ctx.name, weight=ctx.weight,
                 terminal=ctx.composite_terminal)


def _build_threshold(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    from rewards.compose import Threshold

    return Threshold(params["reward"], params["min"], soft=params["soft"], name=ctx.name, weight=ctx.weight,
                     terminal=ctx.composite_terminal)


def _build_gated(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    from rewards.compose import Gated

    return Gated(params["gate"], params["reward"], params["threshold"], name=ctx.name, weight=ctx.weight,
                 terminal=ctx.composite_terminal)


def _build_normalize(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    from rewards.compose import Normalized

    return Normalized(params["reward"], params["lo"], params["hi"], clip=params["clip"], name=ctx.name,
                      weight=ctx.weight, terminal=ctx.composite_terminal)
