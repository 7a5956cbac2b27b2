"""Preference reward model: a scalar-head sequence classifier scoring (prompt, response).

    >>> import math, torch
    >>> from transformers import BertConfig, BertForSequenceClassification, BertTokenizer
    >>> from rewards import RewardModelReward, RewardContext
    >>> words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "how", "are", "you", "fine", "go", "away"]
    >>> tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    >>> _ = torch.manual_seed(0)
    >>> model = BertForSequenceClassification(BertConfig(
    ...     vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
    ...     intermediate_size=8, num_labels=1))
    >>> rm = RewardModelReward((model, tokenizer))                    # sigmoid(raw) in (0, 1)
    >>> scores = rm.score(["fine", "go away"], RewardContext(prompt="how are you"))
    >>> [0.0 < s < 1.0 for s in scores]
    [True, True]
    >>> raw = rm.raw(["fine"], RewardContext(prompt="how are you"))[0]
    >>> abs(scores[0] - 1 / (1 + math.exp(-raw))) < 1e-9
    True
    >>> RewardModelReward((model, tokenizer), normalize=(-1.0, 1.0)).bounds
    (0.0, 1.0)

``model``: a local directory or hub id of a checkpoint whose head has one output
(``num_labels == 1``; a classifier with several labels is refused: use
``ClassifierReward``), or an already-loaded ``(model, tokenizer)`` pair. Loading is the
safe, shared loading of ``rewards._hf`` (safetensors only, no remote code unless asked).

Input: with ``include_prompt`` the conversation ``[user: prompt, assistant: text]``
rendered with the tokenizer's chat template when it has one and ``chat_template=True``,
else ``prompt + "\\n\\n" + text``; without ``include_prompt`` the text alone. A too long
input keeps its end (the response, where the reward is read) and its first token when
that is a special one (BOS / CLS).

Output (``normalize``):

- ``"sigmoid"``: ``sigmoid(raw / scale)``, in (0, 1) (a Bradley–Terry probability);
- ``(lo, hi)``: ``(raw - lo) / (hi - lo)`` clipped to [0, 1];
- ``"none"``: ``raw / scale`` clipped to [-10, 10], and ``bounds = (-10, 10)``. The
  search prunes candidates with each reward's ``bounds`` (and gives unfinished texts a
  terminal reward's upper bound), so the clip keeps that promise; pick ``scale`` so the
  model's typical rewards fall well inside it.

torch and transformers are imported when a reward is built, not by ``import rewards``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

from rewards._hf import ScoreCache, batched_scores, cached_scores, fallback_token_id, load_sequence_classifier
from rewards.base import BaseReward, RewardContext
from rewards.classifier import effective_max_length

RAW_BOUND = 10.0

Normalize = Literal["sigmoid", "none"] | tuple[float, float]


class RewardModelReward(BaseReward):
    """Normalised output of a scalar-head preference reward model (see the module docstring).

    Batched in chunks of ``batch_size`` (sorted by length, right-padded) under
    ``torch.inference_mode``; scores cached (LRU, ``cache_size`` entries) by (prompt,
    text), or by text without ``include_prompt``.
    """

    uses_model = True  # each text it scores costs a model forward

    cache_size = 10_000

    def __init__(
        self,
        model: str | Any,
        *,
        normalize: Normalize = "sigmoid",
        scale: float = 1.0,
        include_prompt: bool = True,
        chat_template: bool = True,
        batch_size: int = 16,
        max_length: int = 1024,
        device: Any = "cpu",
        dtype: Any = None,
        trust_remote_code: bool = False,
        weight: float = 1.0,
        name: str = "reward_model",
        terminal: bool = False,
    ) -> None:
        self.normalize, self.bounds = _check_normalize(normalize)
        scale = float(scale)
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"RewardModelReward: scale must be a positive number, got {scale}")
        if int(batch_size) < 1:
            raise ValueError(f"RewardModelReward: batch_size must be >= 1, got {batch_size}")
        if int(max_length) < 2:
            raise ValueError(f"RewardModelReward: max_length must be >= 2, got {max_length}")
        self.model, self.tokenizer = load_sequence_classifier(
            model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        n_labels = int(getattr(self.model.config, "num_labels", 0) or 0)
        if n_labels != 1:
            labels = getattr(self.model.config, "id2label", None) or {}
            raise ValueError(
                f"RewardModelReward needs a scalar-head reward model (num_labels == 1), but this model "
                f"has {n_labels} labels ({', '.join(map(str, labels.values()))}); score a label of a "
                "classifier with ClassifierReward instead")
        self.scale = scale
        self.include_prompt = bool(include_prompt)
        self.use_chat_template = bool(chat_template) and bool(getattr(self.tokenizer, "chat_template", None))
        self.batch_size = int(batch_size)
        self.max_length = effective_max_length(self.model, self.tokenizer, int(max_length))
        self.weight = float(weight)
        self.name = name
        self.terminal = bool(terminal)
        self._special = set(int(i) for i in (getattr(self.tokenizer, "all_special_ids", None) or ()))
        self._input_names = set(getattr(self.tokenizer, "model_input_names", None)
                                or ("input_ids", "attention_mask"))
        self._cache = ScoreCache(self.cache_size)

    # -------------------------------------------------------------- inputs
    def format(self, prompt: str, text: str) -> str:
        """The model input for (prompt, text), as text."""
        if not self.include_prompt:
            return text
        if self.use_chat_template:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]
            try:
                rendered = self.tokenizer.apply_chat_template(messages, tokenize=False)
            except Exception as exc:
                raise ValueError(f"RewardModelReward: the tokenizer's chat template failed ({exc}); "
                                 "pass chat_template=False to use 'prompt\\n\\ntext'") from exc
            if not isinstance(rendered, str):
                raise ValueError(f"RewardModelReward: the chat template rendered {type(rendered).__name__}, "
                                 "not text; pass chat_template=False")
            return rendered
        return prompt + "\n\n" + text

    def encode(self, prompt: str, text: str) -> list[int]:
        """Token ids of the model input for (prompt, text), truncated to ``max_length``."""
        rendered = self.format(prompt, text)
        # a rendered chat template already holds its special tokens (BOS, turn markers)
        add_special = not (self.include_prompt and self.use_chat_template)
        ids = [int(i) for i in self.tokenizer(rendered, add_special_tokens=add_special)["input_ids"]]
        if not ids:
            ids = [fallback_token_id(self.tokenizer)]
        if len(ids) > self.max_length:
            head = ids[:1] if ids[0] in self._special else []
            ids = head + ids[len(ids) - (self.max_length - len(head)):]
        return ids

    # -------------------------------------------------------------- scoring
    def raw(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        """The model's raw scalar rewards (no normalisation, no cache)."""
        prompt = context.prompt if context is not None else ""
        return self._raw([(prompt, "" if t is None else str(t)) for t in texts])

    def _raw(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        rows = [{"input_ids": self.encode(p, t)} for p, t in pairs]
        if "token_type_ids" in self._input_names:
            for r in rows:
                r["token_type_ids"] = [0] * len(r["input_ids"])
        return batched_scores(self.model, self.tokenizer, rows, self.batch_size,
                              lambda logits: logits.reshape(logits.shape[0], -1)[:, 0])

    def normalized(self, raw: float) -> float:
        """A raw reward mapped as ``normalize`` says."""
        if self.normalize == "sigmoid":
            x = raw / self.scale
            return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
        if self.normalize == "none":
            return min(RAW_BOUND, max(-RAW_BOUND, raw / self.scale))
        lo, hi = self.normalize
        return min(1.0, max(0.0, (raw - lo) / (hi - lo)))

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return []
        prompt = context.prompt if context is not None and self.include_prompt else ""
        # without the prompt in the input, the text alone is the cache key
        keys: list[Any] = [(prompt, t) for t in texts] if self.include_prompt else texts

        def compute(missing: list[Any]) -> list[float]:
            pairs = missing if self.include_prompt else [("", t) for t in missing]
            return [self.normalized(r) for r in self._raw(pairs)]

        return cached_scores(self._cache, keys, compute)

    def clear_cache(self) -> None:
        self._cache.clear()

    def __repr__(self) -> str:
        return (f"RewardModelReward(normalize={self.normalize!r}, name={self.name!r}, "
                f"weight={self.weight})")


def _check_normalize(normalize: Any) -> tuple[Any, tuple[float, float]]:
    if normalize == "sigmoid":
        return "sigmoid", (0.0, 1.0)
    if normalize == "none":
        return "none", (-RAW_BOUND, RAW_BOUND)
    if isinstance(normalize, (tuple, list)) and len(normalize) == 2 and not any(
            isinstance(v, (str, bool)) for v in normalize):
        try:
            lo, hi = float(normalize[0]), float(normalize[1])
        except (TypeError, ValueError):
            lo = hi = float("nan")
        if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
            return (lo, hi), (0.0, 1.0)
        raise ValueError(f"RewardModelReward: normalize=(lo, hi) needs finite lo < hi, got {tuple(normalize)}")
    raise ValueError("RewardModelReward: normalize must be 'sigmoid', 'none' or a (lo, hi) pair of raw "
                     f"rewards mapped to [0, 1], got {normalize!r}")
