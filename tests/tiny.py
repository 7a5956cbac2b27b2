"""A tiny random-weight Llama and a character-level tokenizer, built in the test run
(no download) and saved to a local directory so the real loader reads it."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<pad>", "<|im_end|>", "<|im_start|>", "<unk>"]


def build_tokenizer():
    """Byte-level BPE with no merges: one token per byte, like GPT-2's alphabet, so the
    grammar engine (which needs a standard decoder) works on it too."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIALS + alphabet)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<|im_end|>",
                                  unk_token="<unk>", additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_model(path: Path, seed: int = 0, layers: int = 2, context: int = 256) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # larger logits than the default init: sharper distributions, fewer near-ties, so
        # equality tests compare real choices rather than floating-point noise
        model.lm_head.weight.mul_(20.0)
        # make the end token a slightly stronger twin of the space character so answers
        # do end (after a word, like real text) and EOS handling gets exercised
        space = tok.convert_tokens_to_ids("\u0120")  # byte-level alphabet's space
        model.lm_head.weight[tok.eos_token_id] = 1.1 * model.lm_head.weight[space]
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path
