"""The YAML reward-spec language (v1): what to reward, how to search, how to prompt.

>>> from deal_chains.spec import load_spec
>>> spec = load_spec("rewards: [{keywords: {words: '{concepts}'}}]")
>>> sorted(spec.variables())
['concepts']
"""

from deal_chains.spec.document import RewardSpec
from deal_chains.spec.entries.registry import REWARD_TYPES, RewardEntry, RewardType
from deal_chains.spec.loader import apply_overrides, list_presets, load_spec, preset_path
from deal_chains.spec.schema import spec_json_schema
from deal_chains.spec.templates import render_template

__all__ = [
    "REWARD_TYPES",
    "RewardEntry",
    "RewardSpec",
    "RewardType",
    "apply_overrides",
    "list_presets",
    "load_spec",
    "preset_path",
    "render_template",
    "spec_json_schema",
]
