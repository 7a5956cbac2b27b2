"""Prompts and a reward the tiny random model's text actually varies in, shared by the engine
and streaming tests."""

from __future__ import annotations

from rewards import BaseReward, RewardContext

PROMPTS = ["hello world", "a much longer prompt, so the batch is left-padded", "abc", "Why?"]


class CharShare(BaseReward):
    """Share of a character among the output's characters (saturating): a reward that
    the random model's text actually varies in."""

    def __init__(self, char: str, weight: float = 1.0, terminal: bool = False):
        self.char, self.weight, self.terminal, self.name = char, weight, terminal, f"share_{char}"

    def score(self, texts, context):
        return [min(1.0, 4 * t.count(self.char) / max(1, len(t))) for t in texts]


REWARDS = [CharShare("e"), CharShare(" ", weight=0.5)]


def tree_state(lm, params, rewards=(), prompts=("hello world", "abc")):
    """A tree search started on ``prompts`` (one group each, the same ``rewards``), before its first step."""
    from deal_chains.search import tree
    from deal_chains.search.kv import KVBatch
    from deal_chains.search.state import Group

    kv = KVBatch(lm.model)
    logits = kv.prefill([lm.format_prompt(p) for p in prompts], lm.pad_token_id)
    groups = [Group(prompt_row=i, rewards=list(rewards), context=RewardContext(prompt=p))
              for i, p in enumerate(prompts)]
    return tree.start(kv, logits, groups, params, lm.eos_token_ids, lm.decode)
