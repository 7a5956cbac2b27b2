"""deal-chains: decoding-time alignment (DeAL) for LangChain/DSPy pipelines.

>>> from deal_chains import DeALEngine, SearchConfig   # doctest: +SKIP
>>> from rewards import KeywordCoverage                # doctest: +SKIP
>>> engine = DeALEngine("default")                     # doctest: +SKIP
>>> engine.generate(["Write a sentence."], [KeywordCoverage(["dog", "park"])],
...                 SearchConfig(strategy="deal"))[0].text   # doctest: +SKIP
"""

from deal_chains.errors import (
    ConfigError,
    DealChainsError,
    InputError,
    ModelLoadError,
    PromptTooLongError,
    RewardError,
    SpecError,
)
from deal_chains.models import LoadedModel, load_model
from deal_chains.search import DeALEngine, GenerationResult, SearchConfig, SearchStats

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DeALEngine",
    "DealChainsError",
    "GenerationResult",
    "InputError",
    "LoadedModel",
    "ModelLoadError",
    "PromptTooLongError",
    "RewardError",
    "SearchConfig",
    "SearchStats",
    "SpecError",
    "load_model",
]
