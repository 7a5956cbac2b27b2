"""The DeAL lookahead tree search over many prompts at once (DESIGN §1-2).

Each *group* is one search tree (one prompt, or one of the n samples of a prompt). Its live
beams are rows of a shared ``KVBatch``. One step, for all groups together, in named steps:

1. ``plan``: how many tokens this step commits and how far it looks ahead;
2. ``propose``: every live row proposes ``top_k`` next tokens (1 when its rewards are
   settled); candidates that cannot reach the group's top ``beam`` whatever the reward says
   are pruned;
3. ``roll_out``: the cache is forked to one row per candidate and all candidates are rolled
   out greedily together, one forward per lookahead token;
4. ``read_fluency`` (with a fluency prompt only): the candidates' commit windows are read
   under that prompt in one forward (``search/fluency.py``);
5. ``score``: each candidate is scored ``logprob(committed) + lam * R(lookahead text)``, the
   log-probability under the fluency prompt when there is one;
6. ``select``: per group the best ``beam`` of (candidates + finished hypotheses) survive;
7. ``commit``: the survivors keep their cache rows, the uncommitted lookahead is cropped.

The prompt is prefilled once; no prefix is ever run twice. The commit rule (``plan``) and the
scorer (``score``) are replaceable: ``run_tree_search`` takes any ``CommitRule`` / ``Scorer``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import torch

from deal_chains.search.constraints import apply_masks
from deal_chains.search.ending import add_exit, closing_ends, end_reserve, ends_here, hold_eos, owed, rollout_owed
from deal_chains.search.estimate import CompletionEstimate, pending_items, requested_tokens
from deal_chains.search.fluency import FluencyStream
from deal_chains.search.features import SearchFeatures
from deal_chains.search.kv import KVBatch
from deal_chains.search.proposals import prune, top_candidates
from deal_chains.search.repetition import ban_repeats
from deal_chains.search.scoring import ranked_score, score_texts
from deal_chains.search.state import (Candidates, Group, Hypothesis, Proposals, Rollout, Rows, SearchState, Step,
                                      TreeParams)
from rewards.base import reward_settled, reward_uses_model

OnCommit = Callable[[dict[int, list[list[int]]]], "set[int] | None"]
# rewards closer than this count as equal (commit by reward)
_SAME_REWARD = 1e-9


class CommitRule(Protocol):
    """Decides, before each step, how many tokens it commits and how far it looks ahead."""

    def __call__(self, state: SearchState) -> Step: ...


class Scorer(Protocol):
    """Fills ``cands.scores`` (one per candidate; higher is better) for ``select`` to rank."""

    def __call__(self, state: SearchState, cands: Candidates) -> None: ...


def run_tree_search(kv: KVBatch, prompt_logits: torch.Tensor, groups: list[Group], params: TreeParams,
                    eos_ids: frozenset[int], decode: Callable[[Sequence[int]], str],
                    on_step: Callable[[], None] | None = None, on_commit: OnCommit | None = None,
                    commit_rule: CommitRule | None = None, scorer: Scorer | None = None,
                    encode: Callable[[str], list[int]] | None = None,
                    fluency: FluencyStream | None = None) -> None:
    """Search every group to completion; fills ``group.finished`` / ``group.unfinished``.

    ``kv`` holds the prefilled prompts (one row per distinct prompt) and ``prompt_logits``
    their next-token logits. ``on_commit`` is called after every step with each group's
    live beams (group index -> committed token lists; done groups are absent) and may
    return group indices to end now: their live beams become unfinished hypotheses.
    ``commit_rule`` and ``scorer`` replace ``plan`` and ``score`` (the defaults). ``encode``
    (text -> token ids) enables ``params.estimate``, the completion estimate. ``fluency``
    (the fluency prompts prefilled, one row per distinct prompt like ``kv``) makes the score
    rank by the log-probability under those prompts.
    """
    # looked up per call, not bound as defaults, so the module's steps stay the ones used
    commit_rule = commit_rule or plan
    scorer = scorer or score
    state = start(kv, prompt_logits, groups, params, eos_ids, decode, fluency)
    if encode is not None and ((fluency is not None and fluency.spare_requested)
                               or params.requested_logprob_drop is not None):
        state.requested = requested_tokens(groups, encode)
    if params.estimate and encode is not None and state.any_reward:
        state.estimator = CompletionEstimate(encode)
    state.features = SearchFeatures.attach(state)
    while state.rows.group:
        if state.fluency is not None and state.fluency.finished_with(state.generated):
            state.fluency = None  # past the answer's opening (fluency_tokens): the request's own from here
        step = commit_rule(state)
        proposals = propose(state, step)
        if not proposals.parent:
            break
        rollout = roll_out(state, step, proposals)
        if state.fluency is not None:
            read_fluency(state, step, proposals, rollout)
        candidates = evaluate(state, step, proposals, rollout)
        scorer(state, candidates)
        chosen, rows = select(state, step, candidates, rollout)
        state.generated = min(map(len, rows.tokens), default=state.generated + step.commit)
        if on_commit is not None and chosen:
            chosen, rows = _report_commit(on_commit, groups, chosen, rows, candidates.scores)
        if on_step is not None:
            on_step()
        if not chosen:
            break
        commit(state, step, rollout, chosen, rows)


def start(kv: KVBatch, prompt_logits: torch.Tensor, groups: list[Group], params: TreeParams,
          eos_ids: frozenset[int], decode: Callable[[Sequence[int]], str],
          fluency: FluencyStream | None = None) -> SearchState:
    """One live row per group, forked from its prompt's prefilled row (and its fluency prompt's)."""
    device = prompt_logits.device
    kv.fork([g.prompt_row for g in groups])
    logits = prompt_logits.index_select(0, torch.tensor([g.prompt_row for g in groups], device=device))
    rows = Rows(group=list(range(len(groups))), tokens=[[] for _ in groups], logprob=[0.0] * len(groups),
                settled=[False] * len(groups),
                states=[g.constraint.new_state() if g.constraint else None for g in groups],
                fluency=[0.0] * len(groups))
    if fluency is not None:
        fluency.start([g.prompt_row for g in groups])
    ranges = [g.reward_range() for g in groups]
    return SearchState(kv=kv, groups=groups, params=params, eos_ids=eos_ids, decode=decode, rows=rows,
                       logits=logits, ranges=ranges,
                       any_reward=params.use_rewards and any(hi - lo > 0 for lo, hi in ranges),
                       constrained=any(g.constraint is not None for g in groups), fluency=fluency)


def plan(state: SearchState) -> Step:
    """The commit rule: ``commit`` tokens a step (fewer at the end of the budget); no lookahead
    when no reward can change the choice (no rewards, or every live beam settled)."""
    params = state.params
    remaining = params.max_new_tokens - state.generated
    commit_n = min(params.commit, remaining)
    lookahead = params.lookahead if (state.any_reward and not all(state.rows.settled)) else 0
    return Step(commit=commit_n, forwards=min(max(lookahead, commit_n), remaining), remaining=remaining)


def propose(state: SearchState, step: Step) -> Proposals:
    """Candidate first tokens of every live row, under the masks, pruned; groups left without
    a candidate are done (their finished hypotheses already hold the top ``beam`` places)."""
    rows, groups, params = state.rows, state.groups, state.params
    logits = state.logits
    if state.constrained:
        logits = apply_masks(logits, rows.states, [groups[g].constraint for g in rows.group], state.eos_main,
                             step.remaining, params.max_new_tokens, rows.tokens.__getitem__)
    state.owed = owed(state) if params.hold_eos and state.any_reward else []
    left = [params.max_new_tokens - len(t) for t in rows.tokens]
    logits = hold_eos(logits, state.owed, [n - end_reserve(params) for n in left], state.held_ids,
                      may_stick=state.constrained)
    # no_repeat_ngram needs no mask here: these logits are a rollout window's, masked there for
    # the very tokens each row committed (and the first step's rows have no tokens to repeat)
    logp = torch.log_softmax(logits, dim=-1)
    parent, tok, lp = top_candidates(logp, logits, rows, groups, params, state.requested)
    ranked = state.fluency.first(parent, tok, lp, _spared(state, parent)) if state.fluency is not None else lp
    if params.prune and state.any_reward:
        parent, tok, lp, ranked = prune(parent, tok, lp, ranked, rows, groups, state.ranges, params, state.eos_ids,
                                        step.commit)
    if params.hold_eos and params.held_ids:
        # after pruning, so pruning never drops them
        parent, tok, lp, ranked = _with_closing_ends(state, logp, left, parent, tok, lp, ranked)
    with_candidates = {rows.group[p] for p in parent}
    for gi in set(rows.group) - with_candidates:
        groups[gi].done = True
    live_groups = sorted(with_candidates)
    for gi in live_groups:
        groups[gi].steps += 1
        if all(rows.settled[r] for r in range(len(rows.group)) if rows.group[r] == gi):
            groups[gi].greedy_steps += 1
    return Proposals(parent=parent, token=tok, logprob=lp, live_groups=live_groups, ranked=ranked)


def _with_closing_ends(state: SearchState, logp: torch.Tensor, left: list[int], parent: list[int], tok: list[int],
                       lp: list[float], ranked: list[float]):
    """The candidates plus, for each row in its last two commit blocks, its likeliest sentence
    end (``hold_ends``) where that is not a candidate yet: an answer the budget would cut can
    still end (``ending.closing_ends``). Candidates stay in row order."""
    present = set(zip(parent, tok))
    ends = [e for e in closing_ends(logp, left, state.params.held_ids, 2 * state.params.commit)
            if (e[0], e[1]) not in present]
    if not ends:
        return parent, tok, lp, ranked
    rows, toks, lps = (list(col) for col in zip(*ends))
    more = state.fluency.first(rows, toks, lps, _spared(state, rows)) if state.fluency is not None else lps
    merged = sorted(zip(parent + rows, tok + toks, lp + lps, ranked + more), key=lambda c: c[0])
    return tuple(list(col) for col in zip(*merged))


def roll_out(state: SearchState, step: Step, proposals: Proposals) -> Rollout:
    """Fork the cache to one row per candidate and extend all of them greedily together, one
    forward per lookahead token (masked under a hard constraint), until every rollout ended."""
    kv, rows, params, eos_ids = state.kv, state.rows, state.params, state.eos_ids
    parent, tok1 = proposals.parent, proposals.token
    device, m, n_forward, c = state.logits.device, len(parent), step.forwards, step.commit
    eos_t = torch.tensor(sorted(eos_ids), device=device)
    before = kv.forward_passes
    kv.fork(parent)
    toks = torch.zeros((m, n_forward + 1), dtype=torch.long, device=device)
    lps = torch.zeros((m, n_forward + 1), dtype=torch.float64, device=device)
    toks[:, 0] = torch.tensor(tok1, device=device)
    lps[:, 0] = torch.tensor(proposals.logprob, dtype=torch.float64, device=device)
    ended = torch.isin(toks[:, 0], eos_t)
    grammar = _GrammarRows.fork(state, proposals) if state.constrained else None
    estimate = state.step_estimate = (
        state.estimator.start(state.groups, parent, rows.group, lambda p: state.decode(rows.tokens[p]), device)
        if state.estimator is not None else None)
    # what each rollout row's rewards still owe (hold_eos), re-read as its text grows
    debt = rollout_owed(state, parent, toks, 1, [state.owed[p] for p in parent]) if state.owed else None
    held, reserve = state.held_ids, end_reserve(params)
    fed, window = 0, []
    exits: list[tuple[int, int, float]] | None = (
        [] if params.end_in_lookahead and state.any_reward and not state.constrained and state.fluency is None
        else None)
    for j in range(n_forward):
        step_logits = kv.step(toks[:, j])
        fed += 1
        if grammar is not None:
            step_logits = apply_masks(step_logits, grammar.states, grammar.constraints, state.eos_main,
                                      step.remaining - j - 1, params.max_new_tokens,
                                      lambda i, j=j: rows.tokens[parent[i]] + toks[i, : j + 1].tolist())
        if debt is not None:
            step_logits = hold_eos(step_logits, debt,
                                   [params.max_new_tokens - len(rows.tokens[p]) - j - 1 - reserve for p in parent],
                                   held,
                                   may_stick=grammar is not None, inplace=True)
        if params.no_repeat_ngram:
            step_logits = ban_repeats(step_logits, [rows.tokens[p] + t for p, t in
                                                    zip(parent, toks[:, : j + 1].tolist())], params.no_repeat_ngram,
                                      inplace=True)
        if j < c:
            window.append(step_logits)
        if j + 1 >= step.remaining:
            break  # the next token would exceed the budget
        step_lp = torch.log_softmax(step_logits, dim=-1)
        if estimate is not None:
            estimate.observe(step_lp, ~ended)
        nxt = step_lp.argmax(dim=-1)
        if exits is not None:
            exits += [(i, j + 1, e) for i, e in ends_here(step_lp, nxt, ended, eos_t, params.width(first=False))]
        toks[:, j + 1] = nxt
        lps[:, j + 1] = step_lp.gather(1, nxt.view(-1, 1)).squeeze(1).double()
        if grammar is not None:
            grammar.advance(nxt.tolist(), ended.tolist(), eos_ids)
        ended = ended | torch.isin(nxt, eos_t)
        if debt is not None and any(debt):
            debt = rollout_owed(state, parent, toks, j + 2, debt, ended.tolist())
        if fed >= c and bool(ended.all()):
            break  # every rollout has ended: further forwards are wasted
    n_tok = min(fed + 1, step.remaining)
    spent = kv.forward_passes - before
    for gi in proposals.live_groups:
        state.groups[gi].forward_passes += spent
    grammar = grammar or _GrammarRows([], [], [0] * m, [False] * m)
    return Rollout(tokens=toks[:, :n_tok].tolist(), logprobs=lps[:, :n_tok].tolist(), fed=fed,
                   window=window, states=grammar.states,
                   constraints=grammar.constraints,
                   consumed=grammar.consumed, dead=grammar.dead, exits=exits or [])


def read_fluency(state: SearchState, step: Step, proposals: Proposals, rollout: Rollout) -> None:
    """Read every candidate's commit window under the fluency prompt (one forward for all):
    the score then ranks by that log-probability (``rollout.ranked``)."""
    n = min(step.commit, len(rollout.tokens[0]))
    rollout.ranked = state.fluency.read(proposals.parent, rollout.tokens, rollout.logprobs, n,
                                        _spared(state, proposals.parent))
    for gi in proposals.live_groups:
        state.groups[gi].forward_passes += 1


def _spared(state: SearchState, parent: Sequence[int]) -> list[frozenset[int]] | None:
    """Per candidate (``parent[i]``: its row), the tokens its fluency read spares."""
    if state.requested is None or state.fluency is None or not state.fluency.spare_requested:
        return None
    return [state.requested[state.rows.group[p]] for p in parent]


class _GrammarRows:
    """Per candidate row: its own copy of its parent's grammar state, advanced token by token."""

    def __init__(self, states: list[Any], constraints: list[Any], consumed: list[int], dead: list[bool]):
        self.states, self.constraints, self.consumed, self.dead = states, constraints, consumed, dead

    @classmethod
    def fork(cls, state: SearchState, proposals: Proposals) -> "_GrammarRows":
        rows = cls([], [], [0] * len(proposals.parent), [False] * len(proposals.parent))
        for i, (p, t) in enumerate(zip(proposals.parent, proposals.token)):
            st, con = state.rows.states[p], state.groups[state.rows.group[p]].constraint
            if con is not None and st is not None:
                st = con.copy(st)
                if t not in state.eos_ids:
                    rows.dead[i] = not con.advance(st, t)
                    rows.consumed[i] = 1
            rows.states.append(st)
            rows.constraints.append(con)
        return rows

    def advance(self, tokens: list[int], ended: list[bool], eos_ids: frozenset[int]) -> None:
        for i, (con, t) in enumerate(zip(self.constraints, tokens)):
            if con is not None and not ended[i] and not self.dead[i] and t not in eos_ids:
                self.dead[i] = not con.advance(self.states[i], t)
                self.consumed[i] += 1


def evaluate(state: SearchState, step: Step, proposals: Proposals, rollout: Rollout) -> Candidates:
    """Each candidate's committed tokens (cut at end-of-sequence inside the commit window),
    log-probability, and the text its rewards score (settled beams: the committed text only,
    so how far the batch looks ahead cannot change their result)."""
    rows, eos_ids, max_new = state.rows, state.eos_ids, state.params.max_new_tokens
    out = Candidates(by_group={}, parent=list(proposals.parent), tokens=[], finished=[], logprob=[], fluency=[],
                     look=[], look_ended=[])
    ranked = rollout.ranked or rollout.logprobs
    for i, p in enumerate(proposals.parent):
        out.by_group.setdefault(rows.group[p], []).append(i)
        # a row ahead of the shortest (commit by reward) has less budget left than the step
        left = max_new - len(rows.tokens[p])
        c = min(step.commit, left)
        seq = rollout.tokens[i][:left]
        n_tok = len(seq)
        eos_at = next((k for k, t in enumerate(seq) if t in eos_ids), None)
        fin = eos_at is not None and eos_at < c
        upto = eos_at + 1 if fin else c
        out.finished.append(fin)
        # a token the grammar refused (only possible past an engine error) kills the candidate
        out.logprob.append(float("-inf") if rollout.dead[i] else rows.logprob[p] + sum(rollout.logprobs[i][:upto]))
        out.fluency.append(float("-inf") if rollout.dead[i] else rows.fluency[p] + sum(ranked[i][:upto]))
        out.tokens.append(rows.tokens[p] + seq[: (eos_at if fin else c)])
        if rows.settled[p]:
            out.look.append(out.tokens[i])
            out.look_ended.append(fin)
        else:
            out.look.append(rows.tokens[p] + seq[:(eos_at if eos_at is not None else n_tok)])
            out.look_ended.append(eos_at is not None)
    out.row = list(range(len(out.parent)))
    for i, n, eos_lp in rollout.exits:
        add_exit(out, state, rollout, i, n, eos_lp)
    return out


def score(state: SearchState, cands: Candidates) -> None:
    """The scorer: ``logprob / tokens ** length_penalty + lam * R`` (``scoring.ranked_score``;
    the ranked log-probability: under the fluency prompt when there is one; ``length_penalty``
    0, the default, sums it). Finished candidates are scored exactly on their final
    text; live ones on their lookahead text, and only when the group has more candidates than
    places (otherwise the ranking cannot matter)."""
    params = state.params

    def scored(i: int, reward: float) -> float:
        return ranked_score(cands.fluency[i], len(cands.tokens[i]) + cands.finished[i], reward, params.lam,
                            params.length_penalty)

    cands.scores = [scored(i, 0.0) for i in range(len(cands.fluency))]
    cands.reward = [None] * len(cands.logprob)
    for gi, idxs in cands.by_group.items():
        g = state.groups[gi]
        fin_idx = [i for i in idxs if cands.finished[i]]
        if fin_idx:
            for i, (tot, _) in zip(fin_idx, _score_tokens(state, gi, [cands.row[i] for i in fin_idx],
                                                          [cands.tokens[i] for i in fin_idx],
                                                          [True] * len(fin_idx))):
                cands.scores[i] = scored(i, tot)
        live_idx = [i for i in idxs if not cands.finished[i]]
        if len(idxs) + len(g.finished) > params.beam and params.use_rewards and g.rewards and live_idx:
            evaluated = _score_tokens(state, gi, [cands.row[i] for i in live_idx], [cands.look[i] for i in live_idx],
                                      [cands.look_ended[i] for i in live_idx])
            g.candidates_scored += len(live_idx)
            for i, (tot, _) in zip(live_idx, evaluated):
                cands.scores[i] = scored(i, tot + _estimate(state, g, cands, i))
                cands.reward[i] = tot


def _score_tokens(state: SearchState, gi: int, idxs: list[int], tokens: list[list[int]],
                  final: list[bool]) -> list[tuple[float, dict[str, float]]]:
    """Group ``gi``'s rewards on candidates ``idxs`` (their cache rows) with these tokens: from
    the search's own hidden states when the group's rewards read them (search/features.py),
    else on the decoded text."""
    if state.features is not None and state.features.serves(gi):
        return state.features.score(state, gi, idxs, tokens, final)
    return score_texts(state.groups[gi], [state.decode(t) for t in tokens], final, state.params.lam)


def _estimate(state: SearchState, group: Group, cands: Candidates, i: int) -> float:
    """The completion estimate of live candidate ``i`` (0 when off, or for a settled beam)."""
    est = state.step_estimate
    if est is None or cands.look_ended[i]:
        return 0.0
    return est.credit(i, pending_items(group, state.decode(cands.look[i])))


def select(state: SearchState, step: Step, cands: Candidates, rollout: Rollout) -> tuple[list[int], Rows]:
    """Per group, the best ``beam`` of (candidates + finished hypotheses): finished candidates
    join the group's answers, live survivors become the next rows (or unfinished answers
    when the budget is spent)."""
    params = state.params
    chosen: list[int] = []
    rows = Rows(group=[], tokens=[], logprob=[], settled=[], states=[], fluency=[])
    for gi, idxs in cands.by_group.items():
        g = state.groups[gi]
        pool: list[tuple[float, int, int]] = [(cands.scores[i], 0, i) for i in idxs]
        pool += [(h.score, 1, k) for k, h in enumerate(g.finished)]
        if len(idxs) + len(g.finished) > params.beam:
            pool.sort(key=lambda e: (-e[0], e[1], e[2]))
        top = pool[: params.beam]
        for i in idxs:
            if cands.finished[i]:
                g.finished.append(Hypothesis(tokens=cands.tokens[i], logprob=cands.logprob[i], finished=True,
                                             score=cands.scores[i], fluency=cands.fluency[i]))
        keep_live = [i for (_, kind, i) in top if kind == 0 and not cands.finished[i]]
        # a hard constraint's closing pressure counts the budget per step: its rows commit together
        if params.commit_by_reward and keep_live and not state.constrained:
            _commit_by_reward(state, g, cands, rollout, idxs, keep_live)
        cut = [i for i in keep_live if len(cands.tokens[i]) >= params.max_new_tokens]
        g.unfinished.extend(Hypothesis(tokens=cands.tokens[i], logprob=cands.logprob[i], finished=False,
                                       score=cands.scores[i], fluency=cands.fluency[i]) for i in cut)
        keep_live = [i for i in keep_live if i not in cut]
        if not keep_live:
            g.done = True
            continue
        for i in keep_live:
            advance = len(cands.tokens[i]) - len(state.rows.tokens[cands.parent[i]])
            chosen.append(i)
            rows.group.append(gi)
            rows.tokens.append(cands.tokens[i])
            rows.logprob.append(cands.logprob[i])
            rows.fluency.append(cands.fluency[i])
            rows.advance.append(advance)
            st = rollout.states[i] if state.constrained else None
            if st is not None:  # forget the grammar steps of the uncommitted lookahead
                rollout.constraints[i].rollback(st, rollout.consumed[i] - advance)
            rows.states.append(st)
    return chosen, rows


def _commit_by_reward(state: SearchState, g: Group, cands: Candidates, rollout: Rollout, idxs: list[int],
                      keep_live: list[int]) -> None:
    """Shorten the kept candidates' commits where the reward has an opinion (DESIGN §2, issue
    #18): where the group's candidates all scored the same reward, the block is the model's
    choice alone and is committed whole; where they disagree, a beam commits only up to the
    token at which its rollout's reward is reached (at least one token), so what follows is
    searched again instead of taken from the greedy rollout. A group with a terminal reward
    (scored on finished text only) or one that runs a model to score (each prefix would cost
    a forward) keeps the whole block."""
    scored = [cands.reward[i] for i in idxs if cands.reward[i] is not None]
    if not scored or max(scored) - min(scored) <= _SAME_REWARD or any(
            getattr(r, "terminal", False) or reward_uses_model(r) for r in g.rewards):
        return
    for i in keep_live:
        parent = state.rows.tokens[cands.parent[i]]
        block = len(cands.tokens[i]) - len(parent)
        target = cands.reward[i]
        if block <= 1 or target is None:
            continue
        seq, ranked = rollout.tokens[i], rollout.ranked or rollout.logprobs
        reached = score_texts(g, [state.decode(parent + seq[:j]) for j in range(1, block)], [False] * (block - 1),
                              state.params.lam)
        n = next((j for j, (tot, _) in enumerate(reached, start=1) if tot >= target - _SAME_REWARD), block)
        if n < block:
            cands.tokens[i] = parent + seq[:n]
            cands.logprob[i] = state.rows.logprob[cands.parent[i]] + sum(rollout.logprobs[i][:n])
            cands.fluency[i] = state.rows.fluency[cands.parent[i]] + sum(ranked[i][:n])


def commit(state: SearchState, step: Step, rollout: Rollout, chosen: list[int], rows: Rows) -> None:
    """Keep the chosen candidates' cache rows, forget their uncommitted lookahead, and mark
    the beams whose rewards are settled (they propose one token next step). Rows that
    committed fewer tokens than the longest (commit by reward) mask their extra positions."""
    state.kv.fork(chosen)
    advance = rows.advance or [step.commit] * len(chosen)
    longest = max(advance)
    state.kv.crop(rollout.fed - longest)
    state.kv.retract([longest - a for a in advance])
    if state.fluency is not None:
        state.fluency.commit(chosen, advance)
    assert len(rollout.window) >= longest
    if all(a == longest for a in advance):
        state.logits = rollout.window[longest - 1].index_select(0, torch.tensor(chosen, device=state.logits.device))
    else:
        state.logits = torch.stack([rollout.window[a - 1][i] for i, a in zip(chosen, advance)])
    if state.params.adaptive and state.any_reward:
        rows.settled = [_settled(state.groups[gi], state.decode(t)) for gi, t in zip(rows.group, rows.tokens)]
    else:
        rows.settled = [False] * len(rows.group)
    state.rows = rows


def _report_commit(on_commit: OnCommit, groups: list[Group], parent: list[int], rows: Rows,
                   scores: list[float]) -> tuple[list[int], Rows]:
    """Show ``on_commit`` each group's live beams; the groups it returns stop searching."""
    live: dict[int, list[list[int]]] = {}
    for gi, tokens in zip(rows.group, rows.tokens):
        live.setdefault(gi, []).append(tokens)
    ended = on_commit(live)
    if not ended:
        return parent, rows
    return _end_groups(groups, ended, parent, rows, scores)


def _end_groups(groups: list[Group], ended: set[int], parent: list[int], rows: Rows,
                scores: list[float]) -> tuple[list[int], Rows]:
    """Stop searching the ``ended`` groups: their live beams become unfinished hypotheses."""
    keep = []
    for j, gi in enumerate(rows.group):
        if gi in ended:
            groups[gi].unfinished.append(Hypothesis(tokens=rows.tokens[j], logprob=rows.logprob[j],
                                                    finished=False, score=scores[parent[j]],
                                                    fluency=rows.fluency[j]))
            groups[gi].done = True
        else:
            keep.append(j)
    kept = Rows(group=[rows.group[j] for j in keep], tokens=[rows.tokens[j] for j in keep],
                 logprob=[rows.logprob[j] for j in keep], settled=[], fluency=[rows.fluency[j] for j in keep],
                 states=[rows.states[j] for j in keep], advance=[rows.advance[j] for j in keep] if rows.advance else [])
    return [parent[j] for j in keep], kept


def _settled(group: Group, text: str) -> bool:
    if not group.rewards:
        return True
    return all(reward_settled(r, text, group.context) for r in group.rewards if not getattr(r, "terminal", False)) \
        and not any(getattr(r, "terminal", False) for r in group.rewards)
