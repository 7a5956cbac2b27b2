"""Reading a reward spec: YAML (safe subset) -> data with positions -> ``RewardSpec``.

YAML is composed with a ``yaml.SafeLoader`` subclass that refuses anchors, aliases and
any tag beyond plain strings, numbers, booleans, nulls, lists and mappings; nodes are
turned into Python values here (never by a YAML constructor for collections), so every
field keeps the line and column it came from.
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from pydantic import ValidationError

from deal_chains.errors import SpecError
from deal_chains.spec.merge import Doc, apply_shared, merge, resolve_paths
from deal_chains.spec.document import RewardSpec
from deal_chains.spec.source import FieldPath, SourceMap, dotted, problems_from_validation_error

MAX_SPEC_BYTES = 1 << 20  # 1 MiB
# Nesting deeper than this is refused while composing: PyYAML composes (and the converter
# walks) recursively, so a spec of thousands of nested brackets would otherwise end in a
# RecursionError. An inline JSON Schema nests at most 64 levels (its own limit) below the
# few levels of the spec around it, so real specs stay far below this.
MAX_SPEC_DEPTH = 128
# Python refuses to convert decimal integers of more than 4300 digits (a ValueError from
# the YAML constructor); no spec setting needs more than a handful.
MAX_INT_DIGITS = 100
_PRESET_NAME = re.compile(r"[A-Za-z0-9_-]+")
_CORE = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null", "map", "seq")}
_SCALARS = yaml.constructor.SafeConstructor()
_SCALAR_BUILDERS = {  # no construct_object: it would cache every node in the constructor
    _CORE + "int": _SCALARS.construct_yaml_int,
    _CORE + "float": _SCALARS.construct_yaml_float,
    _CORE + "bool": _SCALARS.construct_yaml_bool,
    _CORE + "null": _SCALARS.construct_yaml_null,
}


class _Refused(yaml.MarkedYAMLError):
    """YAML that parses but is outside the spec's safe subset."""


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases and object-constructing tags while composing."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused(problem="anchors and aliases are not allowed in a spec",
                           problem_mark=event.start_mark)
        if self._depth >= MAX_SPEC_DEPTH:
            raise _Refused(problem=f"the spec nests lists and mappings more than {MAX_SPEC_DEPTH} "
                           "levels deep", problem_mark=event.start_mark)
        tag = getattr(event, "tag", None)
        if tag not in (None, "!") and tag not in _ALLOWED_TAGS:
            shown = "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag
            raise _Refused(
                problem=f"tag {shown!r} is not allowed: a spec holds only plain values "
                "(strings, numbers, booleans, null, lists, mappings)",
                problem_mark=event.start_mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_scalar_node(self, anchor: Any) -> Any:
        node = super().compose_scalar_node(anchor)
        if node.tag == _CORE + "int":
            digits = sum(c.isalnum() for c in node.value)
            if digits > MAX_INT_DIGITS:
                raise _Refused(problem=f"integer of {digits} digits ({node.value[:20]}...) is too large: "
                               f"at most {MAX_INT_DIGITS} digits", problem_mark=node.start_mark)
        return node


# YAML 1.1 (PyYAML's resolver) reads an exponent without a decimal point or without a sign
# (``1e3``, ``1.5e3``, ``.5E-4``) as text; YAML 1.2, JSON and every spec author read it as a
# number. Resolve it as a float so ``lam: 1e3`` or ``maximum: 1e6`` in an inline schema mean
# what they say.
_SpecLoader.add_implicit_resolver(
    _CORE + "float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def _position(mark: Any) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def _yaml_problem(exc: yaml.YAMLError, file: str | None, text: str = "") -> dict:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if isinstance(exc, yaml.reader.ReaderError):
        # a character YAML does not allow: the reader knows only its offset
        before = text[: exc.position]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        return {"file": file, "line": line, "column": column, "field": None,
                "message": f"YAML syntax error: character {exc.character!r} is not allowed in YAML"}
    if isinstance(exc, _Refused):
        message = str(exc.problem)
    else:
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        context_mark = getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark is not mark:
            context += f" that starts at line {context_mark.line + 1}"
        message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    line, column = _position(mark) if mark is not None else (None, None)
    return {"file": file, "line": line, "column": column, "field": None, "message": message}


def _compose(text: str, file: str | None) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_SpecLoader)
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_problem(exc, file, text)], file) from None


class _Converter:
    """Node tree -> Python values, recording positions and duplicate keys."""

    def __init__(self, source: SourceMap):
        self.source = source
        self.problems: list[dict] = []

    def value(self, node: yaml.Node, path: FieldPath) -> Any:
        self.source.values[path] = _position(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, path + (i,)) for i, item in enumerate(node.value)]
        build = _SCALAR_BUILDERS.get(node.tag)
        if build is not None:
            return build(node)
        return node.value  # str, and implicit timestamps/merge keys kept as text

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict:
        out: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                line, column = _position(key_node.start_mark)
                self.problems.append({"file": self.source.file, "line": line, "column": column,
                                      "field": ".".join(map(str, path)) or None,
                                      "message": "mapping keys must be plain strings"})
                continue
            key = self.value(key_node, path + ("<key>",))
            self.source.values.pop(path + ("<key>",), None)
            sub = path + (key,)
            if key in out:
                first = self.source.keys[sub][0]
                problem = self.source.problem(sub, f"duplicate key {key!r} (first given at line {first})")
                problem["line"], problem["column"] = _position(key_node.start_mark)
                self.problems.append(problem)
                continue
            self.source.keys[sub] = _position(key_node.start_mark)
            out[key] = self.value(value_node, sub)
        return out


def _parse_value(text: str) -> Any:
    """A ``--set`` value: a YAML scalar in the safe subset (``4`` -> 4, ``true`` -> True),
    a flow list/mapping when it starts with ``[``/``{``, else the text itself (so
    ``Say {x}: now`` stays a string instead of becoming a mapping)."""
    flow = text.startswith(("[", "{"))
    try:
        node = yaml.compose(text, Loader=_SpecLoader)
    except _Refused as exc:  # anchors, aliases, tags: never taken as plain text
        raise SpecError(str(exc.problem)) from None
    except yaml.YAMLError as exc:
        if flow:
            raise SpecError(_yaml_problem(exc, None)["message"]) from None
        return text
    if node is None:
        return None
    if not flow and not isinstance(node, yaml.ScalarNode):
        return text
    return _Converter(SourceMap()).value(node, ())


def _apply(data: dict, overrides: Sequence[str]) -> tuple[dict, dict[FieldPath, str]]:
    data = copy.deepcopy(data)
    origins: dict[FieldPath, str] = {}
    for override in overrides:
        def bad(why: str) -> SpecError:
            return SpecError(f"invalid override {override!r}: {why}")

        path_text, eq, value_text = override.partition("=")
        path_text = path_text.strip()
        if not eq:
            raise bad("expected dotted.path=value, e.g. search.top_k=4")
        parts = path_text.split(".")
        if not path_text or not all(parts):
            raise bad("the path before '=' is empty or has an empty part")
        try:
            value = _parse_value(value_text.strip())
        except SpecError as exc:
            raise bad(exc.errors[0]["message"]) from None
        container: Any = data
        path: FieldPath = ()
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[:i]) or "the top level"
            if isinstance(container, dict):
                step: str | int = part
                if last:
                    container[part] = value
                elif not isinstance(container.get(part), (dict, list)):
                    if part in container and container[part] is not None:
                        raise bad(f"{'.'.join(parts[:i + 1])} is not a mapping or list")
                    container[part] = {}
            elif isinstance(container, list):
                if not (part.isascii() and part.isdigit()) or int(part) >= len(container):
                    raise bad(f"{where} is a list of {len(container)}; {part!r} is not an index in it")
                step = int(part)
                if last:
                    container[step] = value
            else:
                raise bad(f"{where} is not a mapping or list")
            path += (step,)
            if not last:
                container = container[step]
        origins[path] = override
    return data, origins


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict:
    """A copy of ``data`` with each ``dotted.path=value`` override set.

    >>> apply_overrides({"search": {"top_k": 8}}, ["search.top_k=4", "search.strategy=greedy"])
    {'search': {'top_k': 4, 'strategy': 'greedy'}}

    Values are YAML (``4`` is an int, ``true`` a bool, ``[a, b]`` a list, other text a
    string); digit path parts index lists (``rewards.0.weight=2``); missing mappings on the
    way are created. A malformed override raises ``SpecError`` naming it.
    """
    return _apply(dict(data), overrides)[0]


def _presets_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("rewards") / "presets"))
    except (ImportError, TypeError):  # pragma: no cover - rewards not importable as a package
        return Path(__file__).resolve().parents[2] / "rewards" / "presets"


def list_presets() -> list[str]:
    """Names of the bundled presets (``rewards/presets/*.yaml``).

    >>> "commongen" in list_presets()
    True
    """
    folder = _presets_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def preset_path(name: str) -> Path:
    """The file of a bundled preset; ``SpecError`` listing the presets if there is none.

    >>> preset_path("commongen").name
    'commongen.yaml'
    """
    path = _presets_dir() / f"{name}.yaml"
    if not _PRESET_NAME.fullmatch(name) or not path.is_file():
        available = ", ".join(list_presets()) or "none"
        raise SpecError(f"unknown preset {name!r}; available presets: {available}")
    return path


def _is_file_name(text: str) -> bool:
    if "\n" in text:
        return False
    if text.endswith((".yaml", ".yml")):
        return True
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _read(path: Path) -> str:
    file = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        hint = ""
        if _PRESET_NAME.fullmatch(file):  # a bare name: perhaps a mistyped preset
            close = difflib.get_close_matches(file, list_presets(), n=1)
            hint = (f" (did you mean the preset {close[0]!r}?)" if close
                    else f" (nor is it a preset: {', '.join(list_presets()) or 'none'})")
        raise SpecError(f"spec file not found: {file}{hint}", file) from None
    except OSError as exc:
        raise SpecError(f"cannot read spec file: {exc}", file) from None
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"spec file is {size} bytes; the limit is {MAX_SPEC_BYTES} (1 MiB)", file)
    try:
        raw = path.read_bytes()[: MAX_SPEC_BYTES + 1]
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"spec file is not UTF-8 text ({exc.reason} at byte {exc.start})", file) from None
    except OSError as exc:
        raise SpecError(f"cannot read spec file: {exc}", file) from None


def _parse_text(text: str, source: SourceMap) -> tuple[Any, list[dict]]:
    file = source.file
    if len(text.encode("utf-8")) > MAX_SPEC_BYTES:
        raise SpecError(f"spec is over the {MAX_SPEC_BYTES}-byte (1 MiB) limit", file)
    node = _compose(text, file)
    if node is None:
        raise SpecError([{"file": file, "line": 1, "column": 1, "field": None,
                          "message": "the spec is empty; it needs at least a 'rewards:' list"}], file)
    if not isinstance(node, yaml.MappingNode):
        line, column = _position(node.start_mark)
        # the value shortened: a file that is one long scalar (extends: of a text file that is
        # no spec) is not echoed whole into the error
        shown = node.value if len(node.value) <= 60 else node.value[:57] + "..."
        kind = "a list" if isinstance(node, yaml.SequenceNode) else f"the value {shown!r}"
        raise SpecError([{"file": file, "line": line, "column": column, "field": None,
                          "message": f"the top level of a spec must be a mapping of keys "
                                     f"(version, search, prompt, rewards, ...), got {kind}"}], file)
    converter = _Converter(source)
    return converter.value(node, ()), converter.problems


def _extends_path(target: str, folder: Path | None) -> Path:
    if target.startswith("preset:"):
        return preset_path(target[len("preset:"):].strip())
    candidate = (folder or Path.cwd()) / target
    if candidate.is_file():
        return candidate
    if _PRESET_NAME.fullmatch(target):
        return preset_path(target)
    raise SpecError(f"spec file not found: {candidate}")


class _Resolver:
    """Follows ``extends`` and ``preset`` (of the spec and of its steps) through files and
    presets."""

    def __init__(self) -> None:
        self.problems: list[dict] = []

    def fail(self, smap: SourceMap, at: FieldPath, message: str) -> SpecError:
        return SpecError(self.problems + [smap.problem(at, message)], smap.file_of(at))

    def base_key(self, doc: Doc, prefix: FieldPath) -> str | None:
        """The key naming the base of the spec at ``prefix``: ``extends``, or ``preset``
        (``preset: NAME`` is ``extends: preset:NAME``), or None; a null one is dropped."""
        data = _get(doc.data, prefix)
        for key in ("extends", "preset"):
            if key in data and data[key] is None:
                del data[key]
        if "extends" in data and "preset" in data:
            raise self.fail(doc.smap, prefix + ("preset",), "give either preset or extends, not both "
                            "(preset: NAME is short for extends: preset:NAME)")
        return next((k for k in ("extends", "preset") if k in data), None)

    def base(self, doc: Doc, at: FieldPath, folder: Path | None, stack: tuple[str, ...]) -> Doc:
        target = _get(doc.data, at)
        if at[-1] == "preset":
            if not isinstance(target, str) or not target.strip():
                raise self.fail(doc.smap, at, f"preset must be the name of a preset; available presets: "
                                f"{', '.join(list_presets()) or 'none'} (got {target!r})")
            try:
                path = preset_path(target.strip())
            except SpecError as exc:
                raise self.fail(doc.smap, at, exc.errors[0]["message"]) from None
        elif not isinstance(target, str) or not target.strip():
            raise self.fail(doc.smap, at, f"extends must be a preset name or a spec file path (got {target!r})")
        else:
            try:
                path = _extends_path(target.strip(), folder)
            except SpecError as exc:
                raise self.fail(doc.smap, at, f"cannot extend {target!r}: {exc.errors[0]['message']}") from None
        key = str(path.resolve())
        if key in stack:
            chain = list(stack[stack.index(key):]) + [key]
            raise self.fail(doc.smap, at, "extends cycle: " + " -> ".join(chain))
        if len(stack) >= 32:
            raise self.fail(doc.smap, at, "extends chain is more than 32 specs deep")
        smap = SourceMap(file=str(path))
        data, problems = _parse_text(_read(path), smap)
        self.problems += problems
        return self.resolve(Doc(data, smap), path.absolute().parent, stack + (key,))

    def resolve(self, doc: Doc, folder: Path | None, stack: tuple[str, ...]) -> Doc:
        """``doc`` with its steps' and its own ``extends`` merged in."""
        if folder is not None:
            resolve_paths(doc.data, folder)
        steps = doc.data.get("steps")
        if isinstance(steps, dict):
            for name, step in list(steps.items()):
                if not isinstance(step, dict):
                    continue
                key = self.base_key(doc, ("steps", name))
                if key is None:
                    continue
                at = ("steps", name, key)
                base = self.base(doc, at, folder, stack)
                if isinstance(base.data.get("steps"), dict):
                    raise self.fail(doc.smap, at, f"a step cannot extend a multi-step spec ({step[key]!r})")
                merged = merge(base, doc.sub("steps").sub(name), keep_replace=True)
                steps[name] = merged.data
                doc.smap.drop(("steps", name))
                doc.smap.graft(merged.smap, (), ("steps", name))
        key = self.base_key(doc, ())
        if key is None:
            return doc
        return merge(self.base(doc, (key,), folder, stack), doc)


def _get(data: Any, path: FieldPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _dedupe(problems: list[dict]) -> list[dict]:
    """One problem per position and message: a shared setting of a multi-step spec that is
    wrong is wrong in every step, reported once."""
    seen: set = set()
    out = []
    for p in problems:
        key = (p["file"], p["line"], p["column"], p["message"])
        if p["line"] is None and "(from --set" not in p["message"]:
            key = (id(p),)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _check_depth(data: Any) -> None:
    """SpecError naming the field where a spec given as a mapping nests more than
    ``MAX_SPEC_DEPTH`` levels (copying and validating it would otherwise recurse without
    bound). Iterative, so any depth is reported rather than crashing."""
    stack: list[tuple[Any, FieldPath]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) >= MAX_SPEC_DEPTH:
            raise SpecError([{"file": None, "line": None, "column": None, "field": dotted(path[:8]) + ".…",
                              "message": f"the spec nests lists and mappings more than {MAX_SPEC_DEPTH} "
                                         "levels deep"}])
        if isinstance(value, Mapping):
            stack.extend((v, path + (str(k),)) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, path + (i,)) for i, v in enumerate(value))


def _preset_file(source: Path) -> Path:
    """``source``, or the bundled preset of that name when ``source`` is a bare name (no
    folder, no suffix) that is no file here: ``deal-chains spec validate harmless``."""
    name = str(source)
    if not source.exists() and _PRESET_NAME.fullmatch(name) and name in list_presets():
        return preset_path(name)
    return source


def load_spec(source: str | Path | Mapping[str, Any], *, overrides: Sequence[str] = ()) -> RewardSpec:
    """Load and validate a reward spec from a file, YAML text, a mapping or a preset name.

    >>> spec = load_spec("rewards: [{length: {max_words: 20}}]", overrides=["search.top_k=4"])
    >>> spec.search_config().top_k, spec.rewards[0].name
    (4, 'length')

    ``source``: a ``Path``; a string naming an existing file or ending in ``.yaml``/``.yml``;
    ``preset:NAME`` or a bare preset name (``commongen``; also as a ``Path`` naming no
    file); other strings are YAML text. ``extends`` (in the spec or in a step; ``preset:
    NAME`` is short for ``extends: preset:NAME``) is followed through files (relative to the
    spec's file; to the working directory for text and mappings) and presets and merged
    in; a multi-step spec's shared settings are merged into each step. ``overrides`` are
    ``dotted.path=value`` strings applied after ``extends``, before the steps get the
    shared settings. Raises ``SpecError`` listing every problem with file, line, column
    and field path (in the file it came from, for a field from a base spec).
    """
    smap = SourceMap()
    resolver = _Resolver()
    folder: Path | None = None
    stack: tuple[str, ...] = ()
    if isinstance(source, Mapping):
        _check_depth(source)
        data: Any = copy.deepcopy(dict(source))
    else:
        if isinstance(source, Path):
            source = _preset_file(source)
        # one line only: "preset: NAME" followed by more YAML is a spec with a preset key
        if isinstance(source, str) and source.startswith("preset:") and "\n" not in source.strip():
            source = preset_path(source[len("preset:"):].strip())
        elif isinstance(source, str) and _PRESET_NAME.fullmatch(source) and not Path(source).is_file():
            source = preset_path(source)
        if isinstance(source, Path) or _is_file_name(source):
            smap.file = str(source)
            text = _read(Path(source))
            folder = Path(source).absolute().parent
            stack = (str(Path(source).resolve()),)
        else:
            text = source
        data, resolver.problems = _parse_text(text, smap)
    doc = resolver.resolve(Doc(data, smap), folder, stack)
    problems = resolver.problems
    try:
        doc.data, origins = _apply(doc.data, overrides)
    except SpecError as exc:
        # the override is what is wrong, but name the spec it was applied to
        raise SpecError([{**e, "file": e.get("file") or smap.file} for e in exc.errors], smap.file) from None
    doc.smap.overrides.update(origins)
    doc = apply_shared(doc)
    smap = doc.smap
    spec = None
    try:
        spec = RewardSpec.model_validate(doc.data)
    except ValidationError as exc:
        problems += problems_from_validation_error(exc, smap, RewardSpec)
    if problems or spec is None:
        problems.sort(key=lambda p: (p["file"] != smap.file, str(p["file"]), p["line"] is None,
                                     p["line"] or 0, p["column"] or 0))
        raise SpecError(_dedupe(problems), smap.file)
    spec._source = smap
    for name, step in (spec.steps or {}).items():
        step._source = smap.at(("steps", name))
    return spec
