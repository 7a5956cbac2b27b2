"""Compile every JSON schema of a folder with llguidance (the engine deal-chains uses) and
with xgrammar, on the default model's tokenizer; report what each accepts, compile time and
the time of one token mask. Not a dependency of the project: run it with xgrammar
installed by hand (``pip install xgrammar`` also pulls triton on Linux x86-64).

    python benchmarks/compare_grammar_engines.py ../shared/data/jsonschema/github_easy_dev \
        > benchmarks/grammar-engines.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from deal_chains.models.loader import load_model
from deal_chains.search.constraints import ConstraintError, GrammarConstraint, bounded_schema, exact_one_of


def main(folder: str) -> None:
    import xgrammar as xgr

    torch.set_num_threads(1)
    lm = load_model("default", device="cpu")
    files = sorted(Path(folder).glob("*.json"))
    schemas = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    vocab = int(lm.model.get_output_embeddings().weight.shape[0])
    report: dict = {"schemas": len(files), "model": lm.name}

    t0 = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(lm.tokenizer, vocab_size=vocab)
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    refused, mask_s = {}, 0.0
    for f, s in zip(files, schemas):
        try:  # the same schema rewrites deal-chains applies before llguidance
            g = compiler.compile_json_schema(json.dumps(bounded_schema(exact_one_of(s))), any_whitespace=False)
            matcher, bitmask = xgr.GrammarMatcher(g), xgr.allocate_token_bitmask(1, info.vocab_size)
            t1 = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask)
            mask_s += time.perf_counter() - t1
        except Exception as exc:  # noqa: BLE001 - every refusal is recorded with its reason
            refused[f.name] = str(exc).strip().splitlines()[-1][:200]
    ok = len(files) - len(refused)
    report["xgrammar"] = {"version": xgr.__version__ if hasattr(xgr, "__version__") else None, "accepted": ok,
                          "compile_seconds_all": round(time.perf_counter() - t0, 2),
                          "first_mask_ms_mean": round(1000 * mask_s / max(ok, 1), 3), "refused": refused}

    t0 = time.perf_counter()
    refused, mask_s = {}, 0.0
    for f, s in zip(files, schemas):
        try:
            compiled = GrammarConstraint.json_schema(s).compile(lm)
            state = compiled.new_state()
            t1 = time.perf_counter()
            compiled.allowed([state])
            mask_s += time.perf_counter() - t1
        except ConstraintError as exc:
            refused[f.name] = str(exc)[:200]
    ok = len(files) - len(refused)
    report["llguidance"] = {"accepted": ok, "compile_seconds_all": round(time.perf_counter() - t0, 2),
                            "first_mask_ms_mean": round(1000 * mask_s / max(ok, 1), 3), "refused": refused}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
