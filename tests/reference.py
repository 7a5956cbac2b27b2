"""A plain, no-cache DeAL reference: one prompt at a time, the whole sequence re-run for
every forward. Written from the algorithm's description (DESIGN §1), not from the engine,
so that agreement between the two is evidence that the KV forking/cropping is right."""

from __future__ import annotations

import torch


def _next_logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]))
    return torch.log_softmax(out.logits[0, -1].float(), dim=-1)


def _total_reward(rewards, text: str, context, final: bool) -> float:
    total = 0.0
    for r in rewards:
        if r.terminal and not final:
            value = r.bounds[1]
        else:
            value = r.score([text], context)[0]
        total += r.weight * value
    return total


def reference_deal(lm, prompt_ids: list[int], rewards, context, *, top_k: int, beam: int, lookahead: int,
                   commit: int, lam: float, max_new_tokens: int):
    """Return (tokens, logprob, finished) of the answer for one prompt (deterministic DeAL,
    no pruning, no adaptive skipping)."""
    model, eos = lm.model, lm.eos_token_ids
    decode = lm.decode
    live = [([], 0.0)]  # (generated tokens, cumulative logprob)
    finished: list[tuple[list[int], float, float]] = []  # (tokens, logprob, score)
    unfinished: list[tuple[list[int], float, float]] = []
    has_reward = any(r.weight != 0 for r in rewards)
    generated = 0
    while live:
        remaining = max_new_tokens - generated
        c = min(commit, remaining)
        n_forward = min(max(lookahead if has_reward else 0, c), remaining)
        cands = []  # (tokens_committed, lp, finished, score)
        for tokens, lp in live:
            logp = _next_logprobs(model, prompt_ids + tokens)
            top_lp, top_id = logp.topk(min(top_k, logp.numel()))
            for t1, l1 in zip(top_id.tolist(), top_lp.tolist()):
                seq, lps = [t1], [l1]
                for j in range(n_forward):
                    if j + 1 >= remaining:
                        break
                    step = _next_logprobs(model, prompt_ids + tokens + seq)
                    nxt = int(step.argmax())
                    seq.append(nxt)
                    lps.append(float(step[nxt]))
                eos_at = next((p for p, t in enumerate(seq) if t in eos), None)
                fin = eos_at is not None and eos_at < c
                upto = eos_at + 1 if fin else c
                new_lp = lp + sum(lps[:upto])
                committed = tokens + seq[: (eos_at if fin else c)]
                if fin:
                    r = _total_reward(rewards, decode(committed), context, final=True)
                else:
                    look = tokens + seq[: (eos_at if eos_at is not None else len(seq))]
                    r = _total_reward(rewards, decode(look), context, final=eos_at is not None)
                cands.append((committed, new_lp, fin, new_lp + lam * r))
        pool = [(s, 0, i) for i, (_, _, _, s) in enumerate(cands)] + [(f[2], 1, i) for i, f in enumerate(finished)]
        pool.sort(key=lambda e: (-e[0], e[1], e[2]))
        top = pool[:beam]
        finished.extend((t, lp, s) for (t, lp, fin, s) in cands if fin)
        keep = [cands[i] for (_, kind, i) in top if kind == 0 and not cands[i][2]]
        generated += c
        if not keep:
            break
        if generated >= max_new_tokens:
            unfinished.extend((t, lp, s) for (t, lp, _, s) in keep)
            break
        live = [(t, lp) for (t, lp, _, _) in keep]
    hyps = [(t, lp, True) for t, lp, _ in finished] + [(t, lp, False) for t, lp, _ in unfinished]
    scored = [(t, lp, f, lp + lam * _total_reward(rewards, decode(t), context, final=True)) for t, lp, f in hyps]
    scored.sort(key=lambda h: (not h[2], -h[3]))
    best = scored[0]
    return best[0], best[1], best[2]
