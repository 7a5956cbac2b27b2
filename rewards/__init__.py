"""Rewards: batched scorers of candidate output texts, used by the deal-chains search.

This package is pure Python (plus lemminflect for word forms, google-re2 for regexes). It
never imports torch, transformers, langchain or deal_chains: dependencies point one way,
from deal_chains to rewards.

Example::

    >>> from rewards import KeywordCoverage, LengthReward, RewardContext
    >>> kw = KeywordCoverage(["dog", "run", "ice cream"])
    >>> kw.score(["The dogs ran to the ice-cream van.", "A hotdog."], RewardContext())
    [1.0, 0.0]
    >>> kw.missing("A dog is running.")
    ['ice cream']
    >>> kw.settled("The dog ran for ice cream", RewardContext())  # "cream" may still grow
    False
    >>> length = LengthReward(max_words=5, scale=2)  # 2 words over the limit -> 0.5
    >>> length.score(["One two three.", "One two three four five six seven."])
    [1.0, 0.5]
"""

from rewards.base import BaseReward, Reward, RewardContext, reward_bounds, reward_settled
from rewards.callable import CallableReward, UnknownPluginError, available_plugins, load_plugin
from rewards.compose import AllOf, AnyOf, Gated, Normalized, Threshold, WeightedSum
from rewards.keywords import KeywordCoverage
from rewards.length import LengthReward
from rewards.regex import RegexReward

__all__ = [
    "Reward",
    "RewardContext",
    "BaseReward",
    "KeywordCoverage",
    "LengthReward",
    "RegexReward",
    "CallableReward",
    "load_plugin",
    "available_plugins",
    "UnknownPluginError",
    "WeightedSum",
    "Normalized",
    "Threshold",
    "AllOf",
    "AnyOf",
    "Gated",
    "reward_bounds",
    "reward_settled",
    "ClassifierReward",
    "RewardModelReward",
    "JudgeReward",
    "JsonSchemaReward",
    "HarmlessReward",
]

# Model-backed rewards load on first use (their modules import torch/transformers only
# when a reward is built), so ``import rewards`` stays light; so do the JSON-schema reward
# (jsonschema and its format checkers) and the harmlessness reward (its word lists).
_LAZY = {
    "ClassifierReward": "rewards.classifier",
    "RewardModelReward": "rewards.reward_model",
    "JudgeReward": "rewards.judge",
    "JsonSchemaReward": "rewards.json_schema",
    "HarmlessReward": "rewards.harmless",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rewards' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
