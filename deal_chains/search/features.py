"""Reward features from the search's own forwards (issue #19): a reward that scores pooled
hidden states of the generating model (``rewards.base.FeatureRequest``, e.g.
``HarmlessReward``) reads the states the search computed anyway for every token it fed,
instead of running the model again over every candidate's reply at every step.

``ResponseStates`` follows a ``KVBatch`` as one of its taps: per cache row, the hidden
states of one layer for every position fed after it attached (the response tokens), one
column per cache position, so forks (row copies), crops (the uncommitted lookahead) and
retracts (positions masked out, read from the batch's mask) apply to it exactly as to the
KV cache. ``SearchFeatures`` is the search's side: which groups' rewards it serves, and
their scores from the pooled states.

What is scored. A candidate's lookahead ends with a token that was sampled but never fed,
so it has no hidden state yet; a served group scores each candidate on the tokens fed so
far only (every reward of the group, so they all judge the same text): the lookahead is
one token shorter than on the text path, and no extra forward is run for it. Finished
candidates are scored on their whole reply (all of it was fed), and these scores are the
ones the final ranking reads (scores are cached per group by text), so answers are ranked
as they were searched. A candidate with no fed response token (an end-of-sequence first
token) is scored on the text path.

Context. The states are those of the search's conversation: its system prompt (the
preset's start-state instruction) included, which ``HarmlessReward.score`` (the text
path: the user prompt only) does not see; answers cut by the budget are ranked on the text
path. The shipped head ranks held-out pairs as well in the search's context (0.633) as in
the text path's (0.625; docs/benchmarks.md, "Harmless reward").

A reward is served when its ``search_features`` names the model object the search runs,
pooling ``"response"``; otherwise (another model, a custom feature function, a reward
wrapped in another) it keeps the text path. Nothing is captured when no reward is served.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from deal_chains.search.kv import KVBatch
from deal_chains.search.scoring import score_texts
from deal_chains.search.state import Group
from rewards.base import FeatureRequest, reward_bounds, reward_name, reward_search_features

if TYPE_CHECKING:  # pragma: no cover
    from deal_chains.search.state import SearchState

# the poolings the search can compute: it keeps the response tokens' states only
SERVED_POOLINGS = ("response",)


class ResponseStates:
    """Layer ``layer``'s hidden states of every position fed to ``kv`` after this attached:
    ``states[r, j]`` is cache row ``r``'s position ``start + j`` (masked-out positions
    included, as in the cache)."""

    def __init__(self, kv: KVBatch, layer: int) -> None:
        self.kv = kv
        self.layer = layer
        self.start = kv.length  # the prompts' columns: not response tokens
        self.states: torch.Tensor | None = None  # (rows, kv.length - start, d)
        kv.taps.append(self)

    def fed(self, hidden_states: Sequence[torch.Tensor]) -> None:
        h = hidden_states[self.layer]
        self.states = h if self.states is None else torch.cat([self.states, h], dim=1)

    def fork(self, index: torch.Tensor) -> None:
        if self.states is not None:
            self.states = self.states.index_select(0, index.to(self.states.device))

    def crop(self, n: int) -> None:
        if self.states is not None:
            self.states = self.states[:, : self.states.shape[1] - n]

    def _valid(self) -> torch.Tensor:
        """(rows, columns) True where a response position is live (not retracted)."""
        mask = self.kv.mask_after(self.start)
        assert mask is not None and self.states is not None
        return mask.bool().to(self.states.device)

    def counts(self) -> list[int]:
        """Live response positions per row (the tokens fed and kept)."""
        if self.states is None:
            return [0] * self.kv.rows
        return self._valid().sum(1).tolist()

    def pooled(self, rows: Sequence[int], n: Sequence[int]) -> torch.Tensor:
        """``Tensor[len(rows), d]`` (float32): row ``rows[i]``'s mean over its first ``n[i]``
        live response positions (each ``n[i]`` between 1 and its count)."""
        assert self.states is not None
        idx = torch.tensor(list(rows), dtype=torch.long, device=self.states.device)
        valid = self._valid().index_select(0, idx)
        want = torch.tensor(list(n), dtype=torch.long, device=valid.device).unsqueeze(1)
        # the first n live positions: live, and at most n live ones up to here
        take = valid & (valid.long().cumsum(1) <= want)
        w = take.unsqueeze(-1).float()
        return (self.states.index_select(0, idx).float() * w).sum(1) / want.float()


class _Pooled:
    """A served reward as the view group's scoring sees it: ``score(texts)`` reads the
    pooled features offered for those texts this step and calls ``score_features``."""

    def __init__(self, reward: Any, layer: int) -> None:
        self.reward = reward
        self.layer = layer
        self.name = reward_name(reward)
        self.weight = float(getattr(reward, "weight", 1.0))
        self.terminal = bool(getattr(reward, "terminal", False))
        self.bounds = reward_bounds(reward)
        self.offered: dict[str, torch.Tensor] = {}

    def score(self, texts: Sequence[str], context: Any) -> list[float]:
        return self.reward.score_features(torch.stack([self.offered[t] for t in texts]), context)


class SearchFeatures:
    """The feature path of the search's scoring, for the groups whose rewards it serves."""

    def __init__(self, kv: KVBatch, groups: Sequence[Group], served: dict[int, dict[int, FeatureRequest]]) -> None:
        self.taps = {layer: ResponseStates(kv, layer)
                     for layer in sorted({req.layer for reqs in served.values() for req in reqs.values()})}
        self.views: dict[int, Group] = {}
        for gi, reqs in served.items():
            g = groups[gi]
            rewards = [_Pooled(r, reqs[k].layer) if k in reqs else r for k, r in enumerate(g.rewards)]
            # the group's own cache: the final ranking (``finalize``) reads the scores the
            # search gave its finished answers instead of running the model on them again
            self.views[gi] = Group(prompt_row=g.prompt_row, rewards=rewards, context=g.context, _cache=g._cache)

    @classmethod
    def attach(cls, state: "SearchState") -> "SearchFeatures | None":
        """Start keeping the states the groups' rewards can score; None when none can."""
        if not (state.params.use_rewards and state.any_reward):
            return None
        served: dict[int, dict[int, FeatureRequest]] = {}
        for gi, g in enumerate(state.groups):
            reqs = {k: req for k, r in enumerate(g.rewards)
                    if (req := reward_search_features(r)) is not None and serves(req, state.kv)}
            if reqs:
                served[gi] = reqs
        return cls(state.kv, state.groups, served) if served else None

    def serves(self, group: int) -> bool:
        return group in self.views

    def score(self, state: "SearchState", group: int, rows: Sequence[int], tokens: Sequence[Sequence[int]],
              final: Sequence[bool]) -> list[tuple[float, dict[str, float]]]:
        """``score_texts``'s answer for candidates (cache ``rows``, ``tokens`` each) of a served
        group, cut to the tokens each row has fed; served rewards score pooled states."""
        g, view = state.groups[group], self.views[group]
        counts = next(iter(self.taps.values())).counts()
        n = [min(len(t), counts[r]) for t, r in zip(tokens, rows)]
        texts = [state.decode(list(t[:k])) for t, k in zip(tokens, n)]
        out: list[tuple[float, dict[str, float]] | None] = [None] * len(rows)
        fed = [i for i, k in enumerate(n) if k > 0]
        if fed:
            pooled = {layer: tap.pooled([rows[i] for i in fed], [n[i] for i in fed])
                      for layer, tap in self.taps.items()}
            for r in view.rewards:
                if isinstance(r, _Pooled):
                    r.offered = {}
                    for j, i in enumerate(fed):
                        r.offered.setdefault(texts[i], pooled[r.layer][j])
            view.reward_seconds = 0.0
            for i, res in zip(fed, score_texts(view, [texts[i] for i in fed], [final[i] for i in fed],
                                                 state.params.lam)):
                out[i] = res
            g.reward_seconds += view.reward_seconds
        empty = [i for i, k in enumerate(n) if k == 0]
        if empty:  # nothing fed to pool: the text path
            for i, res in zip(empty, score_texts(g, [texts[i] for i in empty], [final[i] for i in empty],
                                                 state.params.lam)):
                out[i] = res
        return out  # type: ignore[return-value]


def serves(request: FeatureRequest, kv: KVBatch) -> bool:
    """Whether the search over ``kv`` computes the states ``request`` asks for: the same
    model object, a layer it has, a pooling the search can do."""
    if request.model is not kv.model or request.pooling not in SERVED_POOLINGS:
        return False
    n_layers = getattr(getattr(kv.model, "config", None), "num_hidden_layers", None)
    return not isinstance(n_layers, int) or -(n_layers + 1) <= request.layer <= n_layers
