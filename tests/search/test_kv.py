"""KVBatch: rows forked, cropped and retracted on a shared cache behave as if each row's
sequence had been run on its own."""

from __future__ import annotations

import torch

from deal_chains.search.kv import KVBatch


def _fresh_logits(lm, ids):
    with torch.no_grad():
        return lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_retract_forgets_a_rows_last_positions_as_if_never_fed(tiny_lm):
    prompts = [tiny_lm.format_prompt("hello world"), tiny_lm.format_prompt("abc")]
    kv = KVBatch(tiny_lm.model)
    kv.prefill(prompts, tiny_lm.pad_token_id)
    fed = [[5, 6, 7], [8, 9, 10]]
    for j in range(3):
        kv.step(torch.tensor([fed[0][j], fed[1][j]]))
    # row 0 keeps all three tokens, row 1 only its first: two masked holes in its cache
    kv.retract([0, 2])
    kept = [fed[0], fed[1][:1]]
    nxt = [11, 12]
    logits = kv.step(torch.tensor(nxt))
    for row in (0, 1):
        expected = _fresh_logits(tiny_lm, prompts[row] + kept[row] + [nxt[row]])
        assert torch.allclose(logits[row], expected, atol=1e-5)
    # and the holes survive later forks and crops
    kv.fork([1, 1, 0])
    logits = kv.step(torch.tensor([13, 14, 15]))
    assert torch.allclose(logits[1], _fresh_logits(tiny_lm, prompts[1] + kept[1] + [nxt[1], 14]), atol=1e-5)
    assert torch.allclose(logits[2], _fresh_logits(tiny_lm, prompts[0] + kept[0] + [nxt[0], 15]), atol=1e-5)


def test_growing_cache_matches_fresh_forwards_through_growth_forks_and_crops(tiny_lm, monkeypatch):
    from transformers import DynamicCache

    from deal_chains.search import kv as kv_module

    prompts = [tiny_lm.format_prompt("hello world"), tiny_lm.format_prompt("abc")]
    grown = KVBatch(tiny_lm.model)
    assert all(type(layer).__name__ == "GrowingLayer" for layer in grown.cache.layers)
    monkeypatch.setattr(kv_module, "new_cache", lambda model: DynamicCache(config=model.config))
    plain = KVBatch(tiny_lm.model)  # transformers' own layers, for the same operations
    seqs = [list(p) for p in prompts]
    for kv in (grown, plain):
        kv.prefill(prompts, tiny_lm.pad_token_id)
    gen = torch.Generator().manual_seed(0)
    steps = kv_module.CACHE_HEADROOM + 20  # past the first buffer's room: at least one regrowth
    for j in range(steps):
        toks = torch.randint(3, 60, (len(seqs),), generator=gen)
        outs = [kv.step(toks) for kv in (grown, plain)]
        seqs = [s + [int(t)] for s, t in zip(seqs, toks)]
        assert torch.allclose(outs[0], outs[1], atol=1e-5)
        if j % 7 == 3:  # beams forked (a row copied twice), then a lookahead's tail cropped
            index = [1, 0, 0] if len(seqs) == 2 else [2, 0]
            for kv in (grown, plain):
                kv.fork(index)
            seqs = [list(seqs[i]) for i in index]
        if j % 11 == 5:
            for kv in (grown, plain):
                kv.crop(2)
            seqs = [s[:-2] for s in seqs]
    block = torch.randint(3, 60, (len(seqs), 3), generator=gen)
    logits = grown.extend(block)
    assert torch.allclose(logits, plain.extend(block), atol=1e-5)
    for row, seq in enumerate(seqs):
        expected = _fresh_logits(tiny_lm, seq + block[row].tolist())
        assert torch.allclose(logits[row, -1], expected, atol=1e-4)
    assert grown.length == plain.length
