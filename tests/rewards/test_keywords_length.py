"""KeywordCoverage and LengthReward: matching, settled hints, decay and validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rewards import (
    BaseReward,
    KeywordCoverage,
    LengthReward,
    Reward,
    RewardContext,
    reward_bounds,
    reward_settled,
)
from rewards.keywords import inflected_forms

CTX = RewardContext()
ROOT = Path(__file__).resolve().parents[2]


# --- KeywordCoverage: matching ---------------------------------------------------------


def test_protocol_and_bounds():
    kw = KeywordCoverage(["dog"])
    assert isinstance(kw, Reward) and isinstance(kw, BaseReward)
    assert reward_bounds(kw) == (0.0, 1.0)
    assert (kw.name, kw.weight, kw.terminal) == ("keywords", 1.0, False)
    kw2 = KeywordCoverage(["dog"], weight=2, name="kw", terminal=True)
    assert (kw2.name, kw2.weight, kw2.terminal) == ("kw", 2.0, True)


@pytest.mark.parametrize(
    "word, text",
    [
        ("dog", "Two dogs barked."),
        ("run", "She ran home."),
        ("run", "He is running late."),
        ("ran", "They run every day."),  # lemma of an inflected keyword
        ("child", "The children played."),
        ("go", "We went there."),
        ("good", "This one is better."),
        ("stand", "He stood up."),
    ],
)
def test_inflections_match(word, text):
    assert KeywordCoverage([word]).score([text], CTX) == [1.0]


def test_inflections_false_is_exact():
    kw = KeywordCoverage(["dog", "run"], inflections=False)
    assert kw.coverage("Dogs ran.") == [False, False]
    assert kw.coverage("A dog can run.") == [True, True]


def test_unknown_word_fallback_rules():
    assert {"xyzzies", "xyzzied", "xyzzying"} <= inflected_forms("xyzzy")
    assert {"blogs", "blogged", "blogging"} <= inflected_forms("blog")
    assert {"zorbles", "zorbled", "zorbling"} <= inflected_forms("zorble")
    assert KeywordCoverage(["zorble"]).coverage("We were zorbling all day.") == [True]


@pytest.mark.parametrize(
    "text, present",
    [
        ("The dog's bowl.", True),
        ("The dog’s bowl.", True),
        ("A hot-dog stand.", True),
        ("dog", True),
        ("(dog)", True),
        ("DOG!", True),
        ("A hotdog stand.", False),
        ("Dogma is not a dog word.", True),
        ("Dogma only.", False),
        ("underdog_", False),
    ],
)
def test_whole_word_and_case(text, present):
    assert KeywordCoverage(["dog"], inflections=False).coverage(text) == [present]


def test_case_insensitive_keyword():
    assert KeywordCoverage(["Paris"]).score(["we love paris"], CTX) == [1.0]


def test_multi_word_concepts():
    kw = KeywordCoverage(["ice cream", "hot dog"])
    assert kw.coverage("Ice  cream and hot-dogs.") == [True, True]
    assert kw.coverage("We bought ice creams.") == [True, False]
    assert kw.coverage("Iced cream, a hot dogma.") == [False, False]


def test_score_fraction_and_missing():
    kw = KeywordCoverage(["dog", "frisbee", "catch", "park"])
    texts = ["The dog caught a frisbee.", "", "Nothing here.", "Dogs catch frisbees in parks."]
    assert kw.score(texts, CTX) == [0.75, 0.0, 0.0, 1.0]
    assert kw.missing("The dog caught a frisbee.") == ["park"]
    assert kw.coverage("park") == [False, False, False, True]


def test_explicit_forms_mapping():
    kw = KeywordCoverage(["stand", "look"], inflections={"Stand": ["stood", "standing"]})
    assert kw.coverage("He stood there.") == [True, False]
    # Words the mapping does not name match exactly; the word itself always counts.
    assert kw.coverage("He looked, then could stand.") == [True, False]
    assert kw.coverage("Stands look.") == [False, True]


def test_explicit_forms_aligned_list():
    kw = KeywordCoverage(["field", "look"], inflections=[["fields", "Field"], ["Looking"]])
    assert kw.coverage("Fields, looking.") == [True, True]
    assert kw.coverage("He looked at the field.") == [True, False]
    assert kw.forms["look"] == frozenset({"look", "looking"})


def test_apostrophe_form():
    kw = KeywordCoverage(["ski"], inflections=[["ski'd"]])
    assert kw.coverage("We ski’d all day.") == [True]


def test_words_validation():
    with pytest.raises(ValueError, match="empty"):
        KeywordCoverage([])
    with pytest.raises(ValueError, match=r"words\[1\]"):
        KeywordCoverage(["dog", "  "])
    with pytest.raises(TypeError):
        KeywordCoverage("dog")
    with pytest.raises(ValueError, match="align"):
        KeywordCoverage(["dog", "cat"], inflections=[["dogs"]])
    with pytest.raises(ValueError, match="not in words"):
        KeywordCoverage(["dog"], inflections={"cat": ["cats"]})


def test_words_stripped_and_deduplicated():
    kw = KeywordCoverage([" Dog ", "dog", "DOG", "cat"], inflections=False)
    assert kw.words == ["Dog", "cat"]
    assert kw.score(["a dog"], CTX) == [0.5]
    # Explicit forms of duplicates are merged.
    kw = KeywordCoverage(["paint", "Paint"], inflections=[["paints"], ["painting"]])
    assert kw.words == ["paint"]
    assert kw.forms["paint"] == frozenset({"paint", "paints", "painting"})


# --- KeywordCoverage: settled ----------------------------------------------------------


@pytest.mark.parametrize(
    "text, settled",
    [
        ("The cat sat", False),  # "sat" may be growing, and nothing ends after it yet
        ("The cat sat on the dog", False),  # "dog" could become "dogma"
        ("The cat sat on the dog.", True),
        ("The cat sat on the dog ", True),
        ("The dog sat on the cat and", True),
        ("The cat and the dog's", True),  # the trailing "s" is partial, "dog" is not
        ("The cat", False),
        ("", False),
        ("The catalog and dog.", False),
    ],
)
def test_settled_ignores_trailing_partial_word(text, settled):
    kw = KeywordCoverage(["cat", "dog"], inflections=False)
    assert kw.settled(text, CTX) is settled
    assert reward_settled(kw, text, CTX) is settled


def test_settled_multi_word():
    kw = KeywordCoverage(["ice cream"], inflections=False)
    assert not kw.settled("I want ice cream", CTX)
    assert kw.settled("I want ice cream,", CTX)


# --- LengthReward ----------------------------------------------------------------------


def test_length_inside_range_scores_one():
    r = LengthReward(min_words=2, max_words=5)
    assert r.score(["one two", "one two three four five", "don't well-known x"], CTX) == [1.0] * 3
    assert reward_bounds(r) == (0.0, 1.0)


def test_length_decay_monotone_and_bounded():
    r = LengthReward(min_words=5, max_words=10)
    over = [r.score([" ".join(["w"] * n)], CTX)[0] for n in range(10, 40)]
    under = [r.score([" ".join(["w"] * n)], CTX)[0] for n in range(5, -1, -1)]
    for seq in (over, under):
        assert seq[0] == 1.0
        assert all(0.0 < s <= 1.0 for s in seq)
        assert all(a > b for a, b in zip(seq, seq[1:]))


def test_length_default_and_custom_scale():
    # Default scale: max(1, 20% of the violated bound) -> 2 for max_words=10.
    r = LengthReward(max_words=10)
    assert r.score([" ".join(["w"] * 12)], CTX) == [pytest.approx(0.5)]
    r = LengthReward(max_words=10, scale=4)
    assert r.score([" ".join(["w"] * 14)], CTX) == [pytest.approx(0.5)]
    r = LengthReward(min_words=3)  # scale max(1, 0.6) = 1
    assert r.score(["one"], CTX) == [pytest.approx(1 / 5)]


def test_length_tokens_via_callable():
    chars = LengthReward(max_tokens=10, count_tokens=len)
    assert chars.score(["short", "this is far too long"], CTX)[0] == 1.0
    assert 0.0 < chars.score(["this is far too long"], CTX)[0] < 1.0
    assert chars.settled("abc", CTX) and not chars.settled("abcdefg", CTX)
    # Words and tokens together: the lower score wins.
    both = LengthReward(max_words=100, max_tokens=3, count_tokens=lambda t: len(t.split()))
    assert both.score(["a b c d"], CTX)[0] < 1.0


def test_length_settled_margin():
    r = LengthReward(min_words=2, max_words=10)
    words = lambda n: " ".join(["w"] * n)  # noqa: E731
    assert not r.settled(words(1), CTX)  # below the minimum
    assert r.settled(words(2), CTX)
    assert r.settled(words(7), CTX)  # 10 - 3
    assert not r.settled(words(8), CTX)  # a few more words could cross the max
    assert not r.settled(words(11), CTX)
    assert LengthReward(min_words=2).settled(words(50), CTX)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "at least one"),
        ({"min_words": 5, "max_words": 2}, "min_words"),
        ({"min_tokens": 5, "max_tokens": 2, "count_tokens": len}, "min_tokens"),
        ({"max_words": -1}, "max_words"),
        ({"min_words": 2.5}, "min_words"),
        ({"max_words": True}, "max_words"),
        ({"max_tokens": 5}, "max_tokens.*count_tokens"),
        ({"min_tokens": 5}, "min_tokens.*count_tokens"),
        ({"max_words": 5, "scale": 0}, "scale"),
    ],
)
def test_length_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LengthReward(**kwargs)


# --- package hygiene -------------------------------------------------------------------


def test_rewards_imports_no_heavy_dependencies():
    code = (
        "import sys, rewards, rewards.keywords, rewards.length;"
        "bad = [m for m in ('torch', 'transformers', 'langchain', 'langchain_core', 'deal_chains.search',"
        " 'deal_chains.models', 'deal_chains.spec') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_docstring_example_runs():
    import doctest

    import rewards

    result = doctest.testmod(rewards)
    assert result.attempted > 0 and result.failed == 0
