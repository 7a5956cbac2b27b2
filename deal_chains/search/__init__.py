"""The search engine: config, KV-cache-forking tree search, strategies, results."""

from deal_chains.search.config import STRATEGIES, SearchConfig
from deal_chains.search.engine import DeALEngine
from deal_chains.search.result import GenerationResult, SearchStats

__all__ = ["STRATEGIES", "DeALEngine", "GenerationResult", "SearchConfig", "SearchStats"]
