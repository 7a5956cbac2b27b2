"""The DeAL lookahead tree search over many prompts at once (DESIGN §1-2).

Each *group* is one search tree (one prompt, or one of the n samples of a prompt). Its live
beams are rows of a shared ``KVBatch``. One step, for all groups together:

1. every live row proposes ``top_k`` next tokens (1 when its rewards are settled);
2. candidates that cannot reach the group's top ``beam`` whatever the reward says are pruned;
3. the cache is forked to one row per candidate and all candidates are rolled out greedily
   together, one forward per lookahead token;
4. each candidate is scored ``logprob(committed) + lam * R(lookahead text)``;
5. per group the best ``beam`` of (candidates + finished hypotheses) survive; live ones commit
   ``commit`` tokens by selecting their cache rows and cropping the uncommitted lookahead.

The prompt is prefilled once; no prefix is ever run twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from deal_chains.errors import RewardError
from deal_chains.search.constraints import CompiledConstraint, apply_masks
from deal_chains.search.kv import KVBatch
from rewards.base import RewardContext, reward_bounds, reward_settled


@dataclass
class Hypothesis:
    tokens: list[int]  # generated tokens, EOS excluded
    logprob: float  # includes the EOS token's log-probability when finished
    finished: bool
    score: float = float("-inf")
    rewards: dict[str, float] = field(default_factory=dict)
    reward: float = 0.0


@dataclass
class Group:
    """One search tree and its bookkeeping."""

    prompt_row: int  # row of the prefill batch holding this group's prompt
    rewards: Sequence[Any]
    context: RewardContext
    generator: torch.Generator | None = None
    constraint: CompiledConstraint | None = None  # hard constraint (token mask)
    finished: list[Hypothesis] = field(default_factory=list)
    unfinished: list[Hypothesis] = field(default_factory=list)  # cut by the token budget
    done: bool = False
    steps: int = 0
    forward_passes: int = 0
    candidates_scored: int = 0
    greedy_steps: int = 0
    _cache: dict[str, list[float]] = field(default_factory=dict)

    def reward_range(self) -> tuple[float, float]:
        lo = hi = 0.0
        for r in self.rewards:
            a, b = reward_bounds(r)
            w = float(getattr(r, "weight", 1.0))
            lo += min(w * a, w * b)
            hi += max(w * a, w * b)
        return lo, hi


@dataclass
class TreeParams:
    top_k: int
    beam: int
    lookahead: int
    commit: int
    lam: float
    max_new_tokens: int
    temperature: float = 0.0
    prune: bool = True
    adaptive: bool = True
    use_rewards: bool = True  # False: plain beam search by log-probability (rerank's proposals)


# -------------------------------------------------------------------------------- rewards


def score_texts(group: Group, texts: Sequence[str], final: Sequence[bool],
                lam: float = 1.0) -> list[tuple[float, dict[str, float]]]:
    """Weighted reward of each text and its per-reward breakdown.

    Terminal rewards score only final texts; unfinished ones get the reward's upper bound
    (optimistic, so they are not ruled out before they could satisfy it). Results are
    cached by text per group: lookahead texts repeat a lot across steps. ``lam`` (the
    search's) is only checked against: ``lam * total`` must be finite (``RewardError``).
    """
    out: list[tuple[float, dict[str, float]] | None] = [None] * len(texts)
    todo: dict[tuple[str, bool], list[int]] = {}
    for i, (t, f) in enumerate(zip(texts, final)):
        todo.setdefault((t, bool(f)), []).append(i)
    keys = list(todo)
    raw: dict[tuple[str, bool], list[float]] = {}
    missing = [k for k in keys if (("F" if k[1] else "L") + k[0]) not in group._cache]
    for k in keys:
        if k not in missing:
            raw[k] = group._cache[("F" if k[1] else "L") + k[0]]
    if missing:
        per_reward: list[list[float]] = []
        for r in group.rewards:
            name = getattr(r, "name", type(r).__name__)
            if getattr(r, "terminal", False):
                wanted = [k[0] for k in missing if k[1]]
                values = _call_reward(r, name, wanted, group.context) if wanted else []
                it = iter(values)
                hi = reward_bounds(r)[1]
                per_reward.append([next(it) if k[1] else hi for k in missing])
            else:
                per_reward.append(_call_reward(r, name, [k[0] for k in missing], group.context))
        for j, k in enumerate(missing):
            vals = [col[j] for col in per_reward]
            raw[k] = vals
            if len(group._cache) < 50_000:
                group._cache[("F" if k[1] else "L") + k[0]] = vals
    for k, idxs in todo.items():
        vals = raw[k]
        breakdown = {getattr(r, "name", type(r).__name__): v for r, v in zip(group.rewards, vals)}
        total = sum(float(getattr(r, "weight", 1.0)) * v for r, v in zip(group.rewards, vals))
        if not (math.isfinite(total) and math.isfinite(lam * total)):
            _overflow(group.rewards, vals, total, lam)
        for i in idxs:
            out[i] = (total, breakdown)
    return out  # type: ignore[return-value]


def _overflow(rewards: Sequence[Any], vals: Sequence[float], total: float, lam: float) -> None:
    """Raise the ``RewardError`` of a weighted total (or ``lam`` times it) that overflowed:
    each score is finite but the sum is not, and an infinite score would rank every
    candidate alike. Blamed: the reward with the largest weighted score."""
    terms = [(abs(float(getattr(r, "weight", 1.0)) * v), r, v) for r, v in zip(rewards, vals)]
    _, r, v = max(terms, key=lambda t: t[0])
    name = getattr(r, "name", type(r).__name__)
    raise RewardError(name, f"score {v!r} (weight {float(getattr(r, 'weight', 1.0))!r}) is too large: "
                            f"lam ({lam!r}) x the weighted reward total ({total!r}) is not a finite number; "
                            "scores should stay within the reward's bounds (e.g. [0, 1])")


def _call_reward(reward: Any, name: str, texts: list[str], context: RewardContext) -> list[float]:
    try:
        returned = reward.score(texts, context)
        if not isinstance(returned, (str, bytes, Mapping)) and hasattr(returned, "__iter__"):
            # any iterable (a generator too) is read once, here: the checks below and the
            # caller all see the same scores (reading a generator runs the reward's code)
            values = list(returned)
    except RewardError:
        raise
    except Exception as exc:  # a user reward may raise anything; name it and stop cleanly
        raise RewardError(name, f"{type(exc).__name__}: {exc}") from exc
    if isinstance(returned, (str, bytes, Mapping)) or not hasattr(returned, "__iter__"):
        # a string's characters or a dict's keys are not scores either
        raise RewardError(name, f"returned {type(returned).__name__} {returned!r:.200}, not a list of scores")
    try:
        # numbers only (numpy and torch scalars included): a string that happens to parse
        # is still a bug in the reward
        if any(isinstance(v, (str, bytes)) for v in values):
            raise TypeError("a score is a string")
        values = [float(v) for v in values]
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an int past float range
        raise RewardError(name, f"scores must be numbers, got {values!r:.200}") from exc
    if len(values) != len(texts):
        raise RewardError(name, f"returned {len(values)} scores for {len(texts)} texts")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise RewardError(name, f"returned a non-finite score ({bad[0]})")
    return values


# -------------------------------------------------------------------------------- search


@dataclass
class _Rows:
    group: list[int]
    tokens: list[list[int]]
    logprob: list[float]
    settled: list[bool]
    states: list[Any] = field(default_factory=list)  # grammar state per row (None: unconstrained)


def run_tree_search(
    kv: KVBatch,
    prompt_logits: torch.Tensor,
    groups: list[Group],
    params: TreeParams,
    eos_ids: frozenset[int],
    decode: Callable[[Sequence[int]], str],
    on_step: Callable[[], None] | None = None,
    on_commit: Callable[[dict[int, list[list[int]]]], set[int] | None] | None = None,
) -> None:
    """Search every group to completion; fills ``group.finished`` / ``group.unfinished``.

    ``kv`` holds the prefilled prompts (one row per distinct prompt) and ``prompt_logits``
    their next-token logits. ``on_commit`` is called after every step with each group's
    live beams (group index -> committed token lists; done groups are absent) and may
    return group indices to end now: their live beams become unfinished hypotheses.
    """
    device = prompt_logits.device
    eos_t = torch.tensor(sorted(eos_ids), device=device)
    kv.fork([g.prompt_row for g in groups])
    logits = prompt_logits.index_select(0, torch.tensor([g.prompt_row for g in groups], device=device))
    rows = _Rows(group=list(range(len(groups))), tokens=[[] for _ in groups],
                 logprob=[0.0] * len(groups), settled=[False] * len(groups),
                 states=[g.constraint.new_state() if g.constraint else None for g in groups])
    constrained = any(g.constraint is not None for g in groups)
    eos_main = min(eos_ids)
    ranges = [g.reward_range() for g in groups]
    any_reward = params.use_rewards and any(hi - lo > 0 for lo, hi in ranges)
    generated = 0

    while rows.group:
        remaining = params.max_new_tokens - generated
        c = min(params.commit, remaining)
        all_settled = all(rows.settled)
        lookahead = params.lookahead if (any_reward and not all_settled) else 0
        n_forward = min(max(lookahead, c), remaining)

        if constrained:
            logits = apply_masks(logits, rows.states, [groups[g].constraint for g in rows.group], eos_main,
                                 remaining, params.max_new_tokens, rows.tokens.__getitem__)
        logp = torch.log_softmax(logits, dim=-1)
        parent, tok1, lp1 = _propose(logp, logits, rows, groups, params)
        if params.prune and any_reward:
            parent, tok1, lp1 = _prune(parent, tok1, lp1, rows, groups, ranges, params, eos_ids)

        live_groups = sorted(set(rows.group))
        with_candidates = {rows.group[p] for p in parent}
        for gi in live_groups:
            if gi not in with_candidates:
                # every candidate was pruned: the group's finished hypotheses already hold
                # its top `beam` places, so its search is over
                groups[gi].done = True
        live_groups = sorted(with_candidates)
        if not parent:
            break
        for gi in live_groups:
            groups[gi].steps += 1
            if all(rows.settled[r] for r in range(len(rows.group)) if rows.group[r] == gi):
                groups[gi].greedy_steps += 1

        # ---- lookahead: all candidates of all groups rolled out together
        m = len(parent)
        before = kv.forward_passes
        kv.fork(parent)
        toks = torch.zeros((m, n_forward + 1), dtype=torch.long, device=device)
        lps = torch.zeros((m, n_forward + 1), dtype=torch.float64, device=device)
        toks[:, 0] = torch.tensor(tok1, device=device)
        lps[:, 0] = torch.tensor(lp1, dtype=torch.float64, device=device)
        ended = torch.isin(toks[:, 0], eos_t)
        cand_states: list[Any] = []
        cand_constraints: list[CompiledConstraint | None] = []
        consumed = [0] * m
        dead = [False] * m
        if constrained:
            # each candidate row gets its own copy of its parent's grammar state
            for i in range(m):
                st, con = rows.states[parent[i]], groups[rows.group[parent[i]]].constraint
                if con is not None and st is not None:
                    st = con.copy(st)
                    if tok1[i] not in eos_ids:
                        dead[i] = not con.advance(st, tok1[i])
                        consumed[i] = 1
                cand_states.append(st)
                cand_constraints.append(con)
        commit_logits = None
        fed = 0
        for j in range(n_forward):
            step_logits = kv.step(toks[:, j])
            fed += 1
            if constrained:
                step_logits = apply_masks(
                    step_logits, cand_states, cand_constraints, eos_main, remaining - j - 1,
                    params.max_new_tokens,
                    lambda i, j=j: rows.tokens[parent[i]] + toks[i, : j + 1].tolist())
            if j == c - 1:
                commit_logits = step_logits
            if j + 1 >= remaining:
                break  # the next token would exceed the budget
            step_lp = torch.log_softmax(step_logits, dim=-1)
            nxt = step_lp.argmax(dim=-1)
            toks[:, j + 1] = nxt
            lps[:, j + 1] = step_lp.gather(1, nxt.view(-1, 1)).squeeze(1).double()
            if constrained:
                nxt_l = nxt.tolist()
                ended_l = ended.tolist()
                for i in range(m):
                    con = cand_constraints[i]
                    if con is not None and not ended_l[i] and not dead[i] and nxt_l[i] not in eos_ids:
                        dead[i] = not con.advance(cand_states[i], nxt_l[i])
                        consumed[i] += 1
            ended = ended | torch.isin(nxt, eos_t)
            if fed >= c and bool(ended.all()):
                break  # every rollout has ended: further forwards are wasted
        n_tok = min(fed + 1, remaining)
        spent = kv.forward_passes - before
        for gi in live_groups:
            groups[gi].forward_passes += spent

        toks_l = toks[:, :n_tok].tolist()
        lps_l = lps[:, :n_tok].tolist()

        # ---- evaluate candidates
        cand_by_group: dict[int, list[int]] = {}
        for i in range(m):
            cand_by_group.setdefault(rows.group[parent[i]], []).append(i)
        cand_tokens: list[list[int]] = []
        cand_finished: list[bool] = []
        cand_lp: list[float] = []
        cand_look: list[list[int]] = []
        cand_look_ended: list[bool] = []
        for i in range(m):
            seq = toks_l[i]
            eos_at = next((p for p, t in enumerate(seq) if t in eos_ids), None)
            fin = eos_at is not None and eos_at < c
            upto = eos_at + 1 if fin else c
            cand_finished.append(fin)
            # a token the grammar refused (only possible past an engine error) kills the candidate
            cand_lp.append(float("-inf") if dead[i] else rows.logprob[parent[i]] + sum(lps_l[i][:upto]))
            cand_tokens.append(rows.tokens[parent[i]] + seq[: (eos_at if fin else c)])
            if rows.settled[parent[i]]:
                # a settled beam is scored on its committed text alone, so how far the
                # rest of the batch looks ahead cannot change its result
                cand_look.append(cand_tokens[i])
                cand_look_ended.append(fin)
            else:
                look_end = eos_at if eos_at is not None else n_tok
                cand_look.append(rows.tokens[parent[i]] + seq[:look_end])
                cand_look_ended.append(eos_at is not None)

        scores: list[float] = [0.0] * m
        new_parent: list[int] = []
        new_rows = _Rows(group=[], tokens=[], logprob=[], settled=[], states=[])
        budget_out = generated + c >= params.max_new_tokens
        for gi, idxs in cand_by_group.items():
            g = groups[gi]
            need = len(idxs) + len(g.finished) > params.beam
            # finished candidates are always scored exactly: they are final answers
            fin_idx = [i for i in idxs if cand_finished[i]]
            if fin_idx:
                for i, (tot, br) in zip(fin_idx, score_texts(g, [decode(cand_tokens[i]) for i in fin_idx],
                                                             [True] * len(fin_idx), params.lam)):
                    scores[i] = cand_lp[i] + params.lam * tot
            live_idx = [i for i in idxs if not cand_finished[i]]
            if need and params.use_rewards and g.rewards and live_idx:
                evaluated = score_texts(g, [decode(cand_look[i]) for i in live_idx],
                                        [cand_look_ended[i] for i in live_idx], params.lam)
                g.candidates_scored += len(live_idx)
                for i, (tot, _) in zip(live_idx, evaluated):
                    scores[i] = cand_lp[i] + params.lam * tot
            else:
                for i in live_idx:
                    scores[i] = cand_lp[i]
            # pool = candidates + earlier finished hypotheses; keep the best `beam`
            pool: list[tuple[float, int, int]] = [(scores[i], 0, i) for i in idxs]
            pool += [(h.score, 1, k) for k, h in enumerate(g.finished)]
            if need:
                pool.sort(key=lambda e: (-e[0], e[1], e[2]))
            top = pool[: params.beam]
            for i in fin_idx:
                h = Hypothesis(tokens=cand_tokens[i], logprob=cand_lp[i], finished=True, score=scores[i])
                g.finished.append(h)
            keep_live = [i for (_, kind, i) in top if kind == 0 and not cand_finished[i]]
            if not keep_live:
                g.done = True
                continue
            if budget_out:
                g.unfinished.extend(
                    Hypothesis(tokens=cand_tokens[i], logprob=cand_lp[i], finished=False, score=scores[i])
                    for i in keep_live
                )
                g.done = True
                continue
            for i in keep_live:
                new_parent.append(i)
                new_rows.group.append(gi)
                new_rows.tokens.append(cand_tokens[i])
                new_rows.logprob.append(cand_lp[i])
                state = cand_states[i] if constrained else None
                if state is not None:
                    # forget the grammar steps of the uncommitted lookahead
                    cand_constraints[i].rollback(state, consumed[i] - c)  # type: ignore[union-attr]
                new_rows.states.append(state)
        generated += c
        if on_commit is not None and new_parent:
            live: dict[int, list[list[int]]] = {}
            for gi, tokens in zip(new_rows.group, new_rows.tokens):
                live.setdefault(gi, []).append(tokens)
            ended = on_commit(live)
            if ended:
                new_parent, new_rows = _end_groups(groups, ended, new_parent, new_rows, scores)
        if on_step is not None:
            on_step()
        if not new_parent:
            break
        # ---- commit: keep the chosen candidates' rows, forget their uncommitted lookahead
        assert commit_logits is not None
        kv.fork(new_parent)
        kv.crop(fed - c)
        logits = commit_logits.index_select(0, torch.tensor(new_parent, device=device))
        if params.adaptive and any_reward:
            new_rows.settled = [
                _settled(groups[gi], decode(tokens)) for gi, tokens in zip(new_rows.group, new_rows.tokens)
            ]
        else:
            new_rows.settled = [False] * len(new_rows.group)
        rows = new_rows


def _end_groups(groups: list[Group], ended: set[int], parent: list[int], rows: _Rows,
                scores: list[float]) -> tuple[list[int], _Rows]:
    """Stop searching the ``ended`` groups: their live beams become unfinished hypotheses."""
    keep = []
    for j, gi in enumerate(rows.group):
        if gi in ended:
            groups[gi].unfinished.append(Hypothesis(tokens=rows.tokens[j], logprob=rows.logprob[j],
                                                    finished=False, score=scores[parent[j]]))
            groups[gi].done = True
        else:
            keep.append(j)
    kept = _Rows(group=[rows.group[j] for j in keep], tokens=[rows.tokens[j] for j in keep],
                 logprob=[rows.logprob[j] for j in keep], settled=[],
                 states=[rows.states[j] for j in keep])
    return [parent[j] for j in keep], kept


def _settled(group: Group, text: str) -> bool:
    if not group.rewards:
        return True
    return all(reward_settled(r, text, group.context) for r in group.rewards if not getattr(r, "terminal", False)) \
        and not any(getattr(r, "terminal", False) for r in group.rewards)


def _propose(logp: torch.Tensor, logits: torch.Tensor, rows: _Rows, groups: list[Group],
             params: TreeParams) -> tuple[list[int], list[int], list[float]]:
    """Candidate first tokens: top-k (or k samples without replacement when temperature > 0)."""
    parent: list[int] = []
    tok: list[int] = []
    lp: list[float] = []
    k_max = min(params.top_k, logp.shape[-1])
    if params.temperature <= 0:
        top_lp, top_id = logp.topk(k_max, dim=-1)
        top_lp_l, top_id_l = top_lp.tolist(), top_id.tolist()
        for r in range(len(rows.group)):
            k = 1 if rows.settled[r] else k_max
            for t, v in zip(top_id_l[r][:k], top_lp_l[r][:k]):
                if v != float("-inf"):  # masked out by a hard constraint
                    parent.append(r)
                    tok.append(t)
                    lp.append(v)
        return parent, tok, lp
    probs = torch.softmax(logits / params.temperature, dim=-1)
    for r in range(len(rows.group)):
        g = groups[rows.group[r]]
        allowed = int((probs[r] > 0).sum())
        k = min(1 if rows.settled[r] else k_max, max(1, allowed))
        # sampled on CPU with the group's own generator: results do not depend on batching
        picks = torch.multinomial(probs[r].double().cpu(), k, replacement=False, generator=g.generator).tolist()
        parent.extend([r] * k)
        tok.extend(picks)
        lp.extend(logp[r, picks].tolist())
    return parent, tok, lp


def _prune(parent: list[int], tok: list[int], lp: list[float], rows: _Rows, groups: list[Group],
           ranges: list[tuple[float, float]], params: TreeParams, eos_ids: frozenset[int]):
    """Drop candidates that cannot reach their group's top ``beam`` whatever R turns out to be.

    A candidate's score lies in ``[base + lam*R_lo, base + lam*R_hi]`` with ``base`` its
    log-probability so far. With ``commit == 1`` this is exact; with blockwise commit the
    greedy continuation also adds its (small, negative) log-probability, so the bound is
    a close heuristic there. End-of-sequence candidates are always kept: they cost no
    rollout, and keeping them makes pruning change nothing but the work done.
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
        base = [rows.logprob[parent[i]] + lp[i] for i in idxs]
        lows = sorted([b + params.lam * lo for b in base] + [h.score for h in groups[gi].finished], reverse=True)
        threshold = lows[params.beam - 1]
        keep.extend(i for i, b in zip(idxs, base) if b + params.lam * hi >= threshold or tok[i] in eos_ids)
    keep.sort()
    return [parent[i] for i in keep], [tok[i] for i in keep], [lp[i] for i in keep]


def finalize(group: Group, decode: Callable[[Sequence[int]], str], lam: float) -> list[Hypothesis]:
    """Score every hypothesis on its full text with every reward (terminal ones included);
    return them best first, finished before unfinished (DESIGN §1: the answer is the best
    *finished* beam; an unfinished one is returned only when none finished)."""
    hyps = group.finished + group.unfinished
    if not hyps:
        return []
    texts = [decode(h.tokens) for h in hyps]
    # the breakdown reports what the text really scores, terminal rewards included, even
    # for text cut by the budget
    evaluated = score_texts(group, texts, [True] * len(hyps), lam) if group.rewards else [(0.0, {})] * len(hyps)
    for h, (tot, br) in zip(hyps, evaluated):
        h.reward = tot
        h.rewards = dict(br)
        h.score = h.logprob + lam * tot
    return sorted(hyps, key=lambda h: (not h.finished, -h.score))
