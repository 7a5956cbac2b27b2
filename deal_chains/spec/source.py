"""Where each spec field came from (file line/column or a ``--set`` override), and the
translation of pydantic validation errors into ``SpecError`` problems that name them."""

from __future__ import annotations

import difflib
import inspect
import re
import typing
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

FieldPath = tuple[str | int, ...]


def dotted(path: FieldPath) -> str:
    """``("rewards", 1, "length")`` -> ``"rewards.1.length"``."""
    return ".".join(str(p) for p in path)


def parse_dotted(text: str) -> FieldPath:
    """``"rewards.1.name"`` -> ``("rewards", 1, "name")`` (digit parts become indices)."""
    return tuple(int(p) if p.isascii() and p.isdigit() else p for p in text.split(".") if p)


@dataclass
class SourceMap:
    """Positions (1-based line, column) of the spec's keys and values, by field path,
    and the ``--set`` override that supplied a field, if any.

    A spec merged from several files (``extends``) keeps, in ``files``, the file of each
    path that came from another file than ``file``. ``prefix`` makes a view of the map
    rooted at a sub-spec (a step: ``("steps", "answer")``): paths given to ``problem``
    are relative to it, and reported with it.
    """

    file: str | None = None
    values: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    overrides: dict[FieldPath, str] = field(default_factory=dict)
    files: dict[FieldPath, str | None] = field(default_factory=dict)
    prefix: FieldPath = ()

    def problem(self, path: FieldPath, message: str, *, key: bool = False) -> dict:
        """A ``SpecError`` problem for the field at ``path``: the position of its key
        (``key=True``) or value, else of the nearest enclosing field that has one."""
        path = self.prefix + tuple(path)
        problem = {"file": self.file, "line": None, "column": None,
                   "field": dotted(path) or None, "message": message}
        for end in range(len(path), 0, -1):
            origin = self.overrides.get(path[:end])
            if origin is not None:
                problem["message"] = f"{message} (from --set {origin})"
                return problem
        found: FieldPath | None = path if key and path in self.keys else None
        pos = self.keys[path] if found is not None else None
        end = len(path)
        while pos is None and end >= 0:
            pos = self.values.get(path[:end])
            if pos is not None:
                found = path[:end]
            end -= 1
        if pos is not None:
            problem["line"], problem["column"] = pos
            problem["file"] = self.files.get(found, self.file)  # type: ignore[arg-type]
        return problem

    def file_of(self, path: FieldPath) -> str | None:
        """The file the value at ``path`` (or its nearest located parent) came from."""
        path = self.prefix + tuple(path)
        for end in range(len(path), -1, -1):
            if path[:end] in self.values:
                return self.files.get(path[:end], self.file)
        return self.file

    def at(self, prefix: FieldPath) -> "SourceMap":
        """A view rooted at ``prefix`` (sharing this map's tables)."""
        return replace(self, prefix=self.prefix + tuple(prefix))

    def subtree(self, prefix: FieldPath) -> "SourceMap":
        """A copy of the entries under ``prefix``, re-rooted there."""
        out = SourceMap(file=self.file)
        out.graft(self, prefix, ())
        return out

    def drop(self, prefix: FieldPath) -> None:
        """Forget every entry at or under ``prefix``."""
        n = len(prefix)
        for table in (self.values, self.keys, self.overrides, self.files):
            for path in [p for p in table if p[:n] == prefix]:
                del table[path]

    def graft(self, src: "SourceMap", src_prefix: FieldPath, dst_prefix: FieldPath, *,
              root: bool = True) -> None:
        """Copy ``src``'s entries under ``src_prefix`` to ``dst_prefix`` here, each keeping
        the file it came from (``root=False``: not the entry at ``src_prefix`` itself)."""
        src_prefix, dst_prefix = tuple(src_prefix), tuple(dst_prefix)
        n = len(src_prefix)
        for name in ("values", "keys", "overrides"):
            src_table, dst_table = getattr(src, name), getattr(self, name)
            for path, value in list(src_table.items()):
                if path[:n] != src_prefix or (not root and len(path) == n):
                    continue
                new = dst_prefix + path[n:]
                dst_table[new] = value
                if name != "overrides":
                    origin = src.files.get(path, src.file)
                    if origin != self.file:
                        self.files[new] = origin
                    else:
                        self.files.pop(new, None)


def _find_model(tp: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``list[X]``, ...)."""
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return tp
    for arg in typing.get_args(tp):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


def _has_dict(tp: Any) -> bool:
    """Whether an annotation is (or holds) a ``dict[...]``: its next path part is a key."""
    if typing.get_origin(tp) is dict or tp is dict:
        return True
    return any(_has_dict(arg) for arg in typing.get_args(tp))


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    return {info.alias or name: info for name, info in model.model_fields.items()}


def allowed_keys(root: type[BaseModel], path: FieldPath) -> list[str]:
    """The keys the model at ``path`` (below ``root``) accepts; [] if unknown."""
    model: type[BaseModel] | None = root
    mapping_key = False
    for part in path:
        if model is None:
            return []
        if isinstance(part, int):
            continue  # list indices keep the item model, found through the annotation
        if mapping_key:  # a key of a dict of models (a step name)
            mapping_key = False
            continue
        info = _keys(model).get(part)
        if info is None:
            return []
        model = _find_model(info.annotation)
        mapping_key = _has_dict(info.annotation)
    return list(_keys(model)) if model is not None else []


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_NUMBER_TEXT = re.compile(r"\s*[-+]?(\d[\d_]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*")
_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "1", "0"}


def _type_hint(kind: str, value: Any) -> str:
    """Why a value of the wrong YAML type was refused (the spec does not coerce types)."""
    if kind in ("int_type", "float_type") and isinstance(value, bool):
        return "; true/false are booleans, not numbers"
    if kind == "int_type" and isinstance(value, float):
        return "; this setting takes a whole number, written without a decimal point"
    if kind in ("int_type", "float_type") and isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        return "; remove the quotes: a quoted value is text, not a number"
    if kind == "bool_type" and isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return "; write true or false, without quotes"
    if kind == "bool_type" and isinstance(value, (int, float)):
        return "; write true or false"
    return ""


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
    return f"{msg} (got {_shown(err.get('input'))}{_type_hint(kind, err.get('input'))})"


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
