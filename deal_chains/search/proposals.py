"""What each live row proposes (the tree search's ``propose`` step, DESIGN §2): its candidate
first tokens within the log-probability bounds, and the pruning of those that cannot reach
their group's top ``beam`` whatever the reward says."""

from __future__ import annotations

import torch

from deal_chains.search.scoring import ranked_score
from deal_chains.search.state import Group, Rows, TreeParams


def top_candidates(logp: torch.Tensor, logits: torch.Tensor, rows: Rows, groups: list[Group],
                    params: TreeParams, requested: list[frozenset[int]] | None = None
                    ) -> tuple[list[int], list[int], list[float]]:
    """Candidate first tokens: top-k (or k samples without replacement when temperature > 0).
    With ``max_logprob_drop``, only tokens within that many nats of the row's likeliest token
    are candidates: the reward may choose among what the model finds plausible, not overrule
    it without bound (the likeliest token always stays). A token that starts a requested item
    (``requested``: per group) is bounded by ``requested_logprob_drop`` instead, where set. A
    row at the answer's first step uses ``first_top_k`` / ``first_max_logprob_drop`` where set
    (``TreeParams.width``)."""
    parent: list[int] = []
    tok: list[int] = []
    lp: list[float] = []
    vocab = logp.shape[-1]
    loose = params.requested_logprob_drop

    def floors(r: int, top: float, drop: float | None) -> tuple[float, float, frozenset[int]]:
        """Row ``r``'s (floor, floor for a requested token, requested tokens) below its likeliest."""
        floor = top - drop if drop is not None else float("-inf")
        if loose is None or requested is None:
            return floor, floor, frozenset()
        return floor, min(floor, top - loose), requested[rows.group[r]]

    if params.temperature <= 0:
        top_lp, top_id = logp.topk(min(params.widest, vocab), dim=-1)
        top_lp_l, top_id_l = top_lp.tolist(), top_id.tolist()
        for r in range(len(rows.group)):
            width, drop = params.width(first=not rows.tokens[r])
            k = 1 if rows.settled[r] else min(width, vocab)
            floor, floor_requested, wanted = floors(r, top_lp_l[r][0], drop)
            for t, v in zip(top_id_l[r][:k], top_lp_l[r][:k]):
                # -inf: masked out by a hard constraint
                if v != float("-inf") and v >= (floor_requested if t in wanted else floor):
                    parent.append(r)
                    tok.append(t)
                    lp.append(v)
        return parent, tok, lp
    probs = torch.softmax(logits / params.temperature, dim=-1)
    for r in range(len(rows.group)):
        g = groups[rows.group[r]]
        allowed = int((probs[r] > 0).sum())
        width, drop = params.width(first=not rows.tokens[r])
        k = min(1 if rows.settled[r] else min(width, vocab), max(1, allowed))
        # sampled on CPU with the group's own generator: results do not depend on batching
        picks = torch.multinomial(probs[r].double().cpu(), k, replacement=False, generator=g.generator).tolist()
        if drop is not None:
            floor, floor_requested, wanted = floors(r, float(logp[r].max()), drop)
            picks = [t for t in picks if float(logp[r, t]) >= (floor_requested if t in wanted else floor)] \
                or picks[:1]
        parent.extend([r] * len(picks))
        tok.extend(picks)
        lp.extend(logp[r, picks].tolist())
    return parent, tok, lp


def prune(parent: list[int], tok: list[int], lp: list[float], ranked: list[float], rows: Rows, groups: list[Group],
          ranges: list[tuple[float, float]], params: TreeParams, eos_ids: frozenset[int], commit: int = 1):
    """Drop candidates that cannot reach their group's top ``beam`` whatever R turns out to be.

    A candidate's score lies in ``[base + lam*R_lo, base + lam*R_hi]`` with ``base`` its
    ranked log-probability so far (``ranked``: its first token's), over ``tokens **
    length_penalty`` with the ``commit`` tokens of this step counted. With ``commit == 1``
    this is exact; with blockwise commit the greedy continuation also adds its (small,
    negative) log-probability, so the bound is a close heuristic there. End-of-sequence
    candidates are always kept: they cost no rollout, and keeping them makes pruning change
    nothing but the work done.
    """
    by_group: dict[int, list[int]] = {}
    for i, p in enumerate(parent):
        by_group.setdefault(rows.group[p], []).append(i)
    keep: list[int] = []
    for gi, idxs in by_group.items():
        lo, hi = ranges[gi]
        if len(idxs) + len(groups[gi].finished) <= params.beam:
            keep.extend(idxs)
            continue
        base = [ranked_score(rows.fluency[parent[i]] + ranked[i], len(rows.tokens[parent[i]]) + commit, 0.0,
                             params.lam, params.length_penalty) for i in idxs]
        lows = sorted([b + params.lam * lo for b in base] + [h.score for h in groups[gi].finished], reverse=True)
        threshold = lows[params.beam - 1]
        keep.extend(i for i, b in zip(idxs, base) if b + params.lam * hi >= threshold or tok[i] in eos_ids)
    keep.sort()
    return [parent[i] for i in keep], [tok[i] for i in keep], [lp[i] for i in keep], [ranked[i] for i in keep]
