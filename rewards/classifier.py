"""Classifier reward: the probability a sequence classifier gives one label.

    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification, BertTokenizer
    >>> from rewards import ClassifierReward, RewardContext
    >>> words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "kind", "awful"]
    >>> tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    >>> _ = torch.manual_seed(0)
    >>> model = BertForSequenceClassification(BertConfig(
    ...     vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
    ...     intermediate_size=8, id2label={0: "safe", 1: "toxic"}, label2id={"safe": 0, "toxic": 1}))
    >>> not_toxic = ClassifierReward((model, tokenizer), label="Toxic", goal="minimize")
    >>> scores = not_toxic.score(["you are kind", "you are awful", ""], RewardContext())
    >>> [0.0 <= s <= 1.0 for s in scores]
    [True, True, True]
    >>> toxic = ClassifierReward((model, tokenizer), label=1)
    >>> [round(a + b, 6) for a, b in zip(scores, toxic.score(["you are kind", "you are awful", ""]))]
    [1.0, 1.0, 1.0]

``model`` is a local directory or hub id of an ``AutoModelForSequenceClassification``
checkpoint (loaded safely and shared process-wide, see ``rewards._hf``), or an
already-loaded ``(model, tokenizer)`` pair. The score of a text is the probability of
``label``: the softmax over the model's labels, or the sigmoid of the label's logit for a
single-logit model or a ``problem_type="multi_label_classification"`` one (where labels
are independent, e.g. toxicity categories). ``goal="minimize"`` scores ``1 - p``, so a
higher reward is always better.

torch and transformers are imported when a reward is built, not by ``import rewards``.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from rewards._hf import ScoreCache, batched_scores, cached_scores, fallback_token_id, load_sequence_classifier
from rewards.base import BaseReward, RewardContext

GOALS = ("maximize", "minimize")


def label_names(config: Any) -> dict[int, str]:
    """``{index: name}`` of a model config's labels (``LABEL_i`` where unnamed)."""
    n = int(getattr(config, "num_labels", 0) or 0)
    raw = getattr(config, "id2label", None) or {}
    names = {int(k): str(v) for k, v in raw.items()}
    return {i: names.get(i, f"LABEL_{i}") for i in range(max(n, len(names)))}


def resolve_label(config: Any, label: str | int) -> int:
    """The index of ``label`` (a name, matched exactly then case-insensitively, or an
    index); ``ValueError`` listing the model's labels when it has no such label."""
    names = label_names(config)
    listing = ", ".join(f"{i}={n!r}" for i, n in names.items())
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise TypeError(f"label must be a label name or index, got {type(label).__name__}")
    if isinstance(label, int):
        if label in names:
            return label
        raise ValueError(f"label index {label} is out of range; the model's labels are {listing}")
    exact = [i for i, n in names.items() if n == label]
    if exact:
        return exact[0]
    folded = [i for i, n in names.items() if n.casefold() == label.strip().casefold()]
    if len(folded) == 1:
        return folded[0]
    if len(folded) > 1:
        raise ValueError(f"label {label!r} matches several labels case-insensitively ({listing}); "
                         "give its exact name or its index")
    if label.strip().isascii() and label.strip().isdigit() and int(label) in names:
        return int(label)
    raise ValueError(f"label {label!r} is not one of the model's labels: {listing}")


def supports_pairs(tokenizer: Any) -> bool:
    """True when the tokenizer marks the boundary of a text pair with special tokens
    (BERT's ``[SEP]``, RoBERTa's ``</s></s>``), so (prompt, response) can go in as a pair."""
    try:
        return int(tokenizer.num_special_tokens_to_add(pair=True)) > int(
            tokenizer.num_special_tokens_to_add(pair=False))
    except Exception:  # a tokenizer without the method or unable to answer
        return False


def effective_max_length(model: Any, tokenizer: Any, max_length: int) -> int:
    """``max_length`` capped by the tokenizer's and the model's own limits."""
    limit = int(max_length)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limit = min(limit, tok_max)
    pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(pos, int) and pos > 0:
        limit = min(limit, pos)
    return limit


class ClassifierReward(BaseReward):
    """Probability of ``label`` under a sequence classifier (``1 - p`` when minimizing).

    Texts are scored in chunks of ``batch_size`` (sorted by length, right-padded) under
    ``torch.inference_mode``, truncated to ``max_length`` tokens (capped by the model's
    own limit); scores are kept in an LRU cache of ``cache_size`` texts, so candidates the
    search sees again cost nothing. An empty text is scored as the empty string.

    ``include_prompt``: score the (prompt, text) pair, from ``RewardContext.prompt``: as
    a tokenizer text pair when the tokenizer separates pairs (BERT-style), else as
    ``prompt + "\\n" + text``. The cache is then keyed by (prompt, text).

    ``dtype`` and ``trust_remote_code`` go to the loader (see ``rewards._hf``).
    """

    uses_model = True  # each text it scores costs a model forward

    bounds = (0.0, 1.0)
    cache_size = 10_000

    def __init__(
        self,
        model: str | Any,
        label: str | int,
        goal: Literal["maximize", "minimize"] = "maximize",
        *,
        batch_size: int = 32,
        max_length: int = 512,
        device: Any = "cpu",
        dtype: Any = None,
        trust_remote_code: bool = False,
        weight: float = 1.0,
        name: str = "classifier",
        terminal: bool = False,
        include_prompt: bool = False,
    ) -> None:
        if goal not in GOALS:
            raise ValueError(f"ClassifierReward: goal must be one of {GOALS}, got {goal!r}")
        if int(batch_size) < 1:
            raise ValueError(f"ClassifierReward: batch_size must be >= 1, got {batch_size}")
        if int(max_length) < 2:
            raise ValueError(f"ClassifierReward: max_length must be >= 2, got {max_length}")
        self.model, self.tokenizer = load_sequence_classifier(
            model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        config = self.model.config
        self.label_index = resolve_label(config, label)
        self.label = label_names(config)[self.label_index]
        n_labels = int(getattr(config, "num_labels", 0) or 0)
        multi = getattr(config, "problem_type", None) == "multi_label_classification"
        self.activation = "sigmoid" if n_labels == 1 or multi else "softmax"
        self.goal = goal
        self.batch_size = int(batch_size)
        self.max_length = effective_max_length(self.model, self.tokenizer, int(max_length))
        self.include_prompt = bool(include_prompt)
        self.pair_input = self.include_prompt and supports_pairs(self.tokenizer)
        self.weight = float(weight)
        self.name = name
        self.terminal = bool(terminal)
        self._input_names = set(getattr(self.tokenizer, "model_input_names", None)
                                or ("input_ids", "attention_mask"))
        self._cache = ScoreCache(self.cache_size)

    # -------------------------------------------------------------- scoring
    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return []
        if self.include_prompt:
            prompt = context.prompt if context is not None else ""
            keys: list[Any] = [(prompt, t) for t in texts]
        else:
            keys = texts
        probs = cached_scores(self._cache, keys, self._compute)
        return [1.0 - p for p in probs] if self.goal == "minimize" else probs

    def probabilities(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        """P(label) of each text (whatever the goal), without the cache."""
        if self.include_prompt:
            prompt = context.prompt if context is not None else ""
            return self._compute([(prompt, str(t)) for t in texts])
        return self._compute([str(t) for t in texts])

    def _encode(self, keys: Sequence[Any]) -> list[dict[str, list[int]]]:
        kwargs = dict(truncation=True, max_length=self.max_length, add_special_tokens=True)
        if self.include_prompt and self.pair_input:
            enc = self.tokenizer([k[0] for k in keys], [k[1] for k in keys], **kwargs)
        elif self.include_prompt:
            enc = self.tokenizer([k[0] + "\n" + k[1] for k in keys], **kwargs)
        else:
            enc = self.tokenizer(list(keys), **kwargs)
        rows = []
        fallback = fallback_token_id(self.tokenizer)
        for i in range(len(keys)):
            ids = [int(x) for x in enc["input_ids"][i]] or [fallback]
            row = {"input_ids": ids}
            if "token_type_ids" in enc and "token_type_ids" in self._input_names:
                types = [int(x) for x in enc["token_type_ids"][i]]
                row["token_type_ids"] = types if len(types) == len(ids) else [0] * len(ids)
            rows.append(row)
        return rows

    def _compute(self, keys: Sequence[Any]) -> list[float]:
        import torch

        if self.activation == "softmax":
            def head(logits: Any) -> Any:
                return torch.softmax(logits, dim=-1)[:, self.label_index]
        else:
            def head(logits: Any) -> Any:
                return torch.sigmoid(logits[:, self.label_index])
        return batched_scores(self.model, self.tokenizer, self._encode(keys) if keys else [], self.batch_size, head)

    def clear_cache(self) -> None:
        self._cache.clear()

    def __repr__(self) -> str:
        return (f"ClassifierReward(label={self.label!r}, goal={self.goal!r}, name={self.name!r}, "
                f"weight={self.weight})")
