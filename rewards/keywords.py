"""Keyword coverage: the fraction of required words (or any of their forms) in a text."""

from __future__ import annotations

import functools
import re
from typing import Mapping, Sequence

from rewards.base import BaseReward, RewardContext

# A word is "present" when one of its forms occurs with no word character directly before
# or after it. Apostrophes and hyphens are not word characters, so "dog's" and "hot-dog"
# contain "dog" while "hotdog" and "dogma" do not.
_LEFT = r"(?<!\w)"
_RIGHT = r"(?!\w)"
# Inside a multi-word form, any run of whitespace or hyphens separates the parts, so
# "ice cream" also matches "ice-cream" and "ice\ncream".
_PART_SEP = re.compile(r"[\s\-‐‑]+")
_APOSTROPHES = "'’"
# The trailing run of word characters of an unfinished text: a continuation may extend it.
_TRAILING_WORD = re.compile(r"\w+\Z")
_WORD_CHAR = re.compile(r"\w")
_VOWELS = frozenset("aeiou")

InflectionsArg = bool | Mapping[str, Sequence[str]] | Sequence[Sequence[str]]


def _fallback_forms(word: str) -> set[str]:
    """Regular English inflections for a word lemminflect does not know."""
    w = word.lower()
    forms = {w}
    if len(w) < 2 or not w.isalpha():
        return forms
    # Plural / third person.
    if w.endswith(("s", "x", "z", "ch", "sh")):
        forms.add(w + "es")
    elif w.endswith("o"):  # "potatoes" but "photos": accept both
        forms.update({w + "s", w + "es"})
    elif w.endswith("y") and w[-2] not in _VOWELS:
        forms.add(w[:-1] + "ies")
    else:
        forms.add(w + "s")
    # Past and gerund.
    if w.endswith("e") and not w.endswith(("ee", "ye", "oe")):
        forms.update({w + "d", w[:-1] + "ing"})
    elif w.endswith("y") and w[-2] not in _VOWELS:
        forms.update({w[:-1] + "ied", w + "ing"})
    else:
        forms.update({w + "ed", w + "ing"})
        # Consonant doubling for short consonant-vowel-consonant endings ("blog" -> "blogged").
        if (
            len(w) >= 3
            and w[-1] not in _VOWELS | set("wxy")
            and w[-2] in _VOWELS
            and w[-3] not in _VOWELS
        ):
            forms.update({w + w[-1] + "ed", w + w[-1] + "ing"})
    return forms


@functools.lru_cache(maxsize=4096)
def inflected_forms(word: str) -> frozenset[str]:
    """Lower-cased forms of ``word``: itself, its noun/verb/adjective inflections and its
    lemma(s) per lemminflect, or regular-rule forms when lemminflect knows none.

    For a multi-word ``word`` only the last part (the head, "ice cream" -> "ice creams")
    is inflected.
    """
    word = word.strip().lower()
    parts = word.split()
    if len(parts) > 1:
        head_forms = inflected_forms(parts[-1])
        prefix = " ".join(parts[:-1])
        return frozenset(f"{prefix} {h}" for h in head_forms)

    import lemminflect  # lazy: loading its tables takes a moment

    forms = {word}
    for upos in ("NOUN", "VERB", "ADJ"):
        for tag_forms in lemminflect.getAllInflections(word, upos=upos).values():
            forms.update(f.lower() for f in tag_forms)
    for lemmas in lemminflect.getAllLemmas(word).values():
        forms.update(lemma.lower() for lemma in lemmas)
    # lemminflect sometimes knows a word only as itself ("blog": just VBP "blog"); then
    # the regular rules give more than nothing.
    if forms == {word}:
        forms = _fallback_forms(word)
    return frozenset(forms)


def _form_pattern(form: str) -> str:
    """Regex source matching ``form`` as whole word(s)."""
    parts = [p for p in _PART_SEP.split(form.strip()) if p]
    if not parts:  # a form made only of separators ("-"): match it literally
        return re.escape(form.strip())
    escaped = []
    for part in parts:
        # Straight and curly apostrophes are interchangeable ("dog's" == "dog’s").
        escaped.append(
            "".join(f"[{_APOSTROPHES}]" if ch in _APOSTROPHES else re.escape(ch) for ch in part)
        )
    body = r"[\s\-‐‑]+".join(escaped)
    # Boundaries only where the form has a word character at that edge ("C++" must
    # still match before a space, where "(?!\w)" after "+" would be meaningless).
    left = _LEFT if _WORD_CHAR.match(parts[0][0]) else ""
    right = _RIGHT if _WORD_CHAR.match(parts[-1][-1]) else ""
    return f"{left}{body}{right}"


def _compile(forms: Sequence[str]) -> re.Pattern[str]:
    # Longest first so an alternation prefers the fullest form (deterministic spans).
    ordered = sorted(set(forms), key=lambda f: (-len(f), f))
    return re.compile("|".join(f"(?:{_form_pattern(f)})" for f in ordered), re.IGNORECASE)


class KeywordCoverage(BaseReward):
    """Fraction of ``words`` present in a text (whole-word, case-insensitive).

    A word counts as present when any of its forms occurs:

    - ``inflections=True``: the word, its inflections and lemma(s) (lemminflect, or
      regular English rules for unknown words), so "run" is covered by "ran"/"running";
    - ``inflections=False``: the exact word only;
    - a mapping ``word -> forms`` or a list of form lists aligned with ``words`` (as in
      CommonGen's ``dev.constraint.json``): those forms plus the word itself. Words a
      mapping does not name match exactly.

    Words are stripped and de-duplicated case-insensitively (explicit forms of duplicates
    are merged). Multi-word words ("ice cream") match across any whitespace or hyphens.
    """

    def __init__(
        self,
        words: Sequence[str],
        inflections: InflectionsArg = True,
        weight: float = 1.0,
        name: str = "keywords",
        terminal: bool = False,
    ) -> None:
        if isinstance(words, str):
            raise TypeError("KeywordCoverage: words must be a list of strings, not a single string")
        words = list(words)
        if not words:
            raise ValueError("KeywordCoverage: words is empty; give at least one word")
        explicit = _explicit_forms(words, inflections)

        self.words: list[str] = []
        forms_by_key: dict[str, set[str]] = {}
        for i, raw in enumerate(words):
            if not isinstance(raw, str):
                raise TypeError(f"KeywordCoverage: words[{i}] must be a string, got {type(raw).__name__}")
            word = raw.strip()
            if not word:
                raise ValueError(f"KeywordCoverage: words[{i}] is empty")
            key = word.lower()
            if key not in forms_by_key:
                self.words.append(word)
                forms_by_key[key] = {key}
            if explicit is None:
                if inflections:
                    forms_by_key[key].update(inflected_forms(word))
            else:
                forms_by_key[key].update(explicit[i])

        self.forms: dict[str, frozenset[str]] = {
            w: frozenset(forms_by_key[w.lower()]) for w in self.words
        }
        self._patterns = [_compile(sorted(self.forms[w])) for w in self.words]
        self.weight = float(weight)
        self.name = name
        self.terminal = bool(terminal)

    def coverage(self, text: str) -> list[bool]:
        """One flag per word: is it (any of its forms) present in ``text``?"""
        return [p.search(text) is not None for p in self._patterns]

    def missing(self, text: str) -> list[str]:
        """The words not present in ``text``, in order."""
        return [w for w, p in zip(self.words, self._patterns) if p.search(text) is None]

    def score(self, texts: Sequence[str], context: RewardContext | None = None) -> list[float]:
        n = len(self._patterns)
        return [sum(p.search(t) is not None for p in self._patterns) / n for t in texts]

    def tokens_owed(self, text: str, context: RewardContext | None = None) -> int:
        """Tokens the missing words take at least (two each: a word and what joins it):
        the search keeps a hypothesis from ending while the budget can still pay them.

        >>> KeywordCoverage(["dog", "ball"]).tokens_owed("The dog sat.")
        2
        """
        return 2 * len(self.missing(text))

    def pending(self, text: str, context: RewardContext | None = None) -> list[tuple[str, float, list[str]]]:
        """The missing words, each with the score it would add and its forms.

        >>> KeywordCoverage(["dog", "ball"], inflections=False).pending("The dog sat.")
        [('ball', 0.5, ['ball'])]
        """
        n = len(self._patterns)
        return [(w, 1.0 / n, sorted(self.forms[w])) for w in self.missing(text)]

    def settled(self, text: str, context: RewardContext | None = None) -> bool:
        """True when every word is present in a way no continuation can undo.

        A text ending inside a word ("the cat") may still grow ("the catalog"), so that
        trailing partial word is ignored; a text ending in whitespace or punctuation
        counts whole.
        """
        m = _TRAILING_WORD.search(text)
        end = m.start() if m else len(text)
        # ``endpos`` is exact here: the character before ``end`` is not a word
        # character, so no whole-word match can straddle the cut.
        return all(p.search(text, 0, end) is not None for p in self._patterns)

    def __repr__(self) -> str:
        return f"KeywordCoverage(words={self.words!r}, name={self.name!r}, weight={self.weight})"


def _explicit_forms(words: list, inflections: InflectionsArg) -> list[set[str]] | None:
    """Per-word explicit forms (lower-cased), or None when ``inflections`` is a bool."""
    if isinstance(inflections, bool):
        return None
    if isinstance(inflections, str):
        raise TypeError("KeywordCoverage: inflections must be a bool, a mapping or a list of form lists")
    if isinstance(inflections, Mapping):
        by_key: dict[str, set[str]] = {}
        for key, forms in inflections.items():
            by_key.setdefault(str(key).strip().lower(), set()).update(
                _clean_forms(forms, f"inflections[{key!r}]")
            )
        keys = {str(w).strip().lower() for w in words}
        unknown = sorted(k for k in by_key if k not in keys)
        if unknown:
            raise ValueError(f"KeywordCoverage: inflections names words not in words: {unknown}")
        return [set(by_key.get(str(w).strip().lower(), ())) for w in words]
    lists = list(inflections)
    if len(lists) != len(words):
        raise ValueError(
            f"KeywordCoverage: inflections has {len(lists)} form lists for {len(words)} words; "
            "a list of form lists must align with words"
        )
    return [_clean_forms(forms, f"inflections[{i}]") for i, forms in enumerate(lists)]


def _clean_forms(forms: Sequence[str], where: str) -> set[str]:
    if isinstance(forms, str):
        raise TypeError(f"KeywordCoverage: {where} must be a list of forms, not a single string")
    out = set()
    for j, form in enumerate(forms):
        if not isinstance(form, str):
            raise TypeError(f"KeywordCoverage: {where}[{j}] must be a string, got {type(form).__name__}")
        form = form.strip().lower()
        if not form:
            raise ValueError(f"KeywordCoverage: {where}[{j}] is empty")
        out.add(form)
    return out
