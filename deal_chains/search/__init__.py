"""The search engine: config, KV-cache-forking tree search, strategies, results.

Submodules: ``config`` (SearchConfig), ``kv`` (model calls over a forked cache), ``tree``
(the DeAL search), ``constraints`` (grammar masks), ``engine`` (DeALEngine), ``result``.
"""


from deal_chains._lazy import lazy_exports
from deal_chains.search.config import STRATEGIES, SearchConfig

_LAZY = {
    "DeALEngine": "deal_chains.search.engine",
    "GenerationResult": "deal_chains.search.result",
    "SearchStats": "deal_chains.search.result",
    "GrammarConstraint": "deal_chains.search.constraints",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["STRATEGIES", "DeALEngine", "GenerationResult", "GrammarConstraint", "SearchConfig", "SearchStats"]
