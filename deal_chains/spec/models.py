"""The reward-spec language, v1, as pydantic models (``extra="forbid"`` everywhere).

A reward type plugs in with one ``REWARD_TYPES`` entry: its parameter model, a builder
that turns rendered parameters into a reward, and the parameters that are templates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Callable, Mapping, NamedTuple, Optional

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from deal_chains.errors import SpecError
from deal_chains.search.config import SearchConfig
from deal_chains.spec.source import FieldPath, SourceMap
from deal_chains.spec.templates import (
    MissingVariable,
    check_template,
    render_text,
    render_value,
    split_words,
    template_variables,
)

if TYPE_CHECKING:
    from rewards.base import Reward

_STRICT = ConfigDict(extra="forbid")

# --------------------------------------------------------------------------- parameters


def _check_words(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("words must not be empty")
        return check_template(value)
    if isinstance(value, list):
        if not value:
            raise ValueError("words must list at least one word")
        for i, word in enumerate(value):
            if not isinstance(word, str):
                raise ValueError(f"word {i} must be a string (got {word!r}; quote it in YAML)")
            check_template(word)
        return value
    raise ValueError(
        "words must be a list such as [dog, cat], a comma-separated string "
        f"or a template such as '{{concepts}}' (got {value!r})"
    )


def _check_inflections(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, dict):
        for word, forms in value.items():
            if not isinstance(forms, list) or not all(isinstance(f, str) for f in forms):
                raise ValueError(f"the forms of {word!r} must be a list of strings (got {forms!r})")
        return value
    raise ValueError(
        f"inflections must be true, false or a mapping from a word to its forms (got {value!r})"
    )


class KeywordsParams(BaseModel):
    """``keywords``: reward the fraction of ``words`` the text uses."""

    model_config = _STRICT

    words: Annotated[str | list[str], BeforeValidator(_check_words)] = Field(
        description="words to cover: a list, a comma-separated string or a template "
        "such as '{concepts}' (a list variable)",
    )
    inflections: Annotated[bool | dict[str, list[str]], BeforeValidator(_check_inflections)] = Field(
        True, description="accept inflected forms (true), exact words only (false), or "
        "explicit forms per word",
    )


class LengthParams(BaseModel):
    """``length``: reward a text whose length lies within the bounds."""

    model_config = _STRICT

    min_words: int | None = Field(None, ge=0)
    max_words: int | None = Field(None, ge=0)
    min_tokens: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check_bounds(self) -> "LengthParams":
        if all(v is None for v in (self.min_words, self.max_words, self.min_tokens, self.max_tokens)):
            raise ValueError("give at least one of min_words, max_words, min_tokens, max_tokens")
        for unit in ("words", "tokens"):
            lo, hi = getattr(self, f"min_{unit}"), getattr(self, f"max_{unit}")
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"min_{unit} ({lo}) is larger than max_{unit} ({hi})")
        return self


# --------------------------------------------------------------------------- builders


def _build_keywords(params: dict[str, Any], *, weight: float, name: str, terminal: bool,
                    count_tokens: Callable[[str], int] | None) -> "Reward":
    from rewards.keywords import KeywordCoverage

    words = params["words"]
    if isinstance(words, str):
        words = split_words(words)
    else:  # element-wise rendering may have produced nested lists or comma strings
        flat: list[str] = []
        for item in words:
            flat.extend(str(w).strip() for w in (item if isinstance(item, list) else [item]))
        words = [w for w in flat if w]
    if not words:
        raise ValueError("no words to cover after filling the template")
    return KeywordCoverage(words, inflections=params["inflections"], weight=weight, name=name,
                           terminal=terminal)


def _build_length(params: dict[str, Any], *, weight: float, name: str, terminal: bool,
                  count_tokens: Callable[[str], int] | None) -> "Reward":
    from rewards.length import LengthReward

    return LengthReward(**params, count_tokens=count_tokens, weight=weight, name=name,
                        terminal=terminal)


class RewardType(NamedTuple):
    """A registered reward type: parameter model, builder, templated parameter names and
    an example of its parameters (for error messages)."""

    params: type[BaseModel]
    build: Callable[..., "Reward"]
    templated: tuple[str, ...] = ()
    example: str = "{...}"


REWARD_TYPES: dict[str, RewardType] = {
    "keywords": RewardType(KeywordsParams, _build_keywords, templated=("words",),
                           example="{words: [dog, cat]}"),
    "length": RewardType(LengthParams, _build_length, example="{max_words: 20}"),
}
_COMMON_KEYS = ("weight", "name", "terminal")


# --------------------------------------------------------------------------- entries


def _entry_schema(schema: dict[str, Any]) -> None:
    schema["oneOf"] = [{"required": [t]} for t in REWARD_TYPES]


class _RewardEntryBase(BaseModel):
    """One reward: exactly one reward-type key plus ``weight``, ``name``, ``terminal``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_entry_schema)

    weight: float = Field(1.0, allow_inf_nan=False, description="weight of this reward in the sum")
    name: Optional[str] = Field(None, min_length=1, description="default: the reward type")
    terminal: bool = Field(False, description="score only finished texts")

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

    @model_validator(mode="after")
    def _default_name(self) -> "_RewardEntryBase":
        if self.name is None:
            self.name = self.reward_type
        return self

    @property
    def reward_type(self) -> str:
        """The entry's reward type key, e.g. ``"keywords"``."""
        return next(t for t in REWARD_TYPES if getattr(self, t, None) is not None)

    @property
    def params(self) -> BaseModel:
        """The validated parameters of the entry's reward type."""
        return getattr(self, self.reward_type)


RewardEntry = create_model(  # one optional field per registered reward type
    "RewardEntry",
    __base__=_RewardEntryBase,
    __module__=__name__,
    **{t: (Optional[rt.params], Field(None, description=rt.params.__doc__))
       for t, rt in REWARD_TYPES.items()},  # type: ignore[call-overload]
)


# --------------------------------------------------------------------------- the spec


def _given_search_fields(config: SearchConfig) -> dict[str, Any]:
    return config.model_dump(exclude_unset=True)


if TYPE_CHECKING:
    SearchSettings = dict[str, Any]
else:  # validated as a SearchConfig (field errors keep their paths), kept as the given keys
    SearchSettings = Annotated[
        SearchConfig, AfterValidator(_given_search_fields), PlainSerializer(dict, return_type=dict)
    ]


class RewardSpec(BaseModel):
    """A validated reward spec.

    >>> spec = RewardSpec.model_validate({"rewards": [{"length": {"max_words": 20}}]})
    >>> spec.rewards[0].name, spec.search_config().strategy
    ('length', 'deal')
    """

    model_config = ConfigDict(extra="forbid", title="deal-chains reward spec")

    version: int = Field(1, description="spec language version; only 1 exists")
    model: Optional[str] = Field(
        None, min_length=1,
        description="'default' (the embedded model), a Hugging Face id or a local path",
    )
    search: SearchSettings = Field(
        default_factory=dict, description="search settings over the defaults (partial)"
    )
    system: Optional[str] = Field(None, description="system message template (start-state adaptation)")
    prompt: Optional[str] = Field(None, description="user message template")
    rewards: list[RewardEntry] = Field(min_length=1, description="rewards summed with their weights")  # type: ignore[valid-type]

    _source: SourceMap = PrivateAttr(default_factory=SourceMap)

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"unsupported spec version {value}; this deal-chains reads version 1")
        return value

    @field_validator("system", "prompt")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @model_validator(mode="after")
    def _unique_names(self) -> "RewardSpec":
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.rewards):
            if entry.name in seen:
                raise PydanticCustomError(
                    "spec_duplicate_name", "rewards {first} and {second} are both named {name}; "
                    "give each a distinct 'name:'",
                    {"first": seen[entry.name], "second": i, "name": repr(entry.name),
                     "at": f"rewards.{i}"},
                )
            seen[entry.name] = i
        return self

    # ----------------------------------------------------------------------- use

    def search_config(self, **overrides: Any) -> SearchConfig:
        """The spec's search settings over the defaults, then ``overrides`` (``None``
        values are ignored). Raises ``ConfigError`` if the result is invalid.

        >>> RewardSpec.model_validate({"search": {"top_k": 4},
        ...     "rewards": [{"length": {"max_words": 9}}]}).search_config(beam=1).top_k
        4
        """
        values = dict(self.search)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return SearchConfig.build(**values)

    def variables(self) -> set[str]:
        """Every ``{name}`` the spec's templates use."""
        names = template_variables([self.system or "", self.prompt or ""])
        for entry in self.rewards:
            for param in REWARD_TYPES[entry.reward_type].templated:
                names |= template_variables(getattr(entry.params, param))
        return names

    def render_system(self, variables: Mapping[str, Any]) -> str | None:
        """The system message with ``variables`` filled in (None if the spec has none)."""
        return self._render_text("system", self.system, variables)

    def render_prompt(self, variables: Mapping[str, Any]) -> str | None:
        """The user message with ``variables`` filled in (None if the spec has none)."""
        return self._render_text("prompt", self.prompt, variables)

    def _render_text(self, field: str, template: str | None, variables: Mapping[str, Any]) -> str | None:
        if template is None:
            return None
        try:
            return render_text(template, variables)
        except MissingVariable as exc:
            raise SpecError([self._source.problem((field,), exc.message)], self._source.file) from None

    def build_rewards(
        self, variables: Mapping[str, Any], count_tokens: Callable[[str], int] | None = None
    ) -> list["Reward"]:
        """Construct the spec's rewards for one input, filling templates from ``variables``.

        ``count_tokens`` is passed to rewards that count tokens (``length`` with token
        bounds). Raises ``SpecError`` listing every unset variable and every reward
        that could not be built, each with its field path.
        """
        rewards: list[Reward] = []
        problems: list[dict] = []
        for i, entry in enumerate(self.rewards):
            rtype = REWARD_TYPES[entry.reward_type]
            path: FieldPath = ("rewards", i, entry.reward_type)
            params = entry.params.model_dump()
            failed = False
            for param in rtype.templated:
                try:
                    params[param] = render_value(params[param], variables)
                except MissingVariable as exc:
                    problems.append(self._source.problem(path + (param,), exc.message))
                    failed = True
            if failed:
                continue
            try:
                rewards.append(rtype.build(params, weight=entry.weight, name=entry.name,
                                           terminal=entry.terminal, count_tokens=count_tokens))
            except (ValueError, TypeError) as exc:
                problems.append(self._source.problem(
                    path, f"cannot build reward {entry.name!r}: {exc}"))
        if problems:
            raise SpecError(problems, self._source.file)
        return rewards
