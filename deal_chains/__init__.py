"""deal-chains: decoding-time alignment (DeAL) for LangChain/DSPy pipelines.

>>> from deal_chains import DeALEngine, SearchConfig   # doctest: +SKIP
>>> from rewards import KeywordCoverage                # doctest: +SKIP
>>> engine = DeALEngine("default")                     # doctest: +SKIP
>>> engine.generate(["Write a sentence."], [KeywordCoverage(["dog", "park"])],
...                 SearchConfig(strategy="deal"))[0].text   # doctest: +SKIP
"""


from deal_chains._lazy import lazy_exports
from deal_chains.errors import (
    ConfigError,
    DealChainsError,
    InputError,
    ModelLoadError,
    PromptTooLongError,
    RewardError,
    SpecError,
)

__version__ = "0.1.0"

# torch-backed names load on first use, so `deal-chains spec validate` and other light
# commands start in a fraction of a second
_LAZY = {
    "DeALEngine": "deal_chains.search.engine",
    "GenerationResult": "deal_chains.search.result",
    "SearchStats": "deal_chains.search.result",
    "SearchConfig": "deal_chains.search.config",
    "GrammarConstraint": "deal_chains.search.constraints",
    "ConstraintError": "deal_chains.search.constraints",
    "LoadedModel": "deal_chains.models.loader",
    "load_model": "deal_chains.models.loader",
    "generate_records": "deal_chains.pipeline",
    "ChatDeAL": "deal_chains.langchain",
    "DeALLLM": "deal_chains.langchain",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "ChatDeAL",
    "ConfigError",
    "ConstraintError",
    "DeALEngine",
    "DeALLLM",
    "DealChainsError",
    "GenerationResult",
    "GrammarConstraint",
    "InputError",
    "LoadedModel",
    "ModelLoadError",
    "PromptTooLongError",
    "RewardError",
    "SearchConfig",
    "SearchStats",
    "SpecError",
    "generate_records",
    "load_model",
]
