"""The search engine: config, KV-cache-forking tree search, strategies, results.

Submodules: ``config`` (SearchConfig), ``kv`` (model calls over a forked cache), ``tree``
(the DeAL search), ``constraints`` (grammar masks), ``engine`` (DeALEngine), ``result``.
"""

from importlib import import_module
from typing import Any

from deal_chains.search.config import STRATEGIES, SearchConfig

_LAZY = {
    "DeALEngine": "deal_chains.search.engine",
    "GenerationResult": "deal_chains.search.result",
    "SearchStats": "deal_chains.search.result",
    "GrammarConstraint": "deal_chains.search.constraints",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deal_chains.search' has no attribute {name!r}")


__all__ = ["STRATEGIES", "DeALEngine", "GenerationResult", "GrammarConstraint", "SearchConfig", "SearchStats"]
