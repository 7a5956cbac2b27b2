"""Device and dtype choice for every model deal-chains loads (the generating model, reward
models, classifiers): one home, at the bottom layer, with torch imported only when called.

>>> resolve_device("cpu").type
'cpu'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deal_chains.errors import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    import torch


# device types a model can run a search on; torch knows more (meta, xla, ...) but a model
# placed there either holds no weights or fails on the first forward with a raw error
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


_DEVICE_HELP = "use 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or 'xpu'"


def resolve_device(device: "str | torch.device | None" = "auto") -> "torch.device":
    """The torch device for ``device`` ("auto": CUDA when available, else the CPU); a
    ``ModelLoadError`` for a device string torch does not know or a device this machine
    does not have, before any weights are read."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise ModelLoadError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, ValueError, TypeError):
        raise ModelLoadError(f"unknown device {str(device)!r}; {_DEVICE_HELP}") from None
    if dev.type not in DEVICE_TYPES:
        raise ModelLoadError(f"device {str(device)!r} (type {dev.type!r}) cannot run a model here; {_DEVICE_HELP}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {str(device)!r} requested but CUDA is not available")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ModelLoadError(f"device {str(device)!r} requested but this machine has {count} CUDA "
                                 f"device(s): cuda:0 to cuda:{count - 1}")
    elif dev.type != "cpu":
        backend = getattr(torch.backends, dev.type, None) if dev.type == "mps" else getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise ModelLoadError(f"device {str(device)!r} requested but {dev.type.upper()} is not available")
    return dev


def resolve_dtype(dtype: "str | torch.dtype | None", device: "torch.device") -> "torch.dtype":
    """A ``torch.dtype``: None/"auto" = float32 on the CPU, bfloat16 (or float16) on CUDA."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float64": torch.float64}
    if dtype not in names:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {sorted(names)} or 'auto'")
    return names[dtype]
