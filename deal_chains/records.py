"""Records in, records out: the shared core of ``deal-chains generate`` (local and Ray
engines) and its Python form, ``generate_records``.

>>> from deal_chains import generate_records                                   # doctest: +SKIP
>>> spec = "preset: commongen"                                                 # doctest: +SKIP
>>> [out] = generate_records(spec, [{"concepts": ["dog", "frisbee", "catch"]}])  # doctest: +SKIP
>>> out["text"], out["rewards"], out["stats"]["seconds"]                       # doctest: +SKIP

An input record is a dict: ``prompt`` (the user message; else the spec's ``prompt``
template is filled from the record) plus the spec's template variables. An output record
is the input's fields plus ``text``, ``rewards`` (name -> score), ``reward``, ``score``,
``finished``, ``finish_reason``, ``strategy`` and ``stats``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from deal_chains.errors import DealChainsError, InputError


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL file, validated before any work starts (so a bad line 900
    does not waste the first 899 generations)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file not found: {p}")
    records = []
    lines = []
    for lineno, raw in enumerate(p.read_bytes().split(b"\n"), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InputError(f"{p}:{lineno}: not valid UTF-8 (byte {exc.start + 1} of the line: "
                             f"{raw[exc.start:exc.start + 1]!r})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(rec, dict):
            raise InputError(f"{p}:{lineno}: each line must be a JSON object, got {type(rec).__name__}")
        rec["__line__"] = lineno
        records.append(rec)
    if not records:
        raise InputError(f"{p}: no input records")
    return records


def jsonl_line(rec: dict[str, Any]) -> str:
    """One JSONL line: UTF-8 text as is, except the Unicode line separators U+2028/U+2029,
    escaped so that no line-splitting tool cuts a record in two."""
    text = json.dumps(rec, ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def resume_state(out_path: Path, records: list[dict[str, Any]]) -> set[int]:
    """Input line numbers already in ``out_path`` (from an interrupted ``generate`` of the
    same input). A last line cut by a crash is dropped from the file; a line that is not a
    record of this input is an error (nothing is overwritten)."""
    if not out_path.exists():
        return set()
    by_line = {rec["__line__"]: rec for rec in records}
    raw = out_path.read_bytes()
    lines = raw.split(b"\n")
    kept: list[bytes] = []
    done: set[int] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if n == len(lines) or (n == len(lines) - 1 and not lines[-1]):
                break  # the record a crash cut short: generate it again
            raise InputError(f"{out_path}:{n}: not a JSON record; cannot resume into this file") from None
        src = by_line.get(rec.get("input_line")) if isinstance(rec, dict) else None
        if src is None or any(rec.get(k) != v for k, v in src.items() if k != "__line__"):
            raise InputError(f"{out_path}:{n}: not an output of this input file (input_line "
                             f"{rec.get('input_line') if isinstance(rec, dict) else None!r}); "
                             "use another --output or drop --resume")
        if rec["input_line"] in done:
            raise InputError(f"{out_path}:{n}: input line {rec['input_line']} is there twice")
        done.add(rec["input_line"])
        kept.append(line)
    if len(kept) != sum(1 for line in lines if line.strip()):
        out_path.write_bytes(b"".join(line + b"\n" for line in kept))
    return done


def load_generate_spec(spec_source: Any, overrides: Sequence[str] = (), step: str | None = None,
                       strategy: str | None = None) -> tuple[Any, Any]:
    """The spec (the chosen step of a multi-step one) and its search config, as ``generate``
    uses them (shared by the local and the Ray engine)."""
    from deal_chains.spec import load_spec

    spec = load_spec(spec_source, overrides=list(overrides or []))
    if step is None and spec.steps:
        raise InputError(f"{spec_source} has steps ({', '.join(spec.step_names)}); pick one with --step NAME")
    if step is not None:
        spec = spec.step(step)
    config = spec.search_config(**({"strategy": strategy} if strategy else {}))
    return spec, config


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
    return {k: v for k, v in rec.items() if k != "__line__"}


class GenerateInputs:
    """The per-prompt arguments of ``DeALEngine.iter_generate`` built from input records."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.rewards: list[Any] = []
        self.systems: list[str | None] = []
        self.contexts: list[Any] = []
        self.constraints: list[Any] | None = None


def prepare_records(spec: Any, records: list[dict[str, Any]], engine: Any, config: Any,
                    source: Any, locate: Callable[[dict[str, Any]], str] | None = None) -> GenerateInputs:
    """Prompts, rewards, system messages, reward contexts and hard constraints of
    ``records`` (from ``read_jsonl``); every problem is an InputError naming
    ``source:line`` (or ``locate(record)``). Checked for all records before any generation."""
    from rewards.base import RewardContext

    hard = spec.build_constraint() is not None
    count_tokens = lambda text: len(engine.lm.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    out = GenerateInputs()
    if hard:
        out.constraints = []
    for rec in records:
        where = locate(rec) if locate is not None else f"{source}:{rec['__line__']}"
        variables = record_variables(rec)
        prompt = record_prompt(spec, rec, where)
        try:
            out.rewards.append(spec.build_rewards(variables, count_tokens=count_tokens, lm=engine.lm))
            out.systems.append(spec.render_system(variables))
            engine.lm.check_fits(len(engine.lm.format_prompt(prompt, system=out.systems[-1])),
                                 config.max_new_tokens, label="the prompt")
            if hard:
                out.constraints.append(spec.build_constraint(variables))
        except DealChainsError as exc:
            raise InputError(f"{where}: {exc}") from None
        out.prompts.append(prompt)
        out.contexts.append(RewardContext(prompt=prompt, variables=variables))
    return out


def output_record(rec: dict[str, Any], res: Any) -> dict[str, Any]:
    """The output record of one input record: its fields, ``input_line`` and the result."""
    out = record_variables(rec)
    out["input_line"] = rec["__line__"]
    out.update({
        "text": res.text, "rewards": res.rewards, "reward": res.reward, "score": res.score,
        "finished": res.finished, "finish_reason": res.finish_reason,
        "strategy": res.strategy,
        "stats": {"seconds": round(res.stats.seconds, 4), "new_tokens": res.stats.new_tokens,
                  "forward_passes": res.stats.forward_passes,
                  "candidates_scored": res.stats.candidates_scored},
    })
    return out



def generate_records(spec: Any, records: Iterable[Mapping[str, Any]], *, engine: Any = None,
                     model: Any = None, device: str = "auto", step: str | None = None,
                     strategy: str | None = None, search: Mapping[str, Any] | None = None,
                     overrides: Sequence[str] = (), batch_size: int | None = None,
                     progress: bool = False) -> list[dict[str, Any]]:
    """Run a spec over input records, as ``deal-chains generate`` does for a JSONL file.

    ``spec``: a path, YAML text, preset name, mapping or ``RewardSpec``; ``step`` picks one
    step of a multi-step spec. The search is the spec's, changed by ``strategy``, ``search``
    (keyword settings, e.g. ``{"top_k": 4, "max_new_tokens": 32}``) and ``overrides``
    (``"search.top_k=4"`` strings, as ``--set``; spec sources only). ``engine`` (a
    ``DeALEngine``) is reused when given; else ``model`` (default: the spec's) is loaded.
    Every record is checked (prompt, template variables, rewards, prompt length) before any
    generation: an ``InputError`` names ``records[i]``. Returns one output record per input
    record, in order (the inputs are not modified)."""
    from deal_chains.search.engine import DeALEngine
    from deal_chains.spec import RewardSpec, load_spec

    if isinstance(spec, RewardSpec):
        if overrides:
            raise InputError("overrides need a spec source (path, text or mapping), not a loaded RewardSpec; "
                             "use search={...}")
        loaded = spec
    else:
        loaded = load_spec(Path(spec) if isinstance(spec, Path) else spec, overrides=list(overrides or []))
    if step is not None:
        loaded = loaded.step(step)
    elif loaded.steps:
        raise InputError(f"this spec has steps ({', '.join(loaded.step_names)}); pick one with step=NAME")
    chosen = loaded
    settings = dict(search or {})
    if strategy:
        settings["strategy"] = strategy
    config = chosen.search_config(**settings)  # ConfigError names a bad setting
    rows: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise InputError(f"records[{i}]: each record must be a dict, got {type(rec).__name__}")
        rows.append({**rec, "__line__": i})
    if not rows:
        return []
    engine = engine if engine is not None else DeALEngine(model or chosen.model, device=device)
    inputs = prepare_records(chosen, rows, engine, config, "records", locate=lambda r: f"records[{r['__line__']}]")
    results = engine.generate(inputs.prompts, inputs.rewards, config, system=inputs.systems,
                              contexts=inputs.contexts, constraints=inputs.constraints,
                              batch_size=batch_size, progress=progress)
    out = []
    for rec, res in zip(rows, results):
        record = output_record(rec, res)
        record.pop("input_line")
        out.append(record)
    return out
