"""``no_repeat_ngram``: an answer never repeats one of its own n-grams (transformers'
``no_repeat_ngram_size``, applied to the answer's tokens, not the prompt's).

A small model's greedy continuation can loop (``the topic of the topic of the topic ...``)
once its rewards are settled, and run into the budget instead of ending. Masking the token
that would repeat an n-gram is the usual remedy; it applies to every candidate and every
rollout token, so the search never weighs a loop.

>>> import torch
>>> logits = torch.zeros(1, 5)
>>> ban_repeats(logits, [[1, 2, 3, 1, 2]], 3)[0].tolist()  # "1 2" was followed by 3 once
[0.0, 0.0, 0.0, -inf, 0.0]
"""

from __future__ import annotations

from typing import Sequence

import torch


def repeated_next(tokens: Sequence[int], n: int) -> set[int]:
    """The tokens that would complete an ``n``-gram ``tokens`` already holds.

    >>> sorted(repeated_next([5, 6, 7, 5, 6], 3)), repeated_next([5, 6], 3)
    ([7], set())
    """
    if n < 1 or len(tokens) < n - 1:
        return set()
    if n == 1:
        return set(tokens)
    tail = tuple(tokens[len(tokens) - (n - 1):])
    return {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n - 1]) == tail}


def ban_repeats(logits: torch.Tensor, sequences: Sequence[Sequence[int]], n: int, *,
                inplace: bool = False) -> torch.Tensor:
    """``logits`` (one row per sequence) with every token that would repeat an ``n``-gram of
    that row's sequence at -inf. A row left with no finite logit (a hard constraint allowed
    only the repeat) keeps its logits: a forced repeat beats a dead row."""
    bans = [(r, sorted(repeated_next(seq, n))) for r, seq in enumerate(sequences)]
    bans = [(r, ids) for r, ids in bans if ids]
    if not bans:
        return logits
    rows = torch.tensor([r for r, ids in bans for _ in ids], device=logits.device)
    cols = torch.tensor([t for _, ids in bans for t in ids], device=logits.device)
    keep = cols < logits.shape[-1]
    rows, cols = rows[keep], cols[keep]
    with torch.inference_mode():  # the model's logits are inference tensors
        out = logits if inplace else logits.clone()
        old = out[rows, cols]
        out[rows, cols] = float("-inf")
        banned = torch.unique(rows)
        stuck = banned[~torch.isfinite(out.index_select(0, banned)).any(dim=-1)]
        if len(stuck):
            back = torch.isin(rows, stuck)
            out[rows[back], cols[back]] = old[back]
    return out
