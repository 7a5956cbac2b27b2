"""The spec language reference (``docs/spec-reference.md``), generated from the pydantic models
so it cannot drift from what the loader accepts.

>>> from deal_chains.spec.reference import render_reference
>>> render_reference().splitlines()[0]
'# Reward-spec reference'

``python -m deal_chains.spec.reference > docs/spec-reference.md`` (or ``deal-chains spec
reference``) rewrites it; a test fails when the committed file is stale.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from deal_chains.search.config import SearchConfig
from deal_chains.spec.document import RewardSpec
from deal_chains.spec.entries.registry import REWARD_TYPES, _RewardEntryBase

# One loadable example per reward type (every one is loaded by the reference's test); the
# registry's own ``example`` is the short form used in error messages.
EXAMPLES: dict[str, str] = {
    "keywords": "keywords: {words: \"{concepts}\", inflections: true}",
    "length": "length: {max_words: 25}\n    weight: 0.3",
    "regex": "regex: {must_match: '^[A-Z]', must_not_match: [TODO, '\\bvery\\b']}",
    "json_schema": ("json_schema:\n      schema: {type: object, properties: {name: {type: string}}, "
                    "required: [name]}\n      mode: hard"),
    "classifier": "classifier: {model: my-org/toxicity-classifier, label: toxic, goal: minimize}",
    "reward_model": "reward_model: {model: my-org/reward-model, normalize: sigmoid}",
    "judge": "judge: {question: 'Is this reply polite? Answer yes or no. {text}'}",
    "harmless": "harmless: {}",
    "plugin": "plugin: {name: toxicity, params: {threshold: 0.5}}",
    "all_of": "all_of:\n      rewards:\n        - keywords: {words: [dog, park]}\n        - length: {max_words: 20}",
    "any_of": "any_of:\n      rewards:\n        - regex: {must_match: '\\?$'}\n        - length: {max_words: 5}",
    "threshold": "threshold: {reward: {length: {max_words: 20}}, min: 0.8, soft: true}",
    "gated": "gated: {gate: {regex: {must_match: '^[A-Z]'}}, reward: {keywords: {words: [dog]}}}",
    "normalize": "normalize: {reward: {length: {max_words: 20}}, lo: 0.2, hi: 1.0}",
}


def example_spec(rtype: str) -> str:
    """A whole spec file using the example of ``rtype`` (what the reference shows)."""
    return f"rewards:\n  - {EXAMPLES[rtype]}\n"


def _type_name(info: FieldInfo) -> str:
    return _describe(info.annotation)


def _describe(tp: Any) -> str:
    """A type annotation as a reader would say it (``str or null``, ``list[number]``, ``one of a, b``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple, set):
        return f"list[{', '.join(_describe(a) for a in args if a is not Ellipsis)}]"
    if origin is dict:
        return f"map[{_describe(args[0])}, {_describe(args[1])}]" if args else "map"
    if tp is type(None):
        return "null"
    if isinstance(tp, typing.ForwardRef):
        return _NAMES.get(tp.__forward_arg__, tp.__forward_arg__)
    name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
    return _NAMES.get(name, name)


_NAMES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "Any": "any",
          "RewardEntry": "reward entry", "RewardSpec": "spec", "SearchConfig": "search settings"}


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    if info.default is PydanticUndefined:
        return "-"
    try:
        return f"`{json.dumps(info.default)}`"
    except TypeError:
        return f"`{info.default!r}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _fields_table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> str:
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        rows.append(f"| `{info.alias or name}` | {_cell(_type_name(info))} | {_default(info)} | {_cell(info.description or '')} |")
    return "\n".join(rows)


def _doc(obj: Any) -> str:
    """The docstring's prose: its paragraphs without doctest lines."""
    paragraphs = (obj.__doc__ or "").split("\n\n")
    return " ".join(" ".join(p.split()) for p in paragraphs if ">>>" not in p)


def render_reference() -> str:
    """The whole reference as Markdown."""
    out = ["# Reward-spec reference", "",
           "Generated from the spec models by `deal-chains spec reference` (do not edit by hand). A spec is a",
           "YAML file validated when it loads (`deal-chains spec validate FILE`); every error names the file,",
           "line, column and field. Values keep their YAML types (`\"4\"` is not a number). Fields marked as",
           "templates take `{name}` placeholders filled from each input record.", "",
           "## Contents", "", "- [Top-level keys](#top-level-keys)", "- [search](#search)",
           "- [Keys of every reward entry](#keys-of-every-reward-entry)"]
    out += [f"- [`{t}`](#{t})" for t in REWARD_TYPES]
    out += ["", "## Top-level keys", "", _fields_table(RewardSpec), "",
            "## search", "", _doc(SearchConfig), "", _fields_table(SearchConfig), "",
            "## Keys of every reward entry", "",
            "Each item of `rewards` has exactly one reward-type key (below) and these:", "",
            _fields_table(_RewardEntryBase), ""]
    for rtype, spec in REWARD_TYPES.items():
        out += [f"## {rtype}", "", _doc(spec.params), ""]
        notes = []
        if spec.templated:
            notes.append("templates: " + ", ".join(f"`{p}`" for p in spec.templated))
        if spec.children:
            notes.append("nested reward entries: " + ", ".join(f"`{p}`" for p in spec.children))
        if spec.files:
            notes.append("file paths (relative to the spec file): " + ", ".join(f"`{p}`" for p in spec.files))
        if spec.reuse:
            notes.append("built once per spec and shared by every record")
        if spec.needs_lm:
            notes.append("uses the generating model")
        if notes:
            out += ["; ".join(notes).capitalize() + ".", ""]
        out += [_fields_table(spec.params), "", "```yaml", example_spec(rtype).rstrip(), "```", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render_reference())
