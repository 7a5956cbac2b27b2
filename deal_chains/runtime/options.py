"""The one place that maps a shell's call options (LangChain, DSPy, the server) onto a request's
search settings, stop sequences and answer schema, with one precedence.

>>> search_overrides({"top_k": 4}, {"max_tokens": 32, "beam": None},
...                  {"search": {"lam": 8.0}, "max_tokens": 16})
{'top_k': 4, 'max_new_tokens': 16, 'lam': 8.0}

Precedence, lowest first: the model's ``search`` mapping, its search fields (``top_k``...,
``temperature``), its ``max_tokens``; then per call, in the same order. ``max_tokens`` is
the public name of the token budget and wins over ``max_new_tokens`` at the same level.
None means "not given".
"""

from __future__ import annotations

from typing import Any, Mapping

from deal_chains.errors import InputError
from deal_chains.runtime.requests import SEARCH_FIELDS


def _layer(fields: Mapping[str, Any]) -> dict[str, Any]:
    """One level's settings: its ``search`` mapping, then its search fields, then ``max_tokens``."""
    values: dict[str, Any] = dict(fields.get("search") or {})
    values.update({name: fields[name] for name in SEARCH_FIELDS if fields.get(name) is not None})
    if fields.get("max_tokens") is not None:
        values["max_new_tokens"] = fields["max_tokens"]
    return values


def search_overrides(base_search: Mapping[str, Any], model_fields: Mapping[str, Any],
                     call: Mapping[str, Any]) -> dict[str, Any]:
    """The search overrides of one call: the model's settings (``base_search`` and its
    ``model_fields``), then the call's own (see the module docstring for the order)."""
    values = _layer({"search": base_search, **{k: v for k, v in model_fields.items() if k != "search"}})
    values.update(_layer(call))
    return values


def stop_list(stop: Any, where: str) -> list[str]:
    """Stop sequences as a list (a single string is one sequence, not its characters)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise InputError(f"{where}: stop must be a string or a list of strings, got {stop!r:.80}")


def response_schema(response_format: Any) -> dict[str, Any]:
    """The JSON schema of an OpenAI-style ``response_format`` (or of a pydantic class, as DSPy
    passes it); ``InputError`` for anything else."""
    if isinstance(response_format, type) and hasattr(response_format, "model_json_schema"):
        return response_format.model_json_schema()
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind == "json_schema":
            inner = response_format.get("json_schema") or {}
            schema = inner.get("schema") if isinstance(inner, Mapping) else None
            if isinstance(schema, Mapping):
                return dict(schema)
        elif kind == "json_object":
            return {"type": "object"}
    raise InputError("response_format must be {'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}} "
                     f"or {{'type': 'json_object'}}, got {response_format!r:.120}")
