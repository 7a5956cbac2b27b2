"""Deprecated: the runtime moved to ``deal_chains.runtime`` (``DeALAdapter`` is now
``ModelRuntime``). This module re-exports the old names and warns on import."""

import warnings

from deal_chains.jsonkit.lexer import json_content  # noqa: F401
from deal_chains.runtime import *  # noqa: F401,F403
from deal_chains.runtime import __all__ as _runtime_names
from deal_chains.runtime import ModelRuntime as DeALAdapter  # noqa: F401
from deal_chains.runtime.worker import worker_for as _worker_for  # noqa: F401

__all__ = [*_runtime_names, "DeALAdapter", "json_content"]

warnings.warn("deal_chains.adapter is deprecated: import from deal_chains.runtime (DeALAdapter is now "
              "ModelRuntime)", DeprecationWarning, stacklevel=2)
