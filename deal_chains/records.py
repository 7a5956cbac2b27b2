"""Records in and out: JSONL reading (strict, every refusal naming file:line), record checks,
output records, resume state and output-path checks. The generate pipeline that runs a
spec over records is ``deal_chains.pipeline``.

>>> jsonl_line({"prompt": "hi"})
'{"prompt": "hi"}\n'

An input record is a dict: ``prompt`` (the user message; else the spec's ``prompt``
template is filled from the record) plus the spec's template variables. An output record
is the input's fields plus ``text``, ``rewards`` (name -> score), ``reward``, ``score``,
``finished``, ``finish_reason``, ``strategy`` and ``stats`` (and ``input_line`` in files).
An input field with one of those names is refused before any work (it would be
overwritten) unless ``result_field`` is given: then every generated field is nested under
that one name and the input fields stay exactly as they were.

``stats.fingerprint`` (``{"spec": ..., "search": ...}``: short sha256 digests of the
resolved spec and of the search settings) says what produced a record; ``--resume``
refuses a file written with another spec, search setting or strategy. A reward score
that is not a finite number (NaN, infinity) cannot be written as JSON: it is written as
``null`` and its field is listed in ``stats.non_finite``.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import numbers
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from deal_chains.errors import DealChainsError, InputError

# the generated fields of an output record (``input_line`` only in files): an input field
# with one of these names would be overwritten
RESULT_FIELDS = ("input_line", "text", "rewards", "reward", "score", "finished", "finish_reason",
                 "strategy", "stats")
# the record's line number travels in the record dict under this key while it is worked on
LINE_KEY = "__line__"
# deeper input values are refused: the JSON decoder, the templates and the writer all
# recurse, and a depth limit that depends on the stack left is no contract
MAX_RECORD_DEPTH = 100


class _BadValue(ValueError):
    """A JSON value the reader refuses (raised from the decoder's hooks)."""


def _refuse_constant(name: str) -> Any:
    raise _BadValue(f"{name} is not valid JSON (write null, or a number)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as infinity: it could not be written back
        raise _BadValue(f"number {text[:40]} is out of range (JSON numbers must be finite doubles)")
    return value


def _bounded_int(text: str) -> int:
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
    digits = len(text.lstrip("-"))
    if limit and digits > limit:
        raise _BadValue(f"an integer of {digits} digits is over the limit of {limit} digits")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # json.loads would keep the last silently: the first value is lost
            raise _BadValue(f"field {key!r} is given twice in one object")
        out[key] = value
    return out


def _decode_line(line: str) -> Any:
    """One JSON value; ValueError (with a message fit for the user) when it is refused."""
    try:
        return json.loads(line, parse_constant=_refuse_constant, parse_float=_finite_float,
                          parse_int=_bounded_int, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _BadValue(f"nested too deeply (more than {MAX_RECORD_DEPTH} levels of lists/objects)") from None


def _field_path(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def check_record_values(rec: Mapping[str, Any], where: str) -> None:
    """Every key and string of ``rec`` is real Unicode text (a lone surrogate such as
    ``"\\ud800"`` crashes the tokenizer and the UTF-8 writer) and no value is nested more
    than MAX_RECORD_DEPTH deep. InputError naming ``where`` and the field otherwise.
    Iterative, so a deep value cannot overflow the stack here."""
    todo: list[tuple[Any, tuple[Any, ...]]] = [(rec, ())]
    while todo:
        value, path = todo.pop()
        if len(path) > MAX_RECORD_DEPTH:
            raise InputError(f"{where}: field {_field_path(path[:1])!r} is nested more than "
                             f"{MAX_RECORD_DEPTH} levels deep")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InputError(f"{where}: field {_field_path(path)!r} holds a lone surrogate "
                                 f"({value[exc.start]!r} at character {exc.start + 1}): not valid Unicode "
                                 "text; fix or drop that \\u escape") from None
        elif isinstance(value, Mapping):
            for k, v in value.items():
                if isinstance(k, str):
                    try:
                        k.encode("utf-8")
                    except UnicodeEncodeError:
                        raise InputError(f"{where}: a field name under {_field_path(path) or 'the record'!r} "
                                         f"holds a lone surrogate: {k!r}") from None
                todo.append((v, path + (k,)))
        elif isinstance(value, (list, tuple)):
            todo.extend((v, path + (i,)) for i, v in enumerate(value))


def check_field_names(records: Sequence[Mapping[str, Any]], result_field: str | None,
                      locate: Callable[[Mapping[str, Any]], str], *, with_line: bool = True) -> None:
    """Refuse, before any work, an input field the output would overwrite: one of
    RESULT_FIELDS (``input_line`` only when ``with_line``), or ``result_field`` itself
    when the generated fields are nested under it."""
    if result_field is not None:
        if not isinstance(result_field, str) or not result_field.strip() or result_field == LINE_KEY:
            raise InputError(f"the result field must be a non-empty field name, got {result_field!r}")
        taken = {result_field}
    else:
        taken = {f for f in RESULT_FIELDS if with_line or f != "input_line"}
    for rec in records:
        clash = [k for k in rec if k in taken]
        if not clash:
            continue
        names = ", ".join(repr(k) for k in clash)
        if result_field is not None:
            raise InputError(f"{locate(rec)}: the input already has a field {names}, the --result-field "
                             "the generated fields go under: pick another name")
        raise InputError(f"{locate(rec)}: input field(s) {names} would be overwritten by the generated "
                         "field(s) of the same name: pass --result-field NAME (result_field=NAME in "
                         "Python) to nest the generated fields under NAME, or rename the input field(s)")


def admit_record(rec: Any, where: str, position: int) -> dict[str, Any]:
    """A copy of an input record with its position (line number, or index) under
    ``LINE_KEY``; an InputError naming ``where`` for a record that is not a JSON object,
    already uses that key, or holds a value JSON cannot carry (see ``check_record_values``)."""
    if not isinstance(rec, Mapping):
        raise InputError(f"{where}: each record must be a dict (a JSON object), got {type(rec).__name__}")
    if LINE_KEY in rec:
        raise InputError(f"{where}: field {LINE_KEY!r} is reserved (deal-chains keeps the record's position "
                         "there); rename it")
    check_record_values(rec, where)
    return {**rec, LINE_KEY: position}


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL file, validated before any work starts (so a bad line 900
    does not waste the first 899 generations). A UTF-8 byte-order mark at the start is
    dropped; NaN/Infinity, numbers out of range, lone surrogates and over-deep values are
    InputErrors naming ``file:line``."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"input is a directory, not a JSONL file: {p} (the Ray engine, "
                         "--engine ray, reads a directory or glob)")
    if not p.is_file():
        raise InputError(f"input file not found: {p}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read input file {p}: {exc.strerror or exc}") from None
    if data.startswith(codecs.BOM_UTF8):  # editors on Windows write one; it is not part of line 1
        data = data[len(codecs.BOM_UTF8):]
    records = []
    lines = []
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InputError(f"{p}:{lineno}: not valid UTF-8 (byte {exc.start + 1} of the line: "
                             f"{raw[exc.start:exc.start + 1]!r})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = _decode_line(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        except ValueError as exc:
            raise InputError(f"{p}:{lineno}: {exc}") from None
        records.append(admit_record(rec, f"{p}:{lineno}", lineno))
    if not records:
        raise InputError(f"{p}: no input records")
    return records


def finite_copy(value: Any, path: tuple[Any, ...] = (), found: list[str] | None = None) -> Any:
    """``value`` with every non-finite float (NaN, +-infinity: JSON has no spelling for
    them) replaced by None; the field path of each is appended to ``found``."""
    if (isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
            and not math.isfinite(value)):
        if found is not None:
            found.append(_field_path(path))
        return None
    if isinstance(value, Mapping):
        return {k: finite_copy(v, path + (k,), found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_copy(v, path + (i,), found) for i, v in enumerate(value)]
    return value


def jsonl_line(rec: dict[str, Any]) -> str:
    """One JSONL line, always valid JSON: UTF-8 text as is, except the Unicode line
    separators U+2028/U+2029, escaped so that no line-splitting tool cuts a record in two.
    Last resorts, so that one odd value never loses a record or stops a run: a non-finite
    float is written as null (``output_record`` already does so for the scores, and says
    so in ``stats.non_finite``), a lone surrogate as its ``\\u`` escape."""
    try:
        text = json.dumps(rec, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN / infinity somewhere
        text = json.dumps(finite_copy(rec), ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the UTF-8 file could not hold it
        text = json.dumps(finite_copy(rec), ensure_ascii=True, allow_nan=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]


def settings_fingerprint(spec: Any, config: Any) -> dict[str, str]:
    """What produced a record, as two short sha256 digests of canonical JSON: ``spec``
    (the resolved spec: rewards, prompt and system templates; not its ``model``, which
    ``--model`` overrides and whose path may differ between machines, nor its ``search``)
    and ``search`` (the search settings the run used, strategy included)."""
    exclude = {"model", "search"}
    try:
        spec_data = spec.model_dump(mode="json", exclude=exclude)
    except Exception:  # a spec built in Python may hold values JSON cannot: digest their text
        spec_data = spec.model_dump(exclude=exclude)
    search = config.model_dump(mode="json")
    for name, default in _SEARCH_FIELDS_ADDED.items():
        if name in search and search[name] == default:
            del search[name]
    return {"spec": _digest(spec_data), "search": _digest(search)}


# search settings added after fingerprints were first written, with their defaults: left out of
# the digest at the default, so records written before them still resume
_SEARCH_FIELDS_ADDED = {"returns": 1}


def check_output_path(out_path: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Check an output file before any work (before the model loads): not one of
    ``inputs`` (also through a link or another spelling of the path), not a directory,
    not under a file, writable. Missing parent directories are created. Nothing in an
    existing output is changed. InputError naming the path otherwise."""
    out = Path(out_path)
    if out.is_dir():
        raise InputError(f"output {out} is a directory: give a file path, e.g. {out / 'out.jsonl'}")
    if out.exists():
        for inp in inputs:
            if Path(inp).exists() and os.path.samefile(out, inp):
                raise InputError(f"output {out} is the input file {inp}: writing it would destroy the input; "
                                 "pick another --output")
    parent = out.parent
    ancestor = Path(os.path.abspath(parent))
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"output {out} cannot be created: {ancestor} is a file, not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            with out.open("ab"):  # append mode: proves it writable without changing a byte
                pass
        else:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            os.close(fd)
            out.unlink()
    except OSError as exc:
        raise InputError(f"cannot write the output {out}: {exc.strerror or exc}") from None
    return out


def _result_part(rec: dict[str, Any], result_field: str | None, where: str) -> dict[str, Any] | None:
    """The generated fields of an output record (nested under ``result_field`` or at the
    top level); InputError when the record was written with the other layout."""
    if result_field is None:
        if "input_line" not in rec:
            nested = [k for k, v in rec.items() if isinstance(v, dict) and "input_line" in v and "text" in v]
            if nested:
                raise InputError(f"{where}: this file was written with --result-field {nested[0]} (the "
                                 f"generated fields are under {nested[0]!r}): resume with --result-field "
                                 f"{nested[0]}")
        return rec
    part = rec.get(result_field)
    if isinstance(part, dict) and "input_line" in part:
        return part
    if "input_line" in rec and "text" in rec:
        raise InputError(f"{where}: this file was written without --result-field (the generated fields "
                         f"are at the top level, not under {result_field!r}): resume without it")
    return None


def _settings_problems(part: dict[str, Any], fingerprint: Mapping[str, str] | None,
                       strategy: str | None) -> list[str]:
    problems = []
    strategy_differs = strategy is not None and part.get("strategy") != strategy
    if strategy_differs:
        problems.append(f"strategy {part.get('strategy')!r} (this run: {strategy!r})")
    if fingerprint is not None:
        stats = part.get("stats")
        had = stats.get("fingerprint") if isinstance(stats, dict) else None
        if not isinstance(had, dict):
            problems.append("no settings fingerprint (stats.fingerprint: written by an older deal-chains, "
                            "or not by generate), so its spec and search settings cannot be checked")
        else:
            if had.get("spec") != fingerprint["spec"]:
                problems.append(f"another spec: rewards, prompt or system differ (spec fingerprint "
                                f"{had.get('spec')}, this run: {fingerprint['spec']})")
            # another strategy changes the search digest too: name the strategy alone then
            if had.get("search") != fingerprint["search"] and not strategy_differs:
                problems.append(f"other search settings (search fingerprint {had.get('search')}, this run: "
                                f"{fingerprint['search']})")
    return problems


def resume_state(out_path: Path, records: list[dict[str, Any]], *, result_field: str | None = None,
                 fingerprint: Mapping[str, str] | None = None, strategy: str | None = None) -> set[int]:
    """Input line numbers already in ``out_path`` (from an interrupted ``generate`` of the
    same input). A last line cut by a crash is dropped from the file, and the file is made
    to end with a newline (so appended records start on a line of their own); a line that
    is not a record of this input, or was written with another layout (``result_field``),
    strategy or settings ``fingerprint``, is an error (nothing is overwritten)."""
    if not out_path.exists():
        return set()
    by_line = {rec[LINE_KEY]: rec for rec in records}
    raw = out_path.read_bytes()
    lines = raw.split(b"\n")
    kept: list[bytes] = []
    done: set[int] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            if n == len(lines) or (n == len(lines) - 1 and not lines[-1]):
                break  # the record a crash cut short: generate it again
            raise InputError(f"{out_path}:{n}: not a JSON record; cannot resume into this file") from None
        where = f"{out_path}:{n}"
        part = _result_part(rec, result_field, where) if isinstance(rec, dict) else None
        line_no = part.get("input_line") if part is not None else None
        ok_line = isinstance(line_no, int) and not isinstance(line_no, bool)
        src = by_line.get(line_no) if ok_line else None
        if src is None or any(rec.get(k) != v for k, v in src.items() if k != LINE_KEY):
            raise InputError(f"{where}: not an output of this input file (input_line {line_no!r}); "
                             "use another --output or drop --resume")
        problems = _settings_problems(part, fingerprint, strategy)
        if problems:
            raise InputError(f"{where}: this output was written with {'; '.join(problems)}. Resuming would "
                             "mix records of different settings in one file: resume with the settings that "
                             "wrote it, or write to another --output")
        if line_no in done:
            raise InputError(f"{where}: input line {line_no} is there twice")
        done.add(line_no)
        kept.append(line)
    if len(kept) != sum(1 for line in lines if line.strip()) or (raw and not raw.endswith(b"\n")):
        out_path.write_bytes(b"".join(line + b"\n" for line in kept))
    return done


def record_prompt(spec: Any, rec: dict[str, Any], where: str) -> str:
    """The user message of one input record: its ``prompt`` field, else the spec's prompt
    template filled from the record. InputError naming ``where`` (file:line) otherwise."""
    prompt = rec.get("prompt")
    if prompt is None:
        try:
            prompt = spec.render_prompt(record_variables(rec))
        except DealChainsError as exc:
            raise InputError(f"{where}: {exc}") from None
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{where}: field 'prompt' must be a non-empty string "
                         "(or the spec must have a prompt template)")
    return prompt


def record_variables(rec: dict[str, Any]) -> dict[str, Any]:
    """The template variables of an input record (every field but the line number)."""
    return {k: v for k, v in rec.items() if k != LINE_KEY}


def check_batch_size(batch_size: Any, name: str = "batch_size") -> None:
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise InputError(f"{name} must be a whole number >= 1, got {batch_size!r}")


def output_record(rec: dict[str, Any], res: Any, *, result_field: str | None = None,
                  fingerprint: Mapping[str, str] | None = None, line: bool = True) -> dict[str, Any]:
    """The output record of one input record: its fields plus the generated ones
    (``input_line`` when ``line``, the result, ``stats`` with the settings
    ``fingerprint``), nested under ``result_field`` when given. Non-finite scores become
    None, listed in ``stats.non_finite``."""
    out = record_variables(rec)
    result: dict[str, Any] = {"input_line": rec[LINE_KEY]} if line else {}
    stats: dict[str, Any] = {
        "seconds": round(res.stats.seconds, 4), "new_tokens": res.stats.new_tokens,
        "forward_passes": res.stats.forward_passes, "candidates_scored": res.stats.candidates_scored,
        # the seed a sampled search used (None: deterministic): search.seed=<it> replays it
        "seed": getattr(res.stats, "seed", None),
    }
    if fingerprint is not None:
        stats["fingerprint"] = dict(fingerprint)
    non_finite: list[str] = []
    result.update({
        "text": res.text,
        "rewards": finite_copy(res.rewards, ("rewards",), non_finite),
        "reward": finite_copy(res.reward, ("reward",), non_finite),
        "score": finite_copy(res.score, ("score",), non_finite),
        "finished": res.finished, "finish_reason": res.finish_reason,
        "strategy": res.strategy,
        "stats": stats,
    })
    alternatives = getattr(res, "alternatives", None)
    if alternatives:  # search.returns > 1: the next best answers, best first
        result["alternatives"] = [{
            "text": alt.text,
            "rewards": finite_copy(alt.rewards, ("alternatives", i, "rewards"), non_finite),
            "reward": finite_copy(alt.reward, ("alternatives", i, "reward"), non_finite),
            "score": finite_copy(alt.score, ("alternatives", i, "score"), non_finite),
            "finished": alt.finished, "finish_reason": alt.finish_reason,
        } for i, alt in enumerate(alternatives)]
    if non_finite:  # written as null: say which, so a null is not read as "no score"
        stats["non_finite"] = non_finite
    if result_field is not None:
        out[result_field] = result
    else:
        out.update(result)
    return out


