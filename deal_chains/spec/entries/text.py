"""Text rewards: ``keywords``, ``length`` and ``regex`` entries (parameters and builders)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    model_validator,
)

from deal_chains.spec.entries.common import _STRICT, BuildContext, _common, _error, _raise_all
from deal_chains.spec.templates import (
    Placeholder,
    check_template,
    parse_template,
    split_words,
    template_variables,
)

if TYPE_CHECKING:
    from rewards.base import Reward


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

    min_words: int | None = Field(None, ge=0, description="fewest words for a full score (words: letters and "
                                  "digits, joined by ' or -)")
    max_words: int | None = Field(None, ge=0, description="most words for a full score; beyond it the "
                                  "score falls smoothly (0.5 at 20% over)")
    min_tokens: int | None = Field(None, ge=0, description="fewest tokens of the spec's model for a full score")
    max_tokens: int | None = Field(None, ge=0, description="most tokens of the spec's model for a full score")

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
