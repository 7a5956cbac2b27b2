"""Where each spec field came from (file line/column or a ``--set`` override), and the
translation of pydantic validation errors into ``SpecError`` problems that name them."""

from __future__ import annotations

import difflib
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

FieldPath = tuple[str | int, ...]


def dotted(path: FieldPath) -> str:
    """``("rewards", 1, "length")`` -> ``"rewards.1.length"``."""
    return ".".join(str(p) for p in path)


def parse_dotted(text: str) -> FieldPath:
    """``"rewards.1.name"`` -> ``("rewards", 1, "name")`` (digit parts become indices)."""
    return tuple(int(p) if p.isdigit() else p for p in text.split(".") if p)


@dataclass
class SourceMap:
    """Positions (1-based line, column) of the spec's keys and values, by field path,
    and the ``--set`` override that supplied a field, if any."""

    file: str | None = None
    values: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    overrides: dict[FieldPath, str] = field(default_factory=dict)

    def problem(self, path: FieldPath, message: str, *, key: bool = False) -> dict:
        """A ``SpecError`` problem for the field at ``path``: the position of its key
        (``key=True``) or value, else of the nearest enclosing field that has one."""
        problem = {"file": self.file, "line": None, "column": None,
                   "field": dotted(path) or None, "message": message}
        for end in range(len(path), 0, -1):
            origin = self.overrides.get(path[:end])
            if origin is not None:
                problem["message"] = f"{message} (from --set {origin})"
                return problem
        pos = self.keys.get(path) if key else None
        end = len(path)
        while pos is None and end >= 0:
            pos = self.values.get(path[:end])
            end -= 1
        if pos is not None:
            problem["line"], problem["column"] = pos
        return problem


def _find_model(tp: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``list[X]``, ...)."""
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return tp
    for arg in typing.get_args(tp):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


def allowed_keys(root: type[BaseModel], path: FieldPath) -> list[str]:
    """The keys the model at ``path`` (below ``root``) accepts; [] if unknown."""
    model: type[BaseModel] | None = root
    for part in path:
        if isinstance(part, int) or model is None:
            continue  # list indices keep the item model, found through the annotation
        info = model.model_fields.get(part)
        if info is None:
            return []
        model = _find_model(info.annotation)
    return list(model.model_fields) if model is not None else []


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _message(err: dict, loc: FieldPath, root: type[BaseModel]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = allowed_keys(root, loc[:-1])
        msg = f"unknown key {loc[-1]!r}"
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        if allowed:
            msg += f"; allowed keys: {', '.join(allowed)}"
        return msg
    if kind == "missing":
        return f"missing required key {loc[-1]!r}" if loc else "missing required value"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if kind.startswith("spec_") or kind == "value_error" or isinstance(err.get("input"), (dict, BaseModel)):
        return msg
    return f"{msg} (got {_shown(err.get('input'))})"


def problems_from_validation_error(
    exc: ValidationError, source: SourceMap, root: type[BaseModel]
) -> list[dict]:
    """One problem per pydantic error, located through ``source``.

    Custom errors (type ``spec_*``) may carry ``ctx["at"]``, a dotted path relative to
    the error's location that points at the offending key (e.g. the second reward type).
    """
    problems = []
    for err in exc.errors(include_url=False):
        loc: FieldPath = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        key = err["type"] == "extra_forbidden"
        if isinstance(ctx.get("at"), str):
            loc = loc + parse_dotted(ctx["at"])
            key = True
        problems.append(source.problem(loc, _message(err, loc, root), key=key))
    return problems
