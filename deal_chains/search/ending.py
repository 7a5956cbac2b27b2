"""Where an answer may end (DESIGN §2): ``hold_eos`` keeps end-of-sequence (and the tokens of
``hold_ends``, e.g. a sentence end) out while a reward still owes tokens the budget can pay
(NeuroLogic's rule), and ``end_in_lookahead`` lets an answer end at any token of a rollout
where the end is a candidate (the first-token rule), not only where a step starts or the
greedy rollout ends.

>>> import torch
>>> lp = torch.log_softmax(torch.tensor([[2.0, 1.5, 0.0]]), dim=-1)  # token 1 is the end, second
>>> ends_here(lp, lp.argmax(-1), torch.tensor([False]), torch.tensor([1]), (2, None))[0][0]
0
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from deal_chains.search.state import Candidates, Rollout, SearchState, TreeParams


def ends_here(step_lp: torch.Tensor, nxt: torch.Tensor, ended: torch.Tensor, eos_t: torch.Tensor,
              width: tuple[int, float | None]) -> list[tuple[int, float]]:
    """The rollout rows where end-of-sequence is a candidate after this token by the rule of a
    step's first token (among the ``top_k`` likeliest, within ``max_logprob_drop`` of the
    likeliest) but not the greedy choice (there the rollout ends by itself): (row, its
    log-probability). ``end_in_lookahead``: without it a block of ``commit`` tokens can end
    only where the greedy rollout ends, so a reply that could stop after a sentence runs on."""
    k, drop = width
    eos_lp = step_lp.index_select(1, eos_t).max(dim=1).values
    ok = ~ended & torch.isfinite(eos_lp) & ~torch.isin(nxt, eos_t)
    if drop is not None:
        ok &= eos_lp >= step_lp.gather(1, nxt.view(-1, 1)).squeeze(1) - drop
    rows = ok.nonzero().flatten()
    if len(rows) and k < step_lp.shape[1]:
        # rank < k: fewer than k tokens above the end, i.e. the k-th likeliest is not above it
        # (a top-k of the few rows left, not a vocabulary-wide count for every row)
        kth = step_lp.index_select(0, rows).topk(k, dim=1).values[:, -1]
        rows = rows[kth <= eos_lp.index_select(0, rows)]
    picked = rows.tolist()
    return list(zip(picked, eos_lp[picked].tolist()))


def owed(state: SearchState) -> list[int]:
    """Per live row, the tokens its group's rewards still need on its text (0: none, or settled)."""
    return [0 if settled else state.groups[gi].tokens_owed(state.decode(tokens))
            for gi, tokens, settled in zip(state.rows.group, state.rows.tokens, state.rows.settled)]


def rollout_owed(state: SearchState, parent: Sequence[int], tokens: torch.Tensor, n: int,
                 debt: Sequence[int], ended: Sequence[bool] | None = None) -> list[int]:
    """Per rollout row, the tokens its rewards still owe after the first ``n`` of its
    ``tokens``: re-read only where it owed before (a keyword placed inside the rollout frees
    the end at once, not a step later; a debt paid stays paid) and the row has not ``ended``
    (what follows its end is never read, so its debt stays as it was)."""
    rows = state.rows
    return [d if not d or (ended is not None and ended[i]) else
            state.groups[rows.group[p]].tokens_owed(state.decode(rows.tokens[p] + tokens[i, :n].tolist()))
            for i, (p, d) in enumerate(zip(parent, debt))]


def hold_eos(logits: torch.Tensor, owed_tokens: Sequence[int], remaining: Sequence[int],
             eos_ids: frozenset[int], *, may_stick: bool = True, inplace: bool = False) -> torch.Tensor:
    """No end-of-sequence for the rows that owe tokens their ``remaining`` budget can still pay
    (NeuroLogic's rule): a sentence that stops with a keyword missing while budget is left
    is not a candidate; once the budget cannot pay, ending competes again. A row that may
    only end (a hard constraint's finished document) still ends; ``may_stick=False`` says no
    row can be in that state (no hard constraint masked these logits), which skips the check.
    ``inplace``: write into ``logits`` (a caller that keeps no other use of them)."""
    held = [i for i, (need, left) in enumerate(zip(owed_tokens, remaining)) if need and left > need]
    if not held:
        return logits
    # one masked pass over the rows: a held token set (a sentence end's tokens) can be large
    row_mask = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    row_mask[held] = True
    mask = row_mask.unsqueeze(1) & _token_mask(eos_ids, logits.shape[-1], logits.device)
    if inplace and not may_stick:
        with torch.inference_mode():  # the model's logits are inference tensors
            return logits.masked_fill_(mask, float("-inf"))
    out = logits.masked_fill(mask, float("-inf"))
    if may_stick:
        rows = torch.tensor(held, device=logits.device)
        stuck = rows[~torch.isfinite(out.index_select(0, rows)).any(dim=-1)]
        if len(stuck):
            out[stuck] = logits[stuck]
    return out


def end_reserve(params: TreeParams) -> int:
    """Budget kept back from what the rewards owe before ``hold_eos`` lets the end compete: the
    tokens an ending takes (end-of-sequence), and with ``hold_ends`` the sentence end before it
    plus one commit block, so the end competes for a whole step, with the sentence end among
    the candidates (``closing_ends``), before the budget runs out. Without that block a row
    could step from "still held" straight past its last chance to end, and be cut."""
    return 1 + (1 + params.commit if params.held_ids else 0)


def closing_ends(logp: torch.Tensor, remaining: Sequence[int], end_ids: frozenset[int],
                 within: int) -> list[tuple[int, int, float]]:
    """(row, token, log-probability) of the likeliest of ``end_ids`` (a ``hold_ends`` sentence
    end) for every row within ``within`` tokens of its budget, where it is allowed (not held,
    not masked). Added to those rows' candidates whatever its rank: near the budget the
    alternative to ending is often being cut, and only a candidate can become a finished answer.

    >>> lp = torch.log_softmax(torch.tensor([[3.0, 0.0, -1.0], [3.0, 0.0, float("-inf")]]), dim=-1)
    >>> [(r, t) for r, t, _ in closing_ends(lp, [4, 4], frozenset({2}), 8)]
    [(0, 2)]
    """
    rows = [r for r, n in enumerate(remaining) if n <= within]
    if not rows:
        return []
    index = torch.tensor(rows, device=logp.device)
    mask = _token_mask(end_ids, logp.shape[-1], logp.device)
    best, tok = logp.index_select(0, index).masked_fill(~mask, float("-inf")).max(dim=-1)
    return [(r, t, v) for r, t, v in zip(rows, tok.tolist(), best.tolist()) if v != float("-inf")]


@functools.lru_cache(maxsize=16)
def _token_mask(ids: frozenset[int], vocab: int, device: torch.device) -> torch.Tensor:
    """``ids`` (those below ``vocab``) as a boolean mask over the vocabulary."""
    mask = torch.zeros(vocab, dtype=torch.bool, device=device)
    inside = sorted(i for i in ids if i < vocab)
    if inside:
        mask[torch.tensor(inside, device=device)] = True
    return mask


def add_exit(out: Candidates, state: SearchState, rollout: Rollout, i: int, n: int, eos_lp: float) -> None:
    """Rollout row ``i`` ended after its first ``n`` tokens: a finished candidate (it keeps no
    row; its rewards read row ``i``'s states). Skipped where the end would not fit the row's
    budget or the rollout had already ended (or died) before it."""
    p = out.parent[i]
    rows, seq = state.rows, rollout.tokens[i][:n]
    if rollout.dead[i] or n >= state.params.max_new_tokens - len(rows.tokens[p]) or \
            any(t in state.eos_ids for t in seq):
        return
    logprob = rows.logprob[p] + sum(rollout.logprobs[i][:n]) + eos_lp
    out.by_group[rows.group[p]].append(len(out.parent))
    out.parent.append(p)
    out.row.append(i)
    out.tokens.append(rows.tokens[p] + seq)
    out.finished.append(True)
    out.logprob.append(logprob)
    out.fluency.append(rows.fluency[p] + logprob - rows.logprob[p])
    out.look.append(out.tokens[-1])
    out.look_ended.append(True)
