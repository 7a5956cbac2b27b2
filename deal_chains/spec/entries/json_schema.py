"""The ``json_schema`` entry: a schema inline or from a file, checked when the spec loads
(size, local refs, RE2 patterns, "no finite instance", what the hard mask can enforce)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from deal_chains.spec.entries.common import BuildContext, _common, _error
from deal_chains.spec.source import FieldPath, dotted

if TYPE_CHECKING:
    from rewards.base import Reward


MAX_SCHEMA_BYTES = 1 << 20  # a schema_file, like a spec, is at most 1 MiB


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


def _build_json_schema(params: dict[str, Any], ctx: BuildContext) -> "Reward":
    from rewards.json_schema import JsonSchemaReward

    return JsonSchemaReward(ctx.params.loaded_schema, **_common(ctx))  # type: ignore[attr-defined]


def _is_hard(entry: Any) -> bool:
    return entry.reward_type == "json_schema" and entry.params.mode == "hard"
