"""The single place that talks to the transformers model: batched forwards over a shared
KV cache whose rows are forked (index-selected) and cropped instead of re-prefilled."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Sequence

import torch

from deal_chains.search.shared_prefix import PREFIX_KWARG, SharedPrefix, supports_shared_prefix, using_shared_prefix


# positions a growing cache layer keeps free past its length: a rollout writes this many
# tokens without a copy (a lookahead's worth and more)
CACHE_HEADROOM = 32
# positions kept free by a fork (a search forks every few tokens: a lookahead fits)
FORK_HEADROOM = 16


@functools.lru_cache(maxsize=1)
def _growing_layer_class() -> type:
    """A ``DynamicLayer`` that writes new positions into a buffer with room to spare instead of
    concatenating: transformers' layer copies its whole cache at every token (``torch.cat``),
    17 % of a 128-token harmless search on a 2-core CPU. Its ``keys`` / ``values`` are views of
    the filled part, so the attention reads exactly what the plain layer would."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            super().lazy_initialization(key_states, value_states)
            self._kbuf: torch.Tensor | None = None
            self._vbuf: torch.Tensor | None = None
            self._length = 0

        def _view(self) -> None:
            assert self._kbuf is not None and self._vbuf is not None
            self.keys = self._kbuf[:, :, : self._length]
            self.values = self._vbuf[:, :, : self._length]

        def _rebuffer(self, capacity: int) -> None:
            """New buffers of ``capacity`` positions holding the filled part."""
            k, v = self.keys, self.values
            shape = (k.shape[0], k.shape[1], capacity)
            self._kbuf = k.new_empty(shape + tuple(k.shape[3:]))
            self._vbuf = v.new_empty(shape + tuple(v.shape[3:]))
            self._kbuf[:, :, : self._length] = k
            self._vbuf[:, :, : self._length] = v

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = key_states.shape[-2]
            if self._kbuf is None or self._length + n > self._kbuf.shape[2]:
                if self._kbuf is None:
                    self.keys, self.values = key_states[:, :, :0], value_states[:, :, :0]
                # an eighth more on long sequences: a copy every len/8 tokens, at most 1/8 unused
                self._rebuffer(self._length + n + max(CACHE_HEADROOM, (self._length + n) // 8))
            assert self._kbuf is not None and self._vbuf is not None
            self._kbuf[:, :, self._length: self._length + n] = key_states
            self._vbuf[:, :, self._length: self._length + n] = value_states
            self._length += n
            self._view()
            return self.keys, self.values

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError(f"crop takes a negative count of positions to drop, got {tokens_to_remove}")
            if tokens_to_remove == 0 or not self.is_initialized or self._kbuf is None:
                return
            self._length = max(0, self._length + tokens_to_remove)
            self._view()

        def _select(self, index: torch.Tensor) -> None:
            # one copy of the filled part and a little room (a search forks every few tokens)
            assert self._kbuf is not None and self._vbuf is not None
            keep = min(self._kbuf.shape[2], self._length + FORK_HEADROOM)
            self._kbuf = self._kbuf[:, :, :keep].index_select(0, index.to(self._kbuf.device))
            self._vbuf = self._vbuf[:, :, :keep].index_select(0, index.to(self._vbuf.device))
            self._view()

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            if self.is_initialized and self._kbuf is not None:
                self._select(beam_idx)

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized and self._kbuf is not None:
                self._select(torch.as_tensor(indices))

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.is_initialized and self._kbuf is not None:
                self._select(torch.arange(self._kbuf.shape[0], device=self._kbuf.device).repeat_interleave(repeats))

        def reset(self) -> None:
            super().reset()
            self._kbuf = self._vbuf = None
            self._length = 0

    return GrowingLayer


def new_cache(model: Any) -> Any:
    """A ``DynamicCache`` for ``model`` whose plain (full-attention) layers grow in place
    (``_growing_layer_class``); other layer kinds (sliding windows, linear attention) stay
    transformers' own."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    growing = _growing_layer_class()
    layers = getattr(cache, "layers", None)
    if layers and all(type(layer) is DynamicLayer for layer in layers):
        cache.layers = [growing() for _ in layers]
    return cache


class KVBatch:
    """Rows of token sequences sharing one ``DynamicCache``.

    Every row has the same cache length; prompts of different lengths are left-padded and
    masked. ``fork(idx)`` makes row ``i`` of the result a copy of row ``idx[i]`` (beams and
    lookahead candidates); ``crop(n)`` forgets the last ``n`` positions of every row (the
    uncommitted part of a lookahead).

    Where the model allows it (``shared_prefix.supports_shared_prefix``), the prompts' keys and
    values are kept once per prompt after the prefill and the cache holds only the generated
    tokens, so a fork copies those and not the prompt (``shared_prefix=False`` turns it off).
    """

    def __init__(self, model: Any, shared_prefix: bool = True):
        self.model = model
        self.cache = new_cache(model)
        params = inspect.signature(model.forward).parameters
        # transformers renamed past_key_values -> cache; support both spellings
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_kw = "logits_to_keep" if "logits_to_keep" in params else None
        self._share = shared_prefix and supports_shared_prefix(model, _same_logits_shared)
        self.prefix: SharedPrefix | None = None
        self._own: torch.Tensor | None = None  # (rows, cached length) 1 = real token, of self.cache
        self.next_pos: torch.Tensor | None = None  # (rows,) position id of the next token
        self.forward_passes = 0
        self.row_forwards = 0  # rows x forwards after the prefill (what a batch's search kept)
        # followers of the rows (search/features.py): they get each forward's hidden states
        # and every fork and crop; retract reaches them through ``mask``
        self.taps: list[Any] = []

    @property
    def mask(self) -> torch.Tensor | None:
        """(rows, length): 1 where a row has a real token (prompt and generated)."""
        if self._own is None or self.prefix is None:
            return self._own
        prompt = (self.prefix.bias == 0).to(self._own.dtype).index_select(0, self.prefix.row_prompt)
        return torch.cat([prompt, self._own], dim=1)

    def mask_after(self, column: int) -> torch.Tensor | None:
        """``mask[:, column:]``, without building the prompt's columns when ``column`` lies
        past them (the response columns a tap reads at every scoring)."""
        if self._own is not None and self.prefix is not None and column >= self.prefix.length:
            return self._own[:, column - self.prefix.length:]
        mask = self.mask
        return None if mask is None else mask[:, column:]

    @property
    def rows(self) -> int:
        return 0 if self._own is None else int(self._own.shape[0])

    @property
    def length(self) -> int:
        return 0 if self._own is None else int(self._own.shape[1]) + (self.prefix.length if self.prefix else 0)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, keep: int = 1) -> torch.Tensor:
        """Logits after each of the last ``keep`` input positions: (rows, vocab) for one,
        (rows, keep, vocab) for more."""
        kwargs: dict[str, Any] = {self._cache_kw: self.cache, "use_cache": True}
        if self._keep_kw:
            kwargs[self._keep_kw] = keep
        if self.taps:
            kwargs["output_hidden_states"] = True
        if self.prefix is not None:
            with using_shared_prefix(self.model):
                out = self.model(input_ids=ids, attention_mask=_additive(mask, ids.shape[1]), position_ids=pos,
                                 **{PREFIX_KWARG: self.prefix}, **kwargs)
        else:
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
        self._own = mask
        self.next_pos = mask.sum(-1)
        if self._share:
            self._share_prompts()
        return logits

    def _share_prompts(self) -> None:
        """Move the prefilled prompts out of the cache into a ``SharedPrefix``."""
        assert self._own is not None
        layers = self.cache.layers
        dtype = layers[0].keys.dtype
        bias = torch.zeros(self._own.shape, dtype=dtype, device=self._own.device)
        bias.masked_fill_(self._own == 0, float("-inf"))
        self.prefix = SharedPrefix([layer.keys for layer in layers], [layer.values for layer in layers], bias,
                                   torch.arange(self.rows, device=self._own.device))
        self.cache = new_cache(self.model)
        self._own = self._own[:, :0]

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row; return the next-token logits (rows, vocab)."""
        return self.extend(tokens.view(-1, 1))[:, 0]

    @torch.inference_mode()
    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens.shape[1]`` tokens per row in one forward; return the logits after
        each of them (rows, n, vocab): scoring a block of known tokens costs one forward."""
        assert self._own is not None and self.next_pos is not None
        n = int(tokens.shape[1])
        self._own = torch.cat([self._own, self._own.new_ones((self.rows, n))], dim=1)
        pos = self.next_pos.view(-1, 1) + torch.arange(n, device=self.next_pos.device).view(1, -1)
        logits = self._forward(tokens, self._own, pos, keep=n)
        self.row_forwards += self.rows
        self.next_pos = self.next_pos + n
        return logits.view(self.rows, n, -1)

    def fork(self, index: Sequence[int] | torch.Tensor) -> None:
        """Rows become ``old_rows[index]`` (copies when an index repeats)."""
        assert self._own is not None and self.next_pos is not None
        idx = torch.as_tensor(index, dtype=torch.long, device=self._own.device)
        if idx.numel() == self.rows and bool((idx == torch.arange(self.rows, device=idx.device)).all()):
            return  # identity: no copy (the greedy path stays copy-free)
        self.cache.reorder_cache(idx)
        self._own = self._own.index_select(0, idx)
        self.next_pos = self.next_pos.index_select(0, idx)
        if self.prefix is not None:
            self.prefix.fork(idx)
        for tap in self.taps:
            tap.fork(idx)

    def crop(self, n: int) -> None:
        """Drop the last ``n`` positions of every row."""
        if n <= 0:
            return
        assert self._own is not None and self.next_pos is not None
        self.cache.crop(-n)
        self._own = self._own[:, :-n]
        self.next_pos = self.next_pos - n
        for tap in self.taps:
            tap.crop(n)

    def retract(self, per_row: Sequence[int]) -> None:
        """Forget the last ``per_row[i]`` positions of row ``i`` only: they stay in the cache
        but are masked out, and the row's next token takes the first forgotten position id,
        so rows can commit different numbers of tokens in one step (the holes cost memory
        until the batch ends, never a wrong attention)."""
        assert self._own is not None and self.next_pos is not None
        if not any(per_row):
            return
        width = int(self._own.shape[1])
        back = torch.as_tensor(list(per_row), dtype=torch.long, device=self._own.device)
        cols = torch.arange(width, device=self._own.device).unsqueeze(0)
        # the last `back[r]` columns of row r (always generated tokens, never the prompt)
        forget = cols >= (width - back).unsqueeze(1)
        self._own = self._own.masked_fill(forget, 0)
        self.next_pos = self.next_pos - back


def _additive(own: torch.Tensor, n: int) -> torch.Tensor:
    """(rows, 1, n, S) additive mask over the cached generated tokens for ``n`` new ones: a
    row's real tokens, and of the new ones only those up to each query (causal)."""
    width = own.shape[1]
    cols = torch.arange(width, device=own.device).view(1, 1, 1, width)
    rows_q = torch.arange(n, device=own.device).view(1, 1, n, 1) + (width - n)
    allowed = (own.bool().view(own.shape[0], 1, 1, width)) & (cols <= rows_q)
    out = torch.zeros(allowed.shape, dtype=torch.float32, device=own.device)
    return out.masked_fill_(~allowed, float("-inf"))


def _same_logits_shared(model: Any) -> bool:
    """The check behind ``supports_shared_prefix``: two prompts of different lengths, a fork,
    a step and a two-token extend give the same logits with and without a shared prefix."""
    ids = [[1, 2, 3, 4], [5, 6]]
    logits = []
    for share in (False, True):
        kv = KVBatch(model, shared_prefix=False)
        kv._share = share  # set here: asking the constructor for it would run this check again
        with torch.inference_mode():
            kv.prefill(ids, 0)
            kv.fork([0, 1, 1, 0])
            a = kv.step(torch.tensor([7, 8, 9, 10], device=kv._own.device))  # type: ignore[union-attr]
            b = kv.extend(torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]], device=kv._own.device))  # type: ignore[union-attr]
        logits.append(torch.cat([a.unsqueeze(1), b], dim=1))
    plain, shared = logits
    tol = 1e-3 * max(1.0, float(plain.abs().max()))
    return bool(torch.isfinite(shared).all()) and float((plain - shared).abs().max()) <= tol
