"""The fluency stream: the search's committed tokens read under a second prompt
(``SearchConfig.fluency_prompt``), so the log-probability term of the score is how likely a
reader of *that* prompt finds the answer, not the request's own likelihood.

Why: after "Write one short sentence that uses all of these words: sink, stand, wash, dish",
the default model finds the bare list ``Sink, stand, wash, dish.`` 11 nats likelier than
``I stand at the sink and wash the dishes.``; after "Write one short sentence." the sentence
is 12 nats likelier (``benchmarks/word_list_likelihood.py``). The request's likelihood
rewards echoing the request; a prompt without the request's content judges the answer as
text.

The stream is a second ``KVBatch`` whose rows mirror the search's live rows: each step it is
forked to the candidates, fed their commit window in one forward (``KVBatch.extend``), and
forked/cropped to the survivors like the main cache. ``weight`` mixes the two per token:
``(1 - weight) * own + weight * fluency`` (1: the fluency prompt alone); with
``mode="copy_penalty"`` a token pays only what the request adds to its likelihood,
``own - weight * max(0, own - fluency)``: a comma after a listed word is likely only because the
request lists the words, while a sentence's tokens are likely after either prompt. With
``tokens`` the stream reads only the answer's first tokens (where an answer starts a list or a
sentence) and the search then drops it.

>>> FluencyStream.mix(-2.0, -4.0, weight=0.25)
-2.5
>>> FluencyStream.mix(-1.0, -9.0, weight=0.5, mode="copy_penalty"), FluencyStream.mix(-5.0, -1.0, 0.5, "copy_penalty")
(-5.0, -5.0)
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from deal_chains.search.kv import KVBatch


class FluencyStream:
    """The live rows' committed tokens under the fluency prompt, with their next-token logits."""

    def __init__(self, kv: KVBatch, logits: torch.Tensor, weight: float, mode: str = "blend",
                 tokens: int | None = None, rows: Sequence[int] | None = None, spare_requested: bool = False):
        self.kv = kv
        self.spare_requested = spare_requested  # rank requested items' first tokens by the request's own
        self.rows = list(rows) if rows is not None else None  # request i's prefilled row (None: row i)
        self.mode = mode
        self.tokens = tokens  # read for the answer's first this many tokens (None: all of it)
        self.logits = logits  # (rows, vocab): next-token logits of each live row
        self._logp: torch.Tensor | None = None  # their log-softmax, once per step
        self.weight = float(weight)
        self._window: torch.Tensor | None = None  # (candidates, fed, vocab) of the last read
        self._fed = 0

    @classmethod
    def prefill(cls, model: Any, prompts: Sequence[Sequence[int]], pad_id: int, weight: float,
                mode: str = "blend", tokens: int | None = None, spare_requested: bool = False) -> "FluencyStream":
        """Run each distinct fluency prompt once (requests with the same one share its row: one
        fluency prompt read after the same example turns is one prefill, not one per request)."""
        distinct: dict[tuple[int, ...], int] = {}
        rows = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
        kv = KVBatch(model)
        return cls(kv, kv.prefill([list(p) for p in distinct], pad_id), weight, mode, tokens, rows, spare_requested)

    @staticmethod
    def mix(own: float, fluent: float, weight: float, mode: str = "blend") -> float:
        """One token's ranked log-probability: the request's and the fluency prompt's, mixed."""
        if weight == 0:
            return own
        if mode == "copy_penalty":
            return own - weight * max(0.0, own - fluent)
        return (1.0 - weight) * own + weight * fluent

    def finished_with(self, generated: int) -> bool:
        """Whether the answers are past the tokens this stream reads (``tokens``)."""
        return self.tokens is not None and generated >= self.tokens

    def start(self, prompt_rows: Sequence[int]) -> None:
        """One row per search group, from its request's prefilled row."""
        rows = list(prompt_rows)
        self._select(rows if self.rows is None else [self.rows[r] for r in rows])

    def first(self, parent: Sequence[int], tokens: Sequence[int], own: Sequence[float],
              spared: Sequence[frozenset[int]] | None = None) -> list[float]:
        """Ranked log-probabilities of the candidates' first tokens (known before the rollout:
        the pruning bound uses them). A token in the candidate's ``spared`` set keeps its own."""
        if not parent:
            return []
        logp = self._logprobs()
        rows = torch.as_tensor(list(parent), device=logp.device)
        toks = torch.as_tensor(list(tokens), device=logp.device)
        fluent = logp[rows, toks].tolist()
        return [o if spared is not None and t in spared[i] else self.mix(o, f, self.weight, self.mode)
                for i, (t, o, f) in enumerate(zip(tokens, own, fluent))]

    def read(self, parent: Sequence[int], tokens: Sequence[Sequence[int]], own: Sequence[Sequence[float]],
             n: int, spared: Sequence[frozenset[int]] | None = None) -> list[list[float]]:
        """Fork to the candidates, feed the first ``n`` tokens of each (one forward), and return
        each candidate's ranked log-probability per token (its first ``n``; the rest of the
        lookahead keeps the request's own, unread; so does a token in its ``spared`` set)."""
        ids = torch.as_tensor([list(t[:n]) for t in tokens], dtype=torch.long, device=self.logits.device)
        before = self._logprobs().index_select(0, torch.as_tensor(list(parent), device=self.logits.device))
        self.kv.fork(list(parent))
        window = self.kv.extend(ids)
        self._window, self._fed = window, n
        # token j is read from the logits before it: the row's own for j = 0, the window's after
        steps = torch.cat([before.unsqueeze(1), window[:, :-1]], dim=1)
        fluent = torch.log_softmax(steps, dim=-1).gather(2, ids.unsqueeze(-1)).squeeze(-1).tolist()
        out = []
        for i, (tok_i, own_i, fl_i) in enumerate(zip(tokens, own, fluent)):
            keep = spared[i] if spared is not None else frozenset()
            out.append([o if t in keep else self.mix(o, f, self.weight, self.mode)
                        for t, o, f in zip(tok_i, own_i, fl_i)] + list(own_i[n:]))
        return out

    def commit(self, chosen: Sequence[int], advance: Sequence[int]) -> None:
        """Keep the chosen candidates' rows with their first ``advance[i]`` window tokens."""
        assert self._window is not None
        longest = max(advance)
        self.kv.fork(list(chosen))
        self.kv.crop(self._fed - longest)
        self.kv.retract([longest - a for a in advance])
        self.logits = torch.stack([self._window[i, a - 1] for i, a in zip(chosen, advance)])
        self._logp = self._window = None

    def _select(self, rows: list[int]) -> None:
        self.kv.fork(rows)
        self.logits = self.logits.index_select(0, torch.as_tensor(rows, device=self.logits.device))
        self._logp = None

    def _logprobs(self) -> torch.Tensor:
        """The live rows' next-token log-probabilities (``first`` and ``read`` both need them)."""
        if self._logp is None:
            self._logp = torch.log_softmax(self.logits, dim=-1)
        return self._logp
