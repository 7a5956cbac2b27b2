"""The shared prompt prefix (deal_chains.search.shared_prefix): rows that keep only their
generated tokens, attending to one copy of their prompt, give the logits each row's own
sequence gives, and a search gives the same answers with it as without it."""

from __future__ import annotations

import pytest
import torch

from deal_chains.search import kv as kv_mod
from deal_chains.search.kv import KVBatch
from deal_chains.search.shared_prefix import ATTENTION_NAME, supports_shared_prefix, using_shared_prefix


def _fresh_logits(lm, ids):
    with torch.no_grad():
        return lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_rows_share_their_prompt_and_match_fresh_forwards_through_forks_extends_retracts_and_crops(tiny_lm):
    prompts = [tiny_lm.format_prompt("hello world, a longer prompt"), tiny_lm.format_prompt("abc"),
               tiny_lm.format_prompt("third")]
    kv = KVBatch(tiny_lm.model)
    kv.prefill(prompts, tiny_lm.pad_token_id)
    assert kv.prefix is not None and kv.prefix.prompts == 3  # the prompts live outside the cache
    assert kv.length == max(map(len, prompts)) and kv.mask.shape == (3, kv.length)
    seqs = [list(p) for p in prompts]
    # uneven rows per prompt, a prompt with none left, repeats
    kv.fork([1, 0, 1, 1, 0])
    seqs = [list(seqs[i]) for i in (1, 0, 1, 1, 0)]
    logits = kv.step(torch.tensor([5, 6, 7, 8, 9]))
    for row, tok in enumerate([5, 6, 7, 8, 9]):
        seqs[row].append(tok)
        assert torch.allclose(logits[row], _fresh_logits(tiny_lm, seqs[row]), atol=1e-9)
    block = torch.tensor([[10, 11], [12, 13], [14, 15], [16, 17], [18, 19]])
    logits = kv.extend(block)
    for row in range(5):
        seqs[row] += block[row].tolist()
        assert torch.allclose(logits[row, -1], _fresh_logits(tiny_lm, seqs[row]), atol=1e-9)
    kv.retract([0, 1, 0, 2, 0])
    seqs = [s[: len(s) - k] for s, k in zip(seqs, [0, 1, 0, 2, 0])]
    kv.crop(0)
    kv.fork([4, 3, 0])
    seqs = [list(seqs[i]) for i in (4, 3, 0)]
    logits = kv.step(torch.tensor([20, 21, 22]))
    for row, tok in enumerate([20, 21, 22]):
        seqs[row].append(tok)
        assert torch.allclose(logits[row], _fresh_logits(tiny_lm, seqs[row]), atol=1e-9)
    kv.step(torch.tensor([1, 2, 3]))
    kv.crop(1)
    logits = kv.step(torch.tensor([23, 24, 25]))
    for row, tok in enumerate([23, 24, 25]):
        seqs[row].append(tok)
        assert torch.allclose(logits[row], _fresh_logits(tiny_lm, seqs[row]), atol=1e-9)


def test_a_search_gives_the_same_answers_with_and_without_the_shared_prefix(tiny_lm, monkeypatch):
    from deal_chains import DeALEngine
    from deal_chains.search.config import SearchConfig
    from rewards.keywords import KeywordCoverage

    prompts = ["Write about the sea and a boat.", "Hi", "Tell me one thing about cats, dogs and mice."]
    rewards = [[KeywordCoverage(["sea"])], [KeywordCoverage(["a"])], [KeywordCoverage(["cat", "dog"])]]
    config = SearchConfig(strategy="deal", top_k=3, beam=2, lookahead=3, max_new_tokens=12, n=2, returns=2)
    engine = DeALEngine(tiny_lm)
    shared = engine.generate(prompts, rewards, config)
    monkeypatch.setattr(kv_mod, "supports_shared_prefix", lambda model, check: False)
    plain = engine.generate(prompts, rewards, config)
    assert [r.token_ids for r in shared] == [r.token_ids for r in plain]
    assert [r.score for r in shared] == pytest.approx([r.score for r in plain], abs=1e-9)


def test_a_model_that_fails_the_check_keeps_the_plain_cache(tiny_lm):
    class Odd:  # a model object the check cannot run on
        config = tiny_lm.model.config

    assert supports_shared_prefix(Odd(), lambda model: 1 / 0) is False
    assert supports_shared_prefix(Odd(), lambda model: False) is False
    assert supports_shared_prefix(tiny_lm.model, kv_mod._same_logits_shared) is True


def test_the_models_attention_choice_is_restored_after_each_forward(tiny_lm):
    config = tiny_lm.model.config
    before = config._attn_implementation
    with pytest.raises(RuntimeError):
        with using_shared_prefix(tiny_lm.model):
            assert config._attn_implementation == ATTENTION_NAME
            raise RuntimeError("boom")
    assert config._attn_implementation == before


def test_a_forward_without_a_prefix_while_the_attention_is_switched_is_the_models_own(tiny_lm):
    # another caller of the same model in the meantime: padding masks still apply
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        own = tiny_lm.model(input_ids=ids, attention_mask=mask).logits
        with using_shared_prefix(tiny_lm.model):
            switched = tiny_lm.model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(own[:, 2:], switched[:, 2:], atol=1e-9)
