"""The reward-type registry and the ``RewardEntry`` model: one optional field per registered type,
exactly one of them set.

A reward type plugs in with one ``REWARD_TYPES`` entry: its parameter model (whose
docstring is its description), a builder that turns rendered parameters into a reward,
the parameters that are templates, those that hold nested reward entries (composition),
and whether the reward is built once per spec and shared by every input record
(``reuse``: models, classifiers, compiled schemas).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from deal_chains.spec.entries.common import (
    PATTERN_TEMPLATE,
    QUESTION_TEMPLATE,
    WORDS_TEMPLATE,
    RewardType,
    _not_templated,
)
from deal_chains.spec.entries.compose import (
    AllOfParams,
    AnyOfParams,
    GatedParams,
    NormalizeParams,
    ThresholdParams,
    _build_all_of,
    _build_any_of,
    _build_gated,
    _build_normalize,
    _build_threshold,
)
from deal_chains.spec.entries.json_schema import JsonSchemaParams, _build_json_schema
from deal_chains.spec.entries.model_backed import (
    ClassifierParams,
    HarmlessParams,
    JudgeParams,
    RewardModelParams,
    _build_classifier,
    _build_harmless,
    _build_judge,
    _build_reward_model,
)
from deal_chains.spec.entries.plugin import PluginParams, _build_plugin
from deal_chains.spec.entries.text import (
    KeywordsParams,
    LengthParams,
    RegexParams,
    _build_keywords,
    _build_length,
    _build_regex,
)
from deal_chains.spec.source import FieldPath
from deal_chains.spec.templates import (
    template_variables,
)

if TYPE_CHECKING:
    pass


REWARD_TYPES: dict[str, RewardType] = {
    "keywords": RewardType(KeywordsParams, _build_keywords, templated=("words",),
                           example="{words: [dog, cat]}", template_kinds={"words": WORDS_TEMPLATE}),
    "length": RewardType(LengthParams, _build_length, example="{max_words: 20}"),
    "regex": RewardType(RegexParams, _build_regex, templated=("must_match", "must_not_match"),
                        example="{must_match: '^[A-Z]'}",
                        template_kinds={"must_match": PATTERN_TEMPLATE, "must_not_match": PATTERN_TEMPLATE}),
    "json_schema": RewardType(JsonSchemaParams, _build_json_schema, example="{schema_file: order.schema.json}",
                              reuse=True, files=("schema_file",)),
    "classifier": RewardType(ClassifierParams, _build_classifier,
                             example="{model: ./toxicity-model, label: toxic, goal: minimize}",
                             reuse=True, models=("model",)),
    "reward_model": RewardType(RewardModelParams, _build_reward_model, example="{model: ./reward-model}",
                               reuse=True, models=("model",)),
    "judge": RewardType(JudgeParams, _build_judge, templated=("question",),
                        example="{question: 'Is this polite? {text}'}", reuse=True, needs_lm=True,
                        models=("model",), template_kinds={"question": QUESTION_TEMPLATE}),
    "harmless": RewardType(HarmlessParams, _build_harmless, example="{}", reuse=True, needs_lm=True,
                           files=("head",)),
    "plugin": RewardType(PluginParams, _build_plugin, example="{name: toxicity, params: {}}"),
    "all_of": RewardType(AllOfParams, _build_all_of, example="{rewards: [...]}", children=("rewards",)),
    "any_of": RewardType(AnyOfParams, _build_any_of, example="{rewards: [...]}", children=("rewards",)),
    "threshold": RewardType(ThresholdParams, _build_threshold, example="{reward: {...}, min: 0.5}",
                            children=("reward",)),
    "gated": RewardType(GatedParams, _build_gated, example="{gate: {...}, reward: {...}}",
                        children=("gate", "reward")),
    "normalize": RewardType(NormalizeParams, _build_normalize, example="{reward: {...}, lo: -4, hi: 4}",
                            children=("reward",)),
}
_COMMON_KEYS = ("weight", "name", "terminal", "on_error")


# --------------------------------------------------------------------------- entries


def _entry_schema(schema: dict[str, Any]) -> None:
    schema["oneOf"] = [{"required": [t]} for t in REWARD_TYPES]


class _RewardEntryBase(BaseModel):
    """One reward: exactly one reward-type key plus ``weight``, ``name``, ``terminal``."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_entry_schema)

    weight: float = Field(1.0, allow_inf_nan=False, description="weight of this reward in the sum")
    name: Optional[str] = Field(None, min_length=1, description="default: the reward type "
                                "(for a plugin: the plugin's name)")
    terminal: bool = Field(False, description="score only finished texts")
    on_error: Literal["fail", "zero", "skip"] = Field(
        "fail", description="when the reward raises or returns a bad score: fail (stop, naming the "
        "reward), zero (score 0 where it fails, go on), skip (switch it off for the rest of the run)")

    @model_validator(mode="before")
    @classmethod
    def _one_type(cls, data: Any) -> Any:
        known = ", ".join(REWARD_TYPES)
        if not isinstance(data, dict):
            raise PydanticCustomError(
                "spec_reward_entry", "a reward entry must be a mapping with one reward type "
                "key ({known}), e.g. '- length: {max_words: 20}' (got {got})",
                {"known": known, "got": repr(data)},
            )
        present = [k for k in data if k in REWARD_TYPES]
        types = [k for k in present if data[k] is not None]  # model_dump() writes None for the others
        if present and not types:
            raise PydanticCustomError(
                "spec_reward_params", "reward type {key} needs its parameters as a mapping, "
                "e.g. '{key}: {example}'", {"key": present[0], "at": str(present[0]),
                "example": REWARD_TYPES[present[0]].example},
            )
        unknown = [k for k in data if k not in REWARD_TYPES and k not in _COMMON_KEYS]
        if len(types) > 1:
            raise PydanticCustomError(
                "spec_two_reward_types", "one reward entry has two reward types ({types}); "
                "write each as its own list item", {"types": " and ".join(types), "at": str(types[1])},
            )
        if not types and unknown:
            raise PydanticCustomError(
                "spec_unknown_reward_type", "unknown reward type {key}; known types: {known}",
                {"key": repr(unknown[0]), "known": known, "at": str(unknown[0])},
            )
        if not types:
            raise PydanticCustomError(
                "spec_no_reward_type", "a reward entry needs one reward type key ({known})",
                {"known": known},
            )
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        return None if value is None else _not_templated(value, "name")

    @model_validator(mode="after")
    def _default_name(self) -> "_RewardEntryBase":
        if self.name is None:
            self.name = self.params.name if self.reward_type == "plugin" else self.reward_type  # type: ignore[attr-defined]
        return self

    @property
    def reward_type(self) -> str:
        """The entry's reward type key, e.g. ``"keywords"``."""
        return next(t for t in REWARD_TYPES if getattr(self, t, None) is not None)

    @property
    def params(self) -> BaseModel:
        """The validated parameters of the entry's reward type."""
        return getattr(self, self.reward_type)

    def children(self) -> list[tuple[FieldPath, Any]]:
        """The nested entries, with their paths relative to this entry."""
        out: list[tuple[FieldPath, Any]] = []
        for param in REWARD_TYPES[self.reward_type].children:
            value = getattr(self.params, param)
            if isinstance(value, list):
                out.extend(((self.reward_type, param, i), e) for i, e in enumerate(value))
            else:
                out.append(((self.reward_type, param), value))
        return out


RewardEntry = create_model(  # one optional field per registered reward type
    "RewardEntry",
    __base__=_RewardEntryBase,
    __module__=__name__,
    **{t: (Optional[rt.params], Field(None, description=" ".join((rt.params.__doc__ or "").split())))
       for t, rt in REWARD_TYPES.items()},  # type: ignore[call-overload]
)
for _rt in REWARD_TYPES.values():
    if _rt.children:
        _rt.params.model_rebuild(_types_namespace={"RewardEntry": RewardEntry})
RewardEntry.model_rebuild()


def _entry_variables(entry: Any) -> set[str]:
    rtype = REWARD_TYPES[entry.reward_type]
    names: set[str] = set()
    for param in rtype.templated:
        names |= template_variables(getattr(entry.params, param), rtype.template_kind(param))
    for _, child in entry.children():
        names |= _entry_variables(child)
    return names
