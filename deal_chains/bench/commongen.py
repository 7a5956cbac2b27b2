"""CommonGen: load concept sets (and their inflections) and measure concept coverage.

Data file (e.g. ``dev.txt``): one example per line, ``concept1 concept2 ... = reference``
(lines start with a space in the released files). Constraints file (e.g.
``dev.constraint.json``): one JSON list per line, same order, holding one list of
accepted forms per concept, e.g. ``[["Field", "fields", "field"], ["look", "looking"]]``.
Those lists are sorted by concept, not in the data line's concept order, so they are
matched to concepts by content. A concept can occur twice on a line (noun and verb
sense: ``paint picture paint``), with one form list per sense; each occurrence then gets
the union of both lists, since a text cannot tell which sense a word was meant as.

The constraint lists omit most past tenses ("climbed", "wore", "ran"), so coverage counts
lemminflect's forms as well by default (``forms="both"``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from deal_chains.errors import InputError
from rewards.keywords import KeywordCoverage, inflected_forms


@dataclass
class CommonGenItem:
    """One concept set: its concepts in file order, reference sentence(s) and, when a
    constraints file was given, the accepted (lower-cased) forms of each concept."""

    concepts: list[str]
    references: list[str]
    inflections: list[list[str]] | None = None


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) for each non-blank line of ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"CommonGen file not found: {path}")
    with path.open(encoding="utf-8-sig") as f:
        return [(i, line.rstrip("\r\n")) for i, line in enumerate(f, 1) if line.strip()]


def _parse_data_line(path: Path, lineno: int, line: str) -> tuple[list[str], list[str]]:
    concepts_part, sep, reference = line.partition("=")
    concepts = concepts_part.split()
    if not sep or not concepts:
        raise InputError(
            f"{path}:{lineno}: expected 'concept1 concept2 ... = reference sentence', got {line!r}"
        )
    reference = reference.strip()
    return concepts, [reference] if reference else []


def _parse_constraint_line(
    path: Path, lineno: int, line: str, concepts: list[str]
) -> list[list[str]]:
    """Per-concept forms (aligned with ``concepts``) from one constraints line."""
    try:
        lists = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{lineno}: not valid JSON: {e.msg}") from None
    if not (
        isinstance(lists, list)
        and all(isinstance(forms, list) and all(isinstance(f, str) for f in forms) for forms in lists)
    ):
        raise InputError(f"{path}:{lineno}: expected a JSON list of lists of strings, got {line[:80]!r}")
    if len(lists) != len(concepts):
        raise InputError(
            f"{path}:{lineno}: {len(lists)} form lists for {len(concepts)} concepts {concepts}"
        )
    lowered = [[f.strip().lower() for f in forms if f.strip()] for forms in lists]
    keys = {c.lower() for c in concepts}
    for forms in lowered:
        if not keys.intersection(forms):
            raise InputError(f"{path}:{lineno}: form list {forms} contains none of the concepts {concepts}")
    aligned = []
    for concept in concepts:
        key = concept.lower()
        matching = [forms for forms in lowered if key in forms]
        if not matching:
            raise InputError(f"{path}:{lineno}: no form list contains concept {concept!r}")
        merged = [key]
        for forms in matching:
            merged.extend(f for f in forms if f not in merged)
        aligned.append(merged)
    return aligned


def load_commongen(
    data: str | Path,
    constraints: str | Path | None = None,
    n: int | None = None,
    offset: int = 0,
) -> list[CommonGenItem]:
    """Load CommonGen items from ``data`` (and per-concept forms from ``constraints``).

    ``offset`` skips that many items, ``n`` keeps at most that many. Blank lines are
    ignored; the two files must have the same number of non-blank lines.
    Raises FileNotFoundError for a missing file and ``InputError`` (a ValueError) naming
    ``file:line`` for a malformed line or mismatched files.
    """
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"load_commongen: offset must be a non-negative integer, got {offset!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"load_commongen: n must be a non-negative integer or None, got {n!r}")
    data_path = Path(data)
    rows = [(i, *_parse_data_line(data_path, i, line)) for i, line in _read_lines(data_path)]

    forms_per_row: list[list[list[str]] | None] = [None] * len(rows)
    if constraints is not None:
        cons_path = Path(constraints)
        cons_lines = _read_lines(cons_path)
        if len(cons_lines) != len(rows):
            raise InputError(
                f"{cons_path}: {len(cons_lines)} lines, but {data_path} has {len(rows)}; "
                "the constraints file must have one line per data line"
            )
        forms_per_row = [
            _parse_constraint_line(cons_path, lineno, line, concepts)
            for (lineno, line), (_, concepts, _) in zip(cons_lines, rows)
        ]

    items = [
        CommonGenItem(concepts=concepts, references=refs, inflections=forms)
        for (_, concepts, refs), forms in zip(rows, forms_per_row)
    ]
    end = None if n is None else offset + n
    return items[offset:end]


FormsMode = Literal["both", "explicit", "lemminflect"]
_FORMS_MODES = ("both", "explicit", "lemminflect")


@functools.lru_cache(maxsize=4096)
def _coverage_reward(
    concepts: tuple[str, ...], explicit: tuple[tuple[str, ...], ...] | None, forms: FormsMode
) -> KeywordCoverage:
    # Cached: building the regexes (and lemminflect forms) costs more than matching.
    if explicit is None or forms == "lemminflect":
        return KeywordCoverage(list(concepts), inflections=True)
    if forms == "explicit":
        return KeywordCoverage(list(concepts), inflections=[list(f) for f in explicit])
    return KeywordCoverage(
        list(concepts),
        inflections=[sorted(set(f) | inflected_forms(c)) for c, f in zip(concepts, explicit)],
    )


def concept_coverage(text: str, item: CommonGenItem, forms: FormsMode = "both") -> list[bool]:
    """One flag per concept of ``item`` (duplicates included): is it present in ``text``?

    ``forms`` picks what counts as a concept's form: ``"both"`` (default) the item's
    explicit forms plus lemminflect's, ``"explicit"`` the item's forms only,
    ``"lemminflect"`` lemminflect's only. Items without explicit forms always use
    lemminflect's. The default is ``"both"`` because CommonGen's constraint lists omit
    most past tenses ("climbed", "wore", "ran"): with them alone, only about 80% of the
    dev references themselves count as covering all their concepts.
    """
    if forms not in _FORMS_MODES:
        raise ValueError(f"concept_coverage: forms must be one of {_FORMS_MODES}, got {forms!r}")
    explicit = None if item.inflections is None else tuple(tuple(f) for f in item.inflections)
    kw = _coverage_reward(tuple(item.concepts), explicit, forms)
    covered = dict(zip((w.lower() for w in kw.words), kw.coverage(text)))
    return [covered[c.strip().lower()] for c in item.concepts]


def _check_pairs(texts: Sequence[str], items: Sequence[CommonGenItem]) -> None:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string")
    if len(texts) != len(items):
        raise ValueError(f"{len(texts)} texts for {len(items)} items; give one text per item")
    if not items:
        raise ValueError("no texts to score")


def soft_coverage(
    texts: Sequence[str], items: Sequence[CommonGenItem], forms: FormsMode = "both"
) -> float:
    """Mean over texts of the fraction of their item's concepts present."""
    _check_pairs(texts, items)
    total = 0.0
    for text, item in zip(texts, items):
        flags = concept_coverage(text, item, forms)
        total += sum(flags) / len(flags)
    return total / len(items)


def hard_coverage(
    texts: Sequence[str], items: Sequence[CommonGenItem], forms: FormsMode = "both"
) -> float:
    """Fraction of texts that contain every concept of their item."""
    _check_pairs(texts, items)
    return sum(all(concept_coverage(t, it, forms)) for t, it in zip(texts, items)) / len(items)


def commongen_prompt(concepts: Sequence[str]) -> str:
    """The instruction for one concept set, e.g.
    ``Write one short sentence that uses all of these words: dog, frisbee, catch.``"""
    if isinstance(concepts, str):
        raise TypeError("commongen_prompt: concepts must be a list of strings, not a single string")
    if not concepts:
        raise ValueError("commongen_prompt: concepts is empty")
    return f"Write one short sentence that uses all of these words: {', '.join(concepts)}."


# phrases of the instruction that a sentence about the concepts has no reason to use: an
# output that has one talks about the request ("... are all of these words.")
# phrases of the request, and of talk about the answer itself ("In this sentence, the word
# sit is used..."): an answer that uses them talks about the task instead of doing it
INSTRUCTION_PHRASES = ("these words", "all of these", "given words", "following words", "short sentence",
                       "one sentence", "uses all", "use all", "this sentence", "the word")


def reads_badly(text: str) -> dict[str, bool]:
    """What a reader would object to in a CommonGen answer, by plain definitions
    (``docs/benchmarks.md``), none of them used by the search:

    - ``word_list``: three or more comma-separated parts (a final "and" splits too), every
      one at most three words: ``Mower, push, lawn, mow.``, ``A river, a boat, and a paddle.``;
    - ``mentions_instruction``: uses a phrase of the instruction, or talks about the answer
      and its words (``INSTRUCTION_PHRASES``: "this sentence", "the word");
    - ``unended``: does not end with ``.``, ``!`` or ``?`` (a closing quote or bracket
      may follow): cut off, or a fragment;
    - ``bad``: any of these.

    >>> reads_badly("Mower, push, lawn, mow.")["word_list"]
    True
    >>> reads_badly("The dog caught the frisbee, and the boy threw it.")
    {'word_list': False, 'mentions_instruction': False, 'unended': False, 'bad': False}
    """
    import re

    body = text.strip()
    parts = [p.strip() for p in re.split(r",|;|\band\b", body.rstrip(".!?\"')] ")) if p.strip()]
    word_list = len(parts) >= 3 and all(len(p.split()) <= 3 for p in parts)
    lowered = " ".join(body.lower().split())
    mentions = any(phrase in lowered for phrase in INSTRUCTION_PHRASES)
    unended = not re.search(r"[.!?][\"')\]]*$", body)
    return {"word_list": word_list, "mentions_instruction": mentions, "unended": unended,
            "bad": word_list or mentions or unended}
