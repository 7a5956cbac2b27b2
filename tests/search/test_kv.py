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
