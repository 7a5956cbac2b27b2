"""A*-style completion estimate: how likely a live candidate is to still place what its
rewards miss (issue #18; NeuroLogic A*esque decoding's lookahead heuristic).

A lookahead of a few tokens shows a reward only what those tokens place: a sentence that
would name a missing keyword three tokens later scores no better than one that never will.
The estimate credits each live candidate, for every item its lookahead text still misses
(``rewards.base.reward_pending``: a keyword's forms), the item's gain times the best
probability the candidate's own rollout gave one of the item's first tokens as the next
token. It costs no forward: the rollout computes those distributions anyway.

>>> from deal_chains.search.estimate import first_token_variants
>>> first_token_variants("dog")
(' dog', 'dog', ' Dog', 'Dog')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from deal_chains.search.state import Group
from rewards.base import reward_pending

# key of one pending item of one group: (reward index, the reward's item key)
Item = tuple[int, str]


def first_token_variants(form: str) -> tuple[str, ...]:
    """The spellings a form starts with in running text: after a space or not, lower or
    capitalised (a sentence may open with it)."""
    cap = form[:1].upper() + form[1:]
    out = [" " + form, form, " " + cap, cap]
    return tuple(dict.fromkeys(out))


def pending_items(group: Group, text: str) -> list[tuple[Item, float, tuple[str, ...]]]:
    """Every pending item of the group's rewards on ``text``: (key, weighted gain, forms)."""
    return [((ri, key), gain, forms)
            for ri, r in enumerate(group.rewards)
            for key, gain, forms in reward_pending(r, text, group.context)]


class CompletionEstimate:
    """Per step: the best next-token log-probability each candidate's rollout gave each item
    its parent still missed. ``observe`` takes every rollout step's log-probabilities;
    ``credit`` turns them into the estimate for a candidate's lookahead text."""

    def __init__(self, encode: Callable[[str], list[int]]):
        self._encode = encode
        self._first_ids: dict[str, tuple[int, ...]] = {}

    def first_ids(self, forms: Sequence[str]) -> tuple[int, ...]:
        """Token ids that can start any of ``forms`` (cached per form)."""
        ids: list[int] = []
        for form in forms:
            if form not in self._first_ids:
                firsts = {toks[0] for v in first_token_variants(form) if (toks := self._encode(v))}
                self._first_ids[form] = tuple(sorted(firsts))
            ids.extend(self._first_ids[form])
        return tuple(dict.fromkeys(ids))

    def start(self, groups: Sequence[Group], parents: Sequence[int], parent_group: Sequence[int],
              parent_text: Callable[[int], str], device: torch.device) -> "StepEstimate":
        """The items each candidate row (``parents[i]``: its row) still misses, as gather indices."""
        by_row: dict[int, list[tuple[Item, float, tuple[int, ...]]]] = {}
        for p in set(parents):
            items = pending_items(groups[parent_group[p]], parent_text(p))
            by_row[p] = [(key, gain, self.first_ids(forms)) for key, gain, forms in items]
        width = max((sum(len(ids) for _, _, ids in by_row[p]) for p in by_row), default=0)
        index = torch.zeros((len(parents), max(width, 1)), dtype=torch.long, device=device)
        valid = torch.zeros((len(parents), max(width, 1)), dtype=torch.bool, device=device)
        columns: list[dict[Item, list[int]]] = []
        for i, p in enumerate(parents):
            cols: dict[Item, list[int]] = {}
            at = 0
            for key, _, ids in by_row[p]:
                cols[key] = list(range(at, at + len(ids)))
                index[i, at:at + len(ids)] = torch.tensor(ids, dtype=torch.long)
                valid[i, at:at + len(ids)] = True
                at += len(ids)
            columns.append(cols)
        return StepEstimate(index=index, valid=valid, columns=columns,
                            best=torch.full(index.shape, float("-inf"), device=device))


@dataclass
class StepEstimate:
    """One step's gather indices (candidate row x item token) and the running best log-prob."""

    index: torch.Tensor
    valid: torch.Tensor
    columns: list[dict[Item, list[int]]]
    best: torch.Tensor

    def observe(self, step_logprobs: torch.Tensor, live: torch.Tensor) -> None:
        """Fold in one rollout position's next-token log-probabilities (rows whose rollout
        has ended, ``~live``, keep what they had)."""
        seen = step_logprobs.gather(1, self.index).float()
        seen = seen.masked_fill(~(self.valid & live.unsqueeze(1)), float("-inf"))
        self.best = torch.maximum(self.best, seen)

    def credit(self, row: int, items: Sequence[tuple[Item, float, tuple[str, ...]]]) -> float:
        """Sum over the items still missing from the candidate's lookahead text of gain times
        the best probability its rollout gave the item's first tokens."""
        cols = self.columns[row]
        total = 0.0
        best = None
        for key, gain, _ in items:
            where = cols.get(key)
            if not where:
                continue
            if best is None:
                best = self.best[row].tolist()
            total += gain * math.exp(max(best[c] for c in where))  # -inf (never seen) gives 0
        return total


def requested_tokens(groups: Sequence[Group], encode: Callable[[str], list[int]]) -> list[frozenset[int]]:
    """Per group, the token ids that start an item its rewards ask for (a keyword's forms, as
    running text or capitalised; ``rewards.base.reward_pending``): ``fluency_spare_requested``
    ranks them by the request's own likelihood (placing a keyword is the reward's business;
    the fluency read judges the form around it), ``requested_logprob_drop`` bounds them apart.

    >>> from deal_chains.search.state import Group
    >>> from rewards.keywords import KeywordCoverage
    >>> from rewards.base import RewardContext
    >>> [sorted(s) for s in requested_tokens([Group(0, [KeywordCoverage(["dog"], inflections=False)], RewardContext())],
    ...                                      lambda text: [len(text)])]
    [[3, 4]]
    """
    estimate = CompletionEstimate(encode)
    return [frozenset(estimate.first_ids([f for _, _, forms in pending_items(g, "") for f in forms]))
            for g in groups]
