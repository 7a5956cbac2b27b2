"""The YAML reward-spec language: loading, validation errors with positions, templates,
overrides, presets. Fast: no model is loaded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from deal_chains.errors import ConfigError, SpecError
from deal_chains.search.config import SearchConfig
from deal_chains.spec import (
    REWARD_TYPES,
    RewardSpec,
    apply_overrides,
    list_presets,
    load_spec,
    preset_path,
    render_template,
    spec_json_schema,
)

VALID = """\
version: 1
model: default
search: {strategy: deal, top_k: 8, lookahead: 8, beam: 2, lam: 8.0, max_new_tokens: 48}
system: "Use every given word: {concepts}."
prompt: "Write one sentence with: {concepts}."
rewards:
  - keywords: {words: "{concepts}", inflections: true}
    weight: 1.0
    name: cover
  - length: {max_words: 25}
    weight: 0.3
    terminal: false
"""

MINIMAL = "rewards:\n  - length: {max_words: 20}\n"

HAVE_REWARDS = all(
    importlib.util.find_spec(m) is not None for m in ("rewards.keywords", "rewards.length")
)
needs_rewards = pytest.mark.skipif(
    not HAVE_REWARDS, reason="rewards/keywords.py and rewards/length.py are not written yet"
)


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str, **kw) -> tuple[SpecError, Path]:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path, **kw)
    return info.value, path


def only(err: SpecError) -> dict:
    assert len(err.errors) == 1, err.errors
    return err.errors[0]


def check(problem: dict, path: Path, line: int | None, field: str | None, *words: str) -> None:
    assert problem["file"] == str(path)
    assert problem["line"] == line, problem
    assert problem["field"] == field, problem
    for word in words:
        assert word in problem["message"], problem


# ------------------------------------------------------------------ valid specs


def test_load_from_file_text_and_mapping(tmp_path):
    path = write(tmp_path, VALID)
    for source in (path, str(path), VALID):
        spec = load_spec(source)
        assert [r.name for r in spec.rewards] == ["cover", "length"]
        assert spec.rewards[0].reward_type == "keywords"
        assert spec.rewards[0].params.words == "{concepts}"
        assert spec.rewards[1].params.max_words == 25
        assert spec.rewards[1].weight == 0.3
        assert spec.model == "default"
        assert spec.search["top_k"] == 8
    import yaml

    from_dict = load_spec(yaml.safe_load(VALID))
    assert from_dict.model_dump() == load_spec(VALID).model_dump()
    assert load_spec(from_dict.model_dump()).model_dump() == from_dict.model_dump()  # round trip


def test_defaults():
    spec = load_spec(MINIMAL)
    assert spec.version == 1
    assert spec.model is None and spec.system is None and spec.prompt is None
    assert spec.search == {}
    entry = spec.rewards[0]
    assert (entry.name, entry.weight, entry.terminal) == ("length", 1.0, False)
    assert spec.search_config() == SearchConfig()
    assert spec.render_prompt({}) is None and spec.render_system({}) is None
    kw = load_spec("rewards: [{keywords: {words: [dog]}}]").rewards[0].params
    assert kw.inflections is True


def test_variables_and_rendering():
    spec = load_spec(VALID)
    assert spec.variables() == {"concepts"}
    v = {"concepts": ["dog", "frisbee", "catch"]}
    assert spec.render_prompt(v) == "Write one sentence with: dog, frisbee, catch."
    assert spec.render_system(v) == "Use every given word: dog, frisbee, catch."


ALL_TYPES = ["keywords", "length", "regex", "json_schema", "classifier", "reward_model", "judge",
             "harmless", "plugin", "all_of", "any_of", "threshold", "gated", "normalize"]
SPEC_KEYS = {"version", "extends", "preset", "model", "search", "system", "prompt", "examples", "rewards",
             "replace_rewards", "steps"}


def test_spec_is_a_registry_of_types():
    assert list(REWARD_TYPES) == ALL_TYPES
    assert set(RewardSpec.model_fields) == SPEC_KEYS


# ------------------------------------------------------------------ templates


def test_render_template_list_variable_and_join():
    v = {"concepts": ["dog", "cat"], "n": 3}
    assert render_template("{concepts}", v) == ["dog", "cat"]
    assert render_template("Use {concepts} in {n} ways", v) == "Use dog, cat in 3 ways"
    assert render_template("{n}", v) == "3"
    assert render_template(["{concepts}", "x {n}"], v) == [["dog", "cat"], "x 3"]
    assert render_template(7, v) == 7


def test_render_template_escapes():
    assert render_template("{{concepts}} and {{}}", {}) == "{concepts} and {}"
    assert render_template("{{{n}}}", {"n": 1}) == "{1}"


def test_render_template_refuses_format_tricks():
    for bad in ("{n.__class__}", "{n[0]}", "{0}", "{n!r}", "{ n }", "lone { brace", "x } y"):
        with pytest.raises(SpecError):
            render_template(bad, {"n": 1})


def test_render_template_missing_variable():
    with pytest.raises(SpecError) as info:
        render_template("Use {concepts}", {"topic": 1, "n": 2}, field="prompt")
    problem = only(info.value)
    assert problem["field"] == "prompt"
    assert "concepts" in problem["message"] and "n, topic" in problem["message"]


def test_render_prompt_missing_variable_names_line(tmp_path):
    path = write(tmp_path, VALID)
    spec = load_spec(path)
    with pytest.raises(SpecError) as info:
        spec.render_prompt({"topic": "x"})
    check(only(info.value), path, 5, "prompt", "concepts", "topic")


def test_template_syntax_checked_at_load(tmp_path):
    err, path = load_error(tmp_path, "prompt: 'Use {a.b}'\n" + MINIMAL)
    check(only(err), path, 1, "prompt", "{a.b}")


# ------------------------------------------------------------------ build_rewards


@needs_rewards
def test_build_rewards_from_list_variable():
    from rewards.keywords import KeywordCoverage
    from rewards.length import LengthReward

    rewards = load_spec(VALID).build_rewards({"concepts": ["dog", "cat"]})
    kw, length = rewards
    assert isinstance(kw, KeywordCoverage) and isinstance(length, LengthReward)
    assert (kw.name, kw.weight, kw.terminal) == ("cover", 1.0, False)
    assert (length.name, length.weight, length.max_words) == ("length", 0.3, 25)


@needs_rewards
def test_build_rewards_words_from_comma_string():
    from rewards.base import RewardContext

    spec = load_spec("rewards: [{keywords: {words: '{concepts}', inflections: false}}]")
    (a,) = spec.build_rewards({"concepts": "dog, hot dog"})
    (b,) = spec.build_rewards({"concepts": ["dog", "hot dog"]})
    ctx = RewardContext()
    texts = ["a dog and a hot dog", "a dog"]
    assert a.score(texts, ctx) == b.score(texts, ctx)
    (c,) = load_spec("rewards: [{keywords: {words: 'dog cat'}}]").build_rewards({})
    assert c.score(["dog cat"], ctx) == [1.0]


@needs_rewards
def test_build_rewards_missing_variable(tmp_path):
    path = write(tmp_path, VALID)
    with pytest.raises(SpecError) as info:
        load_spec(path).build_rewards({"topic": "x", "n": 1})
    check(only(info.value), path, 7, "rewards.0.keywords.words", "{concepts}", "n, topic")


@needs_rewards
def test_build_rewards_constructor_error_names_field(tmp_path):
    path = write(tmp_path, "rewards:\n  - length: {max_tokens: 5}\n")
    spec = load_spec(path)
    with pytest.raises(SpecError) as info:
        spec.build_rewards({})
    check(only(info.value), path, 2, "rewards.0.length", "count_tokens")
    (length,) = spec.build_rewards({}, count_tokens=lambda t: len(t))
    assert length.max_tokens == 5


# ------------------------------------------------------------------ errors with positions


def test_unknown_key(tmp_path):
    err, path = load_error(tmp_path, "rewards:\n  - length: {max_words: 3}\n    wieght: 2\n")
    check(only(err), path, 3, "rewards.0.wieght", "unknown key 'wieght'", "'weight'")
    assert f"{path}:3:5: rewards.0.wieght" in str(err)


def test_unknown_top_level_key(tmp_path):
    err, path = load_error(tmp_path, MINIMAL + "serch: {top_k: 2}\n")
    check(only(err), path, 3, "serch", "unknown key", "search")


def test_wrong_type(tmp_path):
    err, path = load_error(tmp_path, "prompt: [a, b]\n" + MINIMAL)
    check(only(err), path, 1, "prompt", "valid string")
    err, path = load_error(tmp_path, "rewards:\n  - length: {max_words: many}\n")
    check(only(err), path, 2, "rewards.0.length.max_words", "integer", "'many'")


def test_top_k_zero(tmp_path):
    err, path = load_error(tmp_path, "search:\n  beam: 2\n  top_k: 0\n" + MINIMAL)
    check(only(err), path, 3, "search.top_k", "greater than or equal to 1", "(got 0)")


def test_unknown_strategy(tmp_path):
    err, path = load_error(tmp_path, MINIMAL + "search:\n  strategy: fastest\n")
    check(only(err), path, 4, "search.strategy", "'deal'", "fastest")


def test_search_cross_field_check(tmp_path):
    # (strategy: sample alone now defaults to temperature 1.0; an explicit 0 is refused)
    err, path = load_error(tmp_path, MINIMAL + "search:\n  strategy: sample\n  temperature: 0.0\n")
    check(only(err), path, 4, "search", "temperature")


def test_two_reward_types_in_one_entry(tmp_path):
    err, path = load_error(
        tmp_path, "rewards:\n  - keywords: {words: [dog]}\n    length: {max_words: 3}\n"
    )
    check(only(err), path, 3, "rewards.0.length", "two reward types", "keywords and length")


def test_no_reward_type(tmp_path):
    err, path = load_error(tmp_path, "rewards:\n  - length: {max_words: 3}\n  - weight: 2\n")
    check(only(err), path, 3, "rewards.1", "needs one reward type", "keywords, length")


def test_unknown_reward_type_lists_known(tmp_path):
    err, path = load_error(tmp_path, "rewards:\n  - length: {max_words: 3}\n  - toxicity: {}\n")
    check(only(err), path, 3, "rewards.1.toxicity", "unknown reward type 'toxicity'",
          "keywords, length")


def test_reward_type_without_parameters(tmp_path):
    err, path = load_error(tmp_path, "rewards:\n  - weight: 2\n    keywords:\n")
    check(only(err), path, 3, "rewards.0.keywords", "needs its parameters")


def test_reward_entry_not_a_mapping(tmp_path):
    err, path = load_error(tmp_path, "rewards:\n  - keywords\n")
    check(only(err), path, 2, "rewards.0", "must be a mapping")


def test_length_bounds_checked_at_load(tmp_path):
    err, path = load_error(tmp_path, "rewards:\n  - length: {}\n  - length: {min_words: 9, max_words: 2}\n    name: second\n")
    first, second = err.errors
    check(first, path, 2, "rewards.0.length", "at least one of")
    check(second, path, 3, "rewards.1.length.min_words", "min_words (9)", "max_words (2)")


def test_weight_must_be_finite(tmp_path):
    err, path = load_error(tmp_path, "rewards:\n  - length: {max_words: 3}\n    weight: .nan\n")
    check(only(err), path, 3, "rewards.0.weight", "finite")


def test_duplicate_reward_names(tmp_path):
    err, path = load_error(tmp_path, "rewards:\n  - length: {max_words: 3}\n  - length: {min_words: 1}\n")
    check(only(err), path, 3, "rewards.1", "both named 'length'")


def test_version(tmp_path):
    err, path = load_error(tmp_path, "version: 2\n" + MINIMAL)
    check(only(err), path, 1, "version", "version 2")


def test_missing_rewards(tmp_path):
    err, path = load_error(tmp_path, "prompt: hi\n")
    check(only(err), path, 1, "rewards", "missing required key 'rewards'")


def test_yaml_syntax_error_line(tmp_path):
    err, path = load_error(tmp_path, "rewards:\n  - length: {max_words: 3}\nprompt: 'open\n")
    problem = only(err)
    assert problem["file"] == str(path) and problem["line"] == 4
    assert "YAML syntax error" in problem["message"]
    err, path = load_error(tmp_path, "rewards:\n  - length: {max_words: 3}\n\tprompt: x\n")
    assert only(err)["line"] == 3 and "YAML syntax error" in str(err)


def test_alias_refused(tmp_path):
    err, path = load_error(tmp_path, "a: &x [1, 2]\nrewards: *x\n")
    check(only(err), path, 1, None, "anchors and aliases are not allowed")
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\n"
    err, path = load_error(tmp_path, bomb)
    assert "anchors and aliases are not allowed" in str(err)


def test_python_tag_refused(tmp_path):
    err, path = load_error(tmp_path, MINIMAL + "prompt: !!python/object/apply:os.system ['echo hi']\n")
    check(only(err), path, 3, None, "!!python/object/apply:os.system", "not allowed")
    err, path = load_error(tmp_path, MINIMAL + "prompt: !!binary aGk=\n")
    check(only(err), path, 3, None, "!!binary")


def test_plain_tags_and_implicit_dates_are_fine():
    spec = load_spec("prompt: !!str 2024-01-01\nsystem: 2024-01-01\n" + MINIMAL)
    assert spec.prompt == "2024-01-01" and spec.system == "2024-01-01"


def test_oversize_file(tmp_path):
    err, path = load_error(tmp_path, MINIMAL + "#" * (1 << 20) + "\n")
    check(only(err), path, None, None, "1 MiB")
    with pytest.raises(SpecError, match="1 MiB"):
        load_spec(MINIMAL + "#" * (1 << 20) + "\n")


def test_duplicate_key(tmp_path):
    err, path = load_error(tmp_path, "search: {top_k: 2}\n" + MINIMAL + "search: {top_k: 3}\n")
    check(only(err), path, 4, "search", "duplicate key 'search'", "line 1")
    err, path = load_error(tmp_path, "rewards:\n  - length: {max_words: 3}\n    weight: 1\n    weight: 2\n")
    check(only(err), path, 4, "rewards.0.weight", "duplicate key 'weight'", "line 3")


def test_empty_file(tmp_path):
    for text in ("", "\n\n", "# only a comment\n"):
        err, path = load_error(tmp_path, text)
        check(only(err), path, 1, None, "empty")


def test_non_mapping_top_level(tmp_path):
    err, path = load_error(tmp_path, "- length: {max_words: 3}\n")
    check(only(err), path, 1, None, "must be a mapping", "a list")
    err, path = load_error(tmp_path, "\n\njust text\n")
    check(only(err), path, 3, None, "must be a mapping")


def test_a_long_scalar_file_is_not_echoed_whole(tmp_path):
    """extends: of a text file that is no spec (one long plain scalar) put the whole file
    into the error message."""
    other = tmp_path / "notes.txt"
    other.write_text("secret " * 2000 + "\n")
    err, path = load_error(tmp_path, f"extends: {other}\n" + MINIMAL)
    message = only(err)["message"]
    assert "must be a mapping" in message and len(message) < 300


@pytest.mark.parametrize("words", ["['']", "['  ', '']", "',, ,'"])
def test_keywords_with_no_word_fail_at_load(tmp_path, words):
    """Passed spec validate, then every record failed with 'no words to cover'."""
    err, path = load_error(tmp_path, f"rewards:\n  - keywords: {{words: {words}}}\n")
    check(only(err), path, 2, "rewards.0.keywords.words", "at least one non-empty word")


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    for source in (missing, str(missing)):
        with pytest.raises(SpecError) as info:
            load_spec(source)
        check(only(info.value), missing, None, None, "file not found", str(missing))


def test_multiple_errors_reported_together(tmp_path):
    text = (
        "search:\n"                              # 1
        "  top_k: 0\n"                           # 2
        "  strategy: quick\n"                    # 3
        "rewards:\n"                             # 4
        "  - keywords: {words: [dog]}\n"         # 5
        "    wieght: 1\n"                        # 6
        "  - length: {max_words: -1}\n"          # 7
        "  - nonsense: {}\n"                     # 8
    )
    err, path = load_error(tmp_path, text)
    got = [(p["line"], p["field"]) for p in err.errors]
    assert got == [
        (2, "search.top_k"),
        (3, "search.strategy"),
        (6, "rewards.0.wieght"),
        (7, "rewards.1.length.max_words"),
        (8, "rewards.2.nonsense"),
    ]
    assert all(p["file"] == str(path) for p in err.errors)
    assert len(str(err).splitlines()) == 5


def test_mapping_errors_have_paths_without_lines():
    with pytest.raises(SpecError) as info:
        load_spec({"search": {"top_k": 0}, "rewards": [{"length": {"max_words": 3}}]})
    problem = only(info.value)
    assert (problem["file"], problem["line"], problem["field"]) == (None, None, "search.top_k")


# ------------------------------------------------------------------ overrides


def test_apply_overrides_parses_yaml_scalars():
    data = {"search": {"top_k": 8}, "rewards": [{"length": {"max_words": 3}}]}
    out = apply_overrides(data, [
        "search.top_k=4", "search.prune=false", "search.strategy=greedy", "search.lam=2.5",
        "rewards.0.weight=2", "prompt=Say {x}: now", "rewards.0.length.max_words=7",
        "model=", "system=- a list?", "name='quoted: text'",
    ])
    assert out["system"] == "- a list?" and out["name"] == "quoted: text"
    assert out["search"] == {"top_k": 4, "prune": False, "strategy": "greedy", "lam": 2.5}
    assert out["rewards"][0] == {"length": {"max_words": 7}, "weight": 2}
    assert out["prompt"] == "Say {x}: now" and out["model"] is None
    assert data["search"] == {"top_k": 8}  # the input is not changed
    assert apply_overrides({}, ["search.top_k=3"]) == {"search": {"top_k": 3}}
    assert apply_overrides({}, ["system=[a, b]"]) == {"system": ["a", "b"]}


@pytest.mark.parametrize("bad", [
    "search.top_k", "=4", "search..top_k=4", "rewards.3.weight=1", "rewards.x.weight=1",
    "prompt.text=hi", "search.top_k=&a 1", "search.top_k=!!python/name:os.system ''",
])
def test_bad_override(bad):
    data = {"prompt": "hi", "rewards": [{"length": {"max_words": 3}}]}
    with pytest.raises(SpecError) as info:
        apply_overrides(data, [bad])
    assert bad in str(info.value) and "invalid override" in str(info.value)


def test_load_with_overrides(tmp_path):
    path = write(tmp_path, VALID)
    spec = load_spec(path, overrides=["search.top_k=4", "search.strategy=greedy", "rewards.1.weight=2"])
    assert spec.search["top_k"] == 4 and spec.search["strategy"] == "greedy"
    assert spec.rewards[1].weight == 2.0
    assert spec.search_config().top_k == 4


def test_validation_error_after_override(tmp_path):
    path = write(tmp_path, VALID)
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides=["search.top_k=0", "search.beem=2"])
    problems = {p["field"]: p for p in info.value.errors}
    assert set(problems) == {"search.beem", "search.top_k"}
    check(problems["search.beem"], path, None, "search.beem", "unknown key",
          "(from --set search.beem=2)")
    check(problems["search.top_k"], path, None, "search.top_k", "(got 0)",
          "(from --set search.top_k=0)")


def test_file_errors_keep_lines_next_to_override_errors(tmp_path):
    path = write(tmp_path, "search:\n  top_k: 0\n" + MINIMAL)
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides=["search.beam=0"])
    got = {p["field"]: p["line"] for p in info.value.errors}
    assert got == {"search.top_k": 2, "search.beam": None}


# ------------------------------------------------------------------ search config


def test_search_config_merging():
    spec = load_spec("search: {top_k: 4, lam: 2.0}\n" + MINIMAL)
    assert spec.search == {"top_k": 4, "lam": 2.0}
    config = spec.search_config()
    assert (config.top_k, config.lam, config.beam) == (4, 2.0, SearchConfig().beam)
    config = spec.search_config(top_k=16, beam=None, strategy="greedy")
    assert (config.top_k, config.beam, config.strategy) == (16, SearchConfig().beam, "greedy")
    with pytest.raises(ConfigError, match="top_k"):
        spec.search_config(top_k=0)


def test_search_fields_partial_and_typed():
    spec = load_spec("search: {commit: 1, prune: false}\n" + MINIMAL)
    assert spec.search == {"commit": 1, "prune": False}
    assert spec.model_dump()["search"] == {"commit": 1, "prune": False}


# ------------------------------------------------------------------ presets and schema


def test_presets():
    assert "commongen" in list_presets()
    assert preset_path("commongen").name == "commongen.yaml"
    a = load_spec("preset:commongen")
    b = load_spec("commongen")
    c = load_spec(preset_path("commongen"))
    assert a.model_dump() == b.model_dump() == c.model_dump()
    config = a.search_config()
    # values chosen in docs/benchmarks.md, "The commongen preset"
    assert (config.strategy, config.top_k, config.lookahead, config.beam, config.lam,
            config.max_new_tokens) == ("deal", 5, 4, 2, 24.0, 40)
    # the log-probability over sqrt(tokens): no shortest route to a word at any cost
    assert config.length_penalty == 0.5
    # no end of the answer, nor of its sentence, while a word is missing
    assert config.hold_eos and config.hold_ends == [".", "!", "?", "\n"]
    # no loops once the words are in; recommit after a placed word, within 3 nats of the model
    assert (config.no_repeat_ngram, config.commit_by_reward, config.max_logprob_drop) == (3, True, 3.0)
    # the opening read: the first 4 tokens pay half of what the word list adds to their
    # likelihood over the same turns asking for a sentence; the completion estimate credits a
    # rollout that makes a missing word likely
    assert (config.fluency_prompt, config.fluency_context, config.fluency_mix, config.fluency_weight,
            config.fluency_tokens, config.estimate) == (
        "Write one short sentence.", "conversation", "copy_penalty", 0.5, 4, True)
    assert a.variables() == {"concepts"}
    v = {"concepts": ["dog", "frisbee", "catch"]}
    assert a.render_prompt(v) == (
        "Write one short sentence that uses all of these words: dog, frisbee, catch."
    )
    # no system prompt of its own: one that listed the words again brought bare word lists
    assert a.system is None and a.render_system(v) is None
    # three demonstrations (3 and 4 words), each a sentence using every one of its words
    from rewards.keywords import KeywordCoverage

    assert [len(e.input["concepts"]) for e in a.examples] == [3, 4, 4]
    for e in a.examples:
        assert KeywordCoverage(e.input["concepts"], inflections=True).score([e.output]) == [1.0]
    (entry,) = a.rewards
    assert entry.reward_type == "keywords" and entry.weight == 1.0
    assert entry.params.inflections is True


@needs_rewards
def test_preset_builds():
    from rewards.keywords import KeywordCoverage

    (reward,) = load_spec("preset:commongen").build_rewards({"concepts": ["dog", "frisbee"]})
    assert isinstance(reward, KeywordCoverage)


def test_unknown_preset_lists_available():
    for source in ("preset:nope", "nope", "preset:../secrets"):
        with pytest.raises(SpecError) as info:
            load_spec(source)
        assert "unknown preset" in str(info.value) and "commongen" in str(info.value)


def test_json_schema():
    schema = spec_json_schema()
    assert schema["title"] == "deal-chains reward spec" and schema["description"]
    assert set(schema["properties"]) == SPEC_KEYS
    assert schema["additionalProperties"] is False
    defs = schema["$defs"]
    assert "top_k" in defs["SearchConfig"]["properties"]
    entry = defs["RewardEntry"]
    assert {"keywords", "length", "weight"} <= set(entry["properties"])
    assert entry["oneOf"] == [{"required": [t]} for t in ALL_TYPES]
    import json

    json.dumps(schema)  # serialisable


def test_a_non_ascii_digit_in_a_path_is_a_key_not_an_index():
    # "²" is a digit to str.isdigit but not to int(): it once crashed the error reporting with
    # a raw ValueError (found by tests/spec/test_fuzz.py)
    from deal_chains.spec.source import parse_dotted

    assert parse_dotted("rewards.².x") == ("rewards", "²", "x")
    spec = {"version": 1, "prompt": "x {a}", "rewards": [{"keywords": {"words": ["a"]}}, {"²": None}]}
    with pytest.raises(SpecError, match=r"rewards\.1\.²: unknown reward type '²'"):
        load_spec(spec)
    with pytest.raises(SpecError, match="'²' is not an index"):
        load_spec({**spec, "rewards": spec["rewards"][:1]}, overrides=["rewards.²=1"])
