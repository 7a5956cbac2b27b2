"""A catalogue of bad inputs, by category, each fed to the public entry point a user would
hit. Every one must end in a ``DealChainsError`` (or, for the CLI, exit code != 0 with one
``error:`` line) whose message names the problem — never another exception, never a hang
(each case runs under a time limit) — and a run that fails part-way keeps its finished
records. The table in docs/reliability.md is checked against this catalogue."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest

from deal_chains import DeALEngine, SearchConfig
from deal_chains.cli import main
from deal_chains.errors import DealChainsError, ModelLoadError
from deal_chains.models import load_model
from deal_chains.search.limits import SearchLimits
from deal_chains.spec import load_spec
from rewards.base import BaseReward
from rewards.regex import RegexReward

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 10  # per case: anything slower counts as a hang

GOOD_SPEC = "version: 1\nsearch: {strategy: deal, top_k: 2, beam: 1, lookahead: 2, max_new_tokens: 6}\n" \
            "rewards:\n  - keywords: {words: '{concepts}'}\n"

SPEC_CASES = {
    "empty file": ("", "empty"),
    "top level is a list": ("- a\n- b\n", "mapping"),
    "unknown top-level key": ("rewardz: []\n", "rewardz"),
    "unknown reward type": ("rewards:\n  - keywordz: {words: [a]}\n", "keywordz"),
    "two reward types in one entry": ("rewards:\n  - {keywords: {words: [a]}, length: {max_words: 3}}\n", "two"),
    "misspelt parameter": ("rewards:\n  - length: {max_word: 3}\n", "max_word"),
    "wrong type": ("search: {top_k: many}\nrewards: [{length: {max_words: 3}}]\n", "top_k"),
    "top_k 0": ("search: {top_k: 0}\nrewards: [{length: {max_words: 3}}]\n", "top_k"),
    "unknown strategy": ("search: {strategy: magic}\nrewards: [{length: {max_words: 3}}]\n", "magic"),
    "commit over lookahead": ("search: {lookahead: 2, commit: 5}\nrewards: [{length: {max_words: 3}}]\n", "commit"),
    "infinite lam": ("search: {lam: .inf}\nrewards: [{length: {max_words: 3}}]\n", "lam"),
    "NaN weight": ("rewards: [{length: {max_words: 3}, weight: .nan}]\n", "weight"),
    "YAML syntax error": ("rewards: [{length: {max_words: 3}\n", "YAML"),
    "tab indentation": ("rewards:\n\t- length: {max_words: 3}\n", "YAML"),
    "duplicate key": ("rewards: []\nrewards: []\n", "duplicate"),
    "anchor and alias": ("a: &x [1]\nb: *x\nrewards: []\n", "aliases"),
    "alias bomb": ("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                   "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nrewards: []\n", "aliases"),
    "python object tag": ("system: !!python/object/apply:os.system ['echo hi']\nrewards: []\n", "not allowed"),
    "custom tag": ("system: !env HOME\nrewards: []\n", "not allowed"),
    "over 1 MiB": ("system: '" + "x" * (1024 * 1024 + 10) + "'\nrewards: []\n", "1 MiB"),
    "invalid regex": ("rewards: [{regex: {must_match: '(unclosed'}}]\n", "regex"),
    "unknown plugin": ("rewards: [{plugin: {name: no_such_plugin_xyz}}]\n", "no_such_plugin_xyz"),
    "missing classifier path": ("rewards: [{classifier: {model: ./no/such/dir, label: 0}}]\n", "not found"),
    "extends cycle": ("extends: SELF\nrewards: []\n", "extends"),
    "unknown preset": ("extends: 'preset:nope'\nrewards: []\n", "nope"),
}

SCHEMA_CASES = {
    "remote $ref": ({"properties": {"a": {"$ref": "https://example.com/s.json"}}}, "https://example.com"),
    "invalid schema": ({"type": "strnig"}, "strnig"),
    "unsatisfiable": ({"type": "string", "minLength": 5, "maxLength": 2}, "Unsatisfiable"),
    "incompatible allOf": ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "Unsatisfiable"),
    "false": (False, "no value"),
    "dangling $ref": ({"$ref": "#/$defs/nope"}, "points to nothing"),
    "forced infinite recursion": ({"type": "array", "minItems": 1, "items": {"$ref": "#"}}, "finite"),
    "huge": ({"type": "object", "properties": {f"p{i}": {} for i in range(25_000)}}, "nodes"),
    "too deep": (json.loads('{"items":' * 80 + "{}" + "}" * 80), "deeper"),
    "hard mode, overlapping oneOf": ({"oneOf": [{"type": "string"}, {"type": "string", "pattern": "^a"}]},
                                     "oneOf"),
}

RECORD_CASES = {
    "invalid JSON line": (b'{"prompt": "a", "concepts": ["x"]\n', "invalid JSON"),
    "line is not an object": (b'["a"]\n', "JSON object"),
    "invalid UTF-8": (b'{"prompt": "caf\xe9", "concepts": ["x"]}\n', "UTF-8"),
    "empty prompt": (b'{"prompt": "", "concepts": ["x"]}\n', "non-empty"),
    "blank prompt": (b'{"prompt": "   \\n ", "concepts": ["x"]}\n', "non-empty"),
    "prompt not a string": (b'{"prompt": 5, "concepts": ["x"]}\n', "non-empty string"),
    "missing template variable": (b'{"prompt": "hi"}\n', "concepts"),
    "empty keyword list": (b'{"prompt": "hi", "concepts": []}\n', "no words"),
    "prompt over the context": (('{"prompt": "' + "word " * 400 + '", "concepts": ["x"]}\n').encode(), "context"),
    "empty file": (b"\n\n", "no input records"),
}


class Bad(BaseReward):
    def __init__(self, how: str):
        self.how, self.name = how, f"bad_{how}"

    def score(self, texts, context):
        if self.how == "raises":
            raise KeyError("boom")
        return {"nan": [math.nan] * len(texts), "inf": [math.inf] * len(texts),
                "count": [0.5] * (len(texts) + 2), "type": ["1"] * len(texts),
                "none": None}[self.how]


REWARD_CASES = ["raises", "nan", "inf", "count", "type", "none"]

BUDGET_CASES = {
    "max_new_tokens over the limit": (SearchLimits(max_new_tokens=4), dict(max_new_tokens=5), "max_new_tokens"),
    "too many rows": (SearchLimits(max_rows_per_prompt=3), dict(top_k=2, beam=2), "hypotheses"),
    "too many lookahead tokens": (SearchLimits(max_lookahead_tokens=3), dict(top_k=2, beam=1, lookahead=2),
                                  "per step"),
    "prompt over the limit": (SearchLimits(max_prompt_tokens=2), {}, "prompt of"),
    "KV cache over memory": (SearchLimits(max_kv_bytes=10), {}, "KV cache"),
}

REGEX_CASES = [r"(a+)+$", r"(a|aa)+$", r"(a|a?)+$", r"(.*a){25}", r"^(\w+\s?)*$"]


def _timed(fn):
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        assert time.perf_counter() - t0 < SECONDS, "took too long: a hang"


@pytest.mark.parametrize("name", list(SPEC_CASES))
def test_bad_spec(tmp_path, name):
    text, words = SPEC_CASES[name]
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace("SELF", str(path)), encoding="utf-8")
    with pytest.raises(DealChainsError) as info:
        _timed(lambda: load_spec(path))
    assert str(path) in str(info.value) and words.lower() in str(info.value).lower(), str(info.value)


@pytest.mark.parametrize("name", list(SCHEMA_CASES))
def test_bad_schema(tmp_path, name):
    schema, words = SCHEMA_CASES[name]
    (tmp_path / "s.json").write_text(json.dumps(schema), encoding="utf-8")
    path = tmp_path / "spec.yaml"
    path.write_text("rewards:\n  - json_schema: {schema_file: s.json, mode: hard}\n", encoding="utf-8")
    with pytest.raises(DealChainsError) as info:
        _timed(lambda: load_spec(path))
    assert str(path) in str(info.value) and words in str(info.value), str(info.value)


@pytest.mark.parametrize("name", list(RECORD_CASES))
def test_bad_input_record(capsys, tmp_path, tiny_model_dir, name):
    data, words = RECORD_CASES[name]
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD_SPEC, encoding="utf-8")
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b'{"prompt": "fine", "concepts": ["x"]}\n' + data if name != "empty file" else data)
    out = tmp_path / "out.jsonl"
    rc = _timed(lambda: main(["generate", "--spec", str(spec), "--input", str(inp), "--output", str(out),
                              "--model", str(tiny_model_dir), "--device", "cpu", "--quiet"]))
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("error: ")]
    assert str(inp) in line and words in line, line
    assert not out.exists()  # validated before any work: nothing half-written


@pytest.mark.parametrize("how", REWARD_CASES)
def test_failing_reward_keeps_finished_records(capsys, tmp_path, tiny_model_dir, monkeypatch, how):
    """The second batch's reward fails: the first batch's records stay on disk."""
    import deal_chains.spec.document as models

    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD_SPEC, encoding="utf-8")
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"prompt": f"p{i}", "concepts": ["x" if i < 2 else "boom"]}) + "\n"
                           for i in range(4)), encoding="utf-8")
    real = models.RewardSpec.build_rewards

    def build(self, variables, *a, **k):
        return [Bad(how)] if variables.get("concepts") == ["boom"] else real(self, variables, *a, **k)

    monkeypatch.setattr(models.RewardSpec, "build_rewards", build)
    out = tmp_path / "out.jsonl"
    rc = _timed(lambda: main(["generate", "--spec", str(spec), "--input", str(inp), "--output", str(out),
                              "--model", str(tiny_model_dir), "--device", "cpu", "--quiet",
                              "--batch-size", "2"]))
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and f"bad_{how}" in err
    kept = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in kept] == ["p0", "p1"]  # nothing finished was lost


@pytest.mark.parametrize("name", list(BUDGET_CASES))
def test_over_budget(tiny_lm, name):
    limits, overrides, words = BUDGET_CASES[name]
    engine = DeALEngine(tiny_lm, limits=limits)
    cfg = SearchConfig(strategy="deal", **{"top_k": 1, "beam": 1, "lookahead": 1, "max_new_tokens": 4, **overrides})
    with pytest.raises(DealChainsError) as info:
        _timed(lambda: engine.generate(["a prompt"], None, cfg))
    assert words in str(info.value), str(info.value)


@pytest.mark.parametrize("pattern", REGEX_CASES)
def test_catastrophic_regex_is_linear(pattern):
    reward = RegexReward(must_match=pattern)
    texts = ["a" * 5000 + "!", "word " * 2000 + "!"]
    _timed(lambda: reward.score(texts, None))


MODEL_CASES = ["missing path", "file instead of folder", "truncated weights", "garbage weights", "bad config",
               "pickle-only weights"]


@pytest.mark.parametrize("name", MODEL_CASES)
def test_bad_model(tmp_path, tiny_model_dir, name):
    import shutil

    target = tmp_path / "m"
    if name == "missing path":
        pass
    elif name == "file instead of folder":
        target.write_bytes(b"x")
    else:
        shutil.copytree(tiny_model_dir, target)
        weights = target / "model.safetensors"
        if name == "truncated weights":
            weights.write_bytes(weights.read_bytes()[:500])
        elif name == "garbage weights":
            weights.write_bytes(b"\x00" * 16)
        elif name == "bad config":
            (target / "config.json").write_text("{", encoding="utf-8")
        else:
            weights.rename(target / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as info:
        _timed(lambda: load_model(str(target), device="cpu", cache=False))
    assert str(target) in str(info.value)


DOC_ROWS = {
    "spec files": len(SPEC_CASES), "JSON schemas": len(SCHEMA_CASES), "input records": len(RECORD_CASES),
    "failing rewards": len(REWARD_CASES), "search budgets": len(BUDGET_CASES),
    "catastrophic regexes": len(REGEX_CASES), "model files": len(MODEL_CASES),
}


def test_reliability_table_matches_this_catalogue():
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    for category, count in DOC_ROWS.items():
        assert re.search(rf"^\| {re.escape(category)} \| {count} \|", text, re.M), (category, count)
