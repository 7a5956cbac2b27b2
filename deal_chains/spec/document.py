"""The reward spec document (``RewardSpec``): version, model, search settings, system and prompt
templates, rewards, steps; building its rewards and hard constraint for one input record."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Mapping, Optional

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from deal_chains.errors import SpecError
from deal_chains.search.config import SearchConfig
from deal_chains.spec.entries.common import BuildContext, _error, _not_templated, _raise_all
from deal_chains.spec.entries.json_schema import _is_hard
from deal_chains.spec.entries.registry import REWARD_TYPES, RewardEntry, _entry_variables
from deal_chains.spec.source import FieldPath, SourceMap
from deal_chains.spec.templates import (
    TEXT,
    TemplateError,
    check_template,
    render_text,
    render_value,
    template_variables,
)

if TYPE_CHECKING:
    from deal_chains.search.constraints import GrammarConstraint
    from rewards.base import Reward


# --------------------------------------------------------------------------- the spec


def _given_search_fields(config: SearchConfig) -> dict[str, Any]:
    if config.fluency_prompt is not None:
        # the search reads it as written: a {name} there would reach the model unfilled
        _not_templated(config.fluency_prompt, "fluency_prompt")
    return config.model_dump(exclude_unset=True)


if TYPE_CHECKING:
    SearchSettings = dict[str, Any]
else:  # validated as a SearchConfig (field errors keep their paths), kept as the given keys
    SearchSettings = Annotated[
        SearchConfig, AfterValidator(_given_search_fields), PlainSerializer(dict, return_type=dict)
    ]

STEP_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"


class Example(BaseModel):
    """One demonstration of the task: a request's template variables and the answer wanted.

    >>> Example.model_validate({"input": {"concepts": ["oven", "bake"]},
    ...                         "output": "She bakes bread in the oven."}).output
    'She bakes bread in the oven.'
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    input: dict[str, Any] = Field(
        description="the template variables of the demonstrated request, filled into `prompt`")
    output: str = Field(min_length=1, description="the answer the model sees for it (used as written)")

    @field_validator("output")
    @classmethod
    def _check_output(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("an example's output must not be blank")
        return _not_templated(value, "an example's output")


class RewardSpec(BaseModel):
    """A validated reward spec.

    >>> spec = RewardSpec.model_validate({"rewards": [{"length": {"max_words": 20}}]})
    >>> spec.rewards[0].name, spec.search_config().strategy
    ('length', 'deal')

    A multi-step spec has ``steps`` (``step(name)`` gives each as a ``RewardSpec``) and
    nothing else of its own: the loader merges its shared settings into every step.
    """

    model_config = ConfigDict(extra="forbid", strict=True, title="deal-chains reward spec")

    version: int = Field(1, description="spec language version; only 1 exists")
    extends: Optional[str] = Field(
        None, min_length=1,
        description="a preset name or a spec file (relative to this one) to build on: its search, "
        "system, prompt and model are defaults for this spec's, its rewards come first. "
        "Resolved when the spec is loaded",
    )
    preset: Optional[str] = Field(
        None, min_length=1,
        description="a bundled preset to build on: short for extends: preset:NAME. Resolved when "
        "the spec is loaded",
    )
    model: Optional[str] = Field(
        None, min_length=1,
        description="'default' (the embedded model), a Hugging Face id or a local path",
    )
    search: SearchSettings = Field(
        default_factory=dict, description="search settings over the defaults (partial)"
    )
    system: Optional[str] = Field(None, description="system message template (start-state adaptation)")
    prompt: Optional[str] = Field(None, description="user message template")
    examples: list[Example] = Field(
        default_factory=list,
        description="few-shot demonstrations, shown before every request (after the system "
        "message): each is a user turn (`prompt` filled from its input) and its output as the "
        "assistant's reply",
    )
    rewards: list[RewardEntry] = Field(  # type: ignore[valid-type]
        default_factory=list,
        description="rewards summed with their weights (required unless inherited through "
        "extends, or given per step)",
    )
    replace_rewards: bool = Field(
        False, description="with extends, or in a step: use only this spec's rewards, not the "
        "base's (or the shared ones)",
    )
    steps: Optional[dict[str, "RewardSpec"]] = Field(
        None, description="per-step specs of a multi-step chain, by step name; the other top-level "
        "keys are shared defaults for every step",
    )

    _source: SourceMap = PrivateAttr(default_factory=SourceMap)
    _reuse: dict = PrivateAttr(default_factory=dict)
    _constraint: Any = PrivateAttr(None)

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"unsupported spec version {value}; this deal-chains reads version 1")
        return value

    @field_validator("extends", "preset")
    @classmethod
    def _check_extends(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            raise ValueError(f"{info.field_name} is resolved when a spec is loaded (load_spec, a spec "
                             "file); it cannot be set here")
        return value

    @field_validator("replace_rewards")
    @classmethod
    def _check_replace(cls, value: bool) -> bool:
        if value:
            raise ValueError("replace_rewards: true only applies to a spec that extends another, or to a "
                             "step (it leaves out the base's or the shared rewards)")
        return value

    @field_validator("system", "prompt")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str | None) -> str | None:
        return None if value is None or Path(value).exists() else _not_templated(value, "model")

    @field_validator("steps", mode="before")
    @classmethod
    def _check_step_names(cls, value: Any) -> Any:
        import re

        if isinstance(value, dict):
            if not value:
                raise ValueError("steps must name at least one step")
            for name in value:
                if not isinstance(name, str) or not re.fullmatch(STEP_NAME, name):
                    raise _error("spec_step_name", f"step name {name!r} must be letters, digits, _ and -, "
                                 "starting with a letter or _", str(name))
        return value

    @model_validator(mode="after")
    def _check_rewards(self) -> "RewardSpec":
        if self.steps is not None:
            for name, step in self.steps.items():
                if step.steps is not None:
                    raise _error("spec_nested_steps", "steps cannot be nested: a step is a single spec",
                                 f"steps.{name}.steps")
            return self
        errors = self._example_errors()
        if not self.rewards:
            errors.append(_error("spec_no_rewards", "missing required key 'rewards' (a list of rewards; or "
                                 "extends: a spec that has them)", "rewards"))
            _raise_all(errors, "deal-chains reward spec")
        seen: dict[str, int] = {}
        hard: int | None = None
        for i, entry in enumerate(self.rewards):
            if entry.name in seen:
                errors.append(PydanticCustomError(
                    "spec_duplicate_name", "rewards {first} and {second} are both named {name}; "
                    "give each a distinct 'name:'",
                    {"first": seen[entry.name], "second": i, "name": repr(entry.name),
                     "at": f"rewards.{i}"},
                ))
            else:
                seen[entry.name] = i
            if _is_hard(entry):
                if hard is not None:
                    errors.append(_error("spec_two_hard", f"rewards {hard} and {i} are both json_schema with "
                                         "mode: hard; a spec can have at most one hard constraint",
                                         f"rewards.{i}.json_schema.mode"))
                else:
                    hard = i
        _raise_all(errors, "deal-chains reward spec")
        return self

    def _example_errors(self) -> list[PydanticCustomError]:
        if not self.examples:
            return []
        if self.prompt is None:
            return [_error("spec_examples_need_prompt", "examples are shown as requests written with the "
                           "prompt template: add `prompt:`", "examples")]
        errors = []
        for i, example in enumerate(self.examples):
            try:
                render_text(self.prompt, example.input, TEXT)
            except TemplateError as exc:
                errors.append(_error("spec_example_input", f"prompt: {exc.message}", f"examples.{i}.input"))
        return errors

    # ----------------------------------------------------------------------- use

    @property
    def step_names(self) -> list[str]:
        """The names of the steps of a multi-step spec ([] for a single-step spec)."""
        return list(self.steps or ())

    def step(self, name: str) -> "RewardSpec":
        """The spec of step ``name`` of a multi-step spec (shared settings merged in).

        Raises ``SpecError`` listing the steps when there is no such step."""
        if not self.steps:
            raise SpecError([self._source.problem((), f"this spec has no steps (asked for step {name!r})")],
                            self._source.file)
        if name not in self.steps:
            raise SpecError([self._source.problem(("steps",), f"unknown step {name!r}; steps: "
                                                  f"{', '.join(self.steps)}", key=True)], self._source.file)
        step = self.steps[name]
        if step._source.file is None and not step._source.values:
            step._source = self._source.at(("steps", name))
        return step

    def _single(self, what: str) -> None:
        if self.steps:
            raise SpecError([self._source.problem(
                ("steps",), f"this spec has steps ({', '.join(self.steps)}); {what} one of them: "
                "spec.step(name), or deal-chains generate --step NAME", key=True)], self._source.file)

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
        """Every ``{name}`` the spec's templates use (nested rewards included): system,
        prompt, keywords words, regex patterns, judge questions (not the judge's own
        ``{text}`` and ``{prompt}``)."""
        names = template_variables([self.system or "", self.prompt or ""])
        for entry in self.rewards:
            names |= _entry_variables(entry)
        return names

    def render_system(self, variables: Mapping[str, Any]) -> str | None:
        """The system message with ``variables`` filled in (None if the spec has none)."""
        return self._render_text("system", self.system, variables)

    def render_prompt(self, variables: Mapping[str, Any]) -> str | None:
        """The user message with ``variables`` filled in (None if the spec has none)."""
        return self._render_text("prompt", self.prompt, variables)

    def example_turns(self) -> list[dict[str, str]]:
        """The examples as chat turns: for each, the prompt filled from its input (user) and
        its output (assistant). Every request made with this spec starts with them.

        >>> RewardSpec.model_validate({"prompt": "Use: {words}.", "rewards": [{"length": {"max_words": 9}}],
        ...     "examples": [{"input": {"words": ["oven", "bake"]}, "output": "I bake in the oven."}]}
        ... ).example_turns()[0]
        {'role': 'user', 'content': 'Use: oven, bake.'}
        """
        turns: list[dict[str, str]] = []
        for example in self.examples:
            turns.append({"role": "user", "content": self.render_prompt(example.input) or ""})
            turns.append({"role": "assistant", "content": example.output})
        return turns

    def with_examples(self, request: str) -> str | list[dict[str, str]]:
        """``request`` as the model gets it: alone, or after the example turns."""
        turns = self.example_turns()
        return [*turns, {"role": "user", "content": request}] if turns else request

    def _render_text(self, field: str, template: str | None, variables: Mapping[str, Any]) -> str | None:
        if template is None:
            return None
        try:
            return render_text(template, variables, TEXT)
        except TemplateError as exc:
            raise SpecError([self._source.problem((field,), exc.message)], self._source.file) from None

    def build_rewards(
        self, variables: Mapping[str, Any], count_tokens: Callable[[str], int] | None = None, *,
        lm: Any = None,
    ) -> list["Reward"]:
        """Construct the spec's rewards for one input, filling templates from ``variables``.

        ``count_tokens`` is passed to rewards that count tokens (``length`` with token
        bounds). ``lm`` is the generating model (an object with ``.model`` and
        ``.tokenizer``, e.g. ``DeALEngine.lm``), needed by ``judge`` (with ``model: null``)
        and ``harmless``. Costly rewards (``classifier``, ``reward_model``, ``judge``,
        ``harmless``, ``json_schema``) are built on the first call and the same objects
        are returned by every later call (for the same ``lm``). Raises ``SpecError``
        listing every unset variable and every reward that could not be built, each with
        its field path.
        """
        self._single("build the rewards of")
        rewards: list[Reward] = []
        problems: list[dict] = []
        for i, entry in enumerate(self.rewards):
            reward = self._build_entry(entry, ("rewards", i), variables, count_tokens, lm, problems)
            if reward is not None:
                rewards.append(reward)
        if problems:
            raise SpecError(problems, self._source.file)
        return rewards

    def _build_entry(self, entry: Any, path: FieldPath, variables: Mapping[str, Any],
                     count_tokens: Callable[[str], int] | None, lm: Any, problems: list[dict]) -> Any:
        rtype = REWARD_TYPES[entry.reward_type]
        ppath = path + (entry.reward_type,)
        params = {name: getattr(entry.params, name) for name in type(entry.params).model_fields}
        failed = False
        for param in rtype.templated:
            try:
                params[param] = render_value(params[param], variables, rtype.template_kind(param))
            except TemplateError as exc:
                problems.append(self._source.problem(ppath + (param,), exc.message))
                failed = True
        # a reused reward is shared while its filled-in templates stay the same (a judge
        # question with {topic} is rebuilt for a record with another topic)
        variant = repr([params[param] for param in rtype.templated]) if not failed else None
        if rtype.reuse and not failed:
            cached = self._reuse.get(path)
            if cached is not None and (not rtype.needs_lm or cached[0] is lm) and cached[1] == variant:
                return cached[2]
        for param in rtype.children:
            value = params[param]
            if isinstance(value, list):
                built = [self._build_entry(e, ppath + (param, j), variables, count_tokens, lm, problems)
                         for j, e in enumerate(value)]
                failed = failed or any(b is None for b in built)
            else:
                built = self._build_entry(value, ppath + (param,), variables, count_tokens, lm, problems)
                failed = failed or built is None
            params[param] = built
        if failed:
            return None
        ctx = BuildContext(weight=entry.weight, name=entry.name, terminal=entry.terminal, params=entry.params,
                           path=ppath, variables=variables, count_tokens=count_tokens, lm=lm)
        try:
            reward = rtype.build(params, ctx)
        except (ValueError, TypeError, LookupError, ImportError, OSError, RuntimeError) as exc:
            problems.append(self._source.problem(ppath, f"cannot build reward {entry.name!r}: {exc}"))
            return None
        if entry.on_error != "fail":
            from rewards.guard import Guarded

            reward = Guarded(reward, on_error=entry.on_error)
        if rtype.reuse:
            self._reuse[path] = (lm, variant, reward)
        return reward

    def build_constraint(self, variables: Mapping[str, Any] | None = None) -> "GrammarConstraint | None":
        """The hard constraint of the spec (from its ``json_schema`` entry with ``mode:
        hard``), or None. ``variables`` is accepted for symmetry with ``build_rewards``:
        schemas are static, so every input gets the same constraint."""
        self._single("build the constraint of")
        if self._constraint is None:
            for entry in self.rewards:
                if _is_hard(entry):
                    from deal_chains.search.constraints import GrammarConstraint

                    self._constraint = GrammarConstraint.json_schema(entry.params.loaded_schema)
                    break
            else:
                self._constraint = False
        return self._constraint or None
