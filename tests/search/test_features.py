"""Reward features from the search's own forwards (search/features.py): the hidden states kept
per cache row follow forks, crops and retracts exactly, and a search scoring them agrees with
the text path on the same tokens, on the tiny random-weight Llama."""

from __future__ import annotations

import pytest
import torch

from deal_chains.search import features as features_mod
from deal_chains.search import tree
from deal_chains.search.features import ResponseStates, SearchFeatures
from deal_chains.search.kv import KVBatch
from deal_chains.search.scoring import score_texts
from deal_chains.search.state import Group, TreeParams
from rewards import RewardContext
from rewards.harmless import HarmlessReward, HiddenStateFeatures, build_head, save_head
from search_fixtures import PROMPTS, tree_state

LAYER = 1  # the tiny model has 2 layers: layer 1 is the first block's output (not normed)


def _reference(lm, ids: list[int], n_prompt: int, layer: int = LAYER) -> torch.Tensor:
    """Mean of ``layer``'s states over the response positions of one no-cache forward."""
    with torch.no_grad():
        hs = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[layer]
    return hs[0, n_prompt:].float().mean(0)


def test_kept_states_follow_forks_crops_and_retracts(tiny_lm):
    prompts = [tiny_lm.format_prompt("hello world"), tiny_lm.format_prompt("abc")]
    kv = KVBatch(tiny_lm.model)
    kv.prefill(prompts, tiny_lm.pad_token_id)  # left-padded: the prompts differ in length
    states = ResponseStates(kv, LAYER)
    seqs: list[list[int]] = [[], []]
    rows = [0, 1]  # the prompt each cache row continues

    def feed(tokens):
        kv.step(torch.tensor(tokens))
        for s, t in zip(seqs, tokens):
            s.append(t)

    feed([5, 8])
    feed([6, 9])
    kv.fork([0, 0, 1, 1, 1])  # copies, as the lookahead's candidates
    seqs, rows = [list(seqs[i]) for i in (0, 0, 1, 1, 1)], [rows[i] for i in (0, 0, 1, 1, 1)]
    for j in range(3):
        feed([20 + j, 30 + j, 40 + j, 50 + j, 60 + j])
    kv.crop(1)  # the uncommitted last position of every row
    seqs = [s[:-1] for s in seqs]
    kv.fork([4, 1, 2])
    seqs, rows = [seqs[i] for i in (4, 1, 2)], [rows[i] for i in (4, 1, 2)]
    kv.retract([0, 2, 1])  # rows commit different lengths: masked holes
    seqs = [s[: len(s) - b] for s, b in zip(seqs, [0, 2, 1])]
    feed([70, 71, 72])
    assert states.counts() == [len(s) for s in seqs]
    for n in (1, 3):  # a prefix of the live tokens, and all of them
        n = [min(n, len(s)) for s in seqs] if n == 1 else [len(s) for s in seqs]
        pooled = states.pooled(range(3), n)
        for r, (s, k) in enumerate(zip(seqs, n)):
            expected = _reference(tiny_lm, prompts[rows[r]] + s[:k], len(prompts[rows[r]]))
            assert torch.allclose(pooled[r], expected, atol=1e-5)


def test_no_states_are_kept_for_text_rewards(tiny_lm):
    from search_fixtures import CharShare

    state = _state(tiny_lm, [CharShare("e")], PROMPTS[:2])
    assert SearchFeatures.attach(state) is None and state.kv.taps == []


@pytest.fixture(scope="module")
def ascii_lm(tmp_path_factory):
    """The tiny model writing ASCII only (the other bytes' and the special tokens' output rows zeroed, so their logit 0
    loses to the best of ~100 large ones): its text decodes and re-encodes to the same tokens,
    as a real model's usually does, so the text path sees the tokens the search fed."""
    from deal_chains.models import load_model
    from tiny import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny-ascii"))
    lm = load_model(str(path), device="cpu", dtype="float64")
    eos = lm.tokenizer.eos_token_id
    special = set(lm.tokenizer.all_special_ids) - {eos}
    with torch.no_grad():
        for i in range(lm.model.config.vocab_size):
            if i in special or (i != eos and not lm.tokenizer.decode([i]).isascii()):
                lm.model.lm_head.weight[i] = 0.0
    return lm


@pytest.fixture
def head_path(tmp_path, tiny_lm):
    """A random linear head on the tiny model's layer-1 response features, scaled so its
    scores spread over (0, 1) and differences between candidates matter."""
    torch.manual_seed(0)
    head = build_head(tiny_lm.model.config.hidden_size)
    with torch.no_grad():
        head.net[0].weight.mul_(100.0)
    weights, _ = save_head(head, tmp_path / "tiny-head", {
        "name": "harmless", "features": {"layer": LAYER, "pooling": "response",
                                         "max_length": 256}})
    return weights


def _state(lm, rewards, prompts, **kw):
    params = TreeParams(**{**dict(top_k=3, beam=2, lookahead=3, commit=3, lam=4.0, max_new_tokens=12), **kw})
    return tree_state(lm, params, rewards, prompts)


def _commit_first_token(state, g, cands, rollout, idxs, keep_live):
    """A stand-in for commit by reward that always disagrees: each group's first kept beam
    commits one token, the others their whole block, so rows are retracted every step."""
    i = keep_live[0]
    parent = state.rows.tokens[cands.parent[i]]
    if len(cands.tokens[i]) - len(parent) > 1:
        cands.tokens[i] = parent + rollout.tokens[i][:1]
        cands.logprob[i] = state.rows.logprob[cands.parent[i]] + rollout.logprobs[i][0]


def _search(lm, reward, prompts, **kw):
    params = TreeParams(**{**dict(top_k=3, beam=2, lookahead=3, commit=3, lam=4.0, max_new_tokens=12), **kw})
    kv = KVBatch(lm.model)
    logits = kv.prefill([lm.format_prompt(p) for p in prompts], lm.pad_token_id)
    groups = [Group(prompt_row=i, rewards=[reward], context=RewardContext(prompt=p))
              for i, p in enumerate(prompts)]
    tree.run_tree_search(kv, logits, groups, params, lm.eos_token_ids, lm.decode)
    return groups


@pytest.mark.parametrize("end_in_lookahead", [False, True])
def test_search_scores_from_its_states_equal_a_fresh_forward_and_the_text_path(ascii_lm, head_path, monkeypatch,
                                                                              end_in_lookahead):
    lm = ascii_lm
    reward = HarmlessReward.for_model(lm, head=head_path)
    assert reward.search_features.model is lm.model
    seen = []
    original = SearchFeatures.score

    def record(self, state, group, rows, tokens, final):
        out = original(self, state, group, rows, tokens, final)
        counts = next(iter(self.taps.values())).counts()
        for r, t, (total, _) in zip(rows, tokens, out):
            seen.append((group, list(t[: counts[r]]), total))
        return out

    monkeypatch.setattr(SearchFeatures, "score", record)
    monkeypatch.setattr(tree, "_commit_by_reward", _commit_first_token)
    retracted = []
    monkeypatch.setattr(KVBatch, "retract", _spy(KVBatch.retract, retracted))
    exits = []
    monkeypatch.setattr(tree, "add_exit", lambda out, *a, real=tree.add_exit: exits.append(a) or real(out, *a))
    prompts = PROMPTS[:3]
    _search(lm, reward, prompts, commit_by_reward=True, lookahead=4, commit=4, max_new_tokens=16,
            end_in_lookahead=end_in_lookahead)
    # rows were retracted along the way; with end_in_lookahead ends inside a rollout were
    # scored from their rollout row's states, cut to their own tokens (and end the search early)
    assert bool(exits) == end_in_lookahead
    assert end_in_lookahead or any(any(back) for back in retracted)
    assert len(seen) > 15 and max(len(t) for _, t, _ in seen) > 3  # scored after a step or more
    fx = HiddenStateFeatures(lm, layer=LAYER)
    for gi, tokens, total in seen:
        ids = lm.format_prompt(prompts[gi])
        expected = reward.score_features(_reference(lm, ids + tokens, len(ids)).unsqueeze(0))[0]
        assert total == pytest.approx(expected, abs=1e-6)
        text = lm.decode(tokens)
        assert fx.encode(prompts[gi], text)[0] == ids + tokens  # the text path reads the same tokens
        assert total == pytest.approx(reward.score([text], RewardContext(prompt=prompts[gi]))[0], abs=1e-6)


def _spy(fn, calls):
    def wrapped(self, per_row):
        calls.append(list(per_row))
        return fn(self, per_row)
    return wrapped


def test_feature_search_gives_the_text_paths_answer_where_they_agree(ascii_lm, head_path, monkeypatch):
    # one step over the whole budget: every scored token was fed, so the two paths score
    # the same tokens (elsewhere the feature path leaves out the lookahead's unfed last token)
    served = HarmlessReward.for_model(ascii_lm, head=head_path)
    fx = HiddenStateFeatures(ascii_lm, layer=LAYER)
    text_only = HarmlessReward(lambda p, r: fx(p, r), head=head_path)  # a feature function: not served
    assert text_only.search_features is None
    kw = dict(top_k=4, beam=2, lookahead=8, commit=8, max_new_tokens=8)
    calls = []
    original = SearchFeatures.score
    monkeypatch.setattr(SearchFeatures, "score", lambda self, *a: calls.append(1) or original(self, *a))
    by_features = _search(ascii_lm, served, PROMPTS, **kw)
    assert calls  # the served search scored from its states
    by_text = _search(ascii_lm, text_only, PROMPTS, **kw)
    extracted = []
    monkeypatch.setattr(HiddenStateFeatures, "extract", lambda self, *a, **k: extracted.append(1))
    # the final ranking reads the scores the search gave its finished answers: no forward
    finished = [(g, [ascii_lm.decode(h.tokens) for h in g.finished]) for g in by_features if g.finished]
    assert finished
    for g, texts in finished:
        score_texts(g, texts, [True] * len(texts))
    assert not extracted
    for a, b in zip(by_features, by_text):
        assert [h.tokens for h in a.finished + a.unfinished] == [h.tokens for h in b.finished + b.unfinished]
        assert [h.score for h in a.finished + a.unfinished] == pytest.approx(
            [h.score for h in b.finished + b.unfinished], abs=1e-6)


def test_unserved_requests(tiny_lm, head_path):
    kv = KVBatch(tiny_lm.model)
    reward = HarmlessReward.for_model(tiny_lm, head=head_path)
    req = reward.search_features
    assert features_mod.serves(req, kv)
    assert not features_mod.serves(type(req)(model=object(), layer=LAYER), kv)  # another model
    assert not features_mod.serves(type(req)(model=tiny_lm.model, layer=LAYER, pooling="all"), kv)
    assert not features_mod.serves(type(req)(model=tiny_lm.model, layer=5), kv)  # no such layer
