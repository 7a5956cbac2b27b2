"""Token sequences padded into one batch: the padding loop the rewards that run a model
share (torch is imported only when it is called; no deal_chains import)."""

from __future__ import annotations

from typing import Any, Sequence


def padded(seqs: Sequence[Sequence[int]], pad_id: int, *, left: bool) -> tuple[Any, Any]:
    """``(ids, mask)``, long tensors on the CPU: the token sequences padded to the longest
    with ``pad_id``, on the left (decoders whose last column is every row's last token) or
    the right; ``mask`` is 1 on real tokens.

    >>> ids, mask = padded([[5, 6], [7]], 0, left=True)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        cols = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, cols] = torch.tensor(list(s), dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask
