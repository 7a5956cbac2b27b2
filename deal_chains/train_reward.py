"""Train a Bradley–Terry preference head on frozen hidden-state features.

``deal-chains train-reward --pairs PAIRS.jsonl --out DIR`` reads preference pairs, extracts
features once with a frozen causal LM (``rewards.harmless.HiddenStateFeatures``), splits
off a seeded held-out part, fits a small head with the loss
``-log sigmoid(r(chosen) - r(rejected))`` (Adam with weight decay) and writes
``DIR/NAME.safetensors`` + ``DIR/NAME.json`` (the sidecar: feature spec, architecture,
training command and accuracies). ``rewards.harmless.HarmlessReward`` loads the result.

Pair files are JSONL, one pair per line, in either format:

- HH-RLHF: ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}`` — the
  prompt is every turn before the last assistant reply, the response that last reply;
- simple: ``{"prompt": "...", "chosen": "response A", "rejected": "response B"}``.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from deal_chains.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# chosen by 5-fold cross-validation inside the training part of the 1,798 HH-RLHF harmless
# pairs (harmless_dev + harmless_more; layers 6/9/12/15 x pooling response/all/last x weight
# decay 0.01..10, linear heads): layer 15 mean-pooled over the response, weight decay 0.1,
# scored 0.655; rewards/heads/harmless.json records the run and its table
DEFAULT_LAYER = 15
DEFAULT_POOLING = "response"
DEFAULT_HIDDEN = 0
DEFAULT_EPOCHS = 300
DEFAULT_LR = 1e-2
DEFAULT_WEIGHT_DECAY = 1e-1

_ASSISTANT = "\n\nAssistant:"


@dataclass(frozen=True)
class PreferencePair:
    """One preference: ``chosen`` is the better response to ``prompt`` than ``rejected``.
    ``where`` is ``file:line`` of its source."""

    prompt: str
    chosen: str
    rejected: str
    where: str = ""


def split_hh(transcript: str) -> tuple[str, str]:
    """``(prompt, response)`` of an HH-RLHF transcript: everything before the last
    ``"\\n\\nAssistant:"`` (kept in HH form, so multi-turn history survives) and the
    stripped reply after it."""
    cut = transcript.rfind(_ASSISTANT)
    if cut < 0:
        raise ValueError('no "\\n\\nAssistant:" turn')
    prompt = transcript[:cut]
    if "Human:" not in prompt:
        raise ValueError('no "Human:" turn before the last assistant reply')
    return prompt, transcript[cut + len(_ASSISTANT):].strip()


def parse_pair(rec: Any, where: str) -> PreferencePair:
    """A record in HH-RLHF or simple format -> ``PreferencePair`` (``InputError`` naming
    ``where`` otherwise)."""
    if not isinstance(rec, dict):
        raise InputError(f"{where}: each line must be a JSON object, got {type(rec).__name__}")
    for key in ("chosen", "rejected"):
        if key not in rec:
            raise InputError(f"{where}: missing field {key!r} (expected HH-RLHF "
                             '{"chosen","rejected"} or {"prompt","chosen","rejected"})')
        if not isinstance(rec[key], str) or not rec[key].strip():
            raise InputError(f"{where}: field {key!r} must be a non-empty string")
    if "prompt" in rec:
        if not isinstance(rec["prompt"], str) or not rec["prompt"].strip():
            raise InputError(f"{where}: field 'prompt' must be a non-empty string")
        return PreferencePair(rec["prompt"], rec["chosen"].strip(), rec["rejected"].strip(), where)
    try:
        p_c, chosen = split_hh(rec["chosen"])
        p_r, rejected = split_hh(rec["rejected"])
    except ValueError as exc:
        raise InputError(f"{where}: not an HH-RLHF transcript ({exc}); give a 'prompt' field for the "
                         "simple format") from None
    if p_c.strip() != p_r.strip():
        raise InputError(f"{where}: 'chosen' and 'rejected' transcripts differ before the last assistant reply")
    return PreferencePair(p_c, chosen, rejected, where)


def read_pairs(path: str | Path, skipped: list[str] | None = None) -> list[PreferencePair]:
    """Every pair of a JSONL file, validated before any work starts. An invalid record
    raises ``InputError``, unless a ``skipped`` list is given: then its error message is
    appended there and the record left out (HH-RLHF has a few transcripts whose chosen and
    rejected histories differ)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"pairs file not found: {p}")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not valid UTF-8 ({exc})") from None
    pairs = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p}:{lineno}"
        try:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
            pairs.append(parse_pair(rec, where))
        except InputError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
    if not pairs:
        raise InputError(f"{p}: no preference pairs")
    return pairs


# ----------------------------------------------------------------------------- training


def split_indices(n: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices from a seeded permutation; ``round(holdout * n)`` held out."""
    import torch

    if not 0.0 <= holdout < 1.0:
        raise InputError(f"holdout must be in [0, 1), got {holdout}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen).tolist()
    n_held = int(round(holdout * n))
    if n - n_held < 1:
        raise InputError(f"{n} pairs leave nothing to train on with holdout={holdout}")
    return sorted(perm[n_held:]), sorted(perm[:n_held])


def pairwise_accuracy(r_chosen: "torch.Tensor", r_rejected: "torch.Tensor") -> float:
    """Fraction of pairs with r(chosen) > r(rejected) (a tie counts one half)."""
    if len(r_chosen) == 0:
        return float("nan")
    wins = (r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()
    return float(wins.mean())


def fit_head(x_chosen: "torch.Tensor", x_rejected: "torch.Tensor", *, hidden: int = DEFAULT_HIDDEN,
             epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR, weight_decay: float = DEFAULT_WEIGHT_DECAY,
             batch_size: int | None = None, seed: int = 0) -> "torch.nn.Module":
    """Fit a Bradley–Terry head on paired features (rows aligned): standardisation from
    the training features, then Adam with L2 weight decay on ``-log sigmoid(r_c - r_r)``; full-batch when
    ``batch_size`` is None. The output bias is set so the mean logit over the training
    responses is 0 (the BT loss leaves it free), i.e. a typical response scores 0.5."""
    import torch
    import torch.nn.functional as F

    from rewards.harmless import build_head

    if x_chosen.shape != x_rejected.shape or x_chosen.ndim != 2:
        raise ValueError(f"paired features must have equal [n, d] shapes, got {tuple(x_chosen.shape)} "
                         f"and {tuple(x_rejected.shape)}")
    xc, xr = x_chosen.float(), x_rejected.float()
    n = xc.shape[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = build_head(xc.shape[1], hidden)
        both = torch.cat([xc, xr])
        head.mean.copy_(both.mean(0))
        head.std.copy_(both.std(0, unbiased=False).clamp_min(1e-6))
        # Adam's weight_decay is an L2 penalty on the gradient (not AdamW's decoupled
        # decay, which barely regularises a head this small): with 576-d features and a
        # few hundred pairs, that penalty is what keeps the head from memorising noise
        opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
        bs = n if not batch_size else min(int(batch_size), n)
        head.train()
        if hidden == 0 and bs == n:
            # linear, full batch: r_c - r_r = w . (x_c - x_r) / std (the bias and the mean
            # cancel), so one standardised difference matrix replaces two head forwards per
            # epoch; same loss, same gradients, ~20x faster (a CV sweep fits hundreds of heads)
            diff = (xc - xr) / head.std
            weight = head.net[0].weight
            for _ in range(int(epochs)):
                loss = -F.logsigmoid(diff @ weight[0]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        for _ in range(int(epochs) if not (hidden == 0 and bs == n) else 0):
            order = torch.randperm(n) if bs < n else torch.arange(n)
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                loss = -F.logsigmoid(head(xc[idx]) - head(xr[idx])).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        head.eval()
        with torch.no_grad():
            head.net[-1].bias -= head(both).mean()
    return head


def score_head(head: "torch.nn.Module", x: "torch.Tensor") -> "torch.Tensor":
    import torch

    with torch.no_grad():
        return head(x.float())


def pair_features(features: Callable[[list[str], list[str]], "torch.Tensor"], pairs: Sequence[PreferencePair],
                  ) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(chosen, rejected) feature rows of every pair, from one ``features`` call."""
    prompts = [p.prompt for p in pairs]
    x = features(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    return x[: len(pairs)], x[len(pairs):]


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def read_pair_files(paths: str | Path | Sequence[str | Path], skip_invalid: bool = False,
                    ) -> tuple[list[PreferencePair], list[str]]:
    """(pairs of every file in order, messages of the records skipped as invalid)."""
    skipped: list[str] = []
    pairs = [p for path in _as_list(paths) for p in read_pairs(path, skipped if skip_invalid else None)]
    return pairs, skipped


def train_reward_head(
    pairs_path: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    model: Any = "default",
    layer: int | Sequence[int] = DEFAULT_LAYER,
    pooling: str | Sequence[str] = DEFAULT_POOLING,
    epochs: int = DEFAULT_EPOCHS,
    lr: float = DEFAULT_LR,
    weight_decay: float | Sequence[float] = DEFAULT_WEIGHT_DECAY,
    hidden: int | Sequence[int] = DEFAULT_HIDDEN,
    holdout: float = 0.2,
    seed: int = 0,
    name: str = "harmless",
    max_length: int = 512,
    batch_size: int = 16,
    train_batch_size: int | None = None,
    device: str = "auto",
    features: Callable[[list[str], list[str]], "torch.Tensor"] | None = None,
    progress: bool = True,
    command: str | None = None,
    cv: int = 0,
    features_cache: str | Path | None = None,
    skip_invalid: bool = False,
) -> dict[str, Any]:
    """Train a preference head on the pairs in ``pairs_path`` (one file or several, read
    in order) and write ``out_dir/name.safetensors`` + ``out_dir/name.json``; returns the
    metrics.

    Features come from ``model`` (``"default"``, a path or id, or a loaded model) with
    ``HiddenStateFeatures(layer, pooling, max_length)``, unless a ``features`` callable
    is given (then ``model`` is only recorded by name, and one layer/pooling). ``hidden ==
    0`` trains a linear head, ``hidden > 0`` Linear-GELU-Linear. ``holdout`` of the pairs
    (seeded permutation) is kept out of training and scored once at the end.

    ``layer``, ``pooling``, ``hidden`` and ``weight_decay`` may be lists: every combination
    is scored by ``cv``-fold cross-validation on the training part (default 5 when there
    is more than one) and the best is trained on the whole training part. Features are
    extracted once for all layers and poolings (one forward per batch), and kept in
    ``features_cache`` (safetensors) when given, for the next run on the same pairs.
    ``skip_invalid`` leaves out (and records) records that are not valid pairs.
    """
    import torch

    from deal_chains import reward_cv
    from rewards.harmless import HiddenStateFeatures, save_head

    t0 = time.perf_counter()
    layers, poolings = [int(x) for x in _as_list(layer)], [str(x) for x in _as_list(pooling)]
    hiddens, decays = [int(x) for x in _as_list(hidden)], [float(x) for x in _as_list(weight_decay)]
    n_configs = len(layers) * len(poolings) * len(hiddens) * len(decays)
    if n_configs > 1 and cv < 2:
        cv = 5
    pairs, skipped = read_pair_files(pairs_path, skip_invalid)
    train_idx, held_idx = split_indices(len(pairs), holdout, seed)
    feature_spec: dict[str, Any]
    if features is None:
        from deal_chains.models.loader import load_model

        lm = load_model(model, device=device)
        extractor = HiddenStateFeatures(lm, layer=layers[0], batch_size=batch_size, max_length=max_length,
                                        pooling=poolings[0])
        model_name = lm.name
        feature_spec = {"model": model_name, **extractor.spec}
        table = reward_cv.cached_features(
            features_cache, reward_cv.cache_meta(model_name, extractor, pairs), layers, poolings,
            lambda ls, ps: reward_cv.extract_pair_features(extractor, pairs, ls, ps, progress=progress))
    else:
        if len(layers) * len(poolings) > 1:
            raise InputError("a features callable gives one layer and pooling")
        model_name = model if isinstance(model, str) else getattr(model, "name", type(model).__name__)
        feature_spec = {"model": model_name, "layer": layers[0], "pooling": poolings[0], "max_length": max_length,
                        "format": "custom features callable"}
        xc, xr = pair_features(features, pairs)
        if xc.ndim != 2 or xc.shape[0] != len(pairs):
            raise InputError(f"features returned shape {tuple(xc.shape)} for {len(pairs)} responses")
        table = {(layers[0], poolings[0]): torch.cat([xc, xr])}
    t_feat = time.perf_counter() - t0
    cv_rows: list[dict[str, Any]] = []
    if cv >= 2:
        cv_rows = reward_cv.sweep(table, train_idx, hiddens=hiddens, weight_decays=decays, k=cv, seed=seed,
                                  epochs=epochs, lr=lr)
        best = cv_rows[0]
    else:
        best = {"layer": layers[0], "pooling": poolings[0], "hidden": hiddens[0], "weight_decay": decays[0]}
    x = table[(best["layer"], best["pooling"])]
    xc, xr = x[: len(pairs)], x[len(pairs):]
    feature_spec.update(layer=best["layer"], pooling=best["pooling"])
    tr, he = torch.tensor(train_idx), torch.tensor(held_idx, dtype=torch.long)
    head = fit_head(xc[tr], xr[tr], hidden=best["hidden"], epochs=epochs, lr=lr, weight_decay=best["weight_decay"],
                    batch_size=train_batch_size, seed=seed)
    train_acc = pairwise_accuracy(score_head(head, xc[tr]), score_head(head, xr[tr]))
    held_acc = pairwise_accuracy(score_head(head, xc[he]), score_head(head, xr[he])) if held_idx else None
    if command is None:
        command = train_command(pairs_path, out_dir, model_name if not isinstance(model, str) else model, layers,
                                poolings, hiddens, epochs, lr, decays, holdout, seed, name, max_length,
                                cv=cv, skip_invalid=skip_invalid)
    feature_spec["dim"] = int(xc.shape[1])
    files = [Path(p).name for p in _as_list(pairs_path)]
    meta = {
        "name": name,
        "description": "Bradley-Terry preference head: score = sigmoid(head(features(prompt, response))), "
                       "higher = preferred (for HH-RLHF harmless-base pairs: more harmless)",
        "features": feature_spec,
        "training": {
            "command": command,
            "pairs": files[0] if len(files) == 1 else files,
            "skipped_invalid": skipped,
            "n_pairs": len(pairs),
            "n_train": len(train_idx),
            "n_heldout": len(held_idx),
            "holdout": holdout,
            "seed": seed,
            "split": "torch.randperm(n, generator=torch.Generator().manual_seed(seed)): "
                     "the first round(holdout*n) indices are held out",
            "loss": "-log sigmoid(r_chosen - r_rejected)",
            "optimizer": "Adam (weight_decay = L2 penalty)", "epochs": epochs, "lr": lr,
            "weight_decay": best["weight_decay"], "hidden": best["hidden"],
            "batch_size": train_batch_size or "full",
            "cross_validation": None if not cv_rows else {
                "k": cv, "on": "the training part (held-out pairs never seen)",
                "folds": "torch.randperm(n_train, generator=torch.Generator().manual_seed(seed)), every k-th",
                "selected": {k: best[k] for k in ("layer", "pooling", "hidden", "weight_decay", "cv_mean")},
                "table": cv_rows},
            "train_accuracy": round(train_acc, 4),
            "heldout_accuracy": None if held_acc is None else round(held_acc, 4),
            "heldout_indices": held_idx,
        },
    }
    weights, sidecar = save_head(head, Path(out_dir) / f"{name}.safetensors", meta)
    return {
        "train_accuracy": train_acc, "heldout_accuracy": held_acc, "n_train": len(train_idx),
        "n_heldout": len(held_idx), "weights": str(weights), "sidecar": str(sidecar),
        "weights_bytes": weights.stat().st_size, "feature_seconds": round(t_feat, 2),
        "seconds": round(time.perf_counter() - t0, 2), "features": feature_spec, "cv": cv_rows,
        "selected": best, "skipped": skipped,
    }


def train_command(pairs, out, model, layer, pooling, hidden, epochs, lr, wd, holdout, seed, name,
                  max_length, *, cv: int = 0, skip_invalid: bool = False) -> str:
    """The ``deal-chains train-reward`` command line that reproduces a training run (kept in the
    head's sidecar); list values are written comma-separated."""

    def joined(value: Any) -> str:
        return ",".join(str(v) for v in _as_list(value))

    args = ["train-reward", "--pairs", *[str(p) for p in _as_list(pairs)], "--out", str(out), "--model", str(model),
            "--layer", joined(layer), "--pooling", joined(pooling), "--hidden", joined(hidden),
            "--epochs", str(epochs), "--lr", str(lr), "--weight-decay", joined(wd), "--holdout", str(holdout),
            "--seed", str(seed), "--name", name, "--max-length", str(max_length)]
    if cv:
        args += ["--cv", str(cv)]
    if skip_invalid:
        args.append("--skip-invalid")
    return "deal-chains " + " ".join(shlex.quote(a) for a in args)
