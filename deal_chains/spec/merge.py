"""Merging spec documents with their positions: ``extends`` (a base spec under this one)
and the shared defaults of a multi-step spec (merged into every step).

A document is the data of a spec before validation plus its ``SourceMap``. Merging
keeps, for every field, the file and line it came from, so an error in a base file names
that file and line. The rules (``merge(base, child)``):

- ``search``: merged key by key, the child's settings over the base's;
- ``model``, ``system``, ``prompt``, ``examples`` and any other key: the child's when it has one;
- ``rewards``: the base's, then the child's, unless the child sets ``replace_rewards: true``
  (then only the child's);
- ``steps``: by step name; a step both have is merged with the same rules;
- ``extends`` (and ``preset``, its short form) and ``replace_rewards`` are consumed
  (``replace_rewards: true`` in a step leaves out both its base's rewards and the shared
  ones).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from deal_chains.spec.entries.registry import REWARD_TYPES
from deal_chains.spec.source import FieldPath, SourceMap

CONSUMED = ("extends", "preset", "replace_rewards")


@dataclass
class Doc:
    """Spec data before validation, with where each field came from."""

    data: dict
    smap: SourceMap

    def sub(self, key: str | int) -> "Doc":
        """The document at ``key`` (a step), re-rooted there."""
        return Doc(self.data[key], self.smap.subtree((key,)))


def _node(dst: SourceMap, src: SourceMap, path: FieldPath) -> None:
    """Copy the position (key, value, override, file) of exactly ``path``."""
    for name in ("values", "keys", "overrides"):
        table = getattr(src, name)
        if path in table:
            getattr(dst, name)[path] = table[path]
            if name != "overrides":
                origin = src.files.get(path, src.file)
                if origin != dst.file:
                    dst.files[path] = origin


def merge(base: Doc, child: Doc, *, keep_replace: bool = False) -> Doc:
    """``child`` over ``base`` (see the module docstring). ``keep_replace``: keep the
    child's ``replace_rewards: true`` in the result (a step that extends a spec: its shared
    rewards are to be left out too)."""
    out: dict = {}
    smap = SourceMap(file=child.smap.file)
    _node(smap, child.smap, ())

    def take(doc: Doc, path: FieldPath, value: Any, dst: FieldPath | None = None) -> Any:
        smap.graft(doc.smap, path, path if dst is None else dst)
        return copy.deepcopy(value)

    replace = child.data.get("replace_rewards")
    for key in dict.fromkeys([*base.data, *child.data]):
        in_base, in_child = key in base.data, key in child.data
        b, c = base.data.get(key), child.data.get(key)
        if key in ("extends", "preset"):  # already followed by the loader
            continue
        if key == "replace_rewards":
            if in_child and (not isinstance(c, bool) or (c and keep_replace)):
                out[key] = take(child, (key,), c)  # not a bool: left for validation to report
            continue
        if key == "search" and isinstance(b, dict) and isinstance(c, dict):
            _node(smap, child.smap, (key,))
            out[key] = {}
            for k in dict.fromkeys([*b, *c]):
                src, value = (child, c[k]) if k in c else (base, b[k])
                out[key][k] = take(src, (key, k), value)
        elif key == "rewards" and replace is True:
            if in_child:
                out[key] = take(child, (key,), c)
        elif key == "rewards" and isinstance(b, list) and isinstance(c, list):
            _node(smap, child.smap, (key,))
            out[key] = [take(base, (key, i), e) for i, e in enumerate(b)]
            out[key] += [take(child, (key, j), e, (key, len(b) + j)) for j, e in enumerate(c)]
        elif key == "steps" and isinstance(b, dict) and isinstance(c, dict):
            _node(smap, child.smap, (key,))
            out[key] = {}
            for name in dict.fromkeys([*b, *c]):
                if name in b and name in c and isinstance(b[name], dict) and isinstance(c[name], dict):
                    merged = merge(Doc(b[name], base.smap.subtree((key, name))),
                                   Doc(c[name], child.smap.subtree((key, name))), keep_replace=True)
                    out[key][name] = merged.data
                    smap.graft(merged.smap, (), (key, name))
                else:
                    src, value = (child, c[name]) if name in c else (base, b[name])
                    out[key][name] = take(src, (key, name), value)
        elif in_child:
            out[key] = take(child, (key,), c)
        else:
            out[key] = take(base, (key,), b)
    return Doc(out, smap)


def apply_shared(doc: Doc) -> Doc:
    """A multi-step document with its shared settings (every top-level key but ``version``
    and ``steps``) merged into each step, as a base; the top level keeps only ``version``
    and ``steps``. Other documents are returned unchanged."""
    steps = doc.data.get("steps")
    if not isinstance(steps, dict) or not steps:
        return doc
    shared = Doc({k: v for k, v in doc.data.items() if k not in ("version", "steps")}, doc.smap)
    smap = SourceMap(file=doc.smap.file)
    for path in ((), ("version",), ("steps",)):
        _node(smap, doc.smap, path)
    out_steps: dict = {}
    for name, step in steps.items():
        _node(smap, doc.smap, ("steps", name))
        if isinstance(step, dict):
            merged = merge(shared, Doc(step, doc.smap.subtree(("steps", name))))
            out_steps[name] = merged.data
            smap.graft(merged.smap, (), ("steps", name))
        else:
            out_steps[name] = step
            smap.graft(doc.smap, ("steps", name), ("steps", name))
    data = {"version": doc.data["version"]} if "version" in doc.data else {}
    data["steps"] = out_steps
    return Doc(data, smap)


def entry_params(data: Any) -> Iterator[tuple[FieldPath, Any, dict]]:
    """(path, reward type, parameters) of every reward entry of a spec's data: the top-level
    rewards and every step's, nested entries (``all_of``, ``gated``...) included."""

    def entry(e: Any, at: FieldPath) -> Iterator[tuple[FieldPath, Any, dict]]:
        if not isinstance(e, dict):
            return
        for rtype_name, rtype in REWARD_TYPES.items():
            params = e.get(rtype_name)
            if not isinstance(params, dict):
                continue
            yield at + (rtype_name,), rtype, params
            for name in rtype.children:
                value = params.get(name)
                children = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
                for i, child in children:
                    yield from entry(child, at + (rtype_name, name) + (() if i is None else (i,)))

    def spec(d: Any, at: FieldPath) -> Iterator[tuple[FieldPath, Any, dict]]:
        if isinstance(d, dict) and isinstance(d.get("rewards"), list):
            for i, e in enumerate(d["rewards"]):
                yield from entry(e, at + ("rewards", i))

    yield from spec(data, ())
    steps = data.get("steps") if isinstance(data, dict) else None
    if isinstance(steps, dict):
        for name, step in steps.items():
            yield from spec(step, ("steps", name))


def resolve_paths(data: Any, folder: Path) -> None:
    """Make the file parameters of reward entries (``schema_file``, ``head``) absolute and
    the model parameters that start with ``./`` or ``../``, relative to ``folder`` (the
    spec file's), in the top-level rewards and every step's, nested entries included."""
    for _at, rtype, params in entry_params(data):
        for name in rtype.files:
            value = params.get(name)
            if isinstance(value, str) and value and not os.path.isabs(value):
                params[name] = os.path.normpath(folder / value)
        for name in rtype.models:
            value = params.get(name)
            if isinstance(value, str) and value.startswith(("./", "../")):
                params[name] = os.path.normpath(folder / value)


def external_references(data: Any) -> list[tuple[FieldPath, Any]]:
    """(path, value) of every field of a spec's data that names something outside the spec
    itself: a file (``schema_file``, ``head``), a model to load (``classifier.model``,
    ``reward_model.model``, ``judge.model``), a base spec (``extends``), the spec's own
    ``model``. The server refuses these in a request's spec: a client names presets and
    inline rewards, never the server's files or models.

    >>> external_references({"rewards": [{"json_schema": {"schema_file": "a.json"}}]})
    [(('rewards', 0, 'json_schema', 'schema_file'), 'a.json')]
    """
    found: list[tuple[FieldPath, Any]] = []
    if isinstance(data, dict):
        steps = data.get("steps") if isinstance(data.get("steps"), dict) else {}
        for at, d in [((), data), *((("steps", name), step) for name, step in steps.items())]:
            if isinstance(d, dict):
                found += [(at + (key,), d[key]) for key in ("extends", "model") if d.get(key) is not None]
    for at, rtype, params in entry_params(data):
        for name in (*rtype.files, *rtype.models):
            if params.get(name) is not None:
                found.append((at + (name,), params[name]))
    return found
