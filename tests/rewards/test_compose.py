"""RegexReward, CallableReward and reward plugins, and the composite rewards."""

from __future__ import annotations

import doctest
import functools
import importlib
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from plugins import installed_plugin

import rewards
import rewards.callable as rcallable
from rewards import (
    AllOf,
    AnyOf,
    BaseReward,
    CallableReward,
    Gated,
    KeywordCoverage,
    LengthReward,
    Normalized,
    RegexReward,
    Reward,
    RewardContext,
    Threshold,
    UnknownPluginError,
    WeightedSum,
    available_plugins,
    load_plugin,
    reward_bounds,
    reward_settled,
)

CTX = RewardContext()
ROOT = Path(__file__).resolve().parents[2]


# --- RegexReward -----------------------------------------------------------------------


def test_regex_protocol_and_defaults():
    r = RegexReward(must_match="a")
    assert isinstance(r, Reward) and isinstance(r, BaseReward)
    assert (r.name, r.weight, r.terminal) == ("regex", 1.0, False)
    assert reward_bounds(r) == (0.0, 1.0)
    r2 = RegexReward(must_match=["a"], weight=2, name="re", terminal=True)
    assert (r2.name, r2.weight, r2.terminal) == ("re", 2.0, True)


def test_regex_must_and_must_not_fraction():
    r = RegexReward(must_match=[r"\d+", r"^Dear "], must_not_match=["sorry", r"\bAI\b"])
    texts = ["Dear Ann, 3 apples.", "Dear Ann, sorry.", "As an AI, sorry", "Dear AIDA, 42"]
    assert r.score(texts, CTX) == [1.0, 0.5, 0.0, 1.0]
    assert r.satisfied("Dear Ann, sorry.") == [False, True, False, True]
    assert r.violations("Dear Ann, sorry.") == [r"must_match '\\d+'", "must_not_match 'sorry'"]
    assert r.score([], CTX) == []


def test_regex_single_string_patterns():
    assert RegexReward(must_match="cat").score(["a cat", "a dog"], CTX) == [1.0, 0.0]
    assert RegexReward(must_not_match="cat").score(["a cat", "a dog"], CTX) == [0.0, 1.0]


def test_regex_fullmatch_mode():
    r = RegexReward(must_match=r"\d{3}-\d{4}", mode="fullmatch")
    assert r.score(["555-1234", "call 555-1234", "555-12345"], CTX) == [1.0, 0.0, 0.0]
    r = RegexReward(must_not_match=r"\s*", mode="fullmatch")  # not blank
    assert r.score(["", "  ", " x "], CTX) == [0.0, 0.0, 1.0]


def test_regex_ignore_case():
    assert RegexReward(must_match="paris").score(["PARIS"], CTX) == [0.0]
    assert RegexReward(must_match="paris", ignore_case=True).score(["PARIS"], CTX) == [1.0]
    assert RegexReward(must_not_match="TODO", ignore_case=True).score(["todo: x"], CTX) == [0.0]
    assert RegexReward(must_match="(?i)paris").score(["PaRiS"], CTX) == [1.0]


def test_regex_unicode_text():
    r = RegexReward(must_match=["café", r"\p{Greek}+"], must_not_match="ü")
    assert r.score(["un café, αβγ", "cafe", "über café"], CTX) == [1.0, pytest.approx(1 / 3), pytest.approx(1 / 3)]
    assert RegexReward(must_match="x").score(["a\ud800x"], CTX) == [1.0]  # lone surrogate


@pytest.mark.parametrize(
    "pattern, reason",
    [
        (r"(a)\1", "escape"),  # backreference
        (r"foo(?=bar)", "perl operator"),  # lookahead
        (r"(?<!x)y", ""),  # lookbehind
        (r"(unclosed", "missing"),
    ],
)
def test_regex_rejects_non_re2(pattern, reason):
    with pytest.raises(ValueError) as info:
        RegexReward(must_match=["ok", pattern])
    msg = str(info.value)
    assert repr(pattern) in msg and "must_match[1]" in msg
    assert "RE2 syntax" in msg and reason in msg


def test_regex_rejects_in_must_not_and_hints_at_backslash_z():
    with pytest.raises(ValueError, match=r"must_not_match\[0\].*RE2 syntax"):
        RegexReward(must_not_match=r"(\w+) \1")
    with pytest.raises(ValueError, match=r"\\z, not \\Z"):
        RegexReward(must_match=r"end\Z")
    assert RegexReward(must_match=r"end\z").score(["the end", "the end."], CTX) == [1.0, 0.0]


def test_regex_catastrophic_backtracking_is_linear():
    # Each of these takes exponential time in a backtracking engine (Python's re).
    must = RegexReward(must_match=r"(a+)+$")
    must_not = RegexReward(must_not_match=r"(x+x+)+y")
    full = RegexReward(must_match=r"(a|aa)+", mode="fullmatch")
    start = time.perf_counter()
    results = (
        must.score(["a" * 50000 + "b"], CTX),
        must_not.score(["x" * 50000], CTX),
        full.score(["a" * 50000 + "b"], CTX),
    )
    elapsed = time.perf_counter() - start
    assert results == ([0.0], [1.0], [0.0])
    assert elapsed < 0.5, elapsed


def test_regex_catastrophic_pattern_really_does_not_match():
    r = RegexReward(must_match=r"^(a+)+$")
    assert r.score(["a" * 50000 + "b", "aaaa"], CTX) == [0.0, 1.0]


def test_regex_compiled_once(monkeypatch):
    import re2

    r = RegexReward(must_match=["a", "b"], must_not_match="c")
    calls = []
    monkeypatch.setattr(re2, "compile", lambda *a, **k: calls.append(a))
    r.score(["abc"] * 10, CTX)
    r.settled("ab ", CTX)
    assert calls == []


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({}, ValueError, "at least one"),
        ({"must_match": ""}, ValueError, "empty"),
        ({"must_match": ["a", 3]}, TypeError, r"must_match\[1\]"),
        ({"must_match": b"a"}, TypeError, "bytes"),
        ({"must_match": "a", "mode": "match"}, ValueError, "mode"),
    ],
)
def test_regex_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        RegexReward(**kwargs)


@pytest.mark.parametrize(
    "text, settled",
    [
        ("The cat sat.", True),
        ("The cat sat", True),  # "cat" is before the trailing partial word
        ("The cat", False),  # "cat" could grow into "catalog"
        ("The catalog.", False),
        ("", False),
    ],
)
def test_regex_settled_search_mode(text, settled):
    r = RegexReward(must_match=[r"\bcat\b", "The"])
    assert r.settled(text, CTX) is settled
    assert reward_settled(r, text, CTX) is settled


def test_regex_settled_plain_substring_and_unmet():
    r = RegexReward(must_match=["ca", "sat"])
    assert r.settled("the ca sat on", CTX)
    assert not r.settled("the cat sa", CTX)  # "sat" unmet


def test_regex_never_settled_with_must_not_or_fullmatch_or_end_anchors():
    assert not RegexReward(must_match="cat", must_not_match="dog").settled("a cat.", CTX)
    assert not RegexReward(must_not_match="dog").settled("a cat.", CTX)
    assert not RegexReward(must_match=r"cat\.", mode="fullmatch").settled("cat.", CTX)
    for anchored in (r"cat\.$", r"cat\.\z", r"cat\.\B"):
        r = RegexReward(must_match=anchored)
        assert r.score(["a cat."], CTX) == [1.0]
        assert not r.settled("a cat.", CTX)  # more text would unmatch it


# --- CallableReward --------------------------------------------------------------------


def exclaims(text):
    return text.endswith("!")


def mentions(text, context):
    return float(context.variables.get("name", "") in text)


def ctx_optional(text, ctx=None):
    return 1.0 if ctx is not None else 0.0


def flag_optional(text, strict=False):
    return 0.5 if not strict else 1.0


def test_callable_arities():
    ctx = RewardContext(prompt="p", variables={"name": "Ada"})
    assert CallableReward(exclaims).score(["hi!", "hi"], ctx) == [1.0, 0.0]
    assert CallableReward(mentions).score(["Ada", "Bob"], ctx) == [1.0, 0.0]
    assert CallableReward(ctx_optional).score(["x"], ctx) == [1.0]
    assert CallableReward(flag_optional).score(["x"], ctx) == [0.5]  # not handed the context
    assert CallableReward(lambda t: len(t) / 4).score(["ab"], ctx) == [0.5]
    assert CallableReward(lambda t, c: float(c.prompt == "p")).score(["ab"], ctx) == [1.0]
    assert CallableReward(len, bounds=(0, 100)).score(["abc"], ctx) == [3.0]
    assert CallableReward(functools.partial(flag_optional, strict=True)).score(["x"], ctx) == [1.0]

    class Scorer:
        def __call__(self, text, context):
            return 0.25

    assert CallableReward(Scorer(), name="s").score(["x"], ctx) == [0.25]
    # The context defaults to an empty RewardContext.
    assert CallableReward(mentions).score(["x"], None) == [1.0]  # "" in "x"


def test_callable_names_weight_terminal_bounds():
    r = CallableReward(exclaims)
    assert (r.name, r.weight, r.terminal, r.bounds) == ("exclaims", 1.0, False, (0.0, 1.0))
    assert isinstance(r, Reward)
    assert CallableReward(lambda t: 0).name == "<lambda>"
    assert CallableReward(functools.partial(flag_optional)).name == "partial(flag_optional)"
    r = CallableReward(exclaims, name="bang", weight=2, terminal=True, bounds=(-1, 2))
    assert (r.name, r.weight, r.terminal, reward_bounds(r)) == ("bang", 2.0, True, (-1.0, 2.0))


def test_callable_number_types():
    values = iter([True, 3, Fraction(1, 4), Decimal("0.5")])
    r = CallableReward(lambda t: next(values), bounds=(0, 3))
    assert r.score(["a", "b", "c", "d"], CTX) == [1.0, 3.0, 0.25, 0.5]


def test_callable_batched():
    def lengths(texts, context):
        return [len(t) / 10 for t in texts]

    r = CallableReward(lengths, batched=True)
    assert r.name == "lengths" and r.score(["abc", ""], CTX) == [0.3, 0.0]
    assert CallableReward(lambda ts: (1 for _ in ts), batched=True).score(["a", "b"], CTX) == [1.0, 1.0]
    calls = []
    CallableReward(lambda ts, c: calls.append(list(ts)) or [0] * len(ts), batched=True).score(["a", "b"], CTX)
    assert calls == [["a", "b"]]  # one call for the batch


def test_callable_non_number_raises_naming_function():
    def chatty(text):
        return "great"

    with pytest.raises(TypeError, match=r"chatty returned str 'great' for text 0.*must return a number"):
        CallableReward(chatty).score(["x"], CTX)
    with pytest.raises(TypeError, match="returned NoneType"):
        CallableReward(lambda t: None).score(["x"], CTX)

    def batched_bad(texts, context):
        return [0.5, "x"]

    with pytest.raises(TypeError, match=r"batched_bad returned str 'x' at index 1"):
        CallableReward(batched_bad, batched=True).score(["a", "b"], CTX)
    with pytest.raises(TypeError, match="one number per text"):
        CallableReward(lambda ts, c: "0.5", batched=True).score(["a"], CTX)
    with pytest.raises(TypeError, match="one number per text"):
        CallableReward(lambda ts, c: 0.5, batched=True).score(["a"], CTX)
    with pytest.raises(ValueError, match="returned 1 scores for 2 texts"):
        CallableReward(lambda ts, c: [0.5], batched=True).score(["a", "b"], CTX)


def test_callable_exceptions_propagate():
    def boom(text):
        raise RuntimeError("kaput")

    with pytest.raises(RuntimeError, match="kaput"):
        CallableReward(boom).score(["x"], CTX)


def test_callable_validation():
    with pytest.raises(TypeError, match="callable"):
        CallableReward(42)

    def three(a, b, c):
        return 0

    def kwonly(text, *, mode):
        return 0

    def nothing():
        return 0

    with pytest.raises(TypeError, match="three needs 3 positional"):
        CallableReward(three)
    with pytest.raises(TypeError, match=r"keyword-only parameters \['mode'\]"):
        CallableReward(kwonly)
    with pytest.raises(TypeError, match="no positional parameter"):
        CallableReward(nothing)
    with pytest.raises(ValueError, match="min <= max"):
        CallableReward(exclaims, bounds=(1, 0))
    with pytest.raises(ValueError, match="two numbers"):
        CallableReward(exclaims, bounds=(0,))


# --- plugins ---------------------------------------------------------------------------


PLUGIN_SOURCE = '''
from rewards import BaseReward, KeywordCoverage

class Shout(BaseReward):
    """Fraction of upper-case letters, times factor (capped at 1)."""
    def __init__(self, factor=1.0, name="shout"):
        self.factor, self.name = factor, name
    def score(self, texts, context=None):
        return [min(1.0, self.factor * sum(c.isupper() for c in t) / max(1, len(t))) for t in texts]

class NotAReward:
    def __init__(self, **kw):
        pass

def make_shout(factor=1.0) -> Shout:
    return Shout(factor, name="made")

def make_keywords(words):
    return KeywordCoverage(words, inflections=False)

def exclaims(text):
    return float(text.endswith("!"))

def contains(text, context, word="x"):
    return float(word in text)

def lengths(texts, context):
    return [len(t) / 10 for t in texts]
lengths.batched = True

def returns_text(factor=1.0):
    return "nope"

INSTANCE = Shout(2.0, name="instance")
NUMBER = 42
'''


@pytest.fixture
def plugin_dist(tmp_path):
    """A throwaway installed distribution declaring reward entry points."""
    entries = {
        "shout": "Shout",
        "make-shout": "make_shout",
        "make-keywords": "make_keywords",
        "exclaims": "exclaims",
        "contains": "contains",
        "lengths": "lengths",
        "returns-text": "returns_text",
        "instance": "INSTANCE",
        "number": "NUMBER",
        "not-a-reward": "NotAReward",
    }
    entries["broken"] = "{module}_broken:thing"
    with installed_plugin(tmp_path, textwrap.dedent(PLUGIN_SOURCE), entries, prefix="dc_test_plugin",
                          extra_modules={"broken": "import dc_no_such_module_xyz\n"}) as module:
        yield module


def test_plugin_listing(plugin_dist):
    names = available_plugins()
    assert {"shout", "make-shout", "exclaims", "lengths", "broken"} <= set(names)
    assert names == sorted(names)


def test_plugin_class(plugin_dist):
    r = load_plugin("shout", {"factor": 2.0}, weight=3)
    assert type(r).__name__ == "Shout" and r.factor == 2.0
    assert (r.name, r.weight, r.terminal) == ("shout", 3.0, False)
    assert r.score(["AB", "Ab", "ab"], CTX) == [1.0, 1.0, 0.0]
    r = load_plugin("shout", reward_name="loud", terminal=True)
    assert (r.name, r.weight, r.terminal) == ("loud", 1.0, True)


def test_plugin_factory(plugin_dist):
    r = load_plugin("make-shout", {"factor": 0.5})  # annotated: a factory
    assert r.name == "made" and r.score(["AB"], CTX) == [0.5]
    r = load_plugin("make-keywords", {"words": ["dog", "cat"]}, weight=2)  # bindable by keywords
    assert isinstance(r, KeywordCoverage) and r.weight == 2.0
    assert r.score(["a dog", "a dog and a cat"], CTX) == [0.5, 1.0]
    with pytest.raises(TypeError, match="factory returned str, not a reward"):
        load_plugin("returns-text")


def test_plugin_plain_functions(plugin_dist):
    r = load_plugin("exclaims", weight=0.5)
    assert isinstance(r, CallableReward)
    assert (r.name, r.weight, r.terminal) == ("exclaims", 0.5, False)
    assert r.score(["hi!", "hi"], CTX) == [1.0, 0.0]
    r = load_plugin("contains", {"word": "y"}, reward_name="has_y", terminal=True)
    assert (r.name, r.terminal) == ("has_y", True)
    assert r.score(["xy", "x"], CTX) == [1.0, 0.0]
    r = load_plugin("lengths")
    assert r.batched and r.score(["abc", "a"], CTX) == [0.3, 0.1]


def test_plugin_instance_is_copied(plugin_dist):
    r1 = load_plugin("instance", weight=5, reward_name="a")
    r2 = load_plugin("instance")
    assert (r1.name, r1.weight) == ("a", 5.0)
    assert (r2.name, r2.weight) == ("instance", 1.0)
    assert sys.modules[plugin_dist].INSTANCE.weight == 1.0
    with pytest.raises(TypeError, match="takes no parameters"):
        load_plugin("instance", {"factor": 1})


def test_plugin_errors(plugin_dist):
    with pytest.raises(ImportError, match=r"reward plugin 'broken' .* failed to load: ModuleNotFoundError"):
        load_plugin("broken")
    with pytest.raises(TypeError, match="int, not a reward class"):
        load_plugin("number")
    with pytest.raises(TypeError, match="no score"):
        load_plugin("not-a-reward")
    with pytest.raises(TypeError):  # a bad parameter for the class
        load_plugin("shout", {"volume": 11})


def test_unknown_plugin_lists_installed(plugin_dist):
    with pytest.raises(UnknownPluginError) as info:
        load_plugin("nope")
    assert isinstance(info.value, KeyError) and isinstance(info.value, LookupError)
    msg = str(info.value)
    assert msg.startswith("unknown reward plugin 'nope'; installed plugins: ")
    assert "shout" in msg and "make-keywords" in msg


def test_unknown_plugin_none_installed(monkeypatch):
    monkeypatch.setattr(rcallable, "_entry_points", lambda: [])
    assert available_plugins() == []
    with pytest.raises(LookupError, match="no reward plugins are installed.*deal_chains.rewards"):
        load_plugin("anything")


def test_plugin_names_are_never_import_paths(monkeypatch):
    monkeypatch.setattr(rcallable, "_entry_points", lambda: [])
    for name in ("os:system", "os.path.join", "rewards.keywords:KeywordCoverage"):
        with pytest.raises(UnknownPluginError, match="never imported from a path"):
            load_plugin(name)
    with pytest.raises(ValueError, match="non-empty"):
        load_plugin("  ")


# --- composites ------------------------------------------------------------------------


class Fixed(BaseReward):
    """Scores from a table; settled for the texts in ``settled_on``."""

    def __init__(self, table, name, weight=1.0, bounds=(0.0, 1.0), terminal=False, settled_on=()):
        self.table, self.name, self.weight, self.bounds = dict(table), name, float(weight), bounds
        self.terminal, self.settled_on, self.calls = terminal, set(settled_on), []

    def score(self, texts, context=None):
        self.calls.append(list(texts))
        return [self.table[t] for t in texts]

    def settled(self, text, context=None):
        return text in self.settled_on


def test_weighted_sum_normalises_by_total_weight():
    a = Fixed({"x": 1.0, "y": 0.0}, "a", weight=3)
    b = Fixed({"x": 0.0, "y": 1.0}, "b", weight=1)
    s = WeightedSum([a, b])
    assert (s.name, s.weight, s.terminal) == ("sum", 1.0, False)
    assert isinstance(s, Reward)
    assert s.score(["x", "y"], CTX) == [0.75, 0.25]
    assert s.breakdown(["x", "y"], CTX) == [{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0}]
    assert reward_bounds(s) == (0.0, 1.0)
    assert s.score([], CTX) == [] and s.breakdown([], CTX) == []


def test_weighted_sum_negative_weight_and_bounds():
    good = Fixed({"x": 1.0}, "good", weight=2)
    bad = Fixed({"x": 1.0}, "bad", weight=-1, bounds=(0.0, 2.0))
    s = WeightedSum([good, bad], name="net", weight=4)
    assert s.score(["x"], CTX) == [pytest.approx((2 - 1) / 3)]
    assert reward_bounds(s) == (pytest.approx(-2 / 3), pytest.approx(2 / 3))
    assert (s.name, s.weight) == ("net", 4.0)


def test_weighted_sum_settled_and_terminal():
    a = Fixed({}, "a", settled_on={"t"})
    b = Fixed({}, "b", settled_on={"t", "u"})
    zero = Fixed({}, "z", weight=0)
    s = WeightedSum([a, b, zero])
    assert s.settled("t", CTX) and not s.settled("u", CTX)
    assert reward_settled(s, "t", CTX)
    penalty = Fixed({}, "p", weight=-1, settled_on={"t"})
    assert not WeightedSum([a, penalty]).settled("t", CTX)
    ta, tb = Fixed({}, "ta", terminal=True), Fixed({}, "tb", terminal=True)
    assert WeightedSum([ta, tb]).terminal
    assert not WeightedSum([ta, a]).terminal  # only when all children are terminal
    assert WeightedSum([ta, a], terminal=True).terminal


def test_weighted_sum_with_real_rewards():
    kw = KeywordCoverage(["dog"], inflections=False, weight=1)
    rx = RegexReward(must_not_match="!", weight=1)
    s = WeightedSum([kw, rx])
    assert s.score(["a dog.", "a dog!", "a cat!"], CTX) == [1.0, 0.5, 0.0]
    assert s.settled("a dog.", CTX) is False  # the regex has a must-not pattern
    assert WeightedSum([kw, LengthReward(min_words=1)]).settled("a dog.", CTX)


def test_composite_validation():
    a = Fixed({}, "a")
    with pytest.raises(ValueError, match="empty"):
        WeightedSum([])
    with pytest.raises(ValueError, match=r"share the name\(s\) \['a'\]"):
        WeightedSum([a, Fixed({}, "a")])
    with pytest.raises(ValueError, match="weight 0"):
        WeightedSum([Fixed({}, "z", weight=0)])
    with pytest.raises(TypeError, match=r"rewards\[1\] must be a reward"):
        WeightedSum([a, "regex"])
    with pytest.raises(TypeError, match="must be a reward"):
        AllOf([KeywordCoverage])
    with pytest.raises(ValueError, match="2 thresholds for 1 rewards"):
        AllOf([a], thresholds=[0.5, 0.5])
    with pytest.raises(TypeError, match="thresholds"):
        AnyOf([a], thresholds="0.5")
    with pytest.raises(ValueError, match="lo .* less than hi"):
        Normalized(a, 1, 1)
    with pytest.raises(ValueError, match="finite"):
        Normalized(a, 0, float("inf"))
    with pytest.raises(ValueError, match="soft=True needs min > 0"):
        Threshold(a, 0, soft=True)
    with pytest.raises(ValueError, match="finite lower bound"):
        Gated(a, Fixed({}, "rm", bounds=(float("-inf"), float("inf"))))


def test_composite_checks_children_output():
    liar = Fixed({"x": 1.0}, "liar")
    liar.score = lambda texts, context=None: [0.5]
    with pytest.raises(ValueError, match=r"child 'liar' returned 1 scores for 2 texts"):
        WeightedSum([liar]).score(["x", "y"], CTX)
    words = Fixed({}, "words")
    words.score = lambda texts, context=None: ["high" for _ in texts]
    with pytest.raises(TypeError, match="child 'words' returned non-numeric"):
        AllOf([words]).score(["x"], CTX)


def test_normalized():
    rm = Fixed({"a": -6.0, "b": 0.0, "c": 2.0, "d": 9.0}, "rm", weight=2, bounds=(-10, 10))
    n = Normalized(rm, lo=-4, hi=4)
    assert (n.name, n.weight) == ("rm", 2.0)
    assert n.score(["a", "b", "c", "d"], CTX) == [0.0, 0.5, 0.75, 1.0]
    assert reward_bounds(n) == (0.0, 1.0)
    raw = Normalized(rm, lo=-4, hi=4, clip=False, name="rm01", weight=1)
    assert raw.score(["a", "d"], CTX) == [-0.25, 1.625]
    assert reward_bounds(raw) == (-0.75, 1.75)
    assert (raw.name, raw.weight) == ("rm01", 1.0)
    assert n.breakdown(["b"], CTX) == [{"rm": 0.0}]


def test_threshold_hard_and_soft():
    r = Fixed({"lo": 0.2, "mid": 0.6, "hi": 0.9, "neg": -1.0}, "r", bounds=(-1, 1))
    hard = Threshold(r, 0.6)
    assert hard.score(["lo", "mid", "hi", "neg"], CTX) == [0.0, 1.0, 1.0, 0.0]
    soft = Threshold(r, 0.8, soft=True)
    assert soft.score(["lo", "mid", "hi", "neg"], CTX) == [pytest.approx(0.25), pytest.approx(0.75), 1.0, 0.0]
    assert reward_bounds(soft) == (0.0, 1.0)
    assert hard.name == "r"


def test_threshold_settled():
    r = Fixed({}, "r", settled_on={"t"})
    assert Threshold(r, 0.5).settled("t", CTX)
    assert not Threshold(r, 0.5).settled("u", CTX)
    assert not Threshold(r, 1.5).settled("t", CTX)  # the child's maximum cannot meet it


def test_all_of_fraction_and_thresholds():
    a = Fixed({"x": 1.0, "y": 0.4, "z": 0.0}, "a")
    b = Fixed({"x": 1.0, "y": 1.0, "z": 0.3}, "b")
    g = AllOf([a, b])
    assert (g.name, g.weight) == ("all_of", 1.0)
    assert g.score(["x", "y", "z"], CTX) == [1.0, 0.5, 0.0]
    assert AllOf([a, b], thresholds=[0.4, 0.3]).score(["x", "y", "z"], CTX) == [1.0, 1.0, 0.5]
    assert AllOf([a, b], thresholds=0.3).met(["z"], CTX) == [[False, True]]
    assert g.breakdown(["y"], CTX) == [{"a": 0.4, "b": 1.0}]
    assert reward_bounds(g) == (0.0, 1.0)


def test_any_of_progress():
    a = Fixed({"x": 1.0, "y": 0.4, "z": 0.0}, "a")
    b = Fixed({"x": 0.0, "y": 0.2, "z": 0.0}, "b")
    g = AnyOf([a, b], thresholds=[0.8, 0.4], name="either")
    assert g.name == "either"
    # y: a's progress 0.4/0.8 = 0.5, b's 0.2/0.4 = 0.5 -> 0.5
    assert g.score(["x", "y", "z"], CTX) == [1.0, 0.5, 0.0]
    neg = Fixed({"m": 0.0}, "neg", bounds=(-1.0, 1.0))
    assert AnyOf([neg], thresholds=0.5).score(["m"], CTX) == [pytest.approx(1 / 1.5)]
    unbounded = Fixed({"m": 0.0}, "u", bounds=(float("-inf"), 1.0))
    assert AnyOf([unbounded], thresholds=0.5).score(["m"], CTX) == [0.0]


def test_all_of_any_of_settled():
    a = Fixed({}, "a", settled_on={"t"})
    b = Fixed({}, "b", settled_on={"t", "u"})
    assert AllOf([a, b]).settled("t", CTX) and not AllOf([a, b]).settled("u", CTX)
    assert AnyOf([a, b]).settled("u", CTX) and not AnyOf([a, b]).settled("v", CTX)
    assert not AllOf([a, b], thresholds=2.0).settled("t", CTX)  # unreachable thresholds
    assert not AnyOf([a, b], thresholds=2.0).settled("t", CTX)


def test_gated_scores_reward_only_behind_the_gate():
    gate = Fixed({"ok": 1.0, "bad": 0.5, "ok2": 1.0}, "json")
    rm = Fixed({"ok": 0.7, "bad": 0.9, "ok2": 0.2}, "rm", weight=2)
    g = Gated(gate, rm)
    assert (g.name, g.weight, g.terminal) == ("rm", 2.0, False)
    assert g.score(["ok", "bad", "ok2"], CTX) == [0.7, 0.0, 0.2]
    assert rm.calls == [["ok", "ok2"]]  # never scored behind a closed gate
    assert Gated(gate, rm, threshold=0.5, name="g").score(["bad"], CTX) == [0.9]
    assert g.breakdown(["bad"], CTX) == [{"json": 0.5, "rm": 0.9}]
    rm.calls.clear()
    Gated(gate, rm).score(["bad"], CTX)
    assert rm.calls == []


def test_gated_bounds_and_failure_value():
    gate = Fixed({"no": 0.0, "yes": 1.0}, "gate")
    rm = Fixed({"no": 3.0, "yes": 3.0}, "rm", bounds=(-5.0, 5.0))
    g = Gated(gate, rm)
    assert reward_bounds(g) == (-5.0, 5.0)
    assert g.score(["no", "yes"], CTX) == [-5.0, 3.0]  # a closed gate scores the minimum


def test_gated_settled_and_terminal():
    gate = Fixed({}, "gate", settled_on={"t", "u"})
    rm = Fixed({}, "rm", settled_on={"t"}, terminal=True)
    g = Gated(gate, rm)
    assert g.settled("t", CTX) and not g.settled("u", CTX)
    assert not Gated(gate, rm, threshold=2.0).settled("t", CTX)
    assert not g.terminal  # the gate is not terminal
    assert Gated(Fixed({}, "g2", terminal=True), rm).terminal


def test_nested_composites():
    kw = KeywordCoverage(["dog", "park"], inflections=False, name="kw")
    rx = RegexReward(must_match=r"\.$", name="period")
    gate = AllOf([Threshold(kw, 0.5), rx], name="gate")
    total = WeightedSum([gate, Normalized(LengthReward(max_words=3), 0.0, 1.0, name="len")])
    assert total.score(["A dog.", "A dog in the park"], CTX) == [1.0, pytest.approx(0.35)]  # gate 0.5, length 0.2
    assert total.breakdown(["A dog."], CTX) == [{"gate": 1.0, "len": 1.0}]
    assert reward_bounds(total) == (0.0, 1.0)


# --- package hygiene -------------------------------------------------------------------


def test_new_modules_import_no_heavy_dependencies():
    code = (
        "import sys, rewards, rewards.regex, rewards.callable, rewards.compose;"
        "bad = [m for m in ('torch', 'transformers', 'langchain', 'langchain_core', 'deal_chains.search',"
        " 'deal_chains.models', 'deal_chains.spec') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("module", ["rewards.regex", "rewards.callable", "rewards.compose"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod)
    assert result.attempted > 0 and result.failed == 0
    assert mod.__doc__.split("\n\n")[1].lstrip().startswith(">>>")  # opens with an example


def test_exported_from_package():
    for name in ("RegexReward", "CallableReward", "load_plugin", "available_plugins", "UnknownPluginError",
                 "WeightedSum", "Normalized", "Threshold", "AllOf", "AnyOf", "Gated"):
        assert name in rewards.__all__ and hasattr(rewards, name)
