"""Loading causal LMs: the embedded default, HF ids, local paths."""

from deal_chains.models.default import DEFAULT_MODEL_PIP, cache_dir, ensure_default_converted
from deal_chains.models.loader import LoadedModel, load_model, resolve_device, resolve_dtype

__all__ = [
    "DEFAULT_MODEL_PIP",
    "LoadedModel",
    "cache_dir",
    "ensure_default_converted",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]
