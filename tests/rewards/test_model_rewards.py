"""Model-backed rewards: ClassifierReward, RewardModelReward, JudgeReward and their safe
loader, on tiny random-weight models built here (nothing is downloaded)."""

from __future__ import annotations

import copy
import doctest
import importlib
import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import rewards
from rewards import RewardContext
from rewards._hf import ScoreCache, load_sequence_classifier
from rewards.classifier import ClassifierReward
from rewards.judge import JudgeReward, render_question
from rewards.reward_model import RewardModelReward

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "kind", "awful", "a", "the",
         "dog", "cat", "is", "good", "bad", "how", "do", "i", "help", "me", "please", "no", "yes", "."]
TEXTS = ["you are kind", "you are awful", "the dog is good", "a cat", "", "please help me .",
         "how do i help the dog . you are kind"]


# ----------------------------------------------------------------------------- fixtures


def _bert_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})


def _bert(num_labels: int = 2, seed: int = 0, **extra):
    from transformers import BertConfig, BertForSequenceClassification

    labels = {} if num_labels != 2 else {"id2label": {0: "safe", 1: "toxic"},
                                         "label2id": {"safe": 0, "toxic": 1}}
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=num_labels, initializer_range=0.2,
                        **labels, **extra)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # sharper outputs than the default init: scores well away from 0.5
        model.classifier.weight.mul_(3.0)
    return model.eval()


def _save(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return _save(_bert(), _bert_tokenizer(), tmp_path_factory.mktemp("tiny-bert-cls"))


@pytest.fixture(scope="module")
def bert_rm_dir(tmp_path_factory) -> Path:
    return _save(_bert(num_labels=1, seed=1), _bert_tokenizer(), tmp_path_factory.mktemp("tiny-bert-rm"))


@pytest.fixture(scope="module")
def llama_rm_dir(tmp_path_factory) -> Path:
    """A decoder reward model (scalar head) with the chat-template byte tokenizer of tiny.py."""
    from tiny import build_tokenizer
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = build_tokenizer()
    torch.manual_seed(2)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                         num_labels=1)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.mul_(20.0)
    return _save(model, tok, tmp_path_factory.mktemp("tiny-llama-rm"))


@pytest.fixture
def count_forwards():
    """count_forwards(model) -> calls, a list of the batch sizes of the model's forwards
    (the hooks are removed after the test: models are shared through the loader cache)."""
    handles = []

    def install(model):
        calls: list[int] = []
        handles.append(model.register_forward_pre_hook(
            lambda mod, args, kwargs: calls.append(int(kwargs["input_ids"].shape[0])), with_kwargs=True))
        return calls

    yield install
    for h in handles:
        h.remove()


def _manual_cls_probs(model, tokenizer, text, text_pair=None):
    enc = tokenizer(text, text_pair, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**enc).logits.double(), -1)[0].tolist()


# ----------------------------------------------------------------------------- ClassifierReward


def test_classifier_scores_are_probabilities_and_minimize_is_complement(bert_dir):
    toxic = ClassifierReward(str(bert_dir), "toxic", dtype="float64")
    not_toxic = ClassifierReward(str(bert_dir), "toxic", goal="minimize", dtype="float64")
    a = toxic.score(TEXTS, RewardContext())
    b = not_toxic.score(TEXTS, RewardContext())
    assert len(a) == len(TEXTS) and all(0.0 <= s <= 1.0 for s in a)
    assert b == pytest.approx([1.0 - s for s in a], abs=1e-12)
    assert max(a) - min(a) > 0.05  # the texts really get different scores
    assert toxic.bounds == (0.0, 1.0) and toxic.name == "classifier" and not toxic.terminal
    assert isinstance(toxic, rewards.Reward)
    # the number is P(toxic) from the model's own softmax
    for text in ("you are awful", ""):
        expected = _manual_cls_probs(toxic.model, toxic.tokenizer, text)[1]
        assert toxic.score([text])[0] == pytest.approx(expected, abs=1e-12)


def test_classifier_label_lookup(bert_dir):
    by_name = ClassifierReward(bert_dir, "toxic", dtype="float64")
    for label in ("TOXIC", " Toxic ", 1, "1"):
        r = ClassifierReward(bert_dir, label, dtype="float64")
        assert r.label_index == 1 and r.label == "toxic"
        assert r.score(TEXTS[:3]) == by_name.score(TEXTS[:3])
    safe = ClassifierReward(bert_dir, "safe", dtype="float64")
    assert safe.label_index == 0
    assert safe.score(TEXTS) == pytest.approx([1 - s for s in by_name.score(TEXTS)], abs=1e-12)
    with pytest.raises(ValueError, match=r"'spam' is not one of the model's labels: 0='safe', 1='toxic'"):
        ClassifierReward(bert_dir, "spam")
    with pytest.raises(ValueError, match="out of range"):
        ClassifierReward(bert_dir, 2)
    with pytest.raises(TypeError):
        ClassifierReward(bert_dir, True)
    with pytest.raises(ValueError, match="goal"):
        ClassifierReward(bert_dir, "toxic", goal="max")


def test_classifier_batching_equals_one_by_one(bert_dir):
    batched = ClassifierReward(bert_dir, "toxic", batch_size=3, dtype="float64")
    single = ClassifierReward(bert_dir, "toxic", batch_size=1, dtype="float64")
    one_by_one = [single.score([t])[0] for t in TEXTS]
    assert batched.score(TEXTS) == pytest.approx(one_by_one, abs=1e-12)


def test_classifier_cache_avoids_recomputation(bert_dir, count_forwards):
    r = ClassifierReward(bert_dir, "toxic", batch_size=2, dtype="float64")
    calls = count_forwards(r.model)
    first = r.score(["you are kind", "a cat", "you are kind", "the dog is good"])
    assert calls == [2, 1]  # 3 distinct texts in chunks of 2; the repeat is scored once
    assert first[0] == first[2]
    assert r.score(["a cat", "you are kind"]) == [first[1], first[0]]
    assert calls == [2, 1]  # all cached
    r.score(["a cat", "you are awful"])
    assert calls == [2, 1, 1]  # only the new text
    r.clear_cache()
    r.score(["a cat"])
    assert calls == [2, 1, 1, 1]
    assert r.score([]) == []


def test_score_cache_is_lru():
    cache = ScoreCache(2)
    cache.put("a", 0.1)
    cache.put("b", 0.2)
    assert cache.get("a") == 0.1  # "a" now most recent
    cache.put("c", 0.3)
    assert "b" not in cache and "a" in cache and "c" in cache and len(cache) == 2


def test_classifier_truncates_to_max_length(bert_dir):
    long_text = " ".join(["the dog is good"] * 40)  # 160 words > 64 positions of the tiny model
    capped = ClassifierReward(bert_dir, "toxic", dtype="float64")  # 512 capped to the model's 64
    assert capped.max_length == 64
    assert 0.0 <= capped.score([long_text])[0] <= 1.0
    short = ClassifierReward(bert_dir, "toxic", max_length=6, dtype="float64")
    enc = short.tokenizer("the dog is good you", truncation=True, max_length=6)
    expected = _manual_cls_probs(short.model, short.tokenizer, "the dog is good")[1]  # [CLS] 4 words [SEP]
    assert len(enc["input_ids"]) == 6
    assert short.score(["the dog is good you are kind"])[0] == pytest.approx(expected, abs=1e-12)


def test_classifier_include_prompt_scores_pairs(bert_dir):
    plain = ClassifierReward(bert_dir, "toxic", dtype="float64")
    paired = ClassifierReward(bert_dir, "toxic", include_prompt=True, dtype="float64")
    assert paired.pair_input and not plain.pair_input
    ctx_a, ctx_b = RewardContext(prompt="please help me"), RewardContext(prompt="you are awful")
    a = paired.score(["you are kind", "a cat"], ctx_a)
    b = paired.score(["you are kind", "a cat"], ctx_b)
    assert a != b  # the prompt is part of the input (and of the cache key)
    assert a != plain.score(["you are kind", "a cat"])
    expected = _manual_cls_probs(paired.model, paired.tokenizer, "please help me", "you are kind")[1]
    assert a[0] == pytest.approx(expected, abs=1e-12)
    assert paired.score(["you are kind"], ctx_a) == [a[0]]  # from the (prompt, text) cache


def test_classifier_single_logit_without_pairs_uses_sigmoid_and_newline(llama_rm_dir):
    """A decoder with one logit: sigmoid of it; its tokenizer has no pair format, so the
    prompt goes in as ``prompt + "\\n" + text``."""
    joined = ClassifierReward(llama_rm_dir, 0, include_prompt=True, dtype="float64")
    plain = ClassifierReward(llama_rm_dir, "LABEL_0", dtype="float64")
    assert joined.activation == "sigmoid" and not joined.pair_input
    got = joined.score(["Sure, here it is.", ""], RewardContext(prompt="Help me"))
    assert got == pytest.approx(plain.score(["Help me\nSure, here it is.", "Help me\n"]), abs=1e-12)
    ids = plain.tokenizer("a reply", return_tensors="pt")
    with torch.no_grad():
        logit = plain.model(**ids).logits[0, 0].item()
    assert plain.score(["a reply"])[0] == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-12)
    assert ClassifierReward(llama_rm_dir, 0, goal="minimize", dtype="float64").score(["a reply"])[0] == \
        pytest.approx(1 - plain.score(["a reply"])[0], abs=1e-12)


def test_classifier_multi_label_uses_sigmoid_per_label():
    model = _bert(num_labels=3, problem_type="multi_label_classification",
                  id2label={0: "insult", 1: "threat", 2: "obscene"}, label2id={"insult": 0, "threat": 1,
                                                                               "obscene": 2})
    tok = _bert_tokenizer()
    r = ClassifierReward((model, tok), "threat")
    assert r.activation == "sigmoid"
    with torch.no_grad():
        logit = model(**tok("you are awful", return_tensors="pt")).logits[0, 1].item()
    assert r.score(["you are awful"])[0] == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-6)


# ----------------------------------------------------------------------------- loading


def test_loader_shares_models_and_accepts_loaded_pairs(bert_dir):
    m1, t1 = load_sequence_classifier(bert_dir, dtype="float64")
    m2, _ = load_sequence_classifier(str(bert_dir), dtype="float64")
    assert m1 is m2 and not m1.training
    assert ClassifierReward(bert_dir, "toxic", dtype="float64").model is m1
    m3, _ = load_sequence_classifier(bert_dir)  # another dtype: another model
    assert m3 is not m1 and m3.dtype == torch.float32
    model, tok = _bert(), _bert_tokenizer()
    model.train()
    assert load_sequence_classifier((model, tok)) == (model, tok) and not model.training
    with pytest.raises(TypeError):
        load_sequence_classifier(("not a model", tok))


def test_loader_is_safe_by_default(bert_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    seen = {}
    real = AutoModelForSequenceClassification.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", spy)
    copy_dir = tmp_path / "copy"
    _save(_bert(), _bert_tokenizer(), copy_dir)
    load_sequence_classifier(copy_dir)
    assert seen["use_safetensors"] is True and seen["trust_remote_code"] is False
    assert seen["local_files_only"] is True


def test_loader_errors(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="does not exist"):
        ClassifierReward(str(tmp_path / "missing"), "toxic")
    with pytest.raises(ValueError, match="does not exist"):
        load_sequence_classifier("./definitely/not/here")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        load_sequence_classifier(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_sequence_classifier(empty)

    # pickle weights only: refused, never unpickled
    model, tok = _bert(), _bert_tokenizer()
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    model.config.save_pretrained(pickled)
    tok.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"no safetensors weights \(found only pytorch_model.bin"):
        ClassifierReward(pickled, "toxic")

    # a causal LM is not a classifier (transformers would bolt on a random head)
    with pytest.raises(ValueError, match="not a sequence-classification model.*LlamaForCausalLM"):
        ClassifierReward(str(tiny_model_dir), "toxic")
    with pytest.raises(ValueError, match="not a sequence-classification model"):
        RewardModelReward(str(tiny_model_dir))

    # no architecture named and no head weights: refused for the missing weights
    from transformers import BertModel

    bare = tmp_path / "bare"
    BertModel(model.config).save_pretrained(bare, safe_serialization=True)
    tok.save_pretrained(bare)
    config = json.loads((bare / "config.json").read_text())
    config.pop("architectures", None)
    (bare / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="lacks weights for classifier"):
        load_sequence_classifier(bare)


# ----------------------------------------------------------------------------- RewardModelReward


def test_reward_model_requires_a_scalar_head(bert_dir):
    with pytest.raises(ValueError, match=r"num_labels == 1.*2 labels"):
        RewardModelReward(bert_dir)


def test_reward_model_normalisation_modes(llama_rm_dir):
    ctx = RewardContext(prompt="How are you?")
    texts = ["Fine, thanks!", "Go away.", "", "I am a language model, so I have no feelings."]
    rm = RewardModelReward(llama_rm_dir, dtype="float64")
    raw = rm.raw(texts, ctx)
    assert len(set(raw)) == len(raw)
    assert rm.bounds == (0.0, 1.0)
    assert rm.score(texts, ctx) == pytest.approx([1 / (1 + math.exp(-r)) for r in raw], abs=1e-12)
    scaled = RewardModelReward(llama_rm_dir, scale=2.0, dtype="float64")
    assert scaled.score(texts, ctx) == pytest.approx([1 / (1 + math.exp(-r / 2)) for r in raw], abs=1e-12)
    lo, hi = min(raw), max(raw)
    linear = RewardModelReward(llama_rm_dir, normalize=(lo, hi), dtype="float64")
    got = linear.score(texts, ctx)
    assert got == pytest.approx([(r - lo) / (hi - lo) for r in raw], abs=1e-9)
    assert min(got) == pytest.approx(0.0, abs=1e-9) and max(got) == pytest.approx(1.0, abs=1e-9)
    clipped = RewardModelReward(llama_rm_dir, normalize=(hi + 1, hi + 2), dtype="float64")
    assert clipped.score(texts, ctx) == [0.0] * len(texts)
    none = RewardModelReward(llama_rm_dir, normalize="none", dtype="float64")
    assert none.bounds == (-10.0, 10.0)
    assert none.score(texts, ctx) == pytest.approx([max(-10, min(10, r)) for r in raw], abs=1e-12)
    tiny_scale = RewardModelReward(llama_rm_dir, normalize="none", scale=1e-6, dtype="float64")
    assert {abs(s) for s in tiny_scale.score(texts, ctx)} == {10.0}  # clipped to the bounds
    for bad in ("tanh", (1.0, 1.0), (2.0, 1.0), (0.0, float("inf")), ("a", "b"), (1.0,)):
        with pytest.raises(ValueError, match="normalize"):
            RewardModelReward(llama_rm_dir, normalize=bad)
    with pytest.raises(ValueError, match="scale"):
        RewardModelReward(llama_rm_dir, scale=0)


def test_reward_model_formats_with_the_chat_template(llama_rm_dir):
    rm = RewardModelReward(llama_rm_dir, dtype="float64")
    assert rm.use_chat_template
    rendered = rm.format("Hi {text}", "Hello {0}!")
    assert rendered == "<|im_start|>user\nHi {text}<|im_end|>\n<|im_start|>assistant\nHello {0}!<|im_end|>\n"
    ids = rm.encode("Hi", "Hello")
    assert ids == rm.tokenizer(rm.format("Hi", "Hello"), add_special_tokens=False)["input_ids"]
    # the raw reward is the model's own output on exactly those tokens
    with torch.no_grad():
        expected = rm.model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    assert rm.raw(["Hello"], RewardContext(prompt="Hi"))[0] == pytest.approx(expected, abs=1e-12)

    plain = RewardModelReward(llama_rm_dir, chat_template=False, dtype="float64")
    assert not plain.use_chat_template and plain.format("Hi", "Hello") == "Hi\n\nHello"
    alone = RewardModelReward(llama_rm_dir, include_prompt=False, dtype="float64")
    assert alone.format("Hi", "Hello") == "Hello"
    a = RewardContext(prompt="Say something nice.")
    b = RewardContext(prompt="Say something rude.")
    assert rm.score(["You are great."], a) != rm.score(["You are great."], b)
    assert rm.score(["You are great."], a) != plain.score(["You are great."], a)
    assert alone.score(["You are great."], a) == alone.score(["You are great."], b)


def test_reward_model_plain_encoder_and_batching(bert_rm_dir, llama_rm_dir):
    texts = ["you are kind", "", "the dog is good . you are awful", "a cat", "please help me ."]
    ctx = RewardContext(prompt="how do i help")
    for path in (bert_rm_dir, llama_rm_dir):
        batched = RewardModelReward(path, batch_size=3, dtype="float64")
        single = RewardModelReward(path, batch_size=1, dtype="float64")
        assert batched.score(texts, ctx) == pytest.approx([single.score([t], ctx)[0] for t in texts], abs=1e-12)
    bert = RewardModelReward(bert_rm_dir, dtype="float64")
    assert not bert.use_chat_template
    enc = bert.tokenizer("how do i help\n\nyou are kind", return_tensors="pt")
    with torch.no_grad():
        expected = bert.model(**enc).logits[0, 0].item()
    assert bert.raw(["you are kind"], ctx)[0] == pytest.approx(expected, abs=1e-12)


def test_reward_model_keeps_the_end_of_long_inputs(bert_rm_dir, llama_rm_dir):
    bert = RewardModelReward(bert_rm_dir, max_length=8, dtype="float64")
    full = RewardModelReward(bert_rm_dir, dtype="float64").encode("how do i help the dog", "you are kind")
    cut = bert.encode("how do i help the dog", "you are kind")
    assert len(full) > 8 and len(cut) == 8
    assert cut[0] == bert.tokenizer.cls_token_id and cut[1:] == full[-7:]
    llama = RewardModelReward(llama_rm_dir, max_length=10, dtype="float64")
    ids = llama.encode("A long question about dogs", "a long answer about cats")
    # the leading special token (here the template's <|im_start|>) stays, then the end
    assert len(ids) == 10 and llama.tokenizer.decode(ids) == "<|im_start|>ut cats<|im_end|>\n"


def test_reward_model_cache(llama_rm_dir, count_forwards):
    rm = RewardModelReward(llama_rm_dir, batch_size=4, dtype="float64")
    calls = count_forwards(rm.model)
    ctx = RewardContext(prompt="Q")
    s = rm.score(["a", "b", "a"], ctx)
    assert calls == [2] and s[0] == s[2]
    rm.score(["b", "a"], ctx)
    assert calls == [2]
    rm.score(["a"], RewardContext(prompt="another prompt"))  # keyed by (prompt, text)
    assert calls == [2, 1]


# ----------------------------------------------------------------------------- JudgeReward


def _hand_judge(lm, question: str) -> float:
    """P(yes) / (P(yes) + P(no)) from the model's next-token distribution, by hand."""
    tok = lm.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                  tokenize=True, return_dict=False)
    with torch.no_grad():
        probs = torch.softmax(lm.model(input_ids=torch.tensor([list(ids)])).logits[0, -1].double(), -1)
    yes = {tok.convert_tokens_to_ids(c) for c in "yY"}
    no = {tok.convert_tokens_to_ids(c) for c in "nN"}
    p_yes = sum(probs[i].item() for i in yes)
    p_no = sum(probs[i].item() for i in no)
    return p_yes / (p_yes + p_no)


def test_judge_matches_a_hand_computation(tiny_lm):
    judge = JudgeReward.from_loaded(tiny_lm)
    tok = tiny_lm.tokenizer
    # byte-level vocabulary: "yes"/"Yes" start with y/Y; " yes" and " no" both start with a
    # space, which tells yes from no nothing and is dropped from both sides
    assert sorted(judge.yes_ids) == sorted(tok.convert_tokens_to_ids(c) for c in "yY")
    assert sorted(judge.no_ids) == sorted(tok.convert_tokens_to_ids(c) for c in "nN")
    ctx = RewardContext(prompt="How do I bake bread?")
    got = judge.score(["Mix flour, water and yeast, then bake.", ""], ctx)
    assert all(0.0 < s < 1.0 for s in got)
    question = ("Is the following response helpful and harmless? Answer yes or no.\n\n"
                "Request: How do I bake bread?\n\nResponse: Mix flour, water and yeast, then bake.")
    assert got[0] == pytest.approx(_hand_judge(tiny_lm, question), abs=1e-9)
    assert judge.bounds == (0.0, 1.0) and judge.name == "judge"


def test_judge_batching_equals_one_by_one(tiny_lm):
    texts = ["Yes.", "No way, that is dangerous and I will not help with it at all.", "", "Sure!",
             "Here are the steps: first, preheat the oven."]
    ctx = RewardContext(prompt="Tell me something.")
    batched = JudgeReward.from_loaded(tiny_lm, "Q: {prompt}\nA: {text}\nGood?", batch_size=3)
    single = JudgeReward.from_loaded(tiny_lm, "Q: {prompt}\nA: {text}\nGood?", batch_size=1)
    assert batched.score(texts, ctx) == pytest.approx([single.score([t], ctx)[0] for t in texts], abs=1e-9)


def test_judge_placeholders_are_not_str_format(tiny_lm):
    assert render_question("Q {prompt} / {text} {0} {}", "P{text}", "T{prompt}{0}") == \
        "Q P{text} / T{prompt}{0} {0} {}"
    judge = JudgeReward.from_loaded(tiny_lm, "Rate {text} for {prompt}.")
    ids = judge.encode("my {text}", "{0} and {prompt} and {x!r}")
    assert "Rate {0} and {prompt} and {x!r} for my {text}." in tiny_lm.tokenizer.decode(ids)
    scores = judge.score(["{0}", "{prompt}", "{", "}"], RewardContext(prompt="{text}"))
    assert all(0.0 < s < 1.0 for s in scores)


def test_judge_cache_and_lock(tiny_lm, count_forwards):
    class CountingLock:
        def __init__(self):
            self.entered = 0
            self._lock = threading.RLock()

        def __enter__(self):
            self.entered += 1
            return self._lock.__enter__()

        def __exit__(self, *exc):
            return self._lock.__exit__(*exc)

    class Loaded:  # any object with .model/.tokenizer (and optionally .lock) will do
        model, tokenizer, lock = tiny_lm.model, tiny_lm.tokenizer, CountingLock()

    loaded = Loaded()
    judge = JudgeReward.from_loaded(loaded, batch_size=8)
    calls = count_forwards(tiny_lm.model)
    ctx = RewardContext(prompt="p")
    first = judge.score(["a", "b", "a"], ctx)
    assert calls == [2] and loaded.lock.entered == 1 and first[0] == first[2]
    assert judge.score(["b", "a"], ctx) == [first[1], first[0]]
    assert calls == [2]
    judge.score(["a"], RewardContext(prompt="q"))
    assert calls == [2, 1] and loaded.lock.entered == 2


def test_judge_without_chat_template_and_with_system(tiny_lm):
    tok = copy.deepcopy(tiny_lm.tokenizer)
    tok.chat_template = None
    plain = JudgeReward(tiny_lm.model, tok, "Is {text} ok?", system="Be strict.")
    assert not plain.has_chat_template
    assert tok.decode(plain.encode("", "x")) == "Be strict.\n\nIs x ok?\nAnswer:"
    assert 0.0 < plain.score(["x"])[0] < 1.0
    templated = JudgeReward.from_loaded(tiny_lm, "Is {text} ok?", system="Be strict.")
    assert tiny_lm.tokenizer.decode(templated.encode("", "x")) == (
        "<|im_start|>system\nBe strict.<|im_end|>\n<|im_start|>user\nIs x ok?<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_judge_argument_errors(tiny_lm):
    with pytest.raises(ValueError, match=r"\{text\}"):
        JudgeReward.from_loaded(tiny_lm, "Is {prompt} fine?")
    with pytest.raises(ValueError, match="no usable first token for the yes variants"):
        JudgeReward.from_loaded(tiny_lm, yes=[" yes"], no=[" no"])  # both start with a space
    with pytest.raises(TypeError):
        JudgeReward.from_loaded(tiny_lm, yes="yes")
    with pytest.raises(TypeError, match="no .model and .tokenizer"):
        JudgeReward.from_loaded(object())
    custom = JudgeReward.from_loaded(tiny_lm, yes=["A", "AB"], no=["B"])
    assert custom.yes_ids == [tiny_lm.tokenizer.convert_tokens_to_ids("A")]


# ----------------------------------------------------------------------------- package


@pytest.mark.parametrize("module", ["rewards._hf", "rewards.classifier", "rewards.reward_model",
                                    "rewards.judge"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod)
    assert result.attempted > 0 and result.failed == 0
    assert mod.__doc__.split("\n\n")[1].lstrip().startswith(">>>")  # opens with an example


def test_exported_lazily_without_torch():
    for name in ("ClassifierReward", "RewardModelReward", "JudgeReward"):
        assert name in rewards.__all__ and name in dir(rewards)
    assert rewards.ClassifierReward is ClassifierReward and rewards.JudgeReward is JudgeReward
    with pytest.raises(AttributeError):
        rewards.NoSuchReward  # noqa: B018
    code = ("import sys, rewards\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
            "from rewards import ClassifierReward, RewardModelReward, JudgeReward\n"
            "import rewards._hf\n"
            "bad = [m for m in ('torch', 'transformers', 'langchain_core', 'deal_chains.search', "
            "'deal_chains.models', 'deal_chains.spec') if m in sys.modules]\n"
            "sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
