"""Rewards with a model of their own: ``classifier``, ``reward_model``, ``judge`` and
``harmless`` entries; local model folders are checked at load from their config (no weights read)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from deal_chains.spec.entries.common import (
    _STRICT,
    BuildContext,
    _common,
    _error,
    _not_templated,
    _raise_all,
    _reward_class,
)
from deal_chains.spec.templates import (
    Placeholder,
    parse_template,
)

if TYPE_CHECKING:
    from rewards.base import Reward


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
    goal: Literal["maximize", "minimize"] = Field(
        "maximize", description="maximize rewards a high probability of label, minimize a low one")
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
