"""Safe, shared loading of Hugging Face sequence-classification models for rewards.

    >>> from rewards._hf import load_sequence_classifier
    >>> load_sequence_classifier("./no/such/classifier")
    Traceback (most recent call last):
    ...
    ValueError: classifier path './no/such/classifier' does not exist

``load_sequence_classifier(name_or_path)`` returns ``(model, tokenizer)``: an
``AutoModelForSequenceClassification`` in eval mode on the requested device and its
``AutoTokenizer``. Loading is deliberately strict:

- weights load from safetensors only (``use_safetensors=True``): a checkpoint with only
  pickle weights (``pytorch_model.bin``) is refused, never unpickled;
- ``trust_remote_code`` is off unless the caller passes ``trust_remote_code=True``;
- a local directory loads with ``local_files_only=True`` (no hub access);
- a checkpoint whose ``config.architectures`` names no ``*ForSequenceClassification``
  class (a causal LM, a bare encoder) is refused: transformers would otherwise attach a
  randomly initialised head and every score would be noise. A checkpoint that loads
  with missing weights is refused for the same reason.

Loaded models are cached process-wide by (path, device, dtype, trust_remote_code), so
the many reward instances a run builds (one per input record) share one model. An
already-loaded ``(model, tokenizer)`` pair is accepted too and returned as is (put in
eval mode, with a padding token ensured).

torch and transformers are imported lazily, inside the functions.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

from deal_chains.devices import resolve_device, resolve_dtype

__all__ = ["load_sequence_classifier", "clear_cache", "resolve_device", "resolve_dtype", "pad_batch",
           "ScoreCache", "batched_scores", "cached_scores", "ensure_padding", "fallback_token_id",
           "model_device"]

_CACHE: dict[tuple, tuple[Any, Any]] = {}
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every cached model (they are freed once no reward holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def model_device(model: Any) -> Any:
    """The device of a model's first parameter (CPU for a parameterless model)."""
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _looks_local(name: str) -> bool:
    """True for names meant as filesystem paths rather than hub ids ("owner/name")."""
    return (name.startswith((".", "/", "~", "\\")) or Path(name).expanduser().exists()
            or name.count("/") > 1 or "\\" in name or (len(name) > 1 and name[1] == ":"))


def _has_safetensors(path: Path) -> bool:
    return any(path.glob("*.safetensors")) or any(path.glob("*.safetensors.index.json"))


def _check_architecture(config: Any, label: str) -> None:
    archs = [str(a) for a in (getattr(config, "architectures", None) or [])]
    auto_map = getattr(config, "auto_map", None) or {}
    if not archs or "AutoModelForSequenceClassification" in auto_map:
        return
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ValueError(
            f"{label!r} is not a sequence-classification model: its config names "
            f"{', '.join(archs)} (a sequence classifier's architecture ends in "
            "'ForSequenceClassification'); loading it would attach a randomly initialised "
            "classification head")


def ensure_padding(model: Any, tokenizer: Any) -> None:
    """Give the tokenizer a padding token (its end-of-sequence token, else its unknown
    token) when it has none, and the model config the tokenizer's padding id when the
    config has none (decoder classifiers need it to find each row's last token)."""
    if getattr(tokenizer, "pad_token_id", None) is None:
        for attr in ("eos_token", "unk_token", "bos_token"):
            tok = getattr(tokenizer, attr, None)
            if tok is not None:
                tokenizer.pad_token = tok
                break
    pad = getattr(tokenizer, "pad_token_id", None)
    config = getattr(model, "config", None)
    if config is None or pad is None:
        return
    configs = [config]
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text):
        text_config = get_text()
        if text_config is not None and text_config is not config:
            configs.append(text_config)
    for cfg in configs:
        if getattr(cfg, "pad_token_id", None) is None:
            cfg.pad_token_id = int(pad)


def load_sequence_classifier(
    name_or_path: str | Path | tuple[Any, Any],
    *,
    device: Any = "cpu",
    dtype: Any = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a sequence-classification model (see the module docstring).

    ``name_or_path``: a local directory, a Hugging Face hub id (fetched only when the hub
    is reachable and allowed), or an already-loaded ``(model, tokenizer)`` pair.
    Raises ``ValueError`` for a path that does not exist, a checkpoint that is not a
    sequence classifier, or one without safetensors weights; ``RuntimeError`` when
    transformers fails to load it for another reason.
    """
    if isinstance(name_or_path, (tuple, list)):
        if len(name_or_path) != 2:
            raise TypeError("load_sequence_classifier: pass a path or a (model, tokenizer) pair")
        model, tokenizer = name_or_path
        if not hasattr(model, "config") or not callable(model):
            raise TypeError(f"load_sequence_classifier: {type(model).__name__} is not a transformers model")
        if not callable(tokenizer):
            raise TypeError(f"load_sequence_classifier: {type(tokenizer).__name__} is not a tokenizer")
        model.eval()
        ensure_padding(model, tokenizer)
        return model, tokenizer
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError("load_sequence_classifier: model must be a path, a hub id or a (model, tokenizer) "
                        f"pair, got {type(name_or_path).__name__}")
    name = str(name_or_path)
    if not name.strip():
        raise ValueError("load_sequence_classifier: the model path is empty")
    local = _looks_local(name)
    path = str(Path(name).expanduser().resolve()) if local else name
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    key = (path, str(dev), str(dt), bool(trust_remote_code))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        loaded = _load(name, path, local, dev, dt, bool(trust_remote_code))
        _CACHE[key] = loaded
        return loaded


def _load(label: str, path: str, local: bool, device: Any, dtype: Any,
          trust_remote_code: bool) -> tuple[Any, Any]:
    if local:
        p = Path(path)
        if not p.exists():
            raise ValueError(f"classifier path {label!r} does not exist")
        if not p.is_dir():
            raise ValueError(f"classifier path {label!r} is not a directory (give the model's directory, "
                             "with config.json and the weights)")
        if not (p / "config.json").is_file():
            raise ValueError(f"classifier path {label!r} has no config.json: not a transformers model directory")
        if not _has_safetensors(p):
            pickles = sorted(f.name for f in p.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".ckpt"))
            found = f" (found only {', '.join(pickles)}: pickle weights are refused)" if pickles else ""
            raise ValueError(f"classifier path {label!r} has no safetensors weights{found}; convert the "
                             "checkpoint with model.save_pretrained(dir, safe_serialization=True)")

    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=local)
    except ValueError as exc:
        raise ValueError(f"cannot read the config of {label!r}: {exc}") from exc
    except Exception as exc:
        raise RuntimeError(f"cannot load {label!r}: {type(exc).__name__}: {exc}") from exc
    _check_architecture(config, label)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, config=config, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code,
            local_files_only=local, output_loading_info=True,
        )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc) or "AutoModelForSequenceClassification" in str(exc):
            raise ValueError(f"{label!r} (model type {getattr(config, 'model_type', '?')!r}) is not a "
                             "sequence-classification model transformers can load") from exc
        raise ValueError(f"cannot load {label!r}: {exc}") from exc
    except OSError as exc:
        hint = " (rewards load safetensors weights only)" if "safetensors" in str(exc) else ""
        raise RuntimeError(f"cannot load {label!r}: {exc}{hint}") from exc
    except Exception as exc:
        raise RuntimeError(f"cannot load {label!r}: {type(exc).__name__}: {exc}") from exc
    missing = sorted(info.get("missing_keys") or ()) if isinstance(info, dict) else []
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"{label!r} lacks weights for {shown}: they would be randomly initialised, so it "
                         "is not a trained sequence classifier")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                  local_files_only=local)
    except Exception as exc:
        raise RuntimeError(f"cannot load the tokenizer of {label!r}: {type(exc).__name__}: {exc}") from exc
    model.to(device)
    model.eval()
    ensure_padding(model, tokenizer)
    return model, tokenizer


# ----------------------------------------------------------------------------- batching


def fallback_token_id(tokenizer: Any) -> int:
    """The token an empty encoding is given so every row has at least one token."""
    for attr in ("bos_token_id", "cls_token_id", "eos_token_id", "unk_token_id", "pad_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def pad_batch(rows: Sequence[dict[str, list[int]]], pad_id: int, device: Any) -> dict[str, Any]:
    """Right-pad encodings (``input_ids`` and, when present, ``token_type_ids``) into
    tensors with an ``attention_mask``.

    Right padding is exact for both encoders (the mask hides the padding) and decoder
    classifiers (causal attention never sees later padding, positions stay 0..n-1, and
    the head reads each row's last non-padding token), so batched scores equal one-by-one
    scores.
    """
    import torch

    from rewards._batch import padded

    ids, mask = padded([r["input_ids"] for r in rows], pad_id, left=False)
    types = None
    if all("token_type_ids" in r for r in rows):
        types = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            types[i, : len(r["token_type_ids"])] = torch.tensor(r["token_type_ids"], dtype=torch.long)
    out = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if types is not None:
        out["token_type_ids"] = types.to(device)
    return out


class ScoreCache:
    """A bounded LRU map from a key (a text, or a (prompt, text) pair) to its score."""

    def __init__(self, size: int = 10_000) -> None:
        from collections import OrderedDict

        self.size = int(size)
        self._data: "OrderedDict[Any, float]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Any) -> bool:
        return key in self._data

    def get(self, key: Any) -> float | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Any, value: float) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def cached_scores(cache: ScoreCache, keys: Sequence[Any], compute: Any) -> list[float]:
    """Scores for ``keys``: cached ones from ``cache``, the rest (each distinct key once)
    from ``compute(missing_keys) -> list[float]``, which are then cached."""
    found: dict[Any, float] = {}
    missing: list[Any] = []
    for k in dict.fromkeys(keys):
        v = cache.get(k)
        if v is None:
            missing.append(k)
        else:
            found[k] = v
    if missing:
        values = compute(missing)
        for k, v in zip(missing, values):
            v = float(v)
            found[k] = v
            cache.put(k, v)
    return [found[k] for k in keys]


def batched_scores(model: Any, tokenizer: Any, rows: Sequence[dict[str, list[int]]], batch_size: int,
                   head: Any) -> list[float]:
    """One float per encoded row: rows are sorted by length (less padding), padded into
    batches of ``batch_size``, run through ``model`` without gradients, and ``head`` maps each
    batch's float64 logits to one value per row."""
    import torch

    if not rows:
        return []
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    pad = tokenizer.pad_token_id
    pad = fallback_token_id(tokenizer) if pad is None else int(pad)
    device = model_device(model)
    out = [0.0] * len(rows)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = pad_batch([rows[i] for i in idx], pad, device)
        with torch.inference_mode():
            values = head(model(**batch).logits.double())
        for i, v in zip(idx, values.cpu().tolist()):
            out[i] = float(v)
    return out
