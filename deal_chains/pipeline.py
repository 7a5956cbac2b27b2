"""The generate pipeline: records in -> checks -> templates -> search -> records out. One
implementation behind ``deal-chains generate``, ``generate_records`` (Python) and the Ray
engine's workers.

>>> from deal_chains.pipeline import generate_records                           # doctest: +SKIP
>>> [out] = generate_records("preset: commongen", [{"concepts": ["dog", "frisbee", "catch"]}])  # doctest: +SKIP
>>> out["text"], out["rewards"], out["stats"]["seconds"]                       # doctest: +SKIP

The steps, in order: ``load_generate_spec`` (spec, step, overrides, search settings);
``check_records`` (every record's prompt and template variables, before a model loads);
``records_to_generate`` (with resume: the records not yet in the output file);
``search_inputs`` (prompts, rewards, system messages, constraints, lengths, with the
model's tokenizer); ``run_records`` (the search in batches, output records as each batch
finishes). Record I/O (JSONL reading and writing, resume, output records) is
``deal_chains.records``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from deal_chains.errors import DealChainsError, InputError
from deal_chains.records import (LINE_KEY, admit_record, check_batch_size, check_field_names,
                                 output_record, record_prompt, record_variables, resume_state,
                                 settings_fingerprint)


def load_generate_spec(spec_source: Any, overrides: Sequence[str] = (), step: str | None = None,
                       strategy: str | None = None, search: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    """The spec (the chosen step of a multi-step one) and its search config, as ``generate``
    uses them: ``spec_source`` is a path, YAML text, preset name, mapping or ``RewardSpec``;
    ``overrides`` are ``path=value`` strings (spec sources only), ``search`` and ``strategy``
    change the search settings. ConfigError / SpecError / InputError name what is wrong."""
    from deal_chains.spec import RewardSpec, load_spec

    if isinstance(spec_source, RewardSpec):
        if overrides:
            raise InputError("overrides need a spec source (path, text or mapping), not a loaded RewardSpec; "
                             "use search={...}")
        spec = spec_source
    else:
        spec = load_spec(Path(spec_source) if isinstance(spec_source, Path) else spec_source,
                         overrides=list(overrides or []))
    if step is None and spec.steps:
        raise InputError(f"{spec_source if isinstance(spec_source, (str, Path)) else 'this spec'} has steps "
                         f"({', '.join(spec.step_names)}); pick one with --step NAME (step= in Python)")
    if step is not None:
        spec = spec.step(step)
    settings = dict(search or {})
    if strategy:
        settings["strategy"] = strategy
    return spec, spec.search_config(**settings)


class GenerateInputs:
    """The per-prompt arguments of ``DeALEngine.iter_generate`` built from input records."""

    def __init__(self) -> None:
        self.prompts: list[Any] = []  # the request, or the spec's example turns and the request
        self.rewards: list[Any] = []
        self.systems: list[str | None] = []
        self.contexts: list[Any] = []
        self.constraints: list[Any] | None = None
        self.prompt_lens: list[int] = []  # formatted prompt tokens, for the budget check


def search_inputs(spec: Any, records: list[dict[str, Any]], engine: Any, config: Any,
                  locate: Callable[[dict[str, Any]], str]) -> GenerateInputs:
    """Prompts, rewards, system messages, reward contexts and hard constraints of
    ``records``; every problem is an InputError naming ``locate(record)`` (``file:line``,
    ``records[i]``). Checked for all records before any generation."""
    from rewards.base import RewardContext

    hard = spec.build_constraint() is not None
    count_tokens = lambda text: len(engine.lm.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    out = GenerateInputs()
    if hard:
        out.constraints = []
    for rec in records:
        where = locate(rec)
        variables = record_variables(rec)
        prompt = record_prompt(spec, rec, where)
        request = spec.with_examples(prompt)
        try:
            out.rewards.append(spec.build_rewards(variables, count_tokens=count_tokens, lm=engine.lm))
            out.systems.append(spec.render_system(variables))
            prompt_len = len(engine.lm.format_prompt(request, system=out.systems[-1]))
            engine.lm.check_fits(prompt_len, config.max_new_tokens, label="the prompt")
            if hard:
                out.constraints.append(spec.build_constraint(variables))
        except DealChainsError as exc:
            raise InputError(f"{where}: {exc}") from None
        out.prompts.append(request)
        out.prompt_lens.append(prompt_len)
        out.contexts.append(RewardContext(prompt=prompt, variables=variables))
    return out


def check_search_budget(engine: Any, config: Any, prompt_lens: Sequence[int]) -> None:
    """The engine's budget check (``limits.check_limits``: token budget, hypotheses, KV
    cache), run now: ``iter_generate`` runs it only once it is iterated, and by then the
    caller may have opened (truncated) its output. ConfigError listing every limit passed."""
    limits = getattr(engine, "limits", None)
    if limits is None:  # an engine-like object without budgets: iter_generate checks what it has
        return
    try:
        from deal_chains.search.engine import _rows_per_prompt, tree_params
    except ImportError:  # pragma: no cover - engine internals renamed: iter_generate still checks,
        return  # and the output is opened only once work starts
    from deal_chains.search.limits import check_limits

    params = tree_params(config)
    check_limits(limits, engine.lm, rows=_rows_per_prompt(params, config), lookahead=params.lookahead,
                 max_new_tokens=config.max_new_tokens, prompt_lens=list(prompt_lens))


def generate_records(spec: Any, records: Iterable[Mapping[str, Any]], *, engine: Any = None,
                     model: Any = None, device: str = "auto", step: str | None = None,
                     strategy: str | None = None, search: Mapping[str, Any] | None = None,
                     overrides: Sequence[str] = (), batch_size: int | None = None,
                     progress: bool = False, result_field: str | None = None,
                     trust_remote_code: bool = False) -> list[dict[str, Any]]:
    """Run a spec over input records, as ``deal-chains generate`` does for a JSONL file.

    ``spec``: a path, YAML text, preset name, mapping or ``RewardSpec``; ``step`` picks one
    step of a multi-step spec. The search is the spec's, changed by ``strategy``, ``search``
    (keyword settings, e.g. ``{"top_k": 4, "max_new_tokens": 32}``) and ``overrides``
    (``"search.top_k=4"`` strings, as ``--set``; spec sources only). ``engine`` (a
    ``DeALEngine``) is reused when given; else ``model`` (default: the spec's, else
    ``"default"``) is loaded (``trust_remote_code`` as DeALEngine takes it).
    ``result_field``: nest the generated fields under this name (else an input field named
    like one of them, e.g. ``text``, is an InputError). Every record is checked (prompt,
    template variables, field names, text, rewards, prompt length) and the search budget
    too before any generation: an ``InputError`` names ``records[i]``. Returns one output
    record per input record, in order (the inputs are not modified)."""
    from deal_chains.search.engine import DeALEngine

    chosen, config = load_generate_spec(spec, overrides, step, strategy, search)
    check_batch_size(batch_size)
    rows = [admit_record(rec, f"records[{i}]", i) for i, rec in enumerate(records)]
    locate = lambda r: f"records[{r[LINE_KEY]}]"  # noqa: E731
    # no input_line in the returned records: an input field of that name is kept as it is
    check_field_names(rows, result_field, locate, with_line=False)
    check_records(chosen, rows, locate)
    if not rows:
        return []
    if engine is None:
        # a spec without `model:` runs on the embedded default model, as DeALEngine() does
        engine = DeALEngine(model or chosen.model or "default", device=device, trust_remote_code=trust_remote_code)
    out: list[dict[str, Any] | None] = [None] * len(rows)
    for j, record in run_records(engine, chosen, config, rows, locate=locate, batch_size=batch_size,
                                 progress=progress, result_field=result_field, line=False):
        out[j] = record
    return out  # type: ignore[return-value]


def _reward_variables(spec: Any) -> set[str]:
    from deal_chains.spec.entries.registry import _entry_variables

    names: set[str] = set()
    for entry in spec.rewards:
        names |= _entry_variables(entry)
    return names


def check_records(spec: Any, records: list[dict[str, Any]], locate: Callable[[dict[str, Any]], str]) -> None:
    """The checks that need no model, run before one loads (seconds, no conversion): the
    prompt (field or template), the system message and the rewards' template variables of
    every record; an InputError names ``locate(record)``, the variable and the keys the
    record has."""
    from deal_chains.spec.templates import missing_variable_message

    needed = sorted(_reward_variables(spec))
    for rec in records:
        where = locate(rec)
        variables = record_variables(rec)
        record_prompt(spec, rec, where)
        try:
            spec.render_system(variables)
        except DealChainsError as exc:
            raise InputError(f"{where}: {exc}") from None
        for name in needed:
            if name not in variables:
                raise InputError(f"{where}: {missing_variable_message(name, variables)}")


def records_to_generate(out_path: Path, records: list[dict[str, Any]], *, resume: bool,
                        result_field: str | None, fingerprint: Mapping[str, str], strategy: str) -> list[dict[str, Any]]:
    """The records still to generate into ``out_path``: all of them, or with ``resume`` those
    not already there (``resume_state``: it also drops a last line a crash cut short, and
    refuses an output of another input, layout or settings)."""
    if not resume:
        return list(records)
    done = resume_state(out_path, records, result_field=result_field, fingerprint=fingerprint, strategy=strategy)
    return [rec for rec in records if rec[LINE_KEY] not in done]


def run_records(engine: Any, spec: Any, config: Any, records: list[dict[str, Any]], *,
                locate: Callable[[dict[str, Any]], str], batch_size: int | None = None, progress: bool = False,
                result_field: str | None = None, fingerprint: Mapping[str, str] | None = None,
                line: bool = True, on_step: Callable[[], None] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Search ``records`` in batches and yield ``(index, output record)`` as each batch
    finishes. The records' prompts, rewards, system messages and lengths, and the search
    budget, are all checked before the first search step (``on_step`` runs at each step:
    a caller opens its output there, so an error before any work leaves it untouched)."""
    inputs = search_inputs(spec, records, engine, config, locate)
    # the budgets now: iter_generate checks them only once iterated
    check_search_budget(engine, config, inputs.prompt_lens)
    fingerprint = fingerprint if fingerprint is not None else settings_fingerprint(spec, config)
    for j, res in engine.iter_generate(inputs.prompts, inputs.rewards, config, system=inputs.systems,
                                       contexts=inputs.contexts, constraints=inputs.constraints,
                                       batch_size=batch_size, progress=progress, on_step=on_step):
        yield j, output_record(records[j], res, result_field=result_field, fingerprint=fingerprint, line=line)
