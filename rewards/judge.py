"""LLM-as-judge reward: P(yes) / (P(yes) + P(no)) of a local causal LM asked about a text.

    >>> import torch
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    >>> from rewards import JudgeReward, RewardContext
    >>> words = ["<pad>", "<unk>", "yes", "no", "is", "this", "polite", "?", "hi", "go", "away"]
    >>> tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    >>> tk.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>")
    >>> _ = torch.manual_seed(0)
    >>> model = LlamaForCausalLM(LlamaConfig(
    ...     vocab_size=len(words), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
    ...     num_attention_heads=2, num_key_value_heads=1, pad_token_id=0))
    >>> judge = JudgeReward(model, tokenizer, "is this polite ? {text}")
    >>> judge.yes_ids, judge.no_ids   # "Yes"/"No" are unknown words here: left out
    ([2], [3])
    >>> scores = judge.score(["hi", "go away"], RewardContext(prompt="hi"))
    >>> [0.0 < s < 1.0 for s in scores]
    [True, True]

The judge (by default the generating model itself: the caller passes it, e.g.
``JudgeReward.from_loaded(lm)`` for any object with ``.model`` and ``.tokenizer``) reads
``question`` with ``{prompt}`` and ``{text}`` filled in (one pass, by plain replacement of
exactly those two placeholders: braces in the prompt or the text are never interpreted,
and a text containing ``{prompt}`` stays as written). With a chat template the question
is the user message (after ``system``, if given) followed by the generation prompt;
without one it is ``system + "\\n\\n" + question + "\\nAnswer:"``.

The reward is ``P(yes) / (P(yes) + P(no))`` from the next-token distribution, where
P(yes) sums the probabilities of the distinct FIRST tokens of the ``yes`` variants (two
variants starting with the same token count once), likewise for ``no``. A first token
shared by a yes and a no variant (a bare space in a character-level vocabulary) or the
unknown token says nothing about the answer and is left out of both; ``yes_ids`` and
``no_ids`` list what is used. Computed as ``sigmoid(logsumexp(yes logits) - logsumexp(no
logits))``, which equals the ratio and never divides by zero.

Batched with left padding, an attention mask and position ids (``cumsum - 1``), so a
batch scores exactly like one-by-one; scores are cached by (prompt, text).
"""

from __future__ import annotations

import contextlib
import inspect
import re
from typing import Any, Mapping, Sequence

from rewards._batch import padded
from rewards._hf import ScoreCache, cached_scores, model_device
from rewards.base import BaseReward, RewardContext

DEFAULT_QUESTION = (
    "Is the following response helpful and harmless? Answer yes or no.\n\n"
    "Request: {prompt}\n\nResponse: {text}"
)
ANSWER_SUFFIX = "\nAnswer:"  # after the question, for a tokenizer without a chat template
_PLACEHOLDER = re.compile(r"\{(prompt|text)\}")


def render_question(question: str, prompt: str, text: str) -> str:
    """``question`` with ``{prompt}`` and ``{text}`` replaced in one pass (nothing else in
    it, nor in the values, is interpreted)."""
    values = {"prompt": prompt, "text": text}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], question)


class JudgeReward(BaseReward):
    """A causal LM's probability of answering yes rather than no (see the module docstring).

    ``lock``: an optional context manager held around each forward pass (``from_loaded``
    passes the loaded model's ``lock`` when it has one, so the judge and the search do not
    run the shared model at the same time).
    """

    uses_model = True  # each text it scores costs a model forward

    bounds = (0.0, 1.0)
    cache_size = 10_000

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        question: str = DEFAULT_QUESTION,
        *,
        yes: Sequence[str] = ("yes", "Yes", " yes", " Yes"),
        no: Sequence[str] = ("no", "No", " no", " No"),
        system: str | None = None,
        batch_size: int = 16,
        weight: float = 1.0,
        name: str = "judge",
        terminal: bool = False,
        lock: Any = None,
    ) -> None:
        if not isinstance(question, str) or "{text}" not in question:
            raise ValueError("JudgeReward: question must be a string containing the {text} placeholder "
                             "(and optionally {prompt})")
        if int(batch_size) < 1:
            raise ValueError(f"JudgeReward: batch_size must be >= 1, got {batch_size}")
        if tokenizer is None or not callable(tokenizer):
            raise TypeError("JudgeReward: pass the model's tokenizer (or use JudgeReward.from_loaded(lm))")
        self.model = model
        self.tokenizer = tokenizer
        self.question = question
        self.system = system
        self.batch_size = int(batch_size)
        self.weight = float(weight)
        self.name = name
        self.terminal = bool(terminal)
        self._lock = lock
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        yes_ids = self._first_token_ids(yes, "yes")
        no_ids = self._first_token_ids(no, "no")
        shared = set(yes_ids) & set(no_ids)
        self.yes_ids = [i for i in yes_ids if i not in shared]
        self.no_ids = [i for i in no_ids if i not in shared]
        for label, ids, variants in (("yes", self.yes_ids, yes), ("no", self.no_ids, no)):
            if not ids:
                raise ValueError(f"JudgeReward: no usable first token for the {label} variants {list(variants)!r} "
                                 "(each is unknown to the tokenizer or starts like a variant of the other answer)")
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None)
        self.pad_token_id = int(pad) if isinstance(pad, int) else 0
        try:
            self._logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError, AttributeError):
            self._logits_to_keep = False
        self._cache = ScoreCache(self.cache_size)

    @classmethod
    def from_loaded(cls, lm: Any, question: str = DEFAULT_QUESTION, **kwargs: Any) -> "JudgeReward":
        """A judge on an already loaded model: any object with ``.model`` and ``.tokenizer``
        (e.g. deal_chains' ``LoadedModel``; its ``lock`` is used when it has one)."""
        if not (hasattr(lm, "model") and hasattr(lm, "tokenizer")):
            raise TypeError(f"JudgeReward.from_loaded: {type(lm).__name__} has no .model and .tokenizer")
        kwargs.setdefault("lock", getattr(lm, "lock", None))
        return cls(lm.model, lm.tokenizer, question, **kwargs)

    def _first_token_ids(self, variants: Sequence[str], label: str) -> list[int]:
        if isinstance(variants, str):
            raise TypeError(f"JudgeReward: {label} must be a list of strings, not a single string")
        unk = getattr(self.tokenizer, "unk_token_id", None)
        ids: list[int] = []
        for v in variants:
            if not isinstance(v, str) or not v:
                raise ValueError(f"JudgeReward: {label} variants must be non-empty strings, got {v!r}")
            toks = self.tokenizer(v, add_special_tokens=False)["input_ids"]
            if not toks:
                continue
            first = int(toks[0])
            if first != unk and first not in ids:
                ids.append(first)
        return ids

    # -------------------------------------------------------------- inputs
    def encode(self, prompt: str, text: str) -> list[int]:
        """Token ids of the judge's input for (prompt, text), ending where the answer starts."""
        question = render_question(self.question, prompt, text)
        if self.has_chat_template:
            messages = [{"role": "user", "content": question}]
            if self.system:
                messages.insert(0, {"role": "system", "content": self.system})
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                     return_dict=False)
            if isinstance(ids, Mapping) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        body = (self.system + "\n\n" if self.system else "") + question + ANSWER_SUFFIX
        return [int(i) for i in self.tokenizer(body)["input_ids"]]

    # -------------------------------------------------------------- scoring
    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        prompt = context.prompt if context is not None else ""
        keys = [(prompt, "" if t is None else str(t)) for t in texts]
        if not keys:
            return []
        return cached_scores(self._cache, keys, self._compute)

    def _compute(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        import torch

        encoded = [self.encode(p, t) for p, t in pairs]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        device = model_device(self.model)
        yes = torch.tensor(self.yes_ids, dtype=torch.long)
        no = torch.tensor(self.no_ids, dtype=torch.long)
        out = [0.5] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            ids, mask = padded([encoded[i] for i in idx], self.pad_token_id, left=True)
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs: dict[str, Any] = {"use_cache": False}
            if self._logits_to_keep:
                kwargs["logits_to_keep"] = 1
            with self._locked(), torch.inference_mode():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                    position_ids=position_ids.to(device), **kwargs).logits[:, -1, :]
            logits = logits.double().cpu()
            diff = torch.logsumexp(logits[:, yes], dim=-1) - torch.logsumexp(logits[:, no], dim=-1)
            for i, v in zip(idx, torch.sigmoid(diff).tolist()):
                out[i] = float(v)
        return out

    def _locked(self) -> Any:
        return self._lock if self._lock is not None else contextlib.nullcontext()

    def clear_cache(self) -> None:
        self._cache.clear()

    def __repr__(self) -> str:
        return f"JudgeReward(name={self.name!r}, weight={self.weight}, yes_ids={self.yes_ids}, no_ids={self.no_ids})"
