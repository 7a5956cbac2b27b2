"""Whether a JSON answer was closed by the search's limits rather than by the model.

Two limits close JSON values the model did not finish. Near the end of the token budget
(or in a loop) the search favours tokens that close the document (``closing.py``), so an
answer ends valid instead of cut mid-document; and the mask caps strings the schema leaves
unbounded (``GrammarConstraint.string_cap``). A value closed either way is still cut:
``{"date": "2025-07-"}`` parses, and a schema without a pattern on ``date`` accepts it.

This module reads the answer back. A value counts as cut when its closing token came under
one of those limits *and* the model's own likeliest token there would not have closed it:
under closing pressure, its likeliest token the grammar allows; at a string cap, its
likeliest token at all (the grammar allowed nothing but the close). Such an answer is
reported as cut (``finish_reason "length"``), never as whole. A loop the pressure closed
early in the budget (``repeating_tail``) is not counted here: the value repeats itself, and
is reported as the model wrote it up to the close.

>>> from deal_chains.search.budget_cut import closed_by_limit   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from deal_chains.jsonkit.lexer import JsonLexer


@dataclass
class LimitedClose:
    """A token that closed a value under a limit: where the JSON stood before it, and
    whether the limit was the grammar's (a string cap) rather than the closing pressure."""

    before: JsonLexer
    by_cap: bool


def _closes(lexer: JsonLexer, text: str) -> bool:
    """Whether ``text``, read where ``lexer`` stands, ends a string or a container."""
    after = lexer.copy().feed(text)
    return (lexer.in_string and not after.in_string) or after.depth < lexer.depth


def limited_closes(constraint: Any, ids: Sequence[int], max_new_tokens: int) -> dict[int, LimitedClose]:
    """Positions ``i`` where ``ids[i]`` closed a string or a container while the closing
    pressure was on, or closed a string that had reached the mask's string cap."""
    closer = constraint.closer
    if closer is None:
        return {}
    cap = getattr(constraint.declaration, "string_cap", None)
    out: dict[int, LimitedClose] = {}
    lexer = JsonLexer()
    chars = 0  # characters of the string being read (escapes count as written)
    for i, token in enumerate(ids):
        text = closer.text([token])
        if _closes(lexer, text):
            # at the cap (characters as written: a few more where escapes were written), not
            # past it: a longer string had its own maxLength
            if cap is not None and lexer.in_string and cap <= chars <= cap + 4:
                out[i] = LimitedClose(lexer.copy(), by_cap=True)
            elif constraint.closing_pressure(list(ids[:i]), max_new_tokens - i, max_new_tokens, looping=False)[0] > 0:
                out[i] = LimitedClose(lexer.copy(), by_cap=False)
        lexer.feed(text)
        if lexer.in_string:
            chars = len(text.rsplit('"', 1)[-1]) if '"' in text else chars + len(text)
        if not lexer.ok:
            break
    return out


def closed_by_limit(lm: Any, constraint: Any, prompt_ids: Sequence[int], ids: Sequence[int],
                    max_new_tokens: int) -> str | None:
    """Which limit closed a value of the answer ``ids`` (after ``prompt_ids``) that the model
    would have continued: ``"budget"`` (the closing pressure) or ``"string_cap"``; None when
    the model closed every value itself (see the module docstring). Costs one forward pass
    over prompt and answer, and only when a limit closed something at all."""
    import torch

    limited = limited_closes(constraint, ids, max_new_tokens)
    if not limited:
        return None
    model = lm.model
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(prompt_ids) + list(ids)], device=device)).logits[0]
    state = constraint.new_state()
    offset = len(prompt_ids) - 1  # logits[offset + i] predict ids[i]
    for i, token in enumerate(ids):
        close = limited.get(i)
        if close is not None:
            row = logits[offset + i].float()[: constraint.vocab]
            if not close.by_cap:
                row = row.masked_fill(~constraint.allowed([state])[0].to(row.device), float("-inf"))
            if not _closes(close.before, constraint.closer.text([int(row.argmax())])):
                return "string_cap" if close.by_cap else "budget"
        if not constraint.advance(state, token):
            break
    return None
