"""Budgets checked before any work: a search too big for the machine is a clear error, not
an out-of-memory crash half-way through a batch.

>>> from deal_chains.search.limits import SearchLimits
>>> SearchLimits(max_new_tokens=256).max_new_tokens
256
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from deal_chains.errors import ConfigError

GIB = 1024 ** 3


@dataclass(frozen=True)
class SearchLimits:
    """Upper bounds on one search, all checked before the first forward.

    - ``max_new_tokens``: the token budget of an answer;
    - ``max_rows_per_prompt``: hypotheses one prompt keeps in flight (``top_k x beam``,
      ``x n`` for best-of-n), each a row of every forward and a copy of the KV cache;
    - ``max_lookahead_tokens``: tokens one prompt rolls out per step (``rows x lookahead``);
    - ``max_prompt_tokens``: prompt length (default: the model's context, checked anyway);
    - ``max_kv_bytes``: the KV cache of one prompt's search at its longest (default: 75% of
      the memory available on the model's device when the check runs).
    """

    max_new_tokens: int = 4096
    max_rows_per_prompt: int = 512
    max_lookahead_tokens: int = 16_384
    max_prompt_tokens: int | None = None
    max_kv_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "max_rows_per_prompt", "max_lookahead_tokens", "max_prompt_tokens",
                     "max_kv_bytes"):
            value = getattr(self, name)
            # bool is an int subclass, but `True` here is a typo, not a budget of 1
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"SearchLimits.{name} must be a positive integer, got {value!r}")


def kv_bytes_per_token(model: Any, dtype_bytes: int) -> int:
    """KV-cache bytes one token of one row takes: keys + values of every layer."""
    cfg = model.config
    layers = int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0) or 1)
    heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "n_head", 0) or 1)
    kv_heads = int(getattr(cfg, "num_key_value_heads", 0) or heads)
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0) or 1)
    head_dim = int(getattr(cfg, "head_dim", 0) or hidden // heads)
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def available_bytes(device: Any) -> int | None:
    """Memory free for the cache on ``device`` (None when it cannot be told)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class SearchEstimate:
    rows_per_prompt: int
    lookahead_tokens: int
    longest_row_tokens: int
    kv_bytes_per_prompt: int

    def describe(self) -> str:
        return (f"{self.rows_per_prompt} rows x {self.longest_row_tokens} tokens -> "
                f"~{self.kv_bytes_per_prompt / GIB:.2f} GiB of KV cache per prompt")


def estimate(lm: Any, rows: int, lookahead: int, max_new_tokens: int, prompt_lens: Sequence[int]) -> SearchEstimate:
    """Cost of one prompt's search at its longest (the longest prompt of the batch)."""
    elem = int(getattr(getattr(lm, "dtype", None), "itemsize", 4))
    longest = max(prompt_lens, default=0) + max_new_tokens + lookahead
    per_token = kv_bytes_per_token(lm.model, elem)
    return SearchEstimate(rows_per_prompt=rows, lookahead_tokens=rows * lookahead, longest_row_tokens=longest,
                          kv_bytes_per_prompt=rows * longest * per_token)


def check_limits(limits: SearchLimits, lm: Any, *, rows: int, lookahead: int, max_new_tokens: int,
                 prompt_lens: Sequence[int]) -> SearchEstimate:
    """Raise ``ConfigError`` listing every limit the search would exceed; else the estimate."""
    est = estimate(lm, rows, lookahead, max_new_tokens, prompt_lens)
    problems = []
    if max_new_tokens > limits.max_new_tokens:
        problems.append(f"max_new_tokens {max_new_tokens} is over the limit {limits.max_new_tokens}")
    if rows > limits.max_rows_per_prompt:
        problems.append(f"top_k x beam = {rows} hypotheses per prompt is over the limit "
                        f"{limits.max_rows_per_prompt}")
    if est.lookahead_tokens > limits.max_lookahead_tokens:
        problems.append(f"top_k x beam x lookahead = {est.lookahead_tokens} tokens per step is over the limit "
                        f"{limits.max_lookahead_tokens}")
    longest_prompt = max(prompt_lens, default=0)
    if limits.max_prompt_tokens is not None and longest_prompt > limits.max_prompt_tokens:
        problems.append(f"a prompt of {longest_prompt} tokens is over the limit {limits.max_prompt_tokens}")
    cap = limits.max_kv_bytes
    where = "SearchLimits.max_kv_bytes"
    if cap is None:
        free = available_bytes(getattr(lm, "device", "cpu"))
        cap, where = (int(free * 0.75), "75% of the memory available now") if free else (None, "")
    if cap is not None and est.kv_bytes_per_prompt > cap:
        problems.append(f"the search needs {est.describe()}, over {cap / GIB:.2f} GiB ({where})")
    if problems:
        raise ConfigError("search too large: " + "; ".join(problems)
                          + " (lower max_new_tokens / top_k / beam / lookahead, or raise DeALEngine(limits=...))")
    return est
