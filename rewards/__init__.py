"""Rewards: batched scorers of candidate output texts, used by the deal-chains search.

This package is pure Python (plus lemminflect for word forms). It never imports torch,
transformers, langchain or deal_chains: dependencies point one way, from deal_chains to
rewards.

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
from rewards.keywords import KeywordCoverage
from rewards.length import LengthReward

__all__ = [
    "Reward",
    "RewardContext",
    "BaseReward",
    "KeywordCoverage",
    "LengthReward",
    "reward_bounds",
    "reward_settled",
]
