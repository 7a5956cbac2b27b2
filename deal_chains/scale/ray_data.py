"""Dataset-scale alignment on Ray Data.

``generate_dataset`` runs what ``deal-chains generate`` runs for one JSONL file over many
files at once, on a local Ray instance or a cluster:

    JSONL records -> ray.data (one row per record still to generate)
      -> map_batches(DeALWorker): a pool of actors, each holding one loaded DeALEngine;
         every call searches its batch of prompts together (one batched search)
      -> rows streamed back to the driver in input order -> OUTPUT_DIR/<input name>.jsonl

Each output record is what the single-process path writes (same helpers: the input
fields, ``input_line``, ``text``, ``rewards``, ``reward``, ``score``, ``finished``,
``finish_reason``, ``strategy``, ``stats`` with the settings fingerprint; all nested under
``result_field`` when given); only ``stats`` (timing, and batch-dependent counters) may
differ.

Everything that can be checked without the model is checked before Ray starts: the spec,
the input paths, every JSONL line, every record's prompt, system message and reward
template variables (errors name ``file:line``). Building the rewards and the
prompt-length check need the model and run in the workers; their errors still name
``file:line``.

Resume (``resume=True``) works per file: an output file that already holds a record for
every input line is skipped; a partial one (an interrupted run: records matched by
``input_line``, a last line cut by a crash dropped) is *completed*: only its missing
records are generated and appended, then the file is put back in input order if needed.
Resume refuses a file written with another spec, strategy or search setting, as the
local path does. Without ``resume`` every output file is rewritten (each when its first
record arrives: an error before that leaves it as it was).

Ray is imported only inside functions; without it the error says
``pip install 'deal-chains[ray]'``.
"""

from __future__ import annotations

import glob
import inspect
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from deal_chains.errors import DealChainsError, InputError

RAY_INSTALL_HINT = "pip install 'deal-chains[ray]'"
DEFAULT_BATCH_SIZE = 16  # records per actor call when batch_size is not given


class RayMissingError(DealChainsError, ImportError):
    """Ray (with Ray Data) is not installed."""


class DatasetGenerationError(DealChainsError, RuntimeError):
    """Generation failed in a worker; the records finished before it are kept on disk.
    ``cause`` is the original error, ``written`` how many records were written."""

    def __init__(self, message: str, cause: BaseException | None = None, written: int = 0):
        super().__init__(message)
        self.cause = cause
        self.written = written


def import_ray() -> Any:
    """``ray`` with ``ray.data`` loaded, or RayMissingError with the install command."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayMissingError(f"the Ray engine needs Ray Data ({exc}): {RAY_INSTALL_HINT}") from None
    return ray


# ----------------------------------------------------------------------------- inputs


def resolve_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The input files: a directory (its ``*.jsonl``, sorted), a glob pattern (its matching
    files, sorted), a single file, or a list of these. InputError when one names nothing,
    or when two inputs share a file name (they would share an output file)."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise InputError("no input given")
    files: list[Path] = []
    for item in items:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            found = sorted(f for f in p.glob("*.jsonl") if f.is_file())
            if not found:
                raise InputError(f"input directory {p} has no *.jsonl files")
        elif p.is_file():
            found = [p]
        elif glob.has_magic(text):
            found = sorted(Path(f) for f in glob.glob(text, recursive=True) if Path(f).is_file())
            if not found:
                raise InputError(f"no input files match {text!r}")
        else:
            raise InputError(f"input not found: {p} (give a JSONL file, a directory or a glob pattern)")
        files.extend(found)
    unique: list[Path] = []
    seen: dict[str, Path] = {}
    for f in files:
        if f.resolve() in {u.resolve() for u in unique}:
            continue
        if f.name in seen:
            raise InputError(f"two inputs are named {f.name} ({seen[f.name]} and {f}): each input file "
                             "maps to OUTPUT_DIR/<its name>, so names must differ")
        seen[f.name] = f
        unique.append(f)
    return unique


class _FilePlan:
    def __init__(self, index: int, path: Path, out: Path, records: list[dict[str, Any]]):
        self.index, self.path, self.out, self.records = index, path, out, records
        self.todo: list[dict[str, Any]] = list(records)
        self.done_before = 0
        self.written = 0
        self.handle: Any = None


# ----------------------------------------------------------------------------- the actor


class DeALWorker:
    """One Ray Data actor: loads the spec's engine once, then searches each batch of
    records together. Batches are dicts of columns ``file`` (index into ``sources``),
    ``line`` (input line number) and ``record`` (the input record as JSON); the result has
    ``file``, ``line``, ``output`` (the output record as one JSONL line) and ``error``.

    A DealChainsError (a model that does not load, a prompt too long for it, a failing
    reward) is returned in the ``error`` column of the batch's rows rather than raised:
    Ray would wrap it into a traceback string, and would retry a failing constructor."""

    def __init__(self, spec: Any, config: Any, model: str, device: str, sources: list[str],
                 batch_size: int | None = None, threads: int | None = None, result_field: str | None = None,
                 fingerprint: dict[str, str] | None = None, trust_remote_code: bool = False):
        if threads:
            import torch

            torch.set_num_threads(threads)
        from deal_chains.search.engine import DeALEngine

        self.spec, self.config, self.sources, self.batch_size = spec, config, sources, batch_size
        self.result_field, self.fingerprint = result_field, fingerprint
        self.engine = None
        self.error: str | None = None
        try:
            self.engine = DeALEngine(model, device=device, trust_remote_code=trust_remote_code)
        except DealChainsError as exc:
            self.error = str(exc)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        files = [int(f) for f in batch["file"]]
        lines = [int(n) for n in batch["line"]]
        try:
            if self.error is not None:
                raise InputError(self.error)
            outputs = self._generate(files, lines, list(batch["record"]))
        except DealChainsError as exc:
            return {"file": files, "line": lines, "output": [""] * len(files), "error": [str(exc)] * len(files)}
        return {"file": files, "line": lines, "output": outputs, "error": [""] * len(files)}

    def _generate(self, files: list[int], lines: list[int], texts: list[str]) -> list[str]:
        from deal_chains.pipeline import run_records
        from deal_chains.records import LINE_KEY, jsonl_line

        records, where = [], {}
        for text, n, f in zip(texts, lines, files):
            rec = json.loads(text)
            rec[LINE_KEY] = n
            records.append(rec)
            where[id(rec)] = f"{self.sources[f]}:{n}"  # records of several files share a batch
        out: list[str] = [""] * len(records)
        for j, record in run_records(self.engine, self.spec, self.config, records, locate=lambda r: where[id(r)],
                                     batch_size=self.batch_size, result_field=self.result_field,
                                     fingerprint=self.fingerprint):
            out[j] = jsonl_line(record)
        return out


# ----------------------------------------------------------------------------- driver


class _WorkerError(DealChainsError):
    """A DealChainsError a worker returned (its message)."""


def _find_deal_error(exc: BaseException) -> DealChainsError | None:
    """The DealChainsError a worker raised, from inside Ray's wrappers."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DealChainsError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
        for arg in getattr(e, "args", ()):
            if isinstance(arg, BaseException):
                todo.append(arg)
    return None


def _in_order(path: Path, result_field: str | None = None) -> None:
    """Rewrite ``path`` sorted by ``input_line`` if a completed resume left it out of order."""
    lines = [line for line in path.read_bytes().split(b"\n") if line.strip()]
    keys = [(json.loads(line)[result_field] if result_field else json.loads(line))["input_line"] for line in lines]
    if keys == sorted(keys):
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(line + b"\n" for _, line in sorted(zip(keys, lines), key=lambda kv: kv[0])))
    os.replace(tmp, path)


def _map_batches_kwargs(ray: Any, concurrency: int) -> dict[str, Any]:
    """A fixed pool of ``concurrency`` actors. ``compute=ActorPoolStrategy(size=N)`` is the
    spelling every Ray from 2.9 accepts, and the one Ray >= 2.51 asks for (its
    ``concurrency=`` argument is deprecated there)."""
    return {"compute": ray.data.ActorPoolStrategy(size=concurrency)}


def _from_items(ray: Any, items: list[dict[str, Any]], blocks: int) -> Any:
    params = inspect.signature(ray.data.from_items).parameters
    if "override_num_blocks" in params:
        return ray.data.from_items(items, override_num_blocks=blocks)
    return ray.data.from_items(items, parallelism=blocks)  # pragma: no cover - older Ray


def generate_dataset(
    spec: Any,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    concurrency: int = 1,
    batch_size: int | None = None,
    model: str | None = None,
    device: str = "auto",
    overrides: Iterable[str] = (),
    resume: bool = False,
    ray_address: str | None = None,
    step: str | None = None,
    strategy: str | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    log: Any = None,
    result_field: str | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Align every record of ``inputs`` (a JSONL file, a directory of ``*.jsonl``, a glob
    pattern, or a list of these) with ``concurrency`` Ray Data actors, each holding one
    loaded model; write ``output_dir/<input name>`` per input file, in input order.

    ``spec``: a spec file, preset name or mapping (as ``load_spec`` takes), with
    ``overrides`` (``path=value``), ``step`` and ``strategy`` applied as ``deal-chains
    generate`` does. ``model`` overrides the spec's model (default: the spec's, else
    ``"default"``); ``device`` and ``trust_remote_code`` are the workers'.
    ``result_field``: nest the generated fields under this name (``--result-field``).
    ``batch_size``: records per actor call, searched together (default 16).
    ``gpus_per_worker``: GPUs each actor reserves (default: 1 when ``device`` is cuda, or
    ``auto`` on a cluster with GPUs, else 0). ``ray_address``: an existing cluster
    (``auto``, ``HOST:6379``, or ``RAY_ADDRESS``); without one a local Ray is started with
    ``num_cpus`` (default: the machine's cores, at least ``concurrency``) and shut down at
    the end (an already initialized Ray is used as it is). ``resume``: skip complete output
    files, complete partial ones (see the module doc). ``log``: where a line per finished
    file goes (default stderr; None with ``progress=False``).

    Returns a summary: ``files`` (per input: input, output, records, generated, skipped),
    ``generated``, ``skipped_files``, ``seconds``. A worker's failure raises
    DatasetGenerationError after the finished records are flushed (resume continues).
    """
    from deal_chains.pipeline import check_records, load_generate_spec, records_to_generate
    from deal_chains.records import LINE_KEY, check_field_names, check_output_path, read_jsonl, settings_fingerprint

    t0 = time.perf_counter()
    if concurrency < 1:
        raise InputError(f"concurrency must be >= 1, got {concurrency}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if log is None and progress:
        log = sys.stderr

    def say(msg: str) -> None:
        if log is not None:
            print(msg, file=log, flush=True)

    ray = import_ray()

    # ---- everything checkable without the model, before Ray starts
    loaded, config = load_generate_spec(spec, list(overrides or ()), step, strategy)
    # a spec without `model:` runs on the embedded default model, as the local engine does
    model_name = model or loaded.model or "default"
    fingerprint = settings_fingerprint(loaded, config)
    files = resolve_inputs(inputs)
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} is a file: with the Ray engine the output is a directory "
                         "(one output file per input file)")
    plans: list[_FilePlan] = []
    for i, path in enumerate(files):
        records = read_jsonl(path)
        check_records(loaded, records, lambda rec, path=path: f"{path}:{rec[LINE_KEY]}")
        check_field_names(records, result_field, lambda rec, path=path: f"{path}:{rec[LINE_KEY]}")
        plans.append(_FilePlan(i, path, out_dir / path.name, records))
    for plan in plans:  # the local path's output checks (same file as an input, unwritable...), per file
        if plan.out.exists() and any(plan.out.resolve() == f.resolve() for f in files):
            raise InputError(f"output {plan.out} would overwrite an input: pick another output directory")
        check_output_path(plan.out, files)
    for plan in plans:
        plan.todo = records_to_generate(plan.out, plan.records, resume=resume, result_field=result_field,
                                        fingerprint=fingerprint, strategy=config.strategy)
        plan.done_before = len(plan.records) - len(plan.todo)

    summary: dict[str, Any] = {"files": [], "generated": 0, "skipped_files": [], "seconds": 0.0}
    for plan in plans:
        if not plan.todo:
            say(f"skipping {plan.out}: complete ({len(plan.records)} records)")
            summary["skipped_files"].append(str(plan.out))
        elif plan.done_before:
            say(f"resuming {plan.out}: {plan.done_before} records already there, {len(plan.todo)} to generate")
    work = [p for p in plans if p.todo]
    if not work:
        summary["files"] = [_file_summary(p) for p in plans]
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        return summary

    # ---- Ray
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    started = False
    if not ray.is_initialized():
        init_kw: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": False}
        if address is None:
            # at least one CPU per worker: an actor that cannot be placed would wait forever
            init_kw["num_cpus"] = num_cpus or max(os.cpu_count() or 1,
                                                  math.ceil(concurrency * (cpus_per_worker or 1)))
        ray.init(address=address, **init_kw)
        started = True
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    try:
        ctx.execution_options.preserve_order = True  # rows come back in input order
        ctx.enable_progress_bars = bool(progress)
        if gpus_per_worker is None:
            cuda = str(device).startswith("cuda") or (
                device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
            gpus_per_worker = 1 if cuda else 0
        have = ray.cluster_resources().get("GPU", 0)
        if gpus_per_worker and concurrency * gpus_per_worker > have:
            print(f"warning: {concurrency} workers x {gpus_per_worker:g} GPU need {concurrency * gpus_per_worker:g} "
                  f"GPUs, the Ray cluster has {have:g} now: workers wait until GPUs join (an autoscaler), "
                  "else lower --concurrency or --gpus-per-worker", file=log or sys.stderr, flush=True)
        _run(ray, loaded, config, model_name, device, work, out_dir, concurrency,
             batch_size, gpus_per_worker, cpus_per_worker, resume, say,
             {"result_field": result_field, "fingerprint": fingerprint, "trust_remote_code": trust_remote_code})
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        for plan in work:
            if plan.handle is not None:
                plan.handle.close()
        if started:
            ray.shutdown()
    summary["files"] = [_file_summary(p) for p in plans]
    summary["generated"] = sum(p.written for p in plans)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _file_summary(plan: _FilePlan) -> dict[str, Any]:
    return {"input": str(plan.path), "output": str(plan.out), "records": len(plan.records),
            "generated": plan.written, "skipped": not plan.todo}


def _run(ray: Any, spec: Any, config: Any, model: str, device: str, work: list[_FilePlan], out_dir: Path,
         concurrency: int, batch_size: int | None, gpus: float, cpus: float | None, resume: bool,
         say: Any, worker_kwargs: dict[str, Any] | None = None) -> None:
    items = [{"file": plan.index, "line": rec["__line__"],
              "record": json.dumps({k: v for k, v in rec.items() if k != "__line__"}, ensure_ascii=False)}
             for plan in work for rec in plan.todo]
    per_call = batch_size or DEFAULT_BATCH_SIZE
    ds = _from_items(ray, items, max(1, math.ceil(len(items) / per_call)))
    sources = {plan.index: str(plan.path) for plan in work}
    threads = os.environ.get("DEAL_CHAINS_THREADS")
    remote: dict[str, Any] = {"num_gpus": gpus}
    if cpus is not None:
        remote["num_cpus"] = cpus
    ds = ds.map_batches(
        DeALWorker, batch_size=per_call, batch_format="numpy",
        fn_constructor_kwargs={"spec": spec, "config": config, "model": model, "device": device,
                               "sources": [sources.get(i, "") for i in range(max(sources) + 1)],
                               "batch_size": batch_size, "threads": int(threads) if threads else None,
                               **(worker_kwargs or {})},
        **_map_batches_kwargs(ray, concurrency), **remote)

    out_dir.mkdir(parents=True, exist_ok=True)
    result_field = (worker_kwargs or {}).get("result_field")
    by_index = {plan.index: plan for plan in work}
    total = len(items)
    finished = 0
    written = 0
    try:
        for row in ds.iter_rows():
            if row["error"]:
                raise _WorkerError(row["error"])
            plan = by_index[int(row["file"])]
            if plan.handle is None:
                # like the local path: "w" (a stale output never survives a new run) once this
                # file's work has started, not before, so an early error leaves it as it was
                plan.handle = plan.out.open("a" if resume or plan.written else "w", encoding="utf-8")
            plan.handle.write(row["output"])
            plan.handle.flush()
            plan.written += 1
            written += 1
            if plan.written == len(plan.todo):
                plan.handle.close()
                plan.handle = None
                if plan.done_before:
                    _in_order(plan.out, result_field)
                finished += 1
                say(f"wrote {plan.written} records to {plan.out} ({finished} of {len(work)} files)")
    except Exception as exc:
        for plan in work:
            if plan.handle is not None:
                plan.handle.close()
                plan.handle = None
        cause = exc if isinstance(exc, _WorkerError) else _find_deal_error(exc)
        # --resume only helps once something was written
        where = (f"{written} of {total} records were written to {out_dir} before the error "
                 "(run again with --resume to continue)" if written else
                 f"no records were written; the files in {out_dir} were left as they were")
        if cause is None:
            say(where + ":")
            raise
        raise DatasetGenerationError(f"{cause}\n{where}", cause=cause, written=written) from None
    missing = [str(p.out) for p in work if p.written != len(p.todo)]
    if missing:  # pragma: no cover - Ray returned fewer rows than it was given
        raise DatasetGenerationError(f"Ray Data returned too few records for: {', '.join(missing)}",
                                     written=written)


# ----------------------------------------------------------------------------- CLI


def run_cli(args: Any) -> int:
    """``deal-chains generate --engine ray``: ``--input`` a file, directory or glob,
    ``--output`` a directory."""
    try:
        summary = generate_dataset(
            args.spec, args.input, args.output, concurrency=1 if args.concurrency is None else args.concurrency,
            batch_size=args.batch_size, model=args.model, device=args.device, overrides=args.set or (),
            resume=args.resume, ray_address=args.ray_address, step=getattr(args, "step", None),
            strategy=args.strategy, gpus_per_worker=args.gpus_per_worker, progress=not args.quiet,
            result_field=getattr(args, "result_field", None),
            trust_remote_code=bool(getattr(args, "trust_remote_code", False)))
    except DatasetGenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {summary['generated']} records to {args.output} ({len(summary['files'])} files, "
              f"{len(summary['skipped_files'])} already complete) in {summary['seconds']:.1f}s", file=sys.stderr)
    return 0
