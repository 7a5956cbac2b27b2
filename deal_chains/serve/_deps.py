"""The server's optional dependencies (extra ``serve``), imported when first used with an
error that says how to install them.

>>> require("json").__name__
'json'
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from deal_chains.errors import DealChainsError


class MissingDependency(DealChainsError, ImportError):
    """An optional package the server needs is not installed."""


def require(module: str) -> ModuleType:
    """``import module``, or ``MissingDependency`` naming the extra to install."""
    try:
        return import_module(module)
    except ImportError as exc:
        raise MissingDependency(f"deal-chains serve needs {module.split('.')[0]} ({exc}); install the server extra: "
                                "pip install 'deal-chains[serve]'") from None
