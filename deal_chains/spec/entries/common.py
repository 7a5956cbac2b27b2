"""What every reward entry type shares: strict models, located errors, the build context and
the ``RewardType`` record a type registers with."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from deal_chains.spec.source import FieldPath
from deal_chains.spec.templates import (
    GENERIC,
    TemplateKind,
    placeholder_like,
)

if TYPE_CHECKING:
    from rewards.base import Reward


# strict: a spec's values keep their YAML types. Without it pydantic would turn ``true``
# into 1, ``"4"`` into 4 and ``"yes"`` into True, silently running another setting than
# the one written. Floats still take ints (``weight: 2``).
_STRICT = ConfigDict(extra="forbid", strict=True)


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
