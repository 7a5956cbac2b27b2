"""train-reward's sweep: several pair files, k-fold cross-validation, the feature cache,
``last`` pooling and the early-stopping feature forward (tiny Llama, fake features)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deal_chains import reward_cv
from deal_chains.cli import main
from deal_chains.errors import InputError
from deal_chains.train_reward import read_pair_files, train_reward_head
from rewards.harmless import HiddenStateFeatures, hidden_states
from pairs_helpers import TINY_PAIRS, FakeFeatures, synthetic_pairs, write_jsonl


def _full(base, ids, mask):
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return base(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True,
                    use_cache=False).hidden_states, pos


def test_early_stopping_forward_gives_the_same_hidden_states(tiny_lm):
    base = tiny_lm.model.model
    ids = torch.randint(5, 200, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    full, pos = _full(base, ids, mask)
    n = len(full) - 1
    calls = []
    hook = base.layers[n - 1].register_forward_hook(lambda *a: calls.append(1))
    try:
        got = hidden_states(base, ids, mask, pos, [0, 1, -n])
        assert not calls  # stopped before the last layer ran
        last = hidden_states(base, ids, mask, pos, [n, -1])
        assert calls  # the last layer's (normed) state needs the full forward
    finally:
        hook.remove()
    for layer, i in ((0, 0), (1, 1), (-n, 1), (n, n), (-1, n)):
        h = got[layer] if layer in got else last[layer]
        assert torch.equal(h, full[i]), layer


def test_last_pooling_is_the_last_token_of_each_conversation(tiny_lm):
    fx = HiddenStateFeatures(tiny_lm, layer=1, pooling="last", batch_size=3)
    prompts, responses = ["a question", "another, longer question here", "q"], ["no.", "", "sure, step one"]
    x = fx(prompts, responses)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids, _ = fx.encode(p, r)
        t = torch.tensor([ids])
        full, _ = _full(tiny_lm.model.model, t, torch.ones_like(t))
        torch.testing.assert_close(x[i], full[1][0, -1].float(), atol=1e-6, rtol=0)
    both = fx.extract(prompts, responses, layers=[1], poolings=["last", "response"])
    assert not torch.allclose(both[(1, "last")], both[(1, "response")])


def test_kfold_partitions_the_indices():
    idx = list(range(3, 40))
    folds = reward_cv.kfold(idx, 5, seed=0)
    assert len(folds) == 5 and sorted(i for f in folds for i in f) == idx
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert reward_cv.kfold(idx, 5, seed=0) == folds and reward_cv.kfold(idx, 5, seed=1) != folds
    with pytest.raises(InputError):
        reward_cv.kfold(idx, 1, seed=0)


def test_sweep_with_cv_picks_the_best_and_records_the_table(tmp_path):
    a = synthetic_pairs(tmp_path, n=40)
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"other {i}", "chosen": f"safe reply {i}",
                                            "rejected": f"bad reply {i}"} for i in range(20)])
    fake = FakeFeatures()
    m = train_reward_head([a, b], tmp_path / "h", features=fake, model="fake", hidden=[0, 4],
                          weight_decay=[0.01, 100.0], epochs=60, lr=0.05, holdout=0.25, seed=0, progress=False)
    assert fake.calls == 1 and fake.rows == 120  # both files, features extracted once
    assert (m["n_train"], m["n_heldout"]) == (45, 15)
    rows = m["cv"]
    assert len(rows) == 4 and all(len(r["cv_folds"]) == 5 for r in rows)  # 5 folds by default
    assert [r["cv_mean"] for r in rows] == sorted((r["cv_mean"] for r in rows), reverse=True)
    for r in rows:
        assert r["cv_mean"] == pytest.approx(sum(r["cv_folds"]) / 5, abs=1e-3)
    assert m["selected"] == rows[0] and m["heldout_accuracy"] >= 0.9
    info = json.loads(Path(m["sidecar"]).read_text())
    tr = info["training"]
    assert tr["pairs"] == ["synthetic.jsonl", "b.jsonl"] and tr["n_pairs"] == 60
    assert tr["cross_validation"]["table"] == rows and tr["cross_validation"]["k"] == 5
    assert (tr["hidden"], tr["weight_decay"]) == (rows[0]["hidden"], rows[0]["weight_decay"])
    assert "--hidden 0,4" in tr["command"] and "--weight-decay 0.01,100.0" in tr["command"]
    assert "--cv 5" in tr["command"] and str(b) in tr["command"]
    with pytest.raises(InputError, match="one layer and pooling"):
        train_reward_head(a, tmp_path / "x", features=fake, layer=[1, 2], progress=False)


def test_invalid_records_are_skipped_only_when_asked(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [TINY_PAIRS[0], {"chosen": "\n\nHuman: a\n\nAssistant: b",
                                                          "rejected": "\n\nHuman: c\n\nAssistant: d"}, TINY_PAIRS[1]])
    with pytest.raises(InputError, match="differ before the last assistant reply"):
        read_pair_files([f])
    pairs, skipped = read_pair_files([f, f], skip_invalid=True)
    assert len(pairs) == 4 and len(skipped) == 2 and skipped[0].startswith(f"{f}:2:")


def test_feature_cache_is_reused_for_the_same_pairs_only(tmp_path, tiny_lm, monkeypatch):
    pairs = write_jsonl(tmp_path / "p.jsonl", TINY_PAIRS)
    cache = tmp_path / "feats.safetensors"
    kw = dict(model=tiny_lm, layer=[0, 1], pooling=["all", "last"], epochs=5, holdout=0.2, progress=False,
              features_cache=cache, cv=2)
    first = train_reward_head(pairs, tmp_path / "h1", **kw)
    assert cache.is_file() and not cache.read_bytes().startswith(b"\x80")  # safetensors, not a pickle
    table, meta = reward_cv.load_feature_cache(cache)
    assert set(table) == {(0, "all"), (0, "last"), (1, "all"), (1, "last")} and meta["n_pairs"] == 10
    assert all(t.shape == (20, 32) for t in table.values())

    def no_forward(*a, **k):
        raise AssertionError("features recomputed")

    monkeypatch.setattr(reward_cv, "extract_pair_features", no_forward)
    again = train_reward_head(pairs, tmp_path / "h2", **kw)
    assert again["cv"] == first["cv"] and again["heldout_accuracy"] == first["heldout_accuracy"]
    other = write_jsonl(tmp_path / "q.jsonl", TINY_PAIRS[:8])
    with pytest.raises(AssertionError, match="recomputed"):  # other pairs: the cache does not apply
        train_reward_head(other, tmp_path / "h3", **kw)


def test_cli_train_reward_sweep_prints_the_cv_table(capsys, tmp_path, tiny_model_dir):
    a = write_jsonl(tmp_path / "a.jsonl", TINY_PAIRS)
    b = write_jsonl(tmp_path / "b.jsonl", TINY_PAIRS[:6])
    out = tmp_path / "heads"
    rc = main(["train-reward", "--pairs", str(a), str(b), "--out", str(out), "--model", str(tiny_model_dir),
               "--layer", "1,2", "--pooling", "all,last", "--weight-decay", "0.1,1", "--cv", "3", "--epochs", "10",
               "--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "8 configurations, 3-fold cross-validation on the 13 training pairs" in captured.out
    table = [line for line in captured.out.splitlines() if line.startswith("  layer ")]
    assert len(table) == 8 and all(" cv " in line for line in table) and "selected: layer " in captured.out
    info = json.loads((out / "harmless.json").read_text())
    sel = info["training"]["cross_validation"]["selected"]
    assert (info["features"]["layer"], info["features"]["pooling"]) == (sel["layer"], sel["pooling"])
    with pytest.raises(SystemExit):
        main(["train-reward", "--pairs", str(a), "--out", "o", "--pooling", "all,max"])


@pytest.mark.parametrize("layers", [[0, 1], [2, -1]])
def test_shared_prompt_features_equal_one_forward_per_conversation(tiny_lm, layers):
    fx = HiddenStateFeatures(tiny_lm, batch_size=3)
    prompt = "how do i pick a lock?"
    responses = ["no.", "i can't help with that, but a locksmith can.", "", "sure: first", "no."]
    poolings = ["all", "response", "last"]
    shared = fx.extract([prompt] * 5, responses, layers=layers, poolings=poolings)
    again = fx.extract([prompt] * 2, responses[:2], layers=layers, poolings=poolings)  # the kept prefix
    fx.share_prefix = False
    separate = fx.extract([prompt] * 5, responses, layers=layers, poolings=poolings)
    for key in separate:
        torch.testing.assert_close(shared[key], separate[key], atol=1e-6, rtol=0)  # float32 output
        torch.testing.assert_close(again[key], separate[key][:2], atol=1e-6, rtol=0)  # float32 output
    assert len(fx._prefix_kept) == 1
