"""JSON benchmark: ask the model for an example object of each schema; report how many
outputs parse and validate, and what that costs against unconstrained greedy (same run).

Rows: ``greedy`` (no help), ``soft`` (DeAL ranked by the JSON-schema reward, no mask),
``hard`` (greedy under the grammar mask), ``hard-deal`` (DeAL under the mask)."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from deal_chains.errors import InputError
from deal_chains.search.config import SearchConfig
from deal_chains.jsonkit.schema_shape import schema_shape_problem
from rewards.json_schema import JsonSchemaReward

# torch-heavy modules are imported inside the functions that run models, so that building
# the CLI parser stays fast

JSON_PROMPT = ("Write one example JSON value that is valid against this JSON Schema:\n{schema}\n"
               "Reply with the JSON only.")
JSON_ROWS = ("greedy", "soft", "hard", "hard-deal")
JSON_COLUMNS = [
    ("strategy", "strategy"), ("parseable", "parseable"), ("valid", "valid"),
    ("seconds_per_prompt", "s/prompt"), ("ratio_to_greedy", "x greedy"), ("finished_rate", "finished"),
    ("mean_new_tokens", "tokens"), ("refused", "refused"),
]


@dataclass
class SchemaCase:
    name: str
    schema: Any
    reward: JsonSchemaReward | None = None
    refused: str | None = None  # why the reward (jsonschema) or grammar engine refused it


def load_schemas(folder: str | Path, n: int | None = None) -> list[SchemaCase]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"schema folder not found: {folder}")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise InputError(f"no *.json schemas in {folder}")
    cases = []
    for f in files[: n or None]:
        try:
            schema = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{f}: not a JSON file: {exc}") from None
        case = SchemaCase(f.name, schema)
        # the checks the spec loader makes (size, depth, dangling refs, no finite instance):
        # a schema no finished output can satisfy is refused for every row, not scored
        problem = schema_shape_problem(schema)
        if problem is not None:
            case.refused = f"schema: {problem}"
        else:
            try:
                case.reward = JsonSchemaReward(schema)
            except ValueError as exc:
                case.refused = f"jsonschema: {exc}"
        cases.append(case)
    return cases


def run_json_bench(engine: Any, cases: Sequence[SchemaCase], rows: Sequence[str] = JSON_ROWS, *,
                   max_new_tokens: int = 256, deal: SearchConfig | None = None, batch_size: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    from deal_chains.bench.runner import machine_info
    from deal_chains.search.constraints import ConstraintError, GrammarConstraint

    # JSON prompts are long: a narrow search (3 candidates, 1 beam) keeps the per-step KV
    # copies small; the grammar mask, not the search width, is what guarantees validity
    deal = deal or SearchConfig(strategy="deal", top_k=3, beam=1, lookahead=4, lam=8.0)
    usable = [c for c in cases if c.refused is None]
    constraints: list[GrammarConstraint | None] = []
    for c in usable:
        try:
            decl = GrammarConstraint.json_schema(c.schema)
            decl.compile(engine.lm)
            constraints.append(decl)
        except ConstraintError as exc:
            c.refused = f"grammar engine: {exc}"
            constraints.append(None)
    prompts = [JSON_PROMPT.format(schema=json.dumps(c.schema, separators=(",", ":"))) for c in usable]
    rewards = [[c.reward] for c in usable]
    # hard rows run only the schemas the grammar engine accepts (the others fail closed)
    hard_idx = [i for i, con in enumerate(constraints) if con is not None]
    engine.generate(prompts[:1], rewards[:1], SearchConfig(strategy="greedy", max_new_tokens=2))  # warm-up
    results: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row == "greedy":
            cfg, idx, cons = SearchConfig(strategy="greedy", max_new_tokens=max_new_tokens), list(range(len(usable))), None
        elif row == "soft":
            cfg, idx, cons = deal.updated(max_new_tokens=max_new_tokens), list(range(len(usable))), None
        elif row == "hard":
            cfg, idx = SearchConfig(strategy="greedy", max_new_tokens=max_new_tokens), hard_idx
            cons = [constraints[i] for i in idx]
        elif row == "hard-deal":
            cfg, idx = deal.updated(max_new_tokens=max_new_tokens), hard_idx
            cons = [constraints[i] for i in idx]
        else:
            raise InputError(f"unknown json bench row {row!r}; known: {', '.join(JSON_ROWS)}")
        t0 = time.perf_counter()
        out = engine.generate([prompts[i] for i in idx], [rewards[i] for i in idx], cfg, constraints=cons,
                              batch_size=batch_size, progress=progress)
        seconds = time.perf_counter() - t0
        items = []
        for i, res in zip(idx, out):
            case = usable[i]
            # the reward's own check: schema errors plus any key an object repeats
            errors = case.reward.text_errors(res.text)  # type: ignore[union-attr]
            parse_ok = errors is not None
            valid = parse_ok and not errors
            items.append({"schema": case.name, "text": res.text, "parseable": parse_ok, "valid": valid,
                          "finished": res.finished, "new_tokens": len(res.token_ids)})
        results[row] = {"seconds": seconds, "items": items, "n": len(idx)}
    greedy_per_prompt = (results["greedy"]["seconds"] / max(1, results["greedy"]["n"])) if "greedy" in results else None
    table = []
    for row, r in results.items():
        items, n = r["items"], max(1, r["n"])
        per_prompt = r["seconds"] / n
        table.append({
            "strategy": row,
            "n": r["n"],
            "parseable": round(sum(i["parseable"] for i in items) / n, 4),
            "valid": round(sum(i["valid"] for i in items) / n, 4),
            "seconds_per_prompt": round(per_prompt, 3),
            "ratio_to_greedy": round(per_prompt / greedy_per_prompt, 3) if greedy_per_prompt else None,
            "finished_rate": round(statistics.fmean(float(i["finished"]) for i in items), 4) if items else 0.0,
            "mean_new_tokens": round(statistics.fmean(i["new_tokens"] for i in items), 1) if items else 0.0,
            "refused": sum(c.refused is not None for c in cases) if row.startswith("hard") else 0,
        })
    return {
        "benchmark": "json",
        "n_schemas": len(cases),
        "prompt": JSON_PROMPT,
        "max_new_tokens": max_new_tokens,
        # the configuration the DeAL rows actually ran (with this run's token budget)
        "deal_config": deal.updated(max_new_tokens=max_new_tokens).model_dump(),
        "machine": machine_info(engine),
        "rows": table,
        "refused": {c.name: c.refused for c in cases if c.refused},
        "outputs": {row: r["items"] for row, r in results.items()},
    }


