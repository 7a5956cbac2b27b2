"""Harmlessness: a Bradley–Terry preference head on frozen hidden-state features.

``HarmlessReward`` scores (prompt, response) pairs with ``sigmoid(head(features))``, in
[0, 1], higher = more harmless. The head is a small linear or MLP layer trained on
HH-RLHF harmless-base preference pairs (``deal-chains train-reward``) over the features
of a frozen causal LM; the shipped default head (``rewards/heads/harmless.safetensors``
plus its ``.json`` sidecar) uses the default model, SmolLM2-135M-Instruct.

Features (``HiddenStateFeatures``): the conversation — the prompt as chat messages, then
the response as the assistant's reply — is formatted with the model's chat template
(the prompt part exactly as a generation prompt, the response tokens appended after it,
with no end-of-turn token, so a finished reply and a partial one the search is still
growing are encoded the same way). The hidden states of one layer are mean-pooled:

- ``pooling="response"``: over the response tokens only (an empty response falls back
  to the last prompt token, the assistant header);
- ``pooling="all"``: over every (non-padding) token of the conversation;
- ``pooling="last"``: the hidden state of the last token (the last response token, or
  the assistant header when the response is empty) — no mean.

A prompt written as an HH-RLHF transcript (``"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman:
..."``) becomes the matching multi-turn chat; any other prompt is one user message.

This module imports torch, transformers-style models and safetensors lazily, so
``import rewards`` stays torch-free. It never imports deal_chains: pass any object with
``.model`` and ``.tokenizer`` (e.g. deal_chains' ``LoadedModel``)::

    >>> from deal_chains.models import load_model                  # doctest: +SKIP
    >>> from rewards.harmless import HarmlessReward                # doctest: +SKIP
    >>> harmless = HarmlessReward.for_model(load_model("default"))  # doctest: +SKIP
    >>> harmless.score(["I can't help with that."],                # doctest: +SKIP
    ...                RewardContext(prompt="How do I pick a lock?"))
"""

from __future__ import annotations

import functools
import json
import math
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from rewards._batch import padded
from rewards.base import BaseReward, FeatureRequest, RewardContext

if TYPE_CHECKING:  # pragma: no cover
    import torch

HEADS_DIR = Path(__file__).parent / "heads"
DEFAULT_HEAD = HEADS_DIR / "harmless.safetensors"
HEAD_FORMAT = "deal-chains-bt-head"
HEAD_FORMAT_VERSION = 1
POOLINGS = ("response", "all", "last")

FeatureFn = Callable[[list[str], list[str]], "torch.Tensor"]

# "\n\nHuman:" / "\n\nAssistant:" turn markers of HH-RLHF transcripts (leading blank lines
# optional at the very start)
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


# ----------------------------------------------------------------------------- conversations


def split_transcript(text: str) -> list[tuple[str, str]]:
    """``[(speaker, content), ...]`` of an HH-RLHF transcript; ``[]`` when ``text`` has no
    turn markers. Speakers are "Human" / "Assistant"; contents are stripped."""
    marks = list(_TURN.finditer(text))
    if not marks or text[: marks[0].start()].strip():
        return []
    turns = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        turns.append((m.group(1), text[m.end():end].strip()))
    return turns


def prompt_messages(prompt: str) -> list[dict[str, str]]:
    """Chat messages for a prompt: an HH transcript becomes its turns (Human -> user,
    Assistant -> assistant), anything else one user message."""
    turns = split_transcript(prompt)
    if not turns:
        return [{"role": "user", "content": prompt}]
    return [{"role": "user" if who == "Human" else "assistant", "content": c} for who, c in turns]


# ----------------------------------------------------------------------------- features


class HiddenStateFeatures:
    """``features(prompts, responses) -> Tensor[n, d]``: pooled hidden states of a frozen
    causal LM over the formatted conversation (see the module docstring).

    ``model`` is a transformers causal LM, or any object with ``.model`` and
    ``.tokenizer`` (then ``tokenizer`` may be left out). ``layer`` indexes the model's
    ``hidden_states`` (0 = embeddings, ``-1`` = last layer). Batches of ``batch_size``
    conversations run with left padding and an attention mask (sorted by length, so
    little padding). A conversation longer than ``max_length`` tokens keeps the start
    of the response (up to ``max_length - min(prompt, max_length // 2)`` tokens) and the
    end of the prompt (the latest turns and the assistant header). When every
    conversation of a call has the same prompt part (the search scoring candidates of one
    prompt), the prompt runs once and the responses over its KV cache
    (``rewards._prefix``; ``share_prefix = False`` turns that off).
    """

    def __init__(self, model: Any, tokenizer: Any = None, layer: int = -1, batch_size: int = 16,
                 max_length: int = 512, *, pooling: str = "response") -> None:
        if tokenizer is None:
            if not (hasattr(model, "model") and hasattr(model, "tokenizer")):
                raise TypeError("HiddenStateFeatures: pass (model, tokenizer) or one object with "
                                ".model and .tokenizer")
            model, tokenizer = model.model, model.tokenizer
        if pooling not in POOLINGS:
            raise ValueError(f"HiddenStateFeatures: pooling must be one of {POOLINGS}, got {pooling!r}")
        if batch_size < 1 or max_length < 2:
            raise ValueError("HiddenStateFeatures: batch_size must be >= 1 and max_length >= 2")
        n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        if isinstance(n_layers, int) and not -(n_layers + 1) <= int(layer) <= n_layers:
            # hidden_states has n_layers + 1 entries: the embeddings, then one per layer
            raise ValueError(f"HiddenStateFeatures: layer {layer} does not exist in a model with {n_layers} "
                             f"layers (use 0..{n_layers}, or -1 for the last)")
        self.model = model
        self.tokenizer = tokenizer
        self.layer = int(layer)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.pooling = pooling
        # responses to one prompt: forward the prompt once, the responses over its KV cache
        self.share_prefix = True
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None)
        self.pad_token_id = int(pad) if pad is not None else 0

    @property
    def spec(self) -> dict[str, Any]:
        """What a head trained on these features must record to be used with them."""
        return {"layer": self.layer, "pooling": self.pooling, "max_length": self.max_length,
                "format": "chat_template" if self.has_chat_template else "plain"}

    def __call__(self, prompts: list[str], responses: list[str]) -> "torch.Tensor":
        return self.extract(prompts, responses)[(self.layer, self.pooling)]

    # -------------------------------------------------------------- encoding
    def encode(self, prompt: str, response: str) -> tuple[list[int], int]:
        """(token ids, number of trailing response tokens) of one conversation."""
        prefix = self._prompt_ids(prompt)
        resp = [int(i) for i in self.tokenizer(response, add_special_tokens=False)["input_ids"]] \
            if response else []
        budget = self.max_length - min(len(prefix), self.max_length // 2)
        resp = resp[:budget]
        prefix = prefix[-(self.max_length - len(resp)):] if len(prefix) + len(resp) > self.max_length else prefix
        return prefix + resp, len(resp)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one prompt is scored many times in a search
    def _prompt_ids(self, prompt: str) -> list[int]:
        messages = prompt_messages(prompt)
        if self.has_chat_template:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                     return_dict=False)
            if isinstance(ids, Mapping) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return [int(i) for i in self.tokenizer(text)["input_ids"]]

    # -------------------------------------------------------------- extraction
    def extract(self, prompts: Sequence[str], responses: Sequence[str], *,
                layers: Sequence[int] | None = None, poolings: Sequence[str] | None = None,
                progress: bool = False) -> dict[tuple[int, str], "torch.Tensor"]:
        """Pooled features for several (layer, pooling) choices from one forward per batch:
        ``{(layer, pooling): Tensor[n, d]}`` (float32, on the CPU)."""
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"features: {len(prompts)} prompts for {len(responses)} responses")
        layers = [self.layer] if layers is None else [int(x) for x in layers]
        poolings = [self.pooling] if poolings is None else list(poolings)
        for p in poolings:
            if p not in POOLINGS:
                raise ValueError(f"pooling must be one of {POOLINGS}, got {p!r}")
        n = len(prompts)
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses)]
        order = sorted(range(n), key=lambda i: len(encoded[i][0]))
        base = getattr(self.model, "base_model", None)
        base = self.model if base is None else base
        device = next(self.model.parameters()).device
        prefixes = {tuple(toks[: len(toks) - k]) for toks, k in encoded}
        if self.share_prefix and n > 1 and len(prefixes) == 1 and getattr(base, "config", None) is not None:
            # the search's case: candidates of one prompt; the prompt runs once
            from rewards._prefix import shared_prefix

            return shared_prefix(self, base, next(iter(prefixes)), [toks[len(toks) - k:] for toks, k in encoded],
                                 layers, poolings, device, hidden_states)
        out: dict[tuple[int, str], torch.Tensor] = {}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="features", unit="text")
        try:
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                ids, mask = padded([encoded[i][0] for i in idx], self.pad_token_id, left=True)
                width = ids.shape[1]
                resp_mask = torch.zeros((len(idx), width), dtype=torch.bool)
                for row, i in enumerate(idx):
                    # response tokens, or the last prompt token when there are none
                    resp_mask[row, width - max(encoded[i][1], 1):] = True
                position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
                hs = hidden_states(base, ids.to(device), mask.to(device), position_ids.to(device), layers)
                for layer in layers:
                    h = hs[layer].float().cpu()
                    for pooling in poolings:
                        if pooling == "last":  # left padding: the last column is the last token
                            pooled = h[:, -1]
                        else:
                            w = (mask.bool() if pooling == "all" else resp_mask).unsqueeze(-1).float()
                            pooled = (h * w).sum(1) / w.sum(1)
                        key = (layer, pooling)
                        if key not in out:
                            out[key] = torch.empty((n, h.shape[-1]), dtype=torch.float32)
                        out[key][idx] = pooled
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        if n == 0:
            dim = int(getattr(getattr(self.model, "config", None), "hidden_size", 0))
            return {(lay, p): torch.zeros((0, dim)) for lay in layers for p in poolings}
        return out


class _Stop(Exception):
    """Raised by a forward hook once the deepest layer needed has run."""


def hidden_states(base: Any, ids: "torch.Tensor", mask: "torch.Tensor", position_ids: "torch.Tensor",
                  layers: Sequence[int], *, cache: Any = None, cache_kw: str = "cache") -> dict[int, "torch.Tensor"]:
    """``{layer: hidden_states[layer]}`` of one forward of ``base`` (a decoder stack such as
    ``LlamaModel``). When every wanted layer is below the last one and the stack exposes
    ``embed_tokens`` and ``layers``, forward hooks keep the layers' outputs and the forward
    stops after the deepest one: features from layer 15 of a 30-layer model cost half a
    forward. Otherwise (the last layer, whose hidden state is normed, or another
    architecture) one full forward with ``output_hidden_states``. Both give the same
    tensors. ``cache``: a KV cache the forward reads and extends (passed as ``cache_kw``)."""
    import torch

    blocks = getattr(base, "layers", None)
    embed = getattr(base, "embed_tokens", None)
    n = len(blocks) if blocks is not None else None
    wanted = {layer: (layer if layer >= 0 or n is None else n + 1 + layer) for layer in layers}
    kwargs: dict[str, Any] = dict(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                                  use_cache=cache is not None)
    if cache is not None:
        kwargs[cache_kw] = cache
    if n is None or embed is None or max(wanted.values()) >= n:
        with torch.no_grad():
            hs = base(output_hidden_states=True, **kwargs).hidden_states
        return {layer: hs[i] for layer, i in wanted.items()}
    deepest = max(wanted.values())
    kept: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def hook(module, args, output):
            kept[index] = output[0] if isinstance(output, tuple) else output
            if index == deepest:
                raise _Stop
        return hook

    handles = [(embed if i == 0 else blocks[i - 1]).register_forward_hook(keep(i)) for i in set(wanted.values())]
    try:
        with torch.no_grad():
            base(**kwargs)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return {layer: kept[i] for layer, i in wanted.items()}


# ----------------------------------------------------------------------------- the head


@functools.lru_cache(maxsize=1)
def _head_class():
    import torch
    from torch import nn

    class BTHead(nn.Module):
        """Standardise the features, then a linear layer (``hidden == 0``) or
        Linear-GELU-Linear; returns one logit per row."""

        def __init__(self, input_dim: int, hidden: int = 0) -> None:
            super().__init__()
            self.input_dim, self.hidden = int(input_dim), int(hidden)
            self.register_buffer("mean", torch.zeros(input_dim))
            self.register_buffer("std", torch.ones(input_dim))
            if hidden > 0:
                self.net = nn.Sequential(nn.Linear(input_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
            else:
                self.net = nn.Sequential(nn.Linear(input_dim, 1))

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.net((x - self.mean) / self.std).squeeze(-1)

    return BTHead


def build_head(input_dim: int, hidden: int = 0) -> "torch.nn.Module":
    """A fresh Bradley–Terry head (``hidden == 0``: linear)."""
    return _head_class()(input_dim, hidden)


def head_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, sidecar) for a head path given with or without ``.safetensors``."""
    p = Path(path)
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    elif p.suffix != ".safetensors":
        p = p.with_name(p.name + ".safetensors")
    return p, p.with_suffix(".json")


def save_head(head: "torch.nn.Module", path: str | Path, meta: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``head`` as safetensors plus a JSON sidecar (``meta`` + the architecture)."""
    from safetensors.torch import save_file

    weights, sidecar = head_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in head.state_dict().items()}
    save_file(state, str(weights), metadata={"format": HEAD_FORMAT, "version": str(HEAD_FORMAT_VERSION)})
    info = {"format": HEAD_FORMAT, "version": HEAD_FORMAT_VERSION,
            "architecture": {"type": "mlp" if head.hidden > 0 else "linear", "input_dim": head.input_dim,
                             "hidden": head.hidden, "activation": "gelu" if head.hidden > 0 else None,
                             "standardize": True, "output": "sigmoid(logit)"}}
    info.update({k: v for k, v in meta.items() if k not in info})
    sidecar.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return weights, sidecar


def load_head(path: str | Path | None = None) -> tuple["torch.nn.Module", dict[str, Any]]:
    """(head module in eval mode, sidecar dict); ``None`` loads the shipped default head."""
    from safetensors.torch import load_file

    weights, sidecar = head_paths(DEFAULT_HEAD if path is None else path)
    if not weights.is_file():
        raise FileNotFoundError(f"reward head weights not found: {weights}")
    if not sidecar.is_file():
        raise FileNotFoundError(f"reward head sidecar not found: {sidecar} (it describes the features "
                                "the head was trained on)")
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{sidecar}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if info.get("format") != HEAD_FORMAT:
        raise ValueError(f"{sidecar}: not a {HEAD_FORMAT} sidecar (format={info.get('format')!r})")
    arch = info.get("architecture") or {}
    head = build_head(int(arch["input_dim"]), int(arch.get("hidden") or 0))
    state = load_file(str(weights))
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights}: weights do not match the architecture in {sidecar.name}: {exc}") from None
    head.eval()
    return head, info


# ----------------------------------------------------------------------------- the reward


class HarmlessReward(BaseReward):
    """``sigmoid(head(features(prompt, text)))`` in [0, 1]; higher = more harmless.

    ``features``: ``(prompts, responses) -> Tensor[n, d]``, the same features the head was
    trained on (for the shipped head: ``HiddenStateFeatures`` of the default model with
    the layer / pooling / max_length in the sidecar — ``HarmlessReward.for_model(lm)``
    builds exactly that). It may be given later with ``bind``. ``head``: a head file
    (``.safetensors`` with its ``.json`` sidecar); ``None`` = the shipped default.

    The prompt comes from ``RewardContext.prompt``; scores are cached by (prompt, text),
    so the search's repeated candidates cost one forward each.
    """

    uses_model = True  # each text it scores costs a model forward

    bounds = (0.0, 1.0)
    cache_size = 100_000

    def __init__(self, features: FeatureFn | None = None, head: str | Path | None = None, *,
                 weight: float = 1.0, name: str = "harmless", terminal: bool = False) -> None:
        self.head_path = head_paths(DEFAULT_HEAD if head is None else head)[0]
        self.head, self.info = load_head(self.head_path)
        self.feature_spec: dict[str, Any] = dict(self.info.get("features") or {})
        self.features: FeatureFn | None = None
        if features is not None:
            self.bind(features)
        self.weight = float(weight)
        self.name = name
        self.terminal = bool(terminal)
        self._cache: OrderedDict[tuple[str, str], float] = OrderedDict()

    @classmethod
    def for_model(cls, model: Any, head: str | Path | None = None, *, batch_size: int = 16,
                  **kwargs: Any) -> "HarmlessReward":
        """A reward whose features come from ``model`` (an object with ``.model`` and
        ``.tokenizer``) with the layer, pooling and max_length the head was trained on."""
        reward = cls(None, head, **kwargs)
        spec = reward.feature_spec
        expected = spec.get("model")
        actual = getattr(model, "name", None)
        if expected and actual and str(actual) != str(expected):
            warnings.warn(f"reward head {reward.head_path.name} was trained on features of {expected!r}, "
                          f"not {actual!r}: its scores are meaningless on other features", stacklevel=2)
        reward.bind(HiddenStateFeatures(model, layer=int(spec.get("layer", -1)), batch_size=batch_size,
                                        max_length=int(spec.get("max_length", 512)),
                                        pooling=spec.get("pooling", "response")))
        return reward

    def bind(self, features: FeatureFn | Any) -> "HarmlessReward":
        """Set the feature function (or a model-like object: its ``HiddenStateFeatures``
        with the head's settings). Returns self."""
        if not callable(features) and hasattr(features, "model") and hasattr(features, "tokenizer"):
            spec = self.feature_spec
            features = HiddenStateFeatures(features, layer=int(spec.get("layer", -1)),
                                           max_length=int(spec.get("max_length", 512)),
                                           pooling=spec.get("pooling", "response"))
        if isinstance(features, HiddenStateFeatures):
            for key in ("layer", "pooling"):
                if key in self.feature_spec and getattr(features, key) != self.feature_spec[key]:
                    raise ValueError(
                        f"HarmlessReward: features have {key}={getattr(features, key)!r} but the head "
                        f"{self.head_path.name} was trained with {key}={self.feature_spec[key]!r}")
        self.features = features
        self._cache = OrderedDict()
        return self

    def logits(self, prompts: Sequence[str], texts: Sequence[str]) -> "torch.Tensor":
        """Raw head outputs (the Bradley–Terry rewards) for (prompt, text) pairs; no cache."""
        import torch

        if self.features is None:
            raise RuntimeError("HarmlessReward has no features: build it with HarmlessReward.for_model(lm), "
                               "or pass features=HiddenStateFeatures(lm, layer=..., pooling=...)")
        x = self.features(list(prompts), list(texts))
        if x.ndim != 2 or x.shape[0] != len(texts):
            raise ValueError(f"HarmlessReward: features returned shape {tuple(x.shape)} for {len(texts)} texts")
        if x.shape[1] != self.head.input_dim:
            raise ValueError(f"HarmlessReward: features have dimension {x.shape[1]} but the head "
                             f"{self.head_path.name} expects {self.head.input_dim} "
                             f"(trained on {self.feature_spec.get('model', 'another model')!r})")
        with torch.no_grad():
            return self.head(x.float().cpu())

    @property
    def search_features(self) -> FeatureRequest | None:
        """The features this reward scores, for a search over the same model to pool from its
        own forwards (``score_features``); None when the features are not a model's hidden
        states (a custom feature function)."""
        fx = self.features
        if not isinstance(fx, HiddenStateFeatures):
            return None
        return FeatureRequest(model=fx.model, layer=fx.layer, pooling=fx.pooling)

    def score_features(self, features: "torch.Tensor", context: RewardContext | None = None) -> list[float]:
        """Scores of pooled features ``Tensor[n, d]`` (as ``search_features`` describes them),
        one per row; no cache (the same text pooled in another context is another input)."""
        import torch

        if features.ndim != 2 or features.shape[1] != self.head.input_dim:
            raise ValueError(f"HarmlessReward: features of shape {tuple(features.shape)}, the head "
                             f"{self.head_path.name} expects (n, {self.head.input_dim})")
        with torch.no_grad():
            return [_sigmoid(v) for v in self.head(features.float().cpu()).tolist()]

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        prompt = context.prompt if context is not None else ""
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if (prompt, t) not in self._cache))
        if missing:
            values = self.logits([prompt] * len(missing), missing).tolist()
            for t, v in zip(missing, values):
                self._cache[(prompt, t)] = _sigmoid(v)
        out = [self._cache[(prompt, t)] for t in texts]
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def __repr__(self) -> str:
        return f"HarmlessReward(head={self.head_path.name!r}, name={self.name!r}, weight={self.weight})"


def _sigmoid(v: float) -> float:
    """The logistic function, without overflow for large negative ``v``."""
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))
