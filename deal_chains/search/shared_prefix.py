"""The prompts' keys and values, held once per prompt while the search forks its rows.

A search forks every live row into ``top_k`` candidates every few tokens. With one plain KV
cache, each fork copies every row's whole cache, prompt included: with a 174-token few-shot
prompt, 28 % of a CommonGen search on a 2-core CPU went to ``index_select``. Here the cache
holds only the generated tokens of each row; the prompt's keys and values stay in one row
per prompt (``SharedPrefix``), and an attention function (``shared_prefix_attention``)
attends each row's queries to its prompt's prefix and to its own generated tokens in one
softmax, as the model's attention over the concatenation would.

``supports_shared_prefix(model)`` checks, once per model, that the model's forward takes the
function and returns the same logits as a plain cache; a model that does not (another
attention layout, sliding windows, soft-capped scores) keeps the plain cache.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

ATTENTION_NAME = "deal_chains_shared_prefix"
PREFIX_KWARG = "deal_chains_prefix"


@dataclass
class SharedPrefix:
    """Per layer, the prompts' keys and values (prompts, kv_heads, P, head_dim); ``bias`` is 0
    on prompt tokens and -inf on left padding (prompts, P); ``row_prompt`` maps each row of
    the cache to its prompt, and follows every fork."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    bias: torch.Tensor
    row_prompt: torch.Tensor
    # where each row's queries sit in the padded (prompts x most rows of a prompt) layout
    _slot: torch.Tensor | None = field(default=None, repr=False)
    _most: int = 0

    @property
    def prompts(self) -> int:
        return int(self.bias.shape[0])

    @property
    def length(self) -> int:
        return int(self.bias.shape[1])

    def fork(self, index: torch.Tensor) -> None:
        self.row_prompt = self.row_prompt.index_select(0, index)
        self._slot = None

    def layout(self) -> tuple[torch.Tensor, int]:
        """Each row's slot in a (prompts x most) grid, the rows of each prompt side by side,
        and ``most``: the largest number of rows of one prompt."""
        if self._slot is None:
            rows = self.row_prompt
            counts = torch.bincount(rows, minlength=self.prompts)
            most = int(counts.max())
            order = torch.argsort(rows, stable=True)
            first = torch.cumsum(counts, 0) - counts  # the first sorted position of each prompt
            rank = torch.empty_like(order)
            rank[order] = torch.arange(rows.numel(), device=rows.device) - first[rows[order]]
            self._slot, self._most = rows * most + rank, most
        return self._slot, self._most


def _grouped(x: torch.Tensor, slot: torch.Tensor, prompts: int, most: int) -> torch.Tensor:
    """(rows, kv, n, k) -> (prompts, kv, most * n, k): each prompt's rows side by side."""
    rows, kv, n, k = x.shape
    grid = x.new_zeros(prompts * most, kv, n, k)
    grid[slot] = x
    return grid.view(prompts, most, kv, n, k).transpose(1, 2).reshape(prompts, kv, most * n, k)


def _ungrouped(x: torch.Tensor, slot: torch.Tensor, most: int) -> torch.Tensor:
    """The inverse of ``_grouped`` for the rows in ``slot``."""
    prompts, kv, mn, k = x.shape
    n = mn // most
    return x.view(prompts, kv, most, n, k).transpose(1, 2).reshape(prompts * most, kv, n, k)[slot]


def shared_prefix_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, dropout: float = 0.0,
                            scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention of ``query`` (rows, heads, q, d) over the row's prompt prefix and its own
    ``key``/``value`` (rows, kv_heads, S, d) under ``attention_mask`` (rows, 1, q, S; additive),
    in one softmax. Without a prefix (another caller of the model) it is transformers' SDPA."""
    prefix: SharedPrefix | None = kwargs.pop(PREFIX_KWARG, None)
    if prefix is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    rows, heads, q, d = query.shape
    kv = key.shape[1]
    per_kv = heads // kv  # query heads per key/value head (grouped-query attention)
    scale = scaling if scaling is not None else d ** -0.5
    slot, most = prefix.layout()
    layer = module.layer_idx
    pk, pv = prefix.keys[layer], prefix.values[layer]
    qs = query.reshape(rows, kv, per_kv * q, d)
    # scores over the prompt, one matmul per prompt for all its rows; then over the row's own tokens
    on_prompt = torch.matmul(_grouped(qs, slot, prefix.prompts, most), pk.transpose(-1, -2)) * scale
    on_prompt = _ungrouped(on_prompt + prefix.bias[:, None, None, :], slot, most)
    on_own = torch.matmul(qs, key.transpose(-1, -2)) * scale
    if attention_mask is not None:
        s = on_own.shape[-1]
        mask = attention_mask.to(on_own.dtype).view(rows, 1, 1, q, s)
        on_own = (on_own.view(rows, kv, per_kv, q, s) + mask).view(rows, kv, -1, s)
    top = torch.maximum(on_prompt.amax(-1, keepdim=True), on_own.amax(-1, keepdim=True))
    w_prompt, w_own = (on_prompt - top).exp(), (on_own - top).exp()
    total = w_prompt.sum(-1, keepdim=True) + w_own.sum(-1, keepdim=True)
    out = _ungrouped(torch.matmul(_grouped(w_prompt, slot, prefix.prompts, most), pv), slot, most)
    out = (out + torch.matmul(w_own, value)) / total
    return out.view(rows, heads, q, d).transpose(1, 2).contiguous(), None


_registered = False


def register() -> None:
    """Make the attention function known to transformers (once), with SDPA's mask builder:
    a forward that reaches the model without a prefix while the name is set (another caller
    of the same model) is then SDPA's in full, padding masks included."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)
        AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
        _registered = True


class using_shared_prefix:
    """While in the block, ``model``'s layers call ``shared_prefix_attention`` (its config's
    attention choice is set back on exit). Search forwards run one at a time per model."""

    def __init__(self, model: Any):
        self.config = model.config

    def __enter__(self) -> None:
        register()
        self.before = self.config._attn_implementation
        self.config._attn_implementation = ATTENTION_NAME

    def __exit__(self, *exc: Any) -> None:
        self.config._attn_implementation = self.before


_checked: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def supports_shared_prefix(model: Any, check: Any) -> bool:
    """Whether ``model`` gives the same logits with a shared prefix as with a plain cache:
    ``check(model)`` runs both on two tiny prompts (once per model; False if it raises)."""
    try:
        return _checked[model]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: check every time
        return _run_check(model, check)
    _checked[model] = ok = _run_check(model, check)
    return ok


def _run_check(model: Any, check: Any) -> bool:
    if getattr(model.config, "_attn_implementation", None) not in ("sdpa", "eager", None):
        return False  # flash / flex kernels take 2-D masks: keep the model's own path
    try:
        return bool(check(model))
    except Exception:
        return False
