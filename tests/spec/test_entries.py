"""The full reward-spec language: every reward type (regex, json_schema, classifier,
reward_model, judge, harmless, plugin and the compositions), hard constraints, ``extends``,
per-step specs, reuse of costly rewards across records, and the committed JSON Schema.
Every invalid spec must give file, line and field path."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from plugins import installed_plugin
import torch

from deal_chains.cli import main
from deal_chains.errors import SpecError
from deal_chains.spec import REWARD_TYPES, RewardSpec, list_presets, load_spec, preset_path, spec_json_schema

ROOT = Path(__file__).resolve().parents[2]


def write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(path: Path, **kw) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(path, **kw)
    return info.value


def only(err: SpecError) -> dict:
    assert len(err.errors) == 1, err.errors
    return err.errors[0]


def check(problem: dict, path: Path | str, line: int | None, field: str | None, *words: str) -> None:
    assert problem["file"] == str(path), problem
    assert problem["line"] == line, problem
    assert problem["field"] == field, problem
    for word in words:
        assert word in problem["message"], problem


def error_at(tmp_path: Path, text: str, line: int, field: str, *words: str) -> dict:
    path = write(tmp_path, text)
    problem = only(load_error(path))
    check(problem, path, line, field, *words)
    return problem


# ------------------------------------------------------------------ the registry


def test_every_type_is_documented_and_strict():
    for name, rtype in REWARD_TYPES.items():
        assert rtype.params.__doc__ and f"``{name}``" in rtype.params.__doc__, name
        assert rtype.params.model_config.get("extra") == "forbid", name
    entry = spec_json_schema()["$defs"]["RewardEntry"]["properties"]
    assert all(entry[t]["description"] for t in REWARD_TYPES)


def test_unknown_parameter_in_new_types(tmp_path):
    error_at(tmp_path, """\
        rewards:
          - regex: {must_match: a, must_match_all: b}
        """, 2, "rewards.0.regex.must_match_all", "unknown key", "must_match")


# ------------------------------------------------------------------ regex


def test_regex_builds(tmp_path):
    from rewards.regex import RegexReward

    spec = load_spec(write(tmp_path, """\
        rewards:
          - regex: {must_match: ['^[A-Z]', '\\.$'], must_not_match: TODO, mode: search, ignore_case: true}
            weight: 0.5
        """))
    (r,) = spec.build_rewards({})
    assert isinstance(r, RegexReward)
    assert (r.name, r.weight, r.must_match, r.must_not_match, r.ignore_case) == (
        "regex", 0.5, ["^[A-Z]", r"\.$"], ["TODO"], True)
    assert r.score(["Fine.", "todo: fine"], None) == [1.0, 1 / 3]  # ignore_case: ^[A-Z] matches t


def test_regex_bad_pattern_in_a_list(tmp_path):
    error_at(tmp_path, """\
        rewards:
          - regex:
              must_match:
                - ok
                - 'a(b'
        """, 5, "rewards.0.regex.must_match.1", "'a(b'", "RE2")


def test_regex_bad_single_pattern_and_lookaround(tmp_path):
    error_at(tmp_path, "rewards:\n  - regex: {must_not_match: '(?=x)y'}\n", 2,
             "rewards.0.regex.must_not_match", "'(?=x)y'", "lookaround")


def test_regex_needs_a_pattern_and_a_known_mode(tmp_path):
    error_at(tmp_path, "rewards:\n  - regex: {must_match: []}\n", 2, "rewards.0.regex",
             "at least one must_match or must_not_match")
    error_at(tmp_path, "rewards:\n  - regex: {must_match: x, mode: full}\n", 2, "rewards.0.regex.mode",
             "'search' or 'fullmatch'", "full")
    error_at(tmp_path, "rewards:\n  - regex: {must_match: [x, 3]}\n", 2, "rewards.0.regex.must_match.1",
             "must be a string")


# ------------------------------------------------------------------ json_schema

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def test_json_schema_inline_builds(tmp_path):
    from rewards.json_schema import JsonSchemaReward

    spec = load_spec(write(tmp_path, """\
        rewards:
          - json_schema:
              schema:
                type: object
                properties: {n: {type: integer}}
                required: [n]
        """))
    (r,) = spec.build_rewards({})
    assert isinstance(r, JsonSchemaReward) and r.schema == SCHEMA
    assert r.score(['{"n": 3}', "hello"], None) == [1.0, 0.0]
    assert spec.build_constraint() is None  # soft by default
    assert spec.rewards[0].params.mode == "soft"
    assert load_spec(spec.model_dump()).model_dump() == spec.model_dump()  # "schema" round-trips
    assert "schema" in spec.model_dump()["rewards"][0]["json_schema"]


def test_json_schema_file_relative_to_the_spec(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    (folder / "schemas").mkdir(parents=True)
    (folder / "schemas" / "order.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    path = write(folder, "rewards:\n  - json_schema: {schema_file: schemas/order.json, mode: hard}\n")
    monkeypatch.chdir(tmp_path)  # not the spec's folder
    spec = load_spec(path)
    assert spec.rewards[0].params.loaded_schema == SCHEMA
    (r,) = spec.build_rewards({})
    assert r.schema == SCHEMA


def test_json_schema_bad_schema_names_its_line(tmp_path):
    error_at(tmp_path, """\
        rewards:
          - json_schema:
              schema:
                type: object
                properties:
                  n: {type: integr}
        """, 6, "rewards.0.json_schema.schema.properties.n.type", "invalid JSON schema", "integr")
    error_at(tmp_path, "rewards:\n  - json_schema: {schema: [1, 2]}\n", 2, "rewards.0.json_schema.schema",
             "mapping")


def test_json_schema_remote_ref_refused(tmp_path):
    error_at(tmp_path, """\
        rewards:
          - json_schema:
              schema:
                properties:
                  a:
                    $ref: "https://example.com/a.json"
        """, 6, "rewards.0.json_schema.schema.properties.a.$ref", "https://example.com/a.json",
             "only local refs")


def test_json_schema_exactly_one_source(tmp_path):
    error_at(tmp_path, """\
        rewards:
          - json_schema:
              schema: {type: object}
              schema_file: order.json
        """, 4, "rewards.0.json_schema.schema_file", "either schema", "not both")
    error_at(tmp_path, "rewards:\n  - json_schema: {mode: hard}\n", 2, "rewards.0.json_schema",
             "schema_file")


def test_json_schema_file_problems_name_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    error_at(tmp_path, "rewards:\n  - json_schema: {schema_file: nope.json}\n", 2,
             "rewards.0.json_schema.schema_file", "schema file not found", str(missing))
    (tmp_path / "broken.json").write_text('{"type": "object",\n}', encoding="utf-8")
    error_at(tmp_path, "rewards:\n  - json_schema: {schema_file: broken.json}\n", 2,
             "rewards.0.json_schema.schema_file", f"{tmp_path / 'broken.json'}:2:1", "invalid JSON")
    (tmp_path / "remote.json").write_text(json.dumps({"$ref": "http://x/y.json"}), encoding="utf-8")
    error_at(tmp_path, "rewards:\n  - json_schema: {schema_file: remote.json}\n", 2,
             "rewards.0.json_schema.schema_file", str(tmp_path / "remote.json"), "http://x/y.json")


def test_build_constraint(tmp_path):
    from deal_chains.search.constraints import GrammarConstraint

    spec = load_spec(write(tmp_path, """\
        rewards:
          - length: {max_words: 30}
          - json_schema: {schema: {type: object, properties: {n: {type: integer}}, required: [n]}, mode: hard}
        """))
    c = spec.build_constraint({"any": "record"})
    assert isinstance(c, GrammarConstraint) and c.kind == "json_schema"
    assert c.source == GrammarConstraint.json_schema(SCHEMA).source
    assert spec.build_constraint() is c  # static: one declaration for every record
    assert load_spec("rewards: [{length: {max_words: 3}}]").build_constraint() is None


def test_two_hard_constraints(tmp_path):
    error_at(tmp_path, """\
        rewards:
          - json_schema: {schema: {type: object}, mode: hard}
          - json_schema: {schema: {type: array}, mode: hard}
            name: second
        """, 3, "rewards.1.json_schema.mode", "at most one hard constraint")


def test_hard_constraint_only_at_top_level(tmp_path):
    error_at(tmp_path, """\
        rewards:
          - any_of:
              rewards:
                - length: {max_words: 3}
                - json_schema: {schema: {type: object}, mode: hard}
        """, 5, "rewards.0.any_of.rewards.1.json_schema.mode", "top-level")


# ------------------------------------------------------------------ classifier / reward_model

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "kind", "awful", "a", "the", "dog"]


def _bert_dir(path: Path, num_labels: int) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    labels = {"id2label": {0: "safe", 1: "toxic"}, "label2id": {"safe": 0, "toxic": 1}} if num_labels == 2 else {}
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=num_labels, **labels)
    BertForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A folder with a tiny classifier (./cls) and a tiny scalar reward model (./rm)."""
    folder = tmp_path_factory.mktemp("spec-models")
    _bert_dir(folder / "cls", 2)
    _bert_dir(folder / "rm", 1)
    return folder


def test_classifier_and_reward_model_build_from_paths_next_to_the_spec(model_folder, monkeypatch):
    from rewards.classifier import ClassifierReward
    from rewards.reward_model import RewardModelReward

    path = write(model_folder, """\
        rewards:
          - classifier: {model: ./cls, label: toxic, goal: minimize, include_prompt: false, batch_size: 4}
            weight: 2
          - reward_model: {model: ./rm, normalize: [-2, 2], scale: 0.5, include_prompt: false}
        """)
    monkeypatch.chdir(ROOT)
    spec = load_spec(path)
    assert spec.rewards[0].params.model == str(model_folder / "cls")
    cls, rm = spec.build_rewards({})
    assert isinstance(cls, ClassifierReward) and isinstance(rm, RewardModelReward)
    assert (cls.name, cls.weight, cls.goal, cls.label, cls.batch_size) == ("classifier", 2.0, "minimize", "toxic", 4)
    assert (rm.normalize, rm.scale, rm.include_prompt) == ((-2.0, 2.0), 0.5, False)
    scores = cls.score(["you are awful", "the dog"], None) + rm.score(["you are kind"], None)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_costly_rewards_are_built_once_per_spec(model_folder, monkeypatch):
    import rewards.classifier as classifier_module

    built = []
    real = classifier_module.ClassifierReward.__init__

    def counting(self, *args, **kwargs):
        built.append(args)
        real(self, *args, **kwargs)

    monkeypatch.setattr(classifier_module.ClassifierReward, "__init__", counting)
    spec = load_spec(write(model_folder, """\
        rewards:
          - classifier: {model: ./cls, label: 1}
          - keywords: {words: '{concepts}'}
          - threshold:
              reward: {classifier: {model: ./cls, label: safe}}
              min: 0.5
        """, "reuse.yaml"))
    per_record = [spec.build_rewards({"concepts": [f"word{i}"]}) for i in range(50)]
    assert len(built) == 2  # the top-level classifier and the nested one, once each
    assert all(r[0] is per_record[0][0] for r in per_record)
    assert all(r[2].children[0] is per_record[0][2].children[0] for r in per_record)
    assert per_record[0][1] is not per_record[1][1]  # templated rewards are per record
    assert per_record[1][1].words == ["word1"]
    other = load_spec(write(model_folder, "rewards:\n  - classifier: {model: ./cls, label: 1}\n", "other.yaml"))
    assert other.build_rewards({})[0] is not per_record[0][0]  # one cache per spec


def test_classifier_and_reward_model_validation(tmp_path):
    error_at(tmp_path, "rewards:\n  - classifier: {model: ./missing, label: toxic}\n", 2,
             "rewards.0.classifier.model", "model path not found", str(tmp_path / "missing"))
    error_at(tmp_path, "rewards:\n  - classifier: {model: org/name, label: [a]}\n", 2,
             "rewards.0.classifier.label", "label name or a class index")
    error_at(tmp_path, "rewards:\n  - classifier: {model: org/name, label: x, goal: max}\n", 2,
             "rewards.0.classifier.goal", "'maximize' or 'minimize'")
    error_at(tmp_path, "rewards:\n  - classifier: {label: x}\n", 2, "rewards.0.classifier.model",
             "missing required key 'model'")
    error_at(tmp_path, "rewards:\n  - reward_model: {model: org/rm, normalize: [3, 1]}\n", 2,
             "rewards.0.reward_model.normalize", "lo < hi")
    error_at(tmp_path, "rewards:\n  - reward_model: {model: org/rm, normalize: tanh}\n", 2,
             "rewards.0.reward_model.normalize", "sigmoid, none or a range")
    error_at(tmp_path, "rewards:\n  - reward_model: {model: org/rm, scale: 0}\n", 2,
             "rewards.0.reward_model.scale", "greater than 0")
    spec = load_spec("rewards:\n  - reward_model: {model: org/rm, normalize: none}\n")
    assert spec.rewards[0].params.normalize == "none" and spec.rewards[0].params.include_prompt is True


def test_model_load_failure_is_a_spec_error_with_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    path = write(tmp_path, "rewards:\n  - length: {max_words: 3}\n  - classifier: {model: ./empty, label: 1}\n")
    with pytest.raises(SpecError) as info:  # a local directory's files are checked at load
        load_spec(path)
    assert {p["field"] for p in info.value.errors} == {"rewards.1.classifier.model"}
    assert "no config.json" in str(info.value)
    # a directory that changed after the spec was loaded still fails at build, located
    (tmp_path / "empty" / "config.json").write_text('{"id2label": {"0": "a", "1": "b"}}')
    (tmp_path / "empty" / "model.safetensors").write_bytes(b"")
    spec = load_spec(path)
    (tmp_path / "empty" / "config.json").unlink()
    with pytest.raises(SpecError) as info:
        spec.build_rewards({})
    check(only(info.value), path, 3, "rewards.1.classifier", "cannot build reward 'classifier'")


# ------------------------------------------------------------------ judge / harmless


def test_judge_uses_the_generating_model(tmp_path, tiny_lm):
    from rewards.judge import JudgeReward

    path = write(tmp_path, "rewards:\n  - judge: {question: 'Is this polite? {text}'}\n    weight: 0.5\n")
    spec = load_spec(path)
    (judge,) = spec.build_rewards({}, lm=tiny_lm)
    assert isinstance(judge, JudgeReward)
    assert judge.model is tiny_lm.model and judge.question == "Is this polite? {text}"
    assert (judge.name, judge.weight) == ("judge", 0.5)
    assert 0.0 < judge.score(["hello"], None)[0] < 1.0
    assert spec.build_rewards({"x": 1}, lm=tiny_lm)[0] is judge
    with pytest.raises(SpecError) as info:
        spec.build_rewards({})
    check(only(info.value), path, 2, "rewards.0.judge", "needs the generating model", "lm=")


def test_judge_with_its_own_model(tmp_path, tiny_model_dir, tiny_lm):
    from rewards.judge import JudgeReward

    shutil.copytree(tiny_model_dir, tmp_path / "judge-model")
    spec = load_spec(write(tmp_path, "rewards:\n  - judge: {question: 'Good? {text}', model: ./judge-model}\n"))
    assert spec.rewards[0].params.model == str(tmp_path / "judge-model")
    (judge,) = spec.build_rewards({})  # no generating model needed
    assert isinstance(judge, JudgeReward) and judge.model is not tiny_lm.model


def test_judge_validation(tmp_path):
    error_at(tmp_path, "rewards:\n  - judge: {question: 'Is it polite?'}\n", 2, "rewards.0.judge.question",
             "{text}")
    error_at(tmp_path, "rewards:\n  - judge: {question: '{text}?', model: ./nowhere}\n", 2,
             "rewards.0.judge.model", "model path not found")


@pytest.fixture
def head_file(tmp_path, tiny_lm) -> Path:
    """A Bradley-Terry head for the tiny model's features (hidden size 32)."""
    from rewards.harmless import build_head, save_head

    torch.manual_seed(0)
    head = build_head(int(tiny_lm.model.config.hidden_size))
    save_head(head, tmp_path / "heads" / "tiny-head", {"features": {"layer": -1, "pooling": "response",
                                                                    "max_length": 64}})
    return tmp_path / "heads" / "tiny-head.safetensors"


def test_harmless_with_a_head_next_to_the_spec(tmp_path, tiny_lm, head_file):
    from rewards.harmless import HarmlessReward

    path = write(tmp_path, "rewards:\n  - harmless: {head: ./heads/tiny-head}\n")
    spec = load_spec(path)
    (r,) = spec.build_rewards({}, lm=tiny_lm)
    assert isinstance(r, HarmlessReward) and r.head_path == head_file
    assert all(0.0 <= s <= 1.0 for s in r.score(["Sure.", "No."], None))
    assert all(spec.build_rewards({"i": i}, lm=tiny_lm)[0] is r for i in range(5))  # features loaded once
    with pytest.raises(SpecError) as info:
        spec.build_rewards({})
    check(only(info.value), path, 2, "rewards.0.harmless", "needs the generating model")


def test_harmless_missing_head(tmp_path):
    error_at(tmp_path, "rewards:\n  - harmless: {head: nohead}\n", 2, "rewards.0.harmless.head",
             "reward head not found", str(tmp_path / "nohead.safetensors"))


# ------------------------------------------------------------------ plugins

PLUGIN_SOURCE = '''
from rewards import BaseReward

class Shout(BaseReward):
    def __init__(self, factor=1.0, name="shout"):
        self.factor, self.name = factor, name
    def score(self, texts, context=None):
        return [min(1.0, self.factor * sum(c.isupper() for c in t) / max(1, len(t))) for t in texts]
'''


@pytest.fixture
def plugin_dist(tmp_path):
    with installed_plugin(tmp_path / "site", PLUGIN_SOURCE, {"shout": "Shout"}, prefix="dc_spec_plugin") as module:
        yield module


def test_plugin_builds(tmp_path, plugin_dist):
    spec = load_spec(write(tmp_path, """\
        rewards:
          - plugin: {name: shout, params: {factor: 2.0}}
            weight: 3
          - plugin: {name: shout}
            name: quiet
        """))
    assert [e.name for e in spec.rewards] == ["shout", "quiet"]  # default name: the plugin's
    loud, quiet = spec.build_rewards({})
    assert (type(loud).__name__, loud.factor, loud.weight, loud.name) == ("Shout", 2.0, 3.0, "shout")
    assert (quiet.factor, quiet.name) == (1.0, "quiet")
    assert loud.score(["AB"], None) == [1.0]


def test_unknown_plugin_lists_installed(tmp_path, plugin_dist):
    error_at(tmp_path, "rewards:\n  - plugin: {name: toxicity}\n", 2, "rewards.0.plugin.name",
             "unknown reward plugin 'toxicity'", "installed plugins:", "shout")
    error_at(tmp_path, "rewards:\n  - plugin: {name: 'os:system'}\n", 2, "rewards.0.plugin.name",
             "never imported from a path")


def test_unknown_plugin_without_plugins(tmp_path):
    error_at(tmp_path, "rewards:\n  - plugin: {name: toxicity, params: {x: 1}}\n", 2, "rewards.0.plugin.name",
             "unknown reward plugin 'toxicity'")


# ------------------------------------------------------------------ composition

COMPOSED = """\
rewards:
  - all_of:
      rewards:
        - keywords: {words: '{concepts}'}
        - length: {max_words: 12}
      thresholds: [1.0, 1.0]
    weight: 2
    name: both
  - any_of:
      rewards:
        - regex: {must_match: '^Yes'}
        - regex: {must_match: '^No'}
          name: 'no'
      thresholds: 1
  - gated:
      gate: {regex: {must_match: '\\.$'}}
      reward: {keywords: {words: [sun]}}
      threshold: 1
  - threshold:
      reward: {length: {min_words: 3}}
      min: 0.5
      soft: true
  - normalize:
      reward: {length: {max_words: 3}}
      lo: 0.5
      hi: 1.0
"""


def test_composition_builds(tmp_path):
    from rewards.compose import AllOf, AnyOf, Gated, Normalized, Threshold

    spec = load_spec(write(tmp_path, COMPOSED))
    assert spec.variables() == {"concepts"}  # nested templates count
    both, either, gated, thr, norm = spec.build_rewards({"concepts": ["dog", "park"]})
    assert isinstance(both, AllOf) and (both.name, both.weight, both.thresholds) == ("both", 2.0, [1.0, 1.0])
    assert [c.name for c in both.children] == ["keywords", "length"]
    assert both.children[0].words == ["dog", "park"]
    assert isinstance(either, AnyOf) and [c.name for c in either.children] == ["regex", "no"]
    assert isinstance(gated, Gated) and isinstance(thr, Threshold) and isinstance(norm, Normalized)
    assert (thr.min, thr.soft, norm.lo, norm.hi) == (0.5, True, 0.5, 1.0)
    assert both.score(["A dog in the park.", "A dog."], None) == [1.0, 0.5]
    assert either.score(["Yes.", "Maybe."], None) == [1.0, 0.0]
    assert gated.score(["The sun.", "The sun"], None) == [1.0, 0.0]


def test_nested_error_paths(tmp_path):
    error_at(tmp_path, """\
        rewards:
          - length: {max_words: 3}
          - keywords: {words: [a]}
          - all_of:
              rewards:
                - length: {max_words: 3}
                - regex: {must_match: 'x(('}
        """, 7, "rewards.2.all_of.rewards.1.regex.must_match", "'x(('")
    error_at(tmp_path, """\
        rewards:
          - threshold:
              min: 0.5
              reward:
                all_of:
                  rewards:
                    - length: {max_words: 3}
                    - toxicity: {}
        """, 8, "rewards.0.threshold.reward.all_of.rewards.1.toxicity", "unknown reward type 'toxicity'")
    error_at(tmp_path, """\
        rewards:
          - gated:
              gate: {length: {max_words: 3}}
              reward: {length: {max_words: 5}}
        """, 4, "rewards.0.gated.reward", "both named 'length'")


def test_composition_parameter_checks(tmp_path):
    error_at(tmp_path, """\
        rewards:
          - all_of:
              rewards:
                - length: {max_words: 3}
                - length: {min_words: 1}
        """, 5, "rewards.0.all_of.rewards.1", "both named 'length'")
    error_at(tmp_path, """\
        rewards:
          - any_of:
              rewards: [{length: {max_words: 3}}]
              thresholds: [0.5, 0.5]
        """, 4, "rewards.0.any_of.thresholds", "2 thresholds for 1 rewards")
    error_at(tmp_path, "rewards:\n  - all_of: {rewards: []}\n", 2, "rewards.0.all_of.rewards", "at least 1")
    error_at(tmp_path, "rewards:\n  - threshold: {reward: {length: {max_words: 3}}, min: 0, soft: true}\n", 2,
             "rewards.0.threshold.min", "min > 0")
    error_at(tmp_path, "rewards:\n  - normalize: {reward: {length: {max_words: 3}}, lo: 1, hi: 1}\n", 2,
             "rewards.0.normalize.hi", "lo (1.0) must be less than hi")
    error_at(tmp_path, "rewards:\n  - threshold: {min: 1}\n", 2, "rewards.0.threshold.reward",
             "missing required key 'reward'")


def test_nested_build_errors_keep_their_paths(tmp_path):
    path = write(tmp_path, """\
        rewards:
          - all_of:
              rewards:
                - keywords: {words: '{concepts}'}
                - length: {max_tokens: 4}
        """)
    with pytest.raises(SpecError) as info:
        load_spec(path).build_rewards({"topic": 1})
    got = [(p["line"], p["field"]) for p in info.value.errors]
    assert got == [(4, "rewards.0.all_of.rewards.0.keywords.words"), (5, "rewards.0.all_of.rewards.1.length")]


# ------------------------------------------------------------------ extends


def test_extends_a_preset(tmp_path):
    path = write(tmp_path, """\
        extends: json
        search: {max_new_tokens: 64}
        rewards:
          - json_schema: {schema: {type: object}, mode: hard}
        """)
    spec = load_spec(path)
    base = load_spec("json")
    assert [e.name for e in spec.rewards] == ["json_start", "json_schema"]  # base first
    assert spec.search == {**base.search, "max_new_tokens": 64}
    assert spec.system == "Reply with JSON only."
    assert spec.extends is None and spec.replace_rewards is False
    assert spec.build_constraint() is not None
    assert load_spec(spec.model_dump()).model_dump() == spec.model_dump()


def test_extends_a_file_deep_merge_and_replace(tmp_path):
    write(tmp_path, """\
        model: default
        search: {top_k: 3, lam: 2.0}
        system: base system
        prompt: "base {x}"
        rewards:
          - length: {max_words: 10}
        """, "bases/base.yaml")
    spec = load_spec(write(tmp_path, """\
        extends: bases/base.yaml
        search: {lam: 5.0}
        prompt: "child {y}"
        rewards:
          - keywords: {words: [dog]}
        """))
    assert spec.search == {"top_k": 3, "lam": 5.0}
    assert (spec.model, spec.system, spec.prompt) == ("default", "base system", "child {y}")
    assert [e.name for e in spec.rewards] == ["length", "keywords"]
    replaced = load_spec(write(tmp_path, """\
        extends: ./bases/base.yaml
        replace_rewards: true
        rewards:
          - keywords: {words: [dog]}
        """, "replace.yaml"))
    assert [e.name for e in replaced.rewards] == ["keywords"] and replaced.search == {"top_k": 3, "lam": 2.0}
    inherited = load_spec(write(tmp_path, "extends: bases/base.yaml\nsystem: mine\n", "inherit.yaml"))
    assert [e.name for e in inherited.rewards] == ["length"] and inherited.system == "mine"


def test_extends_chain_and_base_relative_paths(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "s.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    write(tmp_path, "rewards:\n  - json_schema: {schema_file: s.json}\n", "lib/a.yaml")
    write(tmp_path, "extends: a.yaml\nsearch: {top_k: 2}\nrewards:\n  - length: {max_words: 5}\n", "lib/b.yaml")
    spec = load_spec(write(tmp_path, "extends: lib/b.yaml\nsearch: {beam: 1}\n"))
    assert [e.name for e in spec.rewards] == ["json_schema", "length"]
    assert spec.rewards[0].params.loaded_schema == SCHEMA  # relative to lib/, not to this spec
    assert spec.search == {"top_k": 2, "beam": 1}


def test_errors_in_a_base_name_the_base_file(tmp_path):
    base = write(tmp_path, """\
        search: {top_k: 0}
        rewards:
          - length: {max_words: 3}
            wieght: 2
        """, "base.yaml")
    path = write(tmp_path, "extends: base.yaml\nrewards:\n  - length: {min_words: 1}\n    name: l2\n    terminal: maybe\n")
    err = load_error(path)
    got = [(p["file"], p["line"], p["field"]) for p in err.errors]
    assert got == [(str(path), 5, "rewards.1.terminal"), (str(base), 1, "search.top_k"),
                   (str(base), 4, "rewards.0.wieght")]
    assert f"{base}:4:5: rewards.0.wieght" in str(err)


def test_merged_conflicts_name_the_right_file(tmp_path):
    base = write(tmp_path, "rewards:\n  - json_schema: {schema: {type: object}, mode: hard}\n", "base.yaml")
    path = write(tmp_path, "extends: base.yaml\nrewards:\n  - length: {max_words: 2}\n  - length: {min_words: 1}\n")
    check(only(load_error(path)), path, 4, "rewards.2", "both named 'length'")
    path = write(tmp_path, "extends: base.yaml\nrewards:\n  - json_schema: {schema: {type: array}, mode: hard}\n"
                 "    name: mine\n")
    check(only(load_error(path)), path, 3, "rewards.1.json_schema.mode", "at most one hard")
    assert base.is_file()


def test_base_yaml_error_and_safety(tmp_path):
    base = write(tmp_path, "rewards:\n  - length: {max_words: 3}\nsystem: &a hi\n", "base.yaml")
    path = write(tmp_path, "extends: base.yaml\n")
    check(only(load_error(path)), base, 3, None, "anchors and aliases are not allowed")
    write(tmp_path, "rewards: [\n", "base.yaml")
    problem = only(load_error(path))
    assert problem["file"] == str(base) and "YAML syntax error" in problem["message"]


def test_extends_cycle(tmp_path):
    a = write(tmp_path, "extends: b.yaml\nrewards:\n  - length: {max_words: 3}\n", "a.yaml")
    b = write(tmp_path, "search: {top_k: 2}\nextends: ./a.yaml\n", "b.yaml")
    problem = only(load_error(a))
    check(problem, b, 2, "extends", "extends cycle", f"{a.resolve()} -> {b.resolve()} -> {a.resolve()}")
    me = write(tmp_path, "extends: me.yaml\nrewards:\n  - length: {max_words: 3}\n", "me.yaml")
    check(only(load_error(me)), me, 1, "extends", "extends cycle")


def test_bad_extends_target(tmp_path):
    error_at(tmp_path, "rewards:\n  - length: {max_words: 3}\nextends: nosuchpreset\n", 3, "extends",
             "unknown preset 'nosuchpreset'", "commongen", "json")
    error_at(tmp_path, "extends: other/missing.yaml\n", 1, "extends", "spec file not found",
             str(tmp_path / "other" / "missing.yaml"))
    error_at(tmp_path, "extends: [json]\n", 1, "extends", "preset name or a spec file path")
    error_at(tmp_path, "replace_rewards: true\nrewards:\n  - length: {max_words: 3}\n", 1, "replace_rewards",
             "extends")


def test_overrides_apply_to_the_merged_spec(tmp_path):
    write(tmp_path, "search: {top_k: 3}\nrewards:\n  - length: {max_words: 3}\n", "base.yaml")
    path = write(tmp_path, "extends: base.yaml\nrewards:\n  - keywords: {words: [a]}\n")
    spec = load_spec(path, overrides=["rewards.0.weight=2", "search.top_k=5"])
    assert spec.rewards[0].weight == 2.0 and spec.search == {"top_k": 5}
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides=["extends=json"])
    assert "(from --set extends=json)" in str(info.value)


# ------------------------------------------------------------------ steps

STEPS = """\
version: 1
search: {top_k: 3, lookahead: 2}
system: "Be brief."
rewards:
  - length: {max_words: 40}
steps:
  outline:
    prompt: "Outline {topic}."
    rewards:
      - keywords: {words: '{topic}'}
  answer:
    extends: json
    search: {max_new_tokens: 64}
    rewards:
      - json_schema: {schema: {type: object}, mode: hard}
  plain:
    replace_rewards: true
    system: null
    rewards:
      - regex: {must_match: x}
"""


def test_steps(tmp_path):
    spec = load_spec(write(tmp_path, STEPS))
    assert spec.step_names == ["outline", "answer", "plain"]
    assert spec.rewards == [] and spec.search == {}  # everything lives in the steps
    outline = spec.step("outline")
    assert isinstance(outline, RewardSpec)
    assert outline.search == {"top_k": 3, "lookahead": 2} and outline.system == "Be brief."
    assert [e.name for e in outline.rewards] == ["length", "keywords"]  # shared first
    assert outline.variables() == {"topic"}
    answer = spec.step("answer")  # shared < the step's base (json) < the step
    assert answer.search == {**load_spec("json").search, "top_k": 4, "lookahead": 4, "max_new_tokens": 64}
    assert answer.system == "Reply with JSON only."
    assert [e.name for e in answer.rewards] == ["length", "json_start", "json_schema"]
    assert answer.build_constraint() is not None and outline.build_constraint() is None
    plain = spec.step("plain")
    assert [e.name for e in plain.rewards] == ["regex"] and plain.system is None
    kw = outline.build_rewards({"topic": "dogs"})[1]
    assert kw.words == ["dogs"]
    assert load_spec(spec.model_dump()).model_dump() == spec.model_dump()


def test_step_errors(tmp_path):
    path = write(tmp_path, STEPS)
    spec = load_spec(path)
    with pytest.raises(SpecError) as info:
        spec.step("summary")
    check(only(info.value), path, 6, "steps", "unknown step 'summary'", "outline, answer, plain")
    with pytest.raises(SpecError) as info:
        spec.build_rewards({})
    assert "pick" not in str(info.value) and "spec.step(name)" in str(info.value)
    with pytest.raises(SpecError, match="has steps"):
        spec.build_constraint()
    with pytest.raises(SpecError, match="no steps"):
        load_spec("rewards: [{length: {max_words: 3}}]").step("x")
    with pytest.raises(SpecError) as info:
        spec.step("outline").render_prompt({})
    check(only(info.value), path, 8, "steps.outline.prompt", "{topic}")


def test_step_validation_errors_name_lines(tmp_path):
    error_at(tmp_path, """\
        steps:
          a:
            rewards:
              - length: {max_words: 3}
          b:
            search: {top_k: 0}
            rewards:
              - length: {max_words: 3}
        """, 6, "steps.b.search.top_k", "greater than or equal to 1")
    error_at(tmp_path, "steps:\n  a:\n    prompt: hi\n", 3, "steps.a.rewards", "missing required key 'rewards'")
    error_at(tmp_path, "steps:\n  a b:\n    rewards: [{length: {max_words: 3}}]\n", 2, "steps.a b", "step name")
    error_at(tmp_path, "steps: {}\n", 1, "steps", "at least one step")
    error_at(tmp_path, "steps:\n  a:\n    steps: {b: {rewards: [{length: {max_words: 3}}]}}\n", 3, "steps.a.steps",
             "cannot be nested")


def test_shared_error_reported_once(tmp_path):
    path = write(tmp_path, """\
        search: {top_k: 0}
        steps:
          a: {rewards: [{length: {max_words: 3}}]}
          b: {rewards: [{length: {max_words: 3}}]}
        """)
    problem = only(load_error(path))
    assert (problem["line"], problem["field"]) == (1, "steps.a.search.top_k")


def test_step_extends_errors(tmp_path):
    write(tmp_path, "steps:\n  x: {rewards: [{length: {max_words: 3}}]}\n", "multi.yaml")
    error_at(tmp_path, "steps:\n  a:\n    extends: multi.yaml\n", 3, "steps.a.extends", "multi-step")
    error_at(tmp_path, "steps:\n  a:\n    extends: nope.yaml\n", 3, "steps.a.extends", "spec file not found")


def test_a_spec_extending_a_multi_step_spec_merges_steps(tmp_path):
    write(tmp_path, """\
        search: {top_k: 3}
        steps:
          a: {rewards: [{length: {max_words: 3}}]}
          b: {prompt: "b", rewards: [{length: {max_words: 4}}]}
        """, "multi.yaml")
    spec = load_spec(write(tmp_path, """\
        extends: multi.yaml
        search: {beam: 1}
        steps:
          b: {prompt: "B", rewards: [{keywords: {words: [z]}}]}
          c: {rewards: [{length: {max_words: 5}}]}
        """))
    assert spec.step_names == ["a", "b", "c"]
    b = spec.step("b")
    assert b.prompt == "B" and [e.name for e in b.rewards] == ["length", "keywords"]
    assert all(spec.step(n).search == {"top_k": 3, "beam": 1} for n in spec.step_names)


# ------------------------------------------------------------------ presets, schema, compatibility


def test_new_presets():
    assert {"commongen", "json", "harmless", "concise"} <= set(list_presets())
    js = load_spec("json")
    c = js.search_config()
    assert (c.strategy, c.top_k, c.lookahead, c.beam, c.lam, c.max_new_tokens) == ("deal", 4, 4, 2, 8.0, 256)
    assert js.system == "Reply with JSON only." and js.build_constraint() is None
    (start,) = js.build_rewards({})
    assert start.score(['{"a": 1}', " [1]", "Sure! {"], None) == [1.0, 1.0, 0.0]
    hl = load_spec("harmless")
    c = hl.search_config()
    assert (c.strategy, c.top_k, c.lookahead, c.commit, c.beam, c.lam, c.max_logprob_drop, c.max_new_tokens) == (
        "deal", 8, 8, 8, 2, 2.0, 2.0, 128)
    assert (c.length_penalty, c.end_in_lookahead, c.first_top_k) == (1.0, True, 16)
    assert [e.reward_type for e in hl.rewards] == ["harmless"] and hl.rewards[0].params.head is None
    assert "safe alternative" in hl.system and "I'm sorry, but I can't help with that." in hl.system
    concise = load_spec("concise")
    (entry,) = concise.rewards
    assert (entry.reward_type, entry.params.max_words, entry.weight) == ("length", 30, 0.5)
    assert concise.system == "Answer in at most two sentences."


def test_presets_satisfy_the_exported_schema():
    import jsonschema
    import yaml

    validator = jsonschema.Draft202012Validator(spec_json_schema())
    for name in list_presets():
        data = yaml.safe_load(preset_path(name).read_text(encoding="utf-8"))
        assert not list(validator.iter_errors(data)), name
    assert not list(validator.iter_errors(yaml.safe_load(STEPS)))
    assert not list(validator.iter_errors(yaml.safe_load(COMPOSED)))
    assert list(validator.iter_errors({"search": {"top_k": 2}}))  # no rewards, steps or extends


def test_committed_json_schema_is_current():
    committed = (ROOT / "spec-schema.json").read_text(encoding="utf-8")
    assert committed == json.dumps(spec_json_schema(), indent=2) + "\n", (
        "spec-schema.json is stale: run `deal-chains spec schema --out spec-schema.json`")


def test_build_rewards_keeps_its_old_call_forms():
    spec = load_spec("rewards: [{length: {max_tokens: 3}}]")
    (a,) = spec.build_rewards({}, lambda t: len(t))
    (b,) = spec.build_rewards({}, count_tokens=lambda t: len(t))
    assert a.max_tokens == b.max_tokens == 3


# ------------------------------------------------------------------ command line


def test_generate_with_a_step_and_a_hard_constraint(capsys, tmp_path, tiny_model_dir):
    spec = write(tmp_path, """\
        search: {strategy: deal, top_k: 2, beam: 1, lookahead: 1, max_new_tokens: 24}
        steps:
          words:
            prompt: "Words about {topic}"
            rewards: [{keywords: {words: '{topic}'}}]
          data:
            prompt: "JSON about {topic}"
            rewards:
              - json_schema: {schema: {type: object, properties: {a: {type: integer}}, required: [a],
                                       additionalProperties: false}, mode: hard}
        """)
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"topic": "dogs"}\n{"topic": "cats"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["generate", "--spec", str(spec), "--input", str(inp), "--output", str(out), "--model",
            str(tiny_model_dir), "--device", "cpu", "--quiet"]
    assert main(args + ["--step", "data"]) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["topic"] for r in rows] == ["dogs", "cats"]
    for row in rows:  # the random tiny model writes valid JSON only because of the mask
        if row["finished"]:
            value = json.loads(row["text"])
            assert set(value) == {"a"} and isinstance(value["a"], int)
        assert set(row["rewards"]) == {"json_schema"}
    assert main(args + ["--step", "words"]) == 0
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "has steps (words, data)" in err and "--step" in err and "Traceback" not in err
    assert main(args + ["--step", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown step 'nope'" in err and "words, data" in err
