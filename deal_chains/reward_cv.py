"""Feature cache and k-fold cross-validation for ``deal-chains train-reward``.

Features of every pair are extracted once per (layer, pooling) — one forward per batch
gives all layers and poolings — and kept in memory, or in a safetensors file
(``--features-cache``; never pickle) so a sweep over layers x poolings x head sizes x
weight decays costs no second forward. Rows of each cached tensor are the chosen
responses of all pairs, then their rejected responses (``[2n, d]``).

``cross_validate`` scores one head configuration by k-fold CV on a set of pair indices
(folds from a seeded permutation); ``sweep`` runs it over a grid and returns one row per
configuration, best (highest mean CV accuracy) first.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from deal_chains.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from deal_chains.train_reward import PreferencePair

CACHE_FORMAT = "deal-chains-pair-features"
FeatureTable = dict[tuple[int, str], "torch.Tensor"]


def pairs_digest(pairs: Sequence["PreferencePair"]) -> str:
    """A sha256 over the pairs' texts: a cache is only reused for exactly these pairs."""
    h = hashlib.sha256()
    for p in pairs:
        for part in (p.prompt, p.chosen, p.rejected):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
    return h.hexdigest()


def cache_meta(model_name: str, extractor: Any, pairs: Sequence["PreferencePair"]) -> dict[str, Any]:
    """What a feature cache must match to be reused: model, max_length, text format, pairs."""
    return {"model": str(model_name), "max_length": int(extractor.max_length),
            "format": extractor.spec["format"], "n_pairs": len(pairs), "pairs_sha256": pairs_digest(pairs)}


def extract_pair_features(extractor: Any, pairs: Sequence["PreferencePair"], layers: Iterable[int],
                          poolings: Iterable[str], *, progress: bool = False) -> FeatureTable:
    """``{(layer, pooling): Tensor[2n, d]}`` (chosen rows, then rejected rows) from one
    ``HiddenStateFeatures.extract`` pass over the 2n conversations."""
    prompts = [p.prompt for p in pairs]
    return extractor.extract(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs],
                             layers=list(layers), poolings=list(poolings), progress=progress)


def save_feature_cache(path: str | Path, table: FeatureTable, meta: dict[str, Any]) -> Path:
    """Write ``table`` as safetensors (keys ``"LAYER/POOLING"``); ``meta`` (JSON) goes in
    the header, with the format name."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{layer}/{pooling}": t.float().contiguous() for (layer, pooling), t in table.items()}
    save_file(tensors, str(p), metadata={"format": CACHE_FORMAT, "meta": json.dumps(meta, sort_keys=True)})
    return p


def load_feature_cache(path: str | Path) -> tuple[FeatureTable, dict[str, Any]]:
    """(table, meta) of a cache written by ``save_feature_cache``."""
    from safetensors import safe_open

    p = Path(path)
    with safe_open(str(p), framework="pt") as f:
        header = f.metadata() or {}
        if header.get("format") != CACHE_FORMAT:
            raise InputError(f"{p}: not a {CACHE_FORMAT} file")
        table = {}
        for key in f.keys():
            layer, pooling = key.split("/", 1)
            table[(int(layer), pooling)] = f.get_tensor(key)
    return table, json.loads(header.get("meta", "{}"))


def cached_features(cache: str | Path | None, meta: dict[str, Any], layers: Sequence[int], poolings: Sequence[str],
                    compute: Callable[[list[int], list[str]], FeatureTable]) -> FeatureTable:
    """The features for every (layer, pooling): from ``cache`` when it exists and was
    written for the same ``meta`` (model, max_length, pairs digest) and holds them all,
    else from ``compute(layers, poolings)`` (then written to ``cache`` when given)."""
    wanted = [(int(layer), p) for layer in layers for p in poolings]
    if cache is not None and Path(cache).is_file():
        table, got = load_feature_cache(cache)
        if got == meta and all(k in table for k in wanted):
            return {k: table[k] for k in wanted}
    table = compute([int(x) for x in layers], list(poolings))
    if cache is not None:
        save_feature_cache(cache, table, meta)
    return {k: table[k] for k in wanted}


# ----------------------------------------------------------------------------- cross-validation


def kfold(indices: Sequence[int], k: int, seed: int) -> list[list[int]]:
    """``k`` disjoint folds covering ``indices`` (seeded permutation, sizes differ by <= 1)."""
    import torch

    if k < 2 or k > len(indices):
        raise InputError(f"--cv needs 2 <= k <= {len(indices)} training pairs, got {k}")
    perm = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed)).tolist()
    return [sorted(indices[j] for j in perm[f::k]) for f in range(k)]


def cross_validate(xc: "torch.Tensor", xr: "torch.Tensor", indices: Sequence[int], *, k: int = 5, seed: int = 0,
                   **fit: Any) -> list[float]:
    """Pairwise accuracy of each of ``k`` folds of ``indices`` for a head fitted (``fit_head``
    with ``fit``) on the other folds."""
    import torch

    from deal_chains.train_reward import fit_head, pairwise_accuracy, score_head

    accs = []
    folds = kfold(list(indices), k, seed)
    for f, val in enumerate(folds):
        tr = torch.tensor(sorted(i for g, fold in enumerate(folds) if g != f for i in fold))
        va = torch.tensor(val)
        head = fit_head(xc[tr], xr[tr], seed=seed, **fit)
        accs.append(pairwise_accuracy(score_head(head, xc[va]), score_head(head, xr[va])))
    return accs


def sweep(table: FeatureTable, indices: Sequence[int], *, hiddens: Sequence[int], weight_decays: Sequence[float],
          k: int = 5, seed: int = 0, epochs: int, lr: float, log: Callable[[str], None] | None = None,
          ) -> list[dict[str, Any]]:
    """k-fold CV of every (layer, pooling) x hidden x weight decay; rows best first."""
    rows = []
    for (layer, pooling), x in table.items():
        n = x.shape[0] // 2
        xc, xr = x[:n], x[n:]
        for hidden in hiddens:
            for wd in weight_decays:
                accs = cross_validate(xc, xr, indices, k=k, seed=seed, hidden=hidden, weight_decay=wd,
                                      epochs=epochs, lr=lr)
                row = {"layer": layer, "pooling": pooling, "hidden": int(hidden), "weight_decay": float(wd),
                       "cv_mean": round(statistics.fmean(accs), 4), "cv_folds": [round(a, 4) for a in accs]}
                rows.append(row)
                if log is not None:
                    log(format_row(row))
    rows.sort(key=lambda r: -r["cv_mean"])
    return rows


def format_row(row: dict[str, Any]) -> str:
    folds = " ".join(f"{a:.3f}" for a in row["cv_folds"])
    return (f"layer {row['layer']:>3} {row['pooling']:<8} hidden {row['hidden']:>3} wd {row['weight_decay']:<6g} "
            f"cv {row['cv_mean']:.4f}  [{folds}]")
