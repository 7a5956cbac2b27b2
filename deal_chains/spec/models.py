"""The reward-spec language, v1, as pydantic models (``extra="forbid"`` everywhere).

A reward type plugs in with one ``REWARD_TYPES`` entry: its parameter model (whose
docstring is its description), a builder that turns rendered parameters into a reward,
the parameters that are templates, those that hold nested reward entries (composition),
and whether the reward is built once per spec and shared by every input record
(``reuse``: models, classifiers, compiled schemas).
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, Mapping, NamedTuple, Optional

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from deal_chains.errors import SpecError
from deal_chains.search.config import SearchConfig
from deal_chains.spec.source import FieldPath, SourceMap, dotted
from deal_chains.spec.templates import (
    GENERIC,
    TEXT,
    Placeholder,
    TemplateError,
    TemplateKind,
    check_template,
    parse_template,
    placeholder_like,
    render_text,
    render_value,
    split_words,
    template_variables,
)

if TYPE_CHECKING:
    from deal_chains.search.constraints import GrammarConstraint
    from rewards.base import Reward

# strict: a spec's values keep their YAML types. Without it pydantic would turn ``true``
# into 1, ``"4"`` into 4 and ``"yes"`` into True, silently running another setting than
# the one written. Floats still take ints (``weight: 2``).
_STRICT = ConfigDict(extra="forbid", strict=True)
MAX_SCHEMA_BYTES = 1 << 20  # a schema_file, like a spec, is at most 1 MiB

# --------------------------------------------------------------------------- parameters


def _check_words(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("words must not be empty")
        check_template(value)
        if not template_variables(value) and not split_words(value):  # e.g. ",,"
            raise ValueError("words must list at least one non-empty word")
        return value
    if isinstance(value, list):
        if not value:
            raise ValueError("words must list at least one word")
        for i, word in enumerate(value):
            if not isinstance(word, str):
                raise ValueError(f"word {i} must be a string (got {word!r}; quote it in YAML)")
            check_template(word)
        if not any(word.strip() for word in value):  # no template either: nothing to cover
            raise ValueError("words must list at least one non-empty word")
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
        errors = []
        for unit in ("words", "tokens"):
            lo, hi = getattr(self, f"min_{unit}"), getattr(self, f"max_{unit}")
            if lo is not None and hi is not None and lo > hi:
                errors.append(_error("spec_bounds", f"min_{unit} ({lo}) is larger than max_{unit} ({hi})",
                                     f"min_{unit}"))
        _raise_all(errors, "length")
        return self



def _error(kind: str, message: str, at: str | None = None, **ctx: Any) -> PydanticCustomError:
    """A spec error; ``at`` is a dotted path, relative to the failing field, to point at."""
    if at is not None:
        ctx["at"] = at
    return PydanticCustomError(kind, "{message}", {"message": message, **ctx})


def _raise_all(errors: list[PydanticCustomError], title: str) -> None:
    """Raise every one of ``errors`` (each may point with ``at``): a validator can raise
    one error, a ValidationError carries them all, so `spec validate` lists each."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ValidationError.from_exception_data(
            title, [InitErrorDetails(type=e, loc=(), input=None) for e in errors])


# regex patterns: only an unescaped {name} is a placeholder (quantifiers like \d{3} are not);
# a whole pattern that is one placeholder may take a list variable (several patterns)
PATTERN_TEMPLATE = TemplateKind(regex=True, lists=True)
WORDS_TEMPLATE = TemplateKind(lists=True)
# {text} and {prompt} are filled by the judge itself, for each text it scores
QUESTION_TEMPLATE = TemplateKind(reserved=("text", "prompt"))


def _check_patterns(value: Any) -> Any:
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list):
        raise ValueError(f"give a pattern or a list of patterns (got {value!r})")
    from rewards.regex import compile_re2

    errors = []
    for i, pattern in enumerate(patterns):
        at = None if isinstance(value, str) else str(i)
        if not isinstance(pattern, str):
            errors.append(_error("spec_pattern", f"pattern {i} must be a string (got {pattern!r}; quote it "
                                 "in YAML)", at))
            continue
        if not pattern:
            errors.append(_error("spec_pattern", "a pattern must not be empty", at))
            continue
        parts = parse_template(pattern, regex=True)
        if len(parts) == 1 and isinstance(parts[0], Placeholder):
            continue  # the whole pattern comes from the input record: checked when built
        # a filled-in value is escaped (a literal), so any literal character stands for it here
        shape = "".join("x" if isinstance(part, Placeholder) else part for part in parts)
        try:
            compile_re2(shape)
        except ValueError as exc:
            message = str(exc).removeprefix("RegexReward: ")
            if shape != pattern:
                message = message.replace(repr(shape), repr(pattern), 1).replace(
                    ". Patterns must", f" (checked as {shape!r}: each {{name}} stands for a literal). "
                    "Patterns must", 1)
            errors.append(_error("spec_bad_regex", message, at))
    _raise_all(errors, "patterns")
    return value


class RegexParams(BaseModel):
    """``regex``: reward the fraction of regex conditions the text meets: each ``must_match``
    pattern that matches it and each ``must_not_match`` pattern that does not (RE2 syntax:
    linear-time, no backreferences or lookaround). ``{name}`` is a template variable: a
    whole pattern ``'{name}'`` takes a pattern (or a list of them) from the record, inside a
    longer pattern the value is matched literally; ``\\d{3}`` and ``x{2,5}`` stay quantifiers
    and ``\\{name\\}`` is the literal text."""

    model_config = _STRICT

    must_match: Annotated[str | list[str], BeforeValidator(_check_patterns)] = Field(
        default_factory=list, description="pattern(s) the text must match; may use {name} variables")
    must_not_match: Annotated[str | list[str], BeforeValidator(_check_patterns)] = Field(
        default_factory=list, description="pattern(s) the text must not match; may use {name} variables")
    mode: Literal["search", "fullmatch"] = Field(
        "search", description="search: a match anywhere; fullmatch: the whole text must match")
    ignore_case: bool = Field(False, description="match every pattern case-insensitively")

    @model_validator(mode="after")
    def _some_pattern(self) -> "RegexParams":
        if not self.must_match and not self.must_not_match:
            raise ValueError("give at least one must_match or must_not_match pattern")
        return self


def _remote_ref(node: Any, path: FieldPath = ()) -> FieldPath | None:
    """The path of the first ``$ref`` / ``$dynamicRef`` / ``$recursiveRef`` that does not
    resolve inside the schema (remote, or to nothing), resolved as the validator resolves
    it: a ref to the document's own ``$id`` or an ``#anchor`` is local, and a "$ref" key
    inside ``enum``/``const`` data is data."""
    from deal_chains.jsonkit.validate import ref_problem

    try:
        found = ref_problem(node)
    except Exception:  # noqa: BLE001 - a malformed schema: the validator says why
        return None
    return None if found is None else path + found[1]


def _schema_problem(schema: Any) -> tuple[str, FieldPath] | None:
    """(message, path inside the schema) when ``schema`` is not a usable JSON Schema."""
    from deal_chains.jsonkit.validate import make_validator

    try:
        make_validator(schema)
    except ValueError as exc:
        where = _remote_ref(schema)
        if where is None:
            where = ()
            try:
                import jsonschema

                cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
                cls.check_schema(schema)
            except jsonschema.exceptions.SchemaError as err:
                where = tuple(err.path)
            except Exception:  # noqa: BLE001 - only a position is wanted here
                pass
        return str(exc), where
    return None


def _shape_problem(schema: Any) -> tuple[str, FieldPath] | None:
    """Size, depth, dangling local ``$ref`` and forced infinite recursion, checked first:
    cheap, and they keep a pathological schema away from the validator and grammar engine."""
    from deal_chains.jsonkit.schema_shape import schema_shape_problem

    found = schema_shape_problem(schema)
    return (found, ()) if found is not None else None


def _usable_problem(schema: Any, mode: str) -> tuple[str, FieldPath] | None:
    """(message, ()) when a valid schema still cannot be used: pathological size, a ``$ref``
    to nothing, no finite instance, or — checked by the grammar engine without a model —
    unsatisfiable; in ``hard`` mode also anything the grammar engine refuses."""
    from deal_chains.search.constraints import ConstraintError, GrammarConstraint, unsatisfiable_reason

    if schema is False:
        return "the schema is false: no value satisfies it", ()
    if mode == "hard":
        try:
            GrammarConstraint.json_schema(schema).check()
        except ConstraintError as exc:
            return str(exc), ()
        return None
    # soft mode refuses only what no value can satisfy, judged on the schema itself: the
    # mask's caps and narrowings must never make a soft reward refuse a valid schema
    reason = unsatisfiable_reason(schema)
    return (reason + " (this schema can never be satisfied)", ()) if reason else None


def _check_schema_value(value: Any) -> Any:
    if value is None or isinstance(value, (dict, bool)):
        return value
    raise ValueError(f"schema must be a JSON Schema written as a mapping (or true/false), got {value!r}")


class JsonSchemaParams(BaseModel):
    """``json_schema``: reward JSON valid against a JSON Schema (a JSON prefix is scored while
    it grows; finished text is validated). ``mode: hard`` also masks tokens so that the
    output always parses and validates. Only local ``$ref`` (``#/...``) are allowed."""

    model_config = ConfigDict(extra="forbid", strict=True, serialize_by_alias=True)

    schema_: Annotated[dict[str, Any] | bool | None, BeforeValidator(_check_schema_value)] = Field(
        None, alias="schema", description="the JSON Schema, inline")
    schema_file: Optional[str] = Field(
        None, min_length=1, description="a JSON file holding the schema, relative to the spec file")
    mode: Literal["soft", "hard"] = Field(
        "soft", description="soft: a reward only; hard: also a token mask (at most one per spec)")

    _schema: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _load_schema(self) -> "JsonSchemaParams":
        if self.schema_ is not None and self.schema_file is not None:
            raise _error("spec_schema_source", "give either schema (inline) or schema_file, not both",
                         "schema_file")
        if self.schema_ is None and self.schema_file is None:
            raise ValueError("give the JSON Schema as schema (inline) or schema_file (a JSON file)")
        if self.schema_file is None:
            found = _shape_problem(self.schema_) or _schema_problem(self.schema_) \
                or _usable_problem(self.schema_, self.mode)
            if found is not None:
                message, where = found
                raise _error("spec_bad_schema", message, dotted(("schema",) + where))
            self._schema = self.schema_
            return self
        path = Path(self.schema_file)
        try:
            if path.stat().st_size > MAX_SCHEMA_BYTES:
                raise _error("spec_schema_file", f"schema file {path} is over the 1 MiB limit", "schema_file")
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise _error("spec_schema_file", f"schema file not found: {path}", "schema_file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise _error("spec_schema_file", f"cannot read schema file {path}: {exc}", "schema_file") from None
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _error("spec_schema_file", f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}",
                         "schema_file") from None
        except RecursionError:  # the decoder recurses per level: ~1000 nested brackets end it
            raise _error("spec_schema_file", f"{path}: the JSON nests too deeply to be a usable schema",
                         "schema_file") from None
        found = _shape_problem(schema) or _schema_problem(schema) or _usable_problem(schema, self.mode)
        if found is not None:
            message, where = found
            inside = f" (at {'/'.join(map(str, where))})" if where else ""
            raise _error("spec_bad_schema", f"{path}{inside}: {message}", "schema_file")
        self._schema = schema
        return self

    @property
    def loaded_schema(self) -> Any:
        """The schema itself (read from ``schema_file`` when given that way)."""
        return self._schema


_TEMPLATED_FIELDS = ("system, prompt, keywords.words, regex.must_match/must_not_match and "
                     "judge.question")


def _not_templated(value: Any, what: str) -> Any:
    """ValueError for a ``{name}`` in a field that is not a template: it would be used as
    written (a reward named "{lang}", a label "{label}"), never filled from the record."""
    found = placeholder_like(value)
    if found is not None:
        raise ValueError(f"{what} {value!r} holds the placeholder {found}, but {what} is not a template "
                         f"and is used as written (templates: {_TEMPLATED_FIELDS})")
    return value


def _check_model_path(value: str) -> str:
    exists = Path(value).exists()
    if value.startswith(("/", "./", "../")) and not exists:
        raise ValueError(f"model path not found: {value}")
    return value if exists else _not_templated(value, "model")


ModelName = Annotated[str, Field(min_length=1), AfterValidator(_check_model_path)]
_MODEL_HELP = "a Hugging Face id or a local path (./ and ../ are relative to the spec file)"


def _check_label(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError(f"label must be a label name or a class index (got {value!r})")
    return _not_templated(value, "label")


MAX_MODEL_CONFIG_BYTES = 16 << 20  # a config.json is a few KiB; a huge label list a few MiB


def _local_model_problems(model: str, what: str, label: Any = None, scalar: bool = False
                          ) -> list[PydanticCustomError]:
    """What would make a local sequence-classifier directory fail when the reward is built,
    found cheaply at validation from its config.json and file list (weights are not read):
    no config, pickle-only weights, an architecture that is not a sequence classifier, a
    ``label`` it does not have, several labels where a scalar head (``scalar``) is needed.
    A hub id is not checked (that needs the network), nor is a directory's tokenizer."""
    path = Path(model)
    if not path.is_dir():
        return []
    errors: list[PydanticCustomError] = []
    config_file = path / "config.json"
    config: Any = None
    if not config_file.is_file():
        errors.append(_error("spec_model_dir", f"{what} directory {model} has no config.json: not a "
                             "transformers model directory", "model"))
    else:
        try:
            if config_file.stat().st_size > MAX_MODEL_CONFIG_BYTES:
                raise ValueError(f"it is over {MAX_MODEL_CONFIG_BYTES >> 20} MiB")
            config = json.loads(config_file.read_text(encoding="utf-8-sig"))
            if not isinstance(config, dict):
                raise ValueError("it is not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            errors.append(_error("spec_model_dir", f"cannot read {config_file}: {exc}", "model"))
            config = None
    try:
        names = [f.name for f in path.iterdir()]
    except OSError:
        names = []
    if not any(n.endswith((".safetensors", ".safetensors.index.json")) for n in names):
        pickles = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt")))
        found = (f"only {', '.join(pickles)}: pickle weights are never loaded" if pickles
                 else "no weights at all")
        errors.append(_error("spec_model_dir", f"{what} directory {model} has no safetensors weights "
                             f"({found}); convert it with model.save_pretrained(dir, "
                             "safe_serialization=True)", "model"))
    if config is None:
        return errors
    archs = [str(a) for a in config.get("architectures") or [] if isinstance(a, str)]
    auto_map = config.get("auto_map") if isinstance(config.get("auto_map"), dict) else {}
    if archs and "AutoModelForSequenceClassification" not in auto_map and not any(
            a.endswith("ForSequenceClassification") for a in archs):
        errors.append(_error("spec_model_dir", f"{model} is not a sequence-classification model: its "
                             f"config names {', '.join(archs)} (a {what} needs an architecture ending in "
                             "'ForSequenceClassification'; this one would get a random head)", "model"))
    raw = config.get("id2label") if isinstance(config.get("id2label"), dict) else {}
    try:
        id2label = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        return errors
    n_labels = config.get("num_labels")
    n_labels = len(id2label) if id2label else (n_labels if isinstance(n_labels, int) else 2)
    labels = type("Config", (), {"id2label": id2label, "num_labels": n_labels})()
    if scalar and n_labels != 1:
        errors.append(_error("spec_model_labels", f"a reward_model needs a scalar-head model (one label), but "
                             f"{model} has {n_labels} labels; score one label of it with a classifier "
                             "entry instead", "model"))
    if label is not None:
        try:
            from rewards.classifier import resolve_label
        except ImportError:  # the classifier reward is not installed: its builder reports that
            return errors
        try:
            resolve_label(labels, label)
        except (TypeError, ValueError) as exc:
            errors.append(_error("spec_model_labels", f"{exc} (from {config_file})", "label"))
    return errors


class ClassifierParams(BaseModel):
    """``classifier``: the probability a Hugging Face sequence-classification model gives
    ``label`` (``goal: minimize`` rewards a low probability, e.g. of toxicity)."""

    model_config = _STRICT

    model: ModelName = Field(description=_MODEL_HELP)
    label: Annotated[str | int, BeforeValidator(_check_label)] = Field(
        description="the label's name (from the model's config) or its index")
    goal: Literal["maximize", "minimize"] = "maximize"
    include_prompt: bool = Field(False, description="classify the prompt and the text as a pair")
    batch_size: int = Field(32, ge=1, le=4096, description="texts classified per forward pass")

    @model_validator(mode="after")
    def _check_local_model(self) -> "ClassifierParams":
        _raise_all(_local_model_problems(self.model, "classifier", label=self.label), "classifier")
        return self


def _check_normalize(value: Any) -> Any:
    if value in ("sigmoid", "none"):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        if not value[0] < value[1]:
            raise ValueError(f"normalize [lo, hi] needs lo < hi (got {list(value)})")
        return tuple(value)  # the field is a (strict) tuple; YAML writes the range as a list
    raise ValueError(f"normalize must be sigmoid, none or a range [lo, hi] (got {value!r})")


class RewardModelParams(BaseModel):
    """``reward_model``: a Hugging Face reward model's score of (prompt, text), mapped to
    [0, 1] by ``normalize``."""

    model_config = _STRICT

    model: ModelName = Field(description=_MODEL_HELP)
    normalize: Annotated[Literal["sigmoid", "none"] | tuple[float, float], BeforeValidator(_check_normalize)] = Field(
        "sigmoid", description="sigmoid(scale * score), the raw score (none), or a linear map of [lo, hi]")
    scale: float = Field(1.0, gt=0, allow_inf_nan=False, description="multiplies the score before normalize")
    include_prompt: bool = Field(True, description="score the prompt and the text together")

    @model_validator(mode="after")
    def _check_local_model(self) -> "RewardModelParams":
        _raise_all(_local_model_problems(self.model, "reward model", scalar=True), "reward_model")
        return self


class JudgeParams(BaseModel):
    """``judge``: ask a local causal LM a yes/no question about the text; the reward is
    P(yes) / (P(yes) + P(no)). ``{text}`` in the question is replaced by the text and
    ``{prompt}`` by the prompt."""

    model_config = _STRICT

    question: str = Field(min_length=1, description="the question; must contain {text} (may contain {prompt})")
    model: Optional[ModelName] = Field(None, description="null: the generating model; or " + _MODEL_HELP)

    @field_validator("question")
    @classmethod
    def _has_text(cls, value: str) -> str:
        # a template: {text} and {prompt} are the judge's, other {name}s come from the record
        parts = parse_template(value)
        if Placeholder("text") not in parts:
            raise ValueError("the question must contain {text}, where the text to judge goes")
        literal = "".join(p if isinstance(p, str) else "\0" for p in parts)
        if "{text}" in literal or "{prompt}" in literal:
            # the judge fills {text} and {prompt} wherever they are, escaped or not
            raise ValueError("the question cannot hold a literal {text} or {prompt} (written {{text}}): "
                             "the judge would fill it in")
        return value


class HarmlessParams(BaseModel):
    """``harmless``: a harmlessness preference head on the generating model's hidden states,
    in [0, 1] (higher = more harmless)."""

    model_config = _STRICT

    head: Optional[str] = Field(None, min_length=1, description="a head file (.safetensors with its .json "
                                "sidecar), relative to the spec file; null: the shipped head")

    @field_validator("head")
    @classmethod
    def _head_exists(cls, value: str | None) -> str | None:
        if value is not None:
            from rewards.harmless import head_paths

            weights, _ = head_paths(value)
            if not weights.is_file():
                raise ValueError(f"reward head not found: {weights}")
        return value


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


# --------------------------------------------------------------------------- composition


def _is_hard(entry: Any) -> bool:
    return entry.reward_type == "json_schema" and entry.params.mode == "hard"


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

    reward: "RewardEntry"  # type: ignore[name-defined]
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

    gate: "RewardEntry"  # type: ignore[name-defined]
    reward: "RewardEntry"  # type: ignore[name-defined]
    threshold: float = Field(1.0, allow_inf_nan=False, description="the gate score that opens the gate")

    @model_validator(mode="after")
    def _check(self) -> "GatedParams":
        _check_children([("gate", self.gate), ("reward", self.reward)])
        return self


class NormalizeParams(BaseModel):
    """``normalize``: rescale the nested reward's range [lo, hi] to [0, 1]."""

    model_config = _STRICT

    reward: "RewardEntry"  # type: ignore[name-defined]
    lo: float = Field(allow_inf_nan=False)
    hi: float = Field(allow_inf_nan=False)
    clip: bool = Field(True, description="clip the result to [0, 1]")

    @model_validator(mode="after")
    def _check(self) -> "NormalizeParams":
        _check_children([("reward", self.reward)])
        if not self.lo < self.hi:
            raise _error("spec_range", f"lo ({self.lo}) must be less than hi ({self.hi})", "hi")
        return self


# --------------------------------------------------------------------------- builders


@dataclass
class BuildContext:
    """What a builder gets besides its rendered parameters."""

    weight: float
    name: str
    terminal: bool
    params: BaseModel
    path: FieldPath
    variables: Mapping[str, Any]
    count_tokens: Callable[[str], int] | None = None
    lm: Any = None

    @property
    def composite_terminal(self) -> bool | None:
        """True when the spec says ``terminal: true``, else None: a composite is then terminal
        when all its children are, a plugin keeps its own setting."""
        return True if self.terminal else None

    def need_lm(self, what: str) -> Any:
        if self.lm is None:
            raise ValueError(f"{what} needs the generating model: pass it as "
                             "build_rewards(..., lm=engine.lm)")
        return self.lm


def _common(ctx: BuildContext) -> dict[str, Any]:
    return {"weight": ctx.weight, "name": ctx.name, "terminal": ctx.terminal}


def _reward_class(module: str, name: str, rtype: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"the {rtype} reward is not available in this installation ({exc})") from None


def _build_keywords(params: dict[str, Any], ctx: BuildContext) -> "Reward":
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
    return KeywordCoverage(words, inflections=params["inflections"], **_common(ctx))


def _build_length(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    from rewards.length import LengthReward

    return LengthReward(**params, count_tokens=ctx.count_tokens, **_common(ctx))


def _patterns(value: Any, field: str) -> list[str]:
    """Rendered patterns as one flat list (a whole-pattern list variable nests a list)."""
    flat: list[str] = []
    for item in [value] if isinstance(value, str) else value:
        flat.extend(item if isinstance(item, list) else [item])
    if any(p == "" for p in flat):
        raise ValueError(f"{field}: a pattern is empty after filling the template")
    return flat


def _build_regex(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    from rewards.regex import RegexReward

    return RegexReward(_patterns(params["must_match"], "must_match"),
                       _patterns(params["must_not_match"], "must_not_match"), mode=params["mode"],
                       ignore_case=params["ignore_case"], **_common(ctx))


def _build_json_schema(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    from rewards.json_schema import JsonSchemaReward

    return JsonSchemaReward(ctx.params.loaded_schema, **_common(ctx))  # type: ignore[attr-defined]


def _device(ctx: BuildContext) -> dict[str, Any]:
    """Run a scoring model where the generating model runs (the reward's default otherwise)."""
    device = getattr(ctx.lm, "device", None)
    return {} if device is None else {"device": device}


def _build_classifier(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    cls = _reward_class("rewards.classifier", "ClassifierReward", "classifier")
    return cls(params["model"], params["label"], goal=params["goal"], include_prompt=params["include_prompt"],
               batch_size=params["batch_size"], **_device(ctx), **_common(ctx))


def _build_reward_model(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    cls = _reward_class("rewards.reward_model", "RewardModelReward", "reward_model")
    normalize = params["normalize"]
    normalize = tuple(normalize) if isinstance(normalize, (list, tuple)) else normalize
    return cls(params["model"], normalize=normalize, scale=params["scale"],
               include_prompt=params["include_prompt"], **_device(ctx), **_common(ctx))


def _build_judge(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    cls = _reward_class("rewards.judge", "JudgeReward", "judge")
    if params["model"] is None:
        lm = ctx.need_lm("a judge with model: null (the generating model)")
    else:
        from deal_chains.models import load_model

        device = getattr(ctx.lm, "device", None) or "auto"
        lm = load_model(params["model"], device=device)
    return cls.from_loaded(lm, question=params["question"], **_common(ctx))


def _build_harmless(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    from rewards.harmless import HarmlessReward

    lm = ctx.need_lm("the harmless reward (its features come from the generating model)")
    return HarmlessReward.for_model(lm, params["head"], **_common(ctx))


def _build_plugin(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    from rewards.callable import load_plugin

    return load_plugin(params["name"], params["params"], weight=ctx.weight, reward_name=ctx.name,
                       terminal=ctx.composite_terminal)


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


class RewardType(NamedTuple):
    """A registered reward type: parameter model, builder ``build(params, ctx)``, templated
    parameter names, an example of its parameters (for error messages), the parameters
    that hold nested entries, whether one built reward is reused for every input record
    (its parameters are static; it is costly to build), whether it needs the generating
    model, the parameters naming a file (relative to the spec file) or a model
    (``./`` and ``../`` relative to the spec file), and how each templated parameter is
    parsed and filled (``TemplateKind``: text or regex, list-valued or one text). A reused
    reward whose templates use variables is rebuilt when their values change."""

    params: type[BaseModel]
    build: Callable[..., "Reward"]
    templated: tuple[str, ...] = ()
    example: str = "{...}"
    children: tuple[str, ...] = ()
    reuse: bool = False
    needs_lm: bool = False
    files: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    template_kinds: Mapping[str, TemplateKind] = MappingProxyType({})

    def template_kind(self, param: str) -> TemplateKind:
        """How the templated parameter ``param`` is parsed and what its variables may hold
        (``template_kinds``; by default a lone placeholder may give a list or a number)."""
        return self.template_kinds.get(param, GENERIC)


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
        _rt.params.model_rebuild()
RewardEntry.model_rebuild()


def _entry_variables(entry: Any) -> set[str]:
    rtype = REWARD_TYPES[entry.reward_type]
    names: set[str] = set()
    for param in rtype.templated:
        names |= template_variables(getattr(entry.params, param), rtype.template_kind(param))
    for _, child in entry.children():
        names |= _entry_variables(child)
    return names


# --------------------------------------------------------------------------- the spec


def _given_search_fields(config: SearchConfig) -> dict[str, Any]:
    return config.model_dump(exclude_unset=True)


if TYPE_CHECKING:
    SearchSettings = dict[str, Any]
else:  # validated as a SearchConfig (field errors keep their paths), kept as the given keys
    SearchSettings = Annotated[
        SearchConfig, AfterValidator(_given_search_fields), PlainSerializer(dict, return_type=dict)
    ]

STEP_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"


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
        if not self.rewards:
            raise _error("spec_no_rewards", "missing required key 'rewards' (a list of rewards; or "
                         "extends: a spec that has them)", "rewards")
        seen: dict[str, int] = {}
        hard: int | None = None
        errors = []
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
