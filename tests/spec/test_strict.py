"""The spec language refuses what it used to crash on or silently coerce: huge integers and
deep nesting, values of the wrong YAML type, template variables of the wrong type; it
templates regex patterns and judge questions, takes ``preset:`` as a key, checks local
classifier directories and plugin parameters. Fast: no model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugins import installed_plugin

from deal_chains.errors import InputError, SpecError
from deal_chains.spec import REWARD_TYPES, load_spec, render_template
from deal_chains.spec.templates import render_value

MINIMAL = "rewards:\n  - length: {max_words: 20}\n"


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(source, **kw) -> list[dict]:
    with pytest.raises(SpecError) as info:
        load_spec(source, **kw)
    return info.value.errors


def only(source, **kw) -> dict:
    found = problems(source, **kw)
    assert len(found) == 1, found
    return found[0]


# ------------------------------------------------------------------ 1. crashes -> located errors


def test_huge_integer_is_a_located_error(tmp_path):
    path = write(tmp_path, "search: {top_k: 1" + "0" * 5000 + "}\n" + MINIMAL)
    p = only(path)
    assert (p["file"], p["line"], p["column"]) == (str(path), 1, 17)
    assert "5001 digits" in p["message"] and "at most 100" in p["message"]
    # the same through --set (a YAML scalar too)
    with pytest.raises(SpecError, match="digits"):
        load_spec(MINIMAL, overrides=["search.top_k=1" + "0" * 5000])
    # a long but sane integer is still just an integer
    assert load_spec("search: {seed: 12345678901234567890}\n" + MINIMAL).search["seed"] == 12345678901234567890


@pytest.mark.parametrize("depth", [200, 5000])
def test_deep_nesting_is_a_located_error(tmp_path, depth):
    path = write(tmp_path, MINIMAL + "x: " + "[" * depth + "]" * depth + "\n")
    p = only(path)
    assert (p["file"], p["line"]) == (str(path), 3)
    assert "more than 128 levels" in p["message"]
    deep = block = {}
    for _ in range(depth):
        block["a"] = {}
        block = block["a"]
    assert "128 levels" in only({"rewards": [{"length": {"max_words": 3}}], "x": deep})["message"]


def test_deeply_nested_schema_file_is_a_located_error(tmp_path):
    # json.loads recurses per level: a schema_file of 5000 nested objects must not crash
    (tmp_path / "deep.json").write_text('{"a":' * 5000 + "1" + "}" * 5000)
    path = write(tmp_path, "rewards:\n  - json_schema: {schema_file: deep.json}\n")
    p = only(path)
    assert (p["line"], p["field"]) == (2, "rewards.0.json_schema.schema_file")
    assert "nests too deeply" in p["message"]


def test_deep_but_reasonable_nesting_still_loads():
    schema = inner = {}
    for _ in range(20):
        inner["type"] = "object"
        inner["properties"] = {"a": {}}
        inner = inner["properties"]["a"]
    inner["type"] = "string"
    spec = load_spec({"rewards": [{"json_schema": {"schema": schema}}]})
    assert spec.rewards[0].reward_type == "json_schema"


# ------------------------------------------------------------------ 2. no type coercion


@pytest.mark.parametrize("entry, field, hint", [
    ("{length: {max_words: true}}", "rewards.0.length.max_words", "booleans, not numbers"),
    ("{length: {max_words: '5'}}", "rewards.0.length.max_words", "remove the quotes"),
    ("{length: {max_words: 5.0}}", "rewards.0.length.max_words", "whole number"),
    ("{length: {max_words: 5}, weight: '2'}", "rewards.0.weight", "remove the quotes"),
    ("{length: {max_words: 5}, weight: true}", "rewards.0.weight", "booleans"),
    ("{length: {max_words: 5}, terminal: 'yes'}", "rewards.0.terminal", "true or false"),
    ("{length: {max_words: 5}, terminal: 1}", "rewards.0.terminal", "true or false"),
    ("{regex: {must_match: a, ignore_case: 'off'}}", "rewards.0.regex.ignore_case", "true or false"),
    ("{threshold: {reward: {length: {max_words: 5}}, min: '0.5'}}", "rewards.0.threshold.min", "quotes"),
    ("{normalize: {reward: {length: {max_words: 5}}, lo: false, hi: 1}}", "rewards.0.normalize.lo", ""),
    ("{keywords: {words: [a], inflections: 'no'}}", "rewards.0.keywords.inflections", ""),
])
def test_wrong_types_are_refused_not_coerced(tmp_path, entry, field, hint):
    path = write(tmp_path, f"rewards:\n  - {entry}\n")
    found = problems(path)
    assert any(p["field"] == field and p["line"] == 2 and hint in p["message"] for p in found), found


@pytest.mark.parametrize("top", ["version: '1'", "version: true", "replace_rewards: 'no'"])
def test_top_level_types_are_strict(top):
    assert only(top + "\n" + MINIMAL)["line"] == 1


def test_right_types_and_overrides_still_work():
    spec = load_spec("rewards:\n  - length: {max_words: 5}\n    weight: 2\n    terminal: true\n",
                     overrides=["search.top_k=4", "rewards.0.weight=3", "rewards.0.length.max_words=9"])
    entry = spec.rewards[0]
    assert (entry.weight, entry.terminal, entry.params.max_words) == (3.0, True, 9)
    assert isinstance(entry.weight, float) and spec.search_config().top_k == 4
    assert load_spec("rewards: [{reward_model: {model: x/y, normalize: [-4, 4]}}]").rewards[0].params.normalize \
        == (-4, 4)


# ------------------------------------------------------------------ 3. template variable types


PROMPTED = 'prompt: "Use: {concepts}."\nrewards:\n  - keywords: {words: "{concepts}"}\n'


@pytest.mark.parametrize("value, kind", [
    (None, "null"), ({"a": 1}, "a mapping"), ([["a"], ["b"]], "a list holding a list"),
    (True, "a boolean"), (["a", None], "a list holding null"), (float("nan"), "non-finite"),
])
def test_bad_variable_types_are_refused_in_text(value, kind):
    spec = load_spec(PROMPTED)
    with pytest.raises(SpecError) as info:
        spec.render_prompt({"concepts": value})
    (p,) = info.value.errors
    assert (p["field"], p["line"]) == ("prompt", 1)
    assert "{concepts}" in p["message"] and kind in p["message"]
    with pytest.raises(SpecError) as info:
        spec.build_rewards({"concepts": value})
    assert info.value.errors[0]["field"] == "rewards.0.keywords.words"


def test_numbers_are_text_only_where_written_into_text():
    spec = load_spec(PROMPTED)
    assert spec.render_prompt({"concepts": 3}) == "Use: 3."
    assert spec.render_prompt({"concepts": ["dog", 2.5]}) == "Use: dog, 2.5."
    for value in (5, ["dog", 5]):
        with pytest.raises(SpecError, match=r"\{concepts\} is .*number.*a string or a list of strings"):
            spec.build_rewards({"concepts": value})
    (reward,) = spec.build_rewards({"concepts": ["dog", "cat"]})
    assert reward.score(["A dog and a cat."], None) == [1.0]
    assert render_template("{n}", {"n": 3}) == "3"  # the generic helper keeps its rule
    with pytest.raises(SpecError, match="null"):
        render_template("x {n}", {"n": None})


def test_bad_variable_message_through_generate_records(tmp_path):
    from deal_chains.records import record_prompt

    spec = load_spec(write(tmp_path, PROMPTED))
    with pytest.raises(InputError) as info:
        record_prompt(spec, {"concepts": None}, "in.jsonl:3")
    message = str(info.value)
    assert message.startswith("in.jsonl:3: ") and "spec.yaml:1:" in message and "is null" in message


# ------------------------------------------------------------------ 4. regex and judge templates


TEMPLATED = r"""
rewards:
  - regex:
      must_match: "{pattern}"
      must_not_match: ['\d{3}-{code}', 'x{2,5}', '\{literal\}']
  - judge: {question: "Is {text} about {topic}? Answer {{yes}} or no."}
"""


def test_regex_and_judge_templates_are_variables():
    spec = load_spec(TEMPLATED)
    assert spec.variables() == {"pattern", "code", "topic"}  # not {text}, {3}, {2,5}, {literal}


def test_re2_braced_escapes_are_not_placeholders():
    # \p{Greek}, \P{Lu} and \x{FF} are RE2 syntax; after an escaped backslash p{x} is text + {x}
    spec = load_spec(r"""rewards: [{regex: {must_match: ['\p{Greek}+', '\P{Lu}\x{FF}', '\\p{x}']}}]""")
    assert spec.variables() == {"x"}
    (reward,) = load_spec(r"""rewards: [{regex: {must_match: '^\p{Greek}+$'}}]""").build_rewards({})
    assert reward.score(["αβγ", "abc"], None) == [1.0, 0.0]


def test_regex_templates_render_patterns_and_literals():
    spec = load_spec(TEMPLATED)
    kind = REWARD_TYPES["regex"].template_kind("must_match")
    params = spec.rewards[0].params
    assert render_value(params.must_match, {"pattern": "^[A-Z]"}, kind) == "^[A-Z]"  # a whole pattern
    assert render_value(params.must_not_match, {"code": "a.b"}, kind) == [r"\d{3}-a\.b", "x{2,5}", r"\{literal\}"]
    question = REWARD_TYPES["judge"].template_kind("question")
    assert render_value(spec.rewards[1].params.question, {"topic": "dogs"}, question) == \
        "Is {text} about dogs? Answer {yes} or no."


def test_regex_built_from_record_variables():
    # the word is escaped (C++ unescaped is no valid RE2 pattern); a whole pattern is not
    spec = load_spec('rewards:\n  - regex: {must_match: ["{start}", "{word} quiz"]}\n')
    (reward,) = spec.build_rewards({"start": ["^A", "z$"], "word": "C++"})
    assert reward.score(["A C++ quiz", "A C quiz", "B C++ quiz"], None) == [1.0, pytest.approx(2 / 3),
                                                                            pytest.approx(2 / 3)]
    with pytest.raises(SpecError) as info:
        spec.build_rewards({"start": "(", "word": "x"})
    assert info.value.errors[0]["field"] == "rewards.0.regex" and "(" in str(info.value)
    with pytest.raises(SpecError, match=r"\{start\} is a number"):
        spec.build_rewards({"start": 5, "word": "x"})
    with pytest.raises(SpecError, match=r"\{word\} is null"):
        spec.build_rewards({"start": "a", "word": None})


def test_bad_regex_around_a_placeholder_is_reported_at_validation():
    p = only('rewards:\n  - regex: {must_match: ["{a}(", "{b}"]}\n')
    assert p["field"] == "rewards.0.regex.must_match.0" and "'{a}('" in p["message"]


def test_judge_question_templates_are_checked():
    assert "{{text}}" in only('rewards: [{judge: {question: "Is {text} ok? {{text}}"}}]')["message"]
    assert "invalid placeholder" in only('rewards: [{judge: {question: "Is {text} ok? {a.b}"}}]')["message"]


@pytest.mark.parametrize("entry, field", [
    ("{length: {max_words: 3}, name: 'len-{lang}'}", "rewards.0.name"),
    ("{classifier: {model: org/model, label: '{label}'}}", "rewards.0.classifier.label"),
    ("{reward_model: {model: 'org/{size}'}}", "rewards.0.reward_model.model"),
])
def test_placeholders_in_fields_that_are_not_templates(entry, field):
    p = only(f"rewards:\n  - {entry}\n")
    assert p["field"] == field and "not a template" in p["message"]


# ------------------------------------------------------------------ 5. preset as a key


def test_preset_key_in_a_file_a_mapping_and_a_step(tmp_path):
    spec = load_spec(write(tmp_path, "preset: concise\nrewards:\n  - regex: {must_match: '^[A-Z]'}\n"))
    assert [e.name for e in spec.rewards] == ["length", "regex"]  # extends semantics
    assert spec.system == "Answer in at most two sentences."
    assert [e.name for e in load_spec({"preset": "concise"}).rewards] == ["length"]
    multi = load_spec("steps:\n  a: {preset: concise}\n  b: {rewards: [{length: {max_words: 3}}]}\n")
    assert multi.step("a").system == "Answer in at most two sentences."
    assert load_spec("preset: concise").rewards[0].name == "length"


def test_preset_key_errors(tmp_path):
    p = only(write(tmp_path, "preset: concis\n"))
    assert (p["line"], p["field"]) == (1, "preset") and "unknown preset 'concis'" in p["message"]
    p = only("preset: concise\nextends: json\n")
    assert p["field"] == "preset" and "not both" in p["message"]
    assert "available presets" in only("preset: [a]\n")["message"]


def test_spec_validate_takes_a_preset_name(tmp_path, monkeypatch, capsys):
    from deal_chains.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["spec", "validate", "concise"]) == 0
    assert "concise: ok" in capsys.readouterr().out
    assert main(["spec", "validate", "concis"]) == 1
    assert "did you mean the preset 'concise'" in capsys.readouterr().err


# ------------------------------------------------------------------ 6. local classifier dirs


def model_dir(tmp_path: Path, name: str, config: dict | None, weights: str = "model.safetensors") -> str:
    folder = tmp_path / name
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    (folder / weights).write_bytes(b"not read at validation")
    return f"./{name}"


CLASSIFIER = {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "safe", "1": "toxic"}}


def test_local_classifier_dirs_are_checked_at_validation(tmp_path):
    good = model_dir(tmp_path, "clf", CLASSIFIER)
    pickled = model_dir(tmp_path, "clf_bin", CLASSIFIER, "pytorch_model.bin")
    bare = model_dir(tmp_path, "base", {"architectures": ["BertModel"]})
    noconfig = model_dir(tmp_path, "empty", None)
    path = write(tmp_path, f"""\
rewards:
  - classifier: {{model: {good}, label: Toxic}}
  - classifier: {{model: {good}, label: nonexistent}}
    name: c1
  - classifier: {{model: {pickled}, label: 7}}
    name: c2
  - classifier: {{model: {bare}, label: 0}}
    name: c3
  - classifier: {{model: {noconfig}, label: 0}}
    name: c4
  - reward_model: {{model: {good}}}
""")
    found = {(p["line"], p["field"]): p["message"] for p in problems(path)}
    assert "'nonexistent' is not one of the model's labels" in found[(3, "rewards.1.classifier.label")]
    assert "pytorch_model.bin" in found[(5, "rewards.2.classifier.model")]  # both problems of one entry
    assert "label index 7" in found[(5, "rewards.2.classifier.label")]
    assert "BertModel" in found[(7, "rewards.3.classifier.model")]
    assert "no config.json" in found[(9, "rewards.4.classifier.model")]
    assert "scalar-head" in found[(11, "rewards.5.reward_model.model")]
    assert len(found) == 6
    assert load_spec(write(tmp_path, f"rewards:\n  - classifier: {{model: {good}, label: 1}}\n", "ok.yaml"))


# ------------------------------------------------------------------ 7. plugin params

PLUGIN_SOURCE = '''
def shortness(text, scale=1.0):
    return min(1.0, scale / (1 + len(text.split())))


class Loud:
    def __init__(self, factor=1.0):
        self.factor, self.name = factor, "loud"

    def score(self, texts, context=None):
        return [min(1.0, self.factor * sum(c.isupper() for c in t) / max(1, len(t))) for t in texts]
'''


@pytest.fixture
def scoring_plugin(tmp_path):
    with installed_plugin(tmp_path / "site", PLUGIN_SOURCE, {"short": "shortness", "loud": "Loud"},
                          prefix="dc_strict_plugin") as module:
        yield module


def test_plugin_params_are_checked_against_the_function(tmp_path, scoring_plugin):
    path = write(tmp_path, "rewards:\n  - plugin: {name: short, params: {scale: 2}}\n"
                           "  - plugin: {name: short, params: {scael: 2}}\n    name: typo\n"
                           "  - plugin: {name: short, params: {text: hi}}\n    name: clash\n")
    spec = load_spec(path)
    with pytest.raises(SpecError) as info:
        spec.build_rewards({})
    found = {p["field"]: p for p in info.value.errors}
    assert set(found) == {"rewards.1.plugin", "rewards.2.plugin"}
    assert found["rewards.1.plugin"]["line"] == 3
    assert "'scael'" in found["rewards.1.plugin"]["message"] and "did you mean 'scale'" in \
        found["rewards.1.plugin"]["message"]
    assert "text" in found["rewards.2.plugin"]["message"]
    good = load_spec("rewards:\n  - plugin: {name: short, params: {scale: 2}}\n").build_rewards({})[0]
    assert good.score(["a b c"], None) == [0.5]
    with pytest.raises(SpecError, match=r"reward class Loud.*'factr'.*did you mean 'factor'"):
        load_spec("rewards:\n  - plugin: {name: loud, params: {factr: 2}}\n").build_rewards({})


def test_reused_judge_is_rebuilt_when_its_question_changes(monkeypatch):
    import rewards.judge

    class FakeJudge:
        def __init__(self, question, **kw):
            self.question, self.name, self.weight, self.terminal = question, kw["name"], 1.0, False

    monkeypatch.setattr(rewards.judge.JudgeReward, "from_loaded",
                        classmethod(lambda cls, lm, question, **kw: FakeJudge(question, **kw)))
    spec = load_spec('rewards: [{judge: {question: "Is {text} about {topic}?"}}]')
    lm = object()
    (dogs,) = spec.build_rewards({"topic": "dogs"}, lm=lm)
    (again,) = spec.build_rewards({"topic": "dogs"}, lm=lm)
    (cats,) = spec.build_rewards({"topic": "cats"}, lm=lm)
    assert again is dogs  # same filled-in question: the costly reward is shared
    assert (dogs.question, cats.question) == ("Is {text} about dogs?", "Is {text} about cats?")
    with pytest.raises(SpecError, match=r"\{topic\}.*\{text\}"):  # the judge would fill it in
        spec.build_rewards({"topic": "{text}"}, lm=lm)


# ------------------------------------------------------------------ YAML 1.2 exponent floats


def test_exponent_without_a_decimal_point_is_a_number():
    # YAML 1.1 (PyYAML) reads 1e1 as the text "1e1"; the spec reads it as YAML 1.2 and JSON do
    spec = load_spec("search: {strategy: deal, lam: 1e1, temperature: 5E-1}\n" + MINIMAL)
    assert spec.search["lam"] == 10.0 and spec.search["temperature"] == 0.5
    spec = load_spec("search: {strategy: deal, lam: 1.5e1, temperature: .5e0}\n" + MINIMAL)
    assert spec.search["lam"] == 15.0 and spec.search["temperature"] == 0.5
    schema = load_spec("rewards:\n  - json_schema: {schema: {type: number, maximum: -2e+3}}\n")
    assert schema.rewards[0].json_schema.schema_["maximum"] == -2000.0


def test_exponent_where_text_is_expected_says_to_quote_it():
    problem = only("rewards:\n  - keywords: {words: [dog, 1e3]}\n")
    assert problem["field"] == "rewards.0.keywords.words" and "quote" in problem["message"]


def test_a_malformed_override_names_the_spec_file(tmp_path):
    path = write(tmp_path, "search: {strategy: deal, top_k: 4}\n" + MINIMAL)
    problem = only(path, overrides=["search.top_k.x=1"])
    assert problem["file"] == str(path)
    assert "search.top_k.x=1" in problem["message"] and "not a mapping" in problem["message"]


def test_a_placeholder_in_the_fluency_prompt_is_refused():
    # the search reads fluency_prompt as written: {topic} would reach the model unfilled
    p = only('search: {fluency_prompt: "Write about {topic}."}\nrewards: [{length: {max_words: 3}}]\n')
    assert p["field"] == "search" and "{topic}" in p["message"] and "not a template" in p["message"]
