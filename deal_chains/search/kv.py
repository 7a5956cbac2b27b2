"""The single place that talks to the transformers model: batched forwards over a shared
KV cache whose rows are forked (index-selected) and cropped instead of re-prefilled."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch


class KVBatch:
    """Rows of token sequences sharing one ``DynamicCache``.

    Every row has the same cache length; prompts of different lengths are left-padded and
    masked. ``fork(idx)`` makes row ``i`` of the result a copy of row ``idx[i]`` (beams and
    lookahead candidates); ``crop(n)`` forgets the last ``n`` positions of every row (the
    uncommitted part of a lookahead).
    """

    def __init__(self, model: Any):
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache(config=model.config)
        params = inspect.signature(model.forward).parameters
        # transformers renamed past_key_values -> cache; support both spellings
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_kw = "logits_to_keep" if "logits_to_keep" in params else None
        self.mask: torch.Tensor | None = None  # (rows, length) 1 = real token
        self.next_pos: torch.Tensor | None = None  # (rows,) position id of the next token
        self.forward_passes = 0
        self.row_forwards = 0  # rows x forwards after the prefill (what a batch's search kept)
        # followers of the rows (search/features.py): they get each forward's hidden states
        # and every fork and crop; retract reaches them through ``mask``
        self.taps: list[Any] = []

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, keep: int = 1) -> torch.Tensor:
        """Logits after each of the last ``keep`` input positions: (rows, vocab) for one,
        (rows, keep, vocab) for more."""
        kwargs: dict[str, Any] = {self._cache_kw: self.cache, "use_cache": True}
        if self._keep_kw:
            kwargs[self._keep_kw] = keep
        if self.taps:
            kwargs["output_hidden_states"] = True
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, **kwargs)
        self.forward_passes += 1
        for tap in self.taps:
            tap.fed(out.hidden_states)
        return out.logits[:, -1, :].float() if keep == 1 else out.logits[:, -keep:, :].float()

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
        """Run the prompts once (left-padded); return next-token logits (rows, vocab)."""
        device = self.model.device if hasattr(self.model, "device") else next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long, device=device)
            mask[i, width - len(p):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self._forward(ids, mask, pos)
        self.mask = mask
        self.next_pos = mask.sum(-1)
        return logits

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row; return the next-token logits (rows, vocab)."""
        assert self.mask is not None and self.next_pos is not None
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.rows, 1))], dim=1)
        logits = self._forward(tokens.view(-1, 1), self.mask, self.next_pos.view(-1, 1))
        self.row_forwards += self.rows
        self.next_pos = self.next_pos + 1
        return logits

    @torch.inference_mode()
    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens.shape[1]`` tokens per row in one forward; return the logits after
        each of them (rows, n, vocab): scoring a block of known tokens costs one forward."""
        assert self.mask is not None and self.next_pos is not None
        n = int(tokens.shape[1])
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.rows, n))], dim=1)
        pos = self.next_pos.view(-1, 1) + torch.arange(n, device=self.next_pos.device).view(1, -1)
        logits = self._forward(tokens, self.mask, pos, keep=n)
        self.row_forwards += self.rows
        self.next_pos = self.next_pos + n
        return logits.view(self.rows, n, -1)

    def fork(self, index: Sequence[int] | torch.Tensor) -> None:
        """Rows become ``old_rows[index]`` (copies when an index repeats)."""
        assert self.mask is not None and self.next_pos is not None
        idx = torch.as_tensor(index, dtype=torch.long, device=self.mask.device)
        if idx.numel() == self.rows and bool((idx == torch.arange(self.rows, device=idx.device)).all()):
            return  # identity: no copy (the greedy path stays copy-free)
        self.cache.reorder_cache(idx)
        self.mask = self.mask.index_select(0, idx)
        self.next_pos = self.next_pos.index_select(0, idx)
        for tap in self.taps:
            tap.fork(idx)

    def crop(self, n: int) -> None:
        """Drop the last ``n`` positions of every row."""
        if n <= 0:
            return
        assert self.mask is not None and self.next_pos is not None
        self.cache.crop(-n)
        self.mask = self.mask[:, :-n]
        self.next_pos = self.next_pos - n
        for tap in self.taps:
            tap.crop(n)

    def retract(self, per_row: Sequence[int]) -> None:
        """Forget the last ``per_row[i]`` positions of row ``i`` only: they stay in the cache
        but are masked out, and the row's next token takes the first forgotten position id,
        so rows can commit different numbers of tokens in one step (the holes cost memory
        until the batch ends, never a wrong attention)."""
        assert self.mask is not None and self.next_pos is not None
        if not any(per_row):
            return
        width = self.length
        back = torch.as_tensor(list(per_row), dtype=torch.long, device=self.mask.device)
        cols = torch.arange(width, device=self.mask.device).unsqueeze(0)
        # the last `back[r]` columns of row r
        forget = cols >= (width - back).unsqueeze(1)
        self.mask = self.mask.masked_fill(forget, 0)
        self.next_pos = self.next_pos - back
