"""Load a causal LM: the embedded default, a Hugging Face id, or a local directory."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from deal_chains.devices import resolve_device, resolve_dtype
from deal_chains.errors import ModelLoadError, PromptTooLongError
from deal_chains.models.default import DEFAULT_MODEL_NAME, ensure_default_converted

Messages = Sequence[dict[str, str]]


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and the facts the search needs."""

    model: Any
    tokenizer: Any
    name: str
    device: torch.device
    context_length: int
    eos_token_ids: frozenset[int]
    pad_token_id: int
    has_chat_template: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def format_prompt(self, prompt: str | Messages, system: str | None = None) -> list[int]:
        """Token ids of the model input for a user prompt (or chat messages).

        Chat models get their chat template with a generation prompt; ``system`` (the
        start-state adaptation of DeAL) becomes the system message, or is prepended for
        models without a template.
        """
        if isinstance(prompt, str):
            messages: list[dict[str, str]] = [{"role": "user", "content": prompt}]
        else:
            messages = [dict(m) for m in prompt]
        if system:
            if messages and messages[0].get("role") == "system":
                messages[0]["content"] = system + "\n\n" + messages[0]["content"]
            else:
                messages.insert(0, {"role": "system", "content": system})
        if self.has_chat_template:
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        text = "\n\n".join(m["content"] for m in messages)
        return [int(i) for i in self.tokenizer(text)["input_ids"]]

    def check_fits(self, prompt_len: int, new_tokens: int, label: str = "prompt") -> None:
        if prompt_len + new_tokens > self.context_length:
            raise PromptTooLongError(
                f"{label} is {prompt_len} tokens; with up to {new_tokens} new tokens it needs "
                f"{prompt_len + new_tokens} but model {self.name!r} has a context of "
                f"{self.context_length} tokens (shorten the prompt or lower max_new_tokens)"
            )

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


_CACHE: dict[tuple, LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def apply_thread_setting() -> None:
    """Honour ``DEAL_CHAINS_THREADS`` (torch's CPU thread count) when it is set: torch's
    default (one thread per core) oversubscribes a machine that other jobs share, and on a
    busy 2-core machine that makes every forward several times slower."""
    n = os.environ.get("DEAL_CHAINS_THREADS")
    if n:
        try:
            threads = int(n)
        except ValueError:
            raise ModelLoadError(f"DEAL_CHAINS_THREADS must be a whole number, got {n!r}") from None
        if threads < 1:
            raise ModelLoadError(f"DEAL_CHAINS_THREADS must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def load_model(
    name: str | LoadedModel | Any = "default",
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    tokenizer: Any = None,
    trust_remote_code: bool = False,
    cache: bool = True,
) -> LoadedModel:
    """Load a causal LM for search.

    >>> lm = load_model("default")          # doctest: +SKIP
    >>> lm.decode(lm.format_prompt("hi"))   # doctest: +SKIP

    ``name`` is ``"default"`` (the embedded SmolLM2-135M-Instruct), a local directory, a
    Hugging Face id (downloaded only when the hub is reachable and allowed), an already
    loaded ``LoadedModel``, or a transformers model object (pass ``tokenizer`` too).
    Weights load from safetensors only; ``trust_remote_code`` stays off unless asked.
    ``DEAL_CHAINS_THREADS`` sets torch's CPU threads (see ``apply_thread_setting``).
    """
    if isinstance(name, LoadedModel):
        return name
    if name is None:
        # a spec without `model:` (and no --model) means the embedded default, not a model object
        name = "default"
    if not isinstance(trust_remote_code, bool):
        # a truthy string ("no", "false") would run the model folder's Python code
        raise ModelLoadError(f"trust_remote_code must be True or False, got {trust_remote_code!r}")
    apply_thread_setting()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if not isinstance(name, (str, os.PathLike)):
        if tokenizer is None:
            raise ModelLoadError("a model object needs its tokenizer: load_model(model, tokenizer=tok)")
        if getattr(name, "config", None) is not None:
            # the object's own class says what it is (its config may name the checkpoint's
            # encoder class); only transformers' classes are judged by name, a wrapper or
            # remote-code class is not
            cls = type(name)
            own = [cls.__name__] if cls.__module__.startswith("transformers.") else []
            _check_causal_config(name.config, getattr(name, "name_or_path", cls.__name__), True, archs=own)
        return _wrap(name, tokenizer, getattr(name, "name_or_path", type(name).__name__))
    name = str(name)
    key = (name, str(dev), str(dt), trust_remote_code)
    if cache:
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
    if name == "default":
        path, label = str(ensure_default_converted()), DEFAULT_MODEL_NAME
    else:
        expanded = Path(name).expanduser()
        if name.startswith((".", "/", "~")) or expanded.exists():
            if not expanded.is_dir():
                raise ModelLoadError(f"model path {name!r} does not exist or is not a directory")
            path, label = str(expanded), name
        else:
            path, label = name, name
    loaded = _load_hf(path, label, dev, dt, trust_remote_code)
    if cache:
        with _CACHE_LOCK:
            _CACHE[key] = loaded
    return loaded


def _load_hf(path: str, label: str, device: torch.device, dtype: torch.dtype, trust_remote_code: bool) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    local = Path(path).is_dir()
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=local)
    except Exception as exc:
        hint = ""
        if not trust_remote_code and "custom code" in str(exc):
            # say which switch runs it, so the user decides knowingly
            hint = (" (the model folder ships Python code; it runs only with trust_remote_code=True: "
                    "use that only for code you trust)")
        raise ModelLoadError(f"cannot load model {label!r}: {exc}{hint}") from exc
    _check_causal_config(config, label, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, config=config, dtype=dtype, use_safetensors=True,
            trust_remote_code=trust_remote_code, local_files_only=local,
        )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc) or "AutoModelForCausalLM" in str(exc):
            raise ModelLoadError(
                f"model {label!r} (type {config.model_type!r}) is not a causal language model"
            ) from exc
        raise ModelLoadError(f"cannot load model {label!r}: {exc}") from exc
    except (OSError, EnvironmentError) as exc:
        raise ModelLoadError(
            f"cannot load model {label!r}: {exc} (deal-chains loads safetensors weights only)"
        ) from exc
    except Exception as exc:  # e.g. safetensors' SafetensorError on a truncated or corrupt file
        raise ModelLoadError(f"cannot load the weights of model {label!r} (corrupt or truncated "
                             f"file?): {type(exc).__name__}: {exc}") from exc
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=local)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {label!r}: {exc}") from exc
    model.to(device)
    return _wrap(model, tok, label)


# model types whose causal-LM head only works as a decoder (``is_decoder=True`` in the
# config): transformers' BertLMHeadModel & co. load an encoder checkpoint without error,
# attend bidirectionally and fail mid-search. From the classes that warn "add
# `is_decoder=True`" (transformers 5); other types (gpt_neox, bart, ...) ignore the flag.
NEEDS_IS_DECODER = frozenset({
    "bert", "bert-generation", "big_bird", "camembert", "data2vec-text", "electra", "ernie",
    "megatron-bert", "reformer", "rembert", "roberta", "roberta-prelayernorm", "roc_bert", "roformer",
    "xlm-roberta", "xlm-roberta-xl", "xmod",
})


def _causal_lm_class_names() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update([value] if isinstance(value, str) else value)
    return names


def _is_causal_lm_name(name: str, known: set[str]) -> bool:
    # the suffixes cover causal LMs newer than this transformers' mapping
    return name in known or name.endswith(("ForCausalLM", "LMHeadModel"))


def _check_causal_config(config: Any, label: str, trust_remote_code: bool,
                         archs: list[str] | None = None) -> None:
    """Refuse, before the weights are read, a checkpoint that transformers would load as a
    causal LM although it is not one (an encoder, a classifier): its "next-token" logits
    are noise or the first forward fails. ``archs``: the class names to judge (default:
    the config's ``architectures``)."""
    model_type = getattr(config, "model_type", None)
    if archs is None:
        archs = [a for a in (getattr(config, "architectures", None) or []) if isinstance(a, str)]
    remote = trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if archs and not remote:
        known = _causal_lm_class_names()
        if not any(_is_causal_lm_name(a, known) for a in archs):
            raise ModelLoadError(
                f"model {label!r} (type {model_type!r}, architecture {', '.join(archs)}) is not a causal "
                "language model: deal-chains needs a decoder checkpoint (e.g. ...ForCausalLM)"
            )
    if model_type in NEEDS_IS_DECODER and not getattr(config, "is_decoder", False):
        raise ModelLoadError(
            f"model {label!r} (type {model_type!r}, architecture {', '.join(archs) or 'not given'}) is an "
            "encoder (its config has is_decoder false), not a causal language model"
        )


def _check_vocab(model: Any, tokenizer: Any, label: str) -> None:
    """Every token id the tokenizer can produce must index the embedding matrix, and every
    id the head can choose must decode: else a prompt or a chosen token fails mid-search
    with an IndexError (or a CUDA assert)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is None:
        return  # not a standard embedding layer: nothing to compare
    try:
        vocab = len(tokenizer)
    except TypeError:
        return  # a tokenizer-like object that does not say its size
    if vocab > rows:
        raise ModelLoadError(
            f"model {label!r}: the tokenizer has {vocab} tokens but the model's embedding matrix has "
            f"{rows} rows, so token ids {rows} to {vocab - 1} would index out of range "
            "(mismatched tokenizer and weights?)"
        )
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    outputs = getattr(head, "out_features", None) or getattr(head, "num_embeddings", None)
    if isinstance(outputs, int) and outputs > rows:
        raise ModelLoadError(
            f"model {label!r}: its output layer scores {outputs} tokens but its embedding matrix has "
            f"{rows} rows, so a chosen token could not be fed back"
        )


def _wrap(model: Any, tokenizer: Any, label: str) -> LoadedModel:
    _check_vocab(model, tokenizer, label)
    model.eval()
    config = model.config
    eos: set[int] = set()
    for source in (getattr(model, "generation_config", None), config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            eos.add(value)
        elif isinstance(value, (list, tuple)):
            eos.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    if not eos:
        raise ModelLoadError(f"model {label!r} declares no end-of-sequence token")
    ctx = (getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
           or getattr(tokenizer, "model_max_length", None) or 2048)
    # the search masks padding itself, so any id works as pad; prefer the tokenizer's
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    device = next(model.parameters()).device
    return LoadedModel(
        model=model, tokenizer=tokenizer, name=label, device=device, context_length=int(ctx),
        eos_token_ids=frozenset(eos), pad_token_id=int(pad),
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
    )
