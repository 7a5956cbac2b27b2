"""Closing pressure for JSON under a hard mask: small models loop inside an open value until
the token budget cuts the document, so near the end of the budget (or in a loop) the tokens
that close the document from where a row stands are favoured.

>>> closing_bias(30, 256, needed=30)
16.0
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

_LOCK = threading.Lock()


class JsonCloser:
    """Where a JSON document generated so far stands, and which tokens close it from there.

    Small models loop inside an open value ("1234567890123...", "a.b.a.b...",
    ``[{"type":[{"type":[...``) until the token budget cuts the document, which is then
    unfinished and invalid. Near the end of the budget, ``apply_masks`` favours the allowed
    tokens that close from where each row stands: inside a string, tokens with ``"`` (so
    ``"}`` and ``"]}`` count, but a ``}`` that is only a character of the string does not);
    outside, tokens with ``}`` or ``]``. Neither set holds ``{ [ , :``. The window grows
    with how deeply the row is nested, so a deep document starts closing early enough.
    One per tokenizer (decoding the vocabulary takes a moment)."""

    def __init__(self, lm: Any, vocab: int):
        import torch

        tok = lm.tokenizer
        n = min(vocab, len(tok))
        self.texts = tok.batch_decode([[i] for i in range(n)]) + [""] * (vocab - n)
        self.in_string = torch.zeros(vocab, dtype=torch.bool)
        self.outside = torch.zeros(vocab, dtype=torch.bool)
        for i, text in enumerate(self.texts):
            if any(ch in text for ch in "{[,:"):
                continue
            if '"' in text:
                # an escaped quote continues the string it is in
                self.in_string[i] = "\\" not in text
            elif "}" in text or "]" in text:
                self.outside[i] = True
        for e in getattr(lm, "eos_token_ids", ()):
            if e < vocab:
                self.in_string[e] = self.outside[e] = True
        # tokens that can close a key (one quote, from inside the key; two, from outside)
        quotes = torch.tensor([text.count('"') for text in self.texts])
        self.one_quote = quotes >= 1
        self.two_quotes = quotes >= 2

    def text(self, ids: Sequence[int]) -> str:
        texts = self.texts
        return "".join(texts[t] for t in ids if 0 <= t < len(texts))

    def mask(self, in_string: bool) -> "torch.Tensor":
        return self.in_string if in_string else self.outside


_CLOSERS: "weakref.WeakKeyDictionary[Any, JsonCloser]" = weakref.WeakKeyDictionary()


def json_closer(lm: Any, vocab: int) -> JsonCloser:
    with _LOCK:
        closer = _CLOSERS.get(lm.tokenizer)
        if closer is None or len(closer.texts) != vocab:
            closer = _CLOSERS[lm.tokenizer] = JsonCloser(lm, vocab)
        return closer


def repeating_tail(ids: Sequence[int], max_period: int = 32, min_span: int = 12) -> bool:
    """Whether ``ids`` end in a loop: a block of ``p <= max_period`` tokens repeated at
    least twice, the repeats spanning at least ``min_span`` tokens (so ``00`` or a key
    written twice is not a loop, ``1.0.0.0:1.0.0.0:1.0.0.0:`` is)."""
    n = len(ids)
    tail = list(ids[-2 * max_period:]) if n > 2 * max_period else list(ids)
    m = len(tail)
    for p in range(1, min(max_period, m // 2) + 1):
        reps = max(2, -(-min_span // p))  # ceil(min_span / p), at least two copies
        if reps * p > m:
            continue
        block = tail[m - p:]
        if all(tail[m - (r + 1) * p: m - r * p] == block for r in range(1, reps)):
            return True
    return False


def key_cost(lm: Any, key: str) -> int:
    """Tokens a required key costs at least: ``,"key":`` and a two-token value."""
    return len(lm.tokenizer(f',"{key}":', add_special_tokens=False)["input_ids"]) + 2


def closing_window(max_new_tokens: int) -> int:
    """A quarter of the budget (at least 4 tokens). What closing itself needs (open
    brackets, an open string, required keys still owed) is added by the caller, so a short
    budget does not start pressing from its first token: with 16 tokens for a two-key
    object, a fixed 16-token window emptied every value."""
    return max(4, max_new_tokens // 4)


def closing_bias(remaining: int, max_new_tokens: int, needed: int = 0) -> float:
    """Logit bonus for closing tokens when ``remaining`` tokens are left of the budget and
    closing takes about ``needed`` of them (open strings, objects and arrays).

    Zero while more than a window (a quarter of the budget, at least 4 tokens) is left
    beyond what closing needs; then rising to 16 nats when nothing is left to spare."""
    window = closing_window(max_new_tokens)
    spare = remaining - needed
    if spare > window:
        return 0.0
    return 16.0 * min(window - spare + 1, window) / window
