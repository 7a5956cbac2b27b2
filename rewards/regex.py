r"""Regex constraints: the fraction of must-match / must-not-match patterns a text satisfies.

>>> from rewards.regex import RegexReward
>>> r = RegexReward(must_match=[r"\d{4}", "(?i)paris"], must_not_match="TODO")
>>> r.score(["Paris, 2024.", "Paris TODO", "nothing"], None)
[1.0, 0.3333333333333333, 0.3333333333333333]
>>> for problem in r.violations("Paris TODO"):
...     print(problem)
must_match '\\d{4}'
must_not_match 'TODO'

Patterns use RE2 syntax (https://github.com/google/re2/wiki/Syntax) and are matched with
RE2 (``google-re2``), whose running time is linear in the text: a pattern such as
``(a+)+$`` cannot blow up on a long text, which matters when patterns come from a YAML
spec and texts from a model. RE2 has no backreferences and no lookaround; a pattern that
needs them is rejected, never handed to a backtracking engine. Other differences from
Python's ``re``: ``\z`` (not ``\Z``) is the end of text, and ``\w``, ``\d``, ``\b``
are ASCII-only (use ``\pL``, ``\p{Greek}``... for other scripts).
"""

from __future__ import annotations

import re
from typing import Literal, Sequence


from deal_chains.jsonkit import patterns
from rewards.base import BaseReward, RewardContext

Mode = Literal["search", "fullmatch"]

# The trailing run of word characters of an unfinished text: a continuation may extend it
# (Unicode ``\w``, wider than RE2's ASCII one, so the cut is never too short).
_TRAILING_WORD = re.compile(r"\w+\Z")
# Assertions about what follows a match: a continuation can turn them false, so a match
# that uses one may be undone by more text. Detected conservatively on the source (an
# escaped ``\$`` also counts; that only makes ``settled`` say False more often).
_END_SENSITIVE = re.compile(r"\$|\\[zZB]")
_SYNTAX_URL = "https://github.com/google/re2/wiki/Syntax"


def _as_patterns(value: str | Sequence[str] | None, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    elif isinstance(value, (bytes, bytearray)):
        raise TypeError(f"RegexReward: {field} must be a string or a list of strings, not bytes")
    out = []
    for i, p in enumerate(value):
        if not isinstance(p, str):
            raise TypeError(f"RegexReward: {field}[{i}] must be a string, got {type(p).__name__}")
        if not p:
            raise ValueError(f"RegexReward: {field}[{i}] is an empty pattern")
        out.append(p)
    return out


def compile_re2(pattern: str, ignore_case: bool = False, field: str = "pattern"):
    """Compile ``pattern`` with RE2, or raise ValueError naming it and saying why."""
    try:
        return patterns.compile_re2(pattern, ignore_case, field)
    except ValueError as exc:
        raise ValueError(f"RegexReward: {exc}") from None


def _encode(text: str) -> bytes:
    # Encoded once per text and searched as bytes by every pattern (the re2 module would
    # otherwise re-encode the text for each one). Lone surrogates pass through.
    return text.encode("utf-8", "surrogatepass")


class RegexReward(BaseReward):
    r"""Fraction of regex constraints a text satisfies.

    >>> r = RegexReward(must_match="^[A-Z]", must_not_match=["!", r"\bvery\b"])
    >>> r.score(["Fine.", "Very fine!", "very good"], None)
    [1.0, 0.6666666666666666, 0.3333333333333333]

    Each ``must_match`` pattern counts as satisfied when it matches the text, each
    ``must_not_match`` pattern when it does not; the score is satisfied / total. With
    ``mode="search"`` a pattern may match anywhere, with ``mode="fullmatch"`` it must
    match the whole text (for must-not patterns too: the text must not be wholly such a
    match). ``ignore_case`` applies to every pattern (``(?i)`` inside one works as well).

    Patterns are compiled once, with RE2 (linear-time; see the module docs); a pattern
    RE2 rejects (backreferences, lookaround, bad syntax) raises ValueError naming it.
    """

    def __init__(
        self,
        must_match: str | Sequence[str] = (),
        must_not_match: str | Sequence[str] = (),
        mode: Mode = "search",
        ignore_case: bool = False,
        weight: float = 1.0,
        name: str = "regex",
        terminal: bool = False,
    ) -> None:
        if mode not in ("search", "fullmatch"):
            raise ValueError(f"RegexReward: mode must be 'search' or 'fullmatch', got {mode!r}")
        self.must_match = _as_patterns(must_match, "must_match")
        self.must_not_match = _as_patterns(must_not_match, "must_not_match")
        if not self.must_match and not self.must_not_match:
            raise ValueError("RegexReward: give at least one must_match or must_not_match pattern")
        self.mode: Mode = mode
        self.ignore_case = bool(ignore_case)
        self._must = [
            compile_re2(p, self.ignore_case, f"must_match[{i}]") for i, p in enumerate(self.must_match)
        ]
        self._must_not = [
            compile_re2(p, self.ignore_case, f"must_not_match[{i}]")
            for i, p in enumerate(self.must_not_match)
        ]
        # A must-match in search mode stays matched under any continuation when it is found
        # before the text's trailing partial word and asserts nothing about what follows.
        self._monotone = mode == "search" and not any(_END_SENSITIVE.search(p) for p in self.must_match)
        self.weight = float(weight)
        self.name = name
        self.terminal = bool(terminal)

    def _found(self, pattern, data: bytes) -> bool:
        if self.mode == "fullmatch":
            return pattern.fullmatch(data) is not None
        return pattern.search(data) is not None

    def satisfied(self, text: str) -> list[bool]:
        """One flag per constraint, must_match patterns first, then must_not_match."""
        data = _encode(text)
        return [self._found(p, data) for p in self._must] + [
            not self._found(p, data) for p in self._must_not
        ]

    def violations(self, text: str) -> list[str]:
        """The constraints ``text`` breaks, as ``"must_match '<pattern>'"`` strings."""
        labels = [f"must_match {p!r}" for p in self.must_match] + [
            f"must_not_match {p!r}" for p in self.must_not_match
        ]
        return [label for label, ok in zip(labels, self.satisfied(text)) if not ok]

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        n = len(self._must) + len(self._must_not)
        out = []
        for text in texts:
            data = _encode(text)
            ok = sum(self._found(p, data) for p in self._must)
            ok += sum(not self._found(p, data) for p in self._must_not)
            out.append(ok / n)
        return out

    def settled(self, text: str, context: RewardContext | None = None) -> bool:
        r"""True when every constraint is met in a way no continuation can undo.

        Only must-match patterns in search mode can be: a must-not pattern may come to
        match as the text grows, and so may a full match stop matching. A must-match
        pattern counts when it is found in the text without its trailing partial word
        (``cat\b`` in "the cat" may yet become "the catalog") and does not use ``$``,
        ``\z`` or ``\B``, which look past the end of the match.
        """
        if self._must_not or not self._monotone:
            return False
        m = _TRAILING_WORD.search(text)
        data = _encode(text[: m.start()] if m else text)
        return all(p.search(data) is not None for p in self._must)

    def __repr__(self) -> str:
        parts = []
        if self.must_match:
            parts.append(f"must_match={self.must_match!r}")
        if self.must_not_match:
            parts.append(f"must_not_match={self.must_not_match!r}")
        if self.mode != "search":
            parts.append(f"mode={self.mode!r}")
        if self.ignore_case:
            parts.append("ignore_case=True")
        return f"RegexReward({', '.join(parts)}, name={self.name!r}, weight={self.weight})"
