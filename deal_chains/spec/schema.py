"""The JSON Schema of the reward-spec language (``deal-chains spec schema``; the repository
keeps a copy in ``spec-schema.json``)."""

from __future__ import annotations

from typing import Any

from deal_chains.spec.document import RewardSpec


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) a reward-spec YAML file must satisfy.

    >>> spec_json_schema()["title"]
    'deal-chains reward spec'

    ``search`` lists every ``SearchConfig`` field; all are optional in a spec. Template
    strings (``system``, ``prompt``, ``keywords.words``, ``regex`` patterns,
    ``judge.question``) may use ``{name}`` placeholders.
    Reward entries nest (composition); a step of ``steps`` is a spec itself.
    """
    schema = RewardSpec.model_json_schema()
    defs = schema.pop("$defs", {})
    if "$ref" in schema:  # a recursive root (steps): a copy of its definition at the top
        name = schema.pop("$ref").rsplit("/", 1)[-1]
        schema = {**defs[name], **schema}
    out: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    out["title"] = "deal-chains reward spec"
    out["description"] = (
        "A deal-chains reward spec, version 1: the search settings, optional system and "
        "user message templates with {name} placeholders, and the rewards the search "
        "maximises (each entry has exactly one reward type key plus weight, name, terminal; "
        "all_of, any_of, threshold, gated and normalize nest entries). A spec may extend a "
        "preset or another file, and may instead hold per-step specs under steps (its other "
        "keys are then shared defaults)."
    )
    # the top level needs rewards of its own, inherited ones, or steps (a step may get all
    # of its rewards from the shared ones, so this holds at the top level only)
    out["anyOf"] = [{"required": ["rewards"]}, {"required": ["extends"]}, {"required": ["preset"]},
                    {"required": ["steps"]}]
    if defs:
        out["$defs"] = defs
    return out
