"""The JSON Schema of the reward-spec language (``deal-chains spec schema``)."""

from __future__ import annotations

from typing import Any

from deal_chains.spec.models import RewardSpec


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) a reward-spec YAML file must satisfy.

    >>> spec_json_schema()["title"]
    'deal-chains reward spec'

    ``search`` lists every ``SearchConfig`` field; all are optional in a spec. Template
    strings (``system``, ``prompt``, ``keywords.words``) may use ``{name}`` placeholders.
    """
    schema = RewardSpec.model_json_schema()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    schema["title"] = "deal-chains reward spec"
    schema["description"] = (
        "A deal-chains reward spec, version 1: the search settings, optional system and "
        "user message templates with {name} placeholders, and the rewards the search "
        "maximises (each entry has exactly one reward type key plus weight, name, terminal)."
    )
    return schema
