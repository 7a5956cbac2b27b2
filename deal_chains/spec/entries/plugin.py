"""The ``plugin`` entry: a reward from an installed entry point, by name (never code named in YAML)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    Field,
    field_validator,
)

from deal_chains.spec.entries.common import _STRICT, BuildContext

if TYPE_CHECKING:
    from rewards.base import Reward


class PluginParams(BaseModel):
    """``plugin``: a reward from an installed package's ``deal_chains.rewards`` entry point,
    found by name (a spec never names code or an import path)."""

    model_config = _STRICT

    name: str = Field(min_length=1, description="the plugin's entry-point name")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the plugin")

    @field_validator("name")
    @classmethod
    def _installed(cls, value: str) -> str:
        from rewards.callable import PLUGIN_GROUP, available_plugins

        installed = available_plugins()
        if value in installed:
            return value
        if installed:
            msg = f"unknown reward plugin {value!r}; installed plugins: {', '.join(installed)}"
        else:
            msg = (f"unknown reward plugin {value!r}: no reward plugins are installed (a plugin is a "
                   f"package with an entry point in the group {PLUGIN_GROUP!r})")
        if any(c in value for c in ".:/"):
            msg += "; plugins are found by entry-point name only, never imported from a path"
        raise ValueError(msg)


def _build_plugin(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    from rewards.callable import load_plugin

    return load_plugin(params["name"], params["params"], weight=ctx.weight, reward_name=ctx.name,
                       terminal=ctx.composite_terminal)
