"""Features of many responses to one prompt: the prompt runs once, the responses over its
KV cache.

The search scores several candidate texts per prompt at every step, and the conversation
prefix (chat template + system + request) is the same for all of them. ``shared_prefix``
forwards that prefix once (kept for the next calls with the same prefix), then only the
response tokens of each batch, right-padded, over a copy of the prefix's cache. Pooling
combines the two parts: ``all`` = (sum over the prefix + sum over the response) / tokens,
``response`` = mean over the response, ``last`` = the last response token; an empty
response uses the prefix's last token (``all``: the prefix mean), as the one-forward path
does. The result equals ``HiddenStateFeatures``' one-forward path up to float rounding.
"""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rewards._batch import padded

if TYPE_CHECKING:  # pragma: no cover
    import torch

PREFIXES_KEPT = 4


def cache_keyword(base: Any) -> str:
    """transformers renamed ``past_key_values`` to ``cache``; the one ``base`` takes."""
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def shared_prefix(fx: Any, base: Any, prefix: Sequence[int], responses: Sequence[Sequence[int]],
                  layers: Sequence[int], poolings: Sequence[str], device: Any,
                  hidden_states: Callable[..., dict[int, "torch.Tensor"]],
                  ) -> dict[tuple[int, str], "torch.Tensor"]:
    """``{(layer, pooling): Tensor[n, d]}`` for ``responses`` (token lists) after ``prefix``.
    ``fx`` (the ``HiddenStateFeatures``) gives ``batch_size`` and ``pad_token_id`` and keeps
    the last few prefixes' caches."""
    import torch
    from transformers import DynamicCache

    kept: OrderedDict = fx.__dict__.setdefault("_prefix_kept", OrderedDict())
    key = (tuple(prefix), tuple(layers))
    if key in kept:
        kept.move_to_end(key)
        cache, ph = kept[key]
    else:
        cache = DynamicCache(config=base.config)
        p = len(prefix)
        ids = torch.tensor([list(prefix)], dtype=torch.long, device=device)
        ones = torch.ones_like(ids)
        hs = hidden_states(base, ids, ones, torch.arange(p, device=device).unsqueeze(0), layers,
                           cache=cache, cache_kw=cache_keyword(base))
        ph = {layer: hs[layer][0].float().cpu() for layer in layers}
        kept[key] = (cache, ph)
        while len(kept) > PREFIXES_KEPT:
            kept.popitem(last=False)
    n, p = len(responses), len(prefix)
    dim = next(iter(ph.values())).shape[-1]
    out = {(layer, pooling): torch.empty((n, dim), dtype=torch.float32) for layer in layers for pooling in poolings}
    for i in (i for i in range(n) if not responses[i]):
        for layer in layers:
            for pooling in poolings:
                out[(layer, pooling)][i] = ph[layer].mean(0) if pooling == "all" else ph[layer][-1]
    order = sorted((i for i in range(n) if responses[i]), key=lambda i: len(responses[i]))
    for start in range(0, len(order), fx.batch_size):
        idx = order[start:start + fx.batch_size]
        ids, resp = padded([responses[i] for i in idx], fx.pad_token_id, left=False)
        valid, width = resp.bool(), ids.shape[1]
        mask = torch.cat([torch.ones((len(idx), p), dtype=torch.long), valid.long()], dim=1)
        pos = (p + torch.arange(width)).unsqueeze(0).expand(len(idx), -1)
        batch_cache = copy.deepcopy(cache)
        batch_cache.batch_repeat_interleave(len(idx))
        hs = hidden_states(base, ids.to(device), mask.to(device), pos.to(device), layers, cache=batch_cache,
                           cache_kw=cache_keyword(base))
        lengths = valid.sum(1)
        w = valid.unsqueeze(-1).float()
        for layer in layers:
            h = hs[layer].float().cpu()
            resp_sum = (h * w).sum(1)
            for pooling in poolings:
                if pooling == "all":
                    pooled = (resp_sum + ph[layer].sum(0)) / (lengths + p).unsqueeze(-1)
                elif pooling == "response":
                    pooled = resp_sum / lengths.unsqueeze(-1)
                else:
                    pooled = h[torch.arange(len(idx)), lengths - 1]
                out[(layer, pooling)][idx] = pooled
    return out
