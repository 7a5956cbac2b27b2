"""How likely the default model finds a bare word list and a sentence with the same words,
under the CommonGen request and under a request that does not list the words.

Run: ``.venv/bin/python benchmarks/word_list_likelihood.py`` (docs/benchmarks.md quotes its output).
It shows why no bound on the model's own likelihood can rule word lists out: after the request,
the model finds the list far likelier than the sentence; only a context without the words
turns that around.
"""

from __future__ import annotations

import torch

from deal_chains.models import load_model

CASES = {
    "sink, stand, wash, dish": ["Sink, stand, wash, dish.", "I stand at the sink and wash the dishes."],
    "sit, drink, bar, beer": ["Sit, drink, bar, beer.", "We sit at the bar and drink beer."],
}
REQUEST = "Write one short sentence that uses all of these words: {words}."
NEUTRAL = "Write one short sentence."


def answer_logprob(lm, prompt: str, answer: str) -> tuple[float, float]:
    """(total, per token) log-probability of ``answer`` and its end-of-sequence after ``prompt``."""
    ids = lm.format_prompt(prompt)
    tokens = lm.tokenizer.encode(answer, add_special_tokens=False) + [min(lm.eos_token_ids)]
    with torch.no_grad():
        logp = lm.model(input_ids=torch.tensor([ids + tokens])).logits[0].float().log_softmax(-1)
    total = sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(tokens))
    return total, total / len(tokens)


def main() -> None:
    lm = load_model("default")
    print("| words | answer | request: total | per token | neutral: total | per token |")
    print("|---|---|---|---|---|---|")
    for words, answers in CASES.items():
        for answer in answers:
            asked = answer_logprob(lm, REQUEST.format(words=words), answer)
            neutral = answer_logprob(lm, NEUTRAL, answer)
            print(f"| {words} | {answer} | {asked[0]:.1f} | {asked[1]:.2f} | {neutral[0]:.1f} | {neutral[1]:.2f} |")


if __name__ == "__main__":
    main()
