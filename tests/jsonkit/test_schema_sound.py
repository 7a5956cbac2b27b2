"""The hard JSON constraint's promise, checked on held-out kinds of schema: a finished output
passes plain ``jsonschema`` validation (the schema's own draft and format checker), and what
the mask cannot enforce soundly is refused with a reason instead of approximated."""

from __future__ import annotations

import json
import time

import jsonschema
import pytest

from deal_chains import DeALEngine, SearchConfig
from deal_chains.jsonkit.lexer import JsonLexer
from deal_chains.search.closing import closing_window
from deal_chains.jsonkit.schema_sound import FORMAT_PATTERNS, NATIVE_FORMATS, sound_schema
from deal_chains.search.constraints import (
    ConstraintError,
    GrammarConstraint,
)
from rewards.json_schema import JsonSchemaReward


@pytest.fixture(scope="module")
def engine(tiny_lm):
    return DeALEngine(tiny_lm)


def _plain_valid(schema, text):
    """What a user's own check does: json.loads + the draft's validator with its formats."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER).is_valid(json.loads(text))


def _sample(engine, schema, n=6, tokens=60):
    cfg = SearchConfig(strategy="sample", temperature=1.0, seed=7, max_new_tokens=tokens)
    return engine.generate([f"p{i}" for i in range(n)], None, cfg,
                           constraints=GrammarConstraint.json_schema(schema))


@pytest.mark.parametrize("step,lo,hi", [(0.01, 0, 1), (0.1, -3, 3), (0.05, 0.1, 0.4), (0.3, None, None)])
def test_decimal_multiple_of_lists_only_what_jsonschema_accepts(step, lo, hi):
    """0.29 / 0.01 is 28.999999999999996 in floating point: jsonschema says "not a multiple"
    where the grammar engine's exact decimals say yes. The narrowed schema holds only values
    jsonschema accepts, and all of them are multiples within the bounds."""
    schema = {"type": "number", "multipleOf": step,
              **({"minimum": lo} if lo is not None else {}), **({"maximum": hi} if hi is not None else {})}
    narrowed, _ = sound_schema(schema)
    values = narrowed["enum"]
    assert values
    check = jsonschema.Draft202012Validator(schema)
    assert all(check.is_valid(v) for v in values)
    if lo is not None:
        assert min(values) >= lo and max(values) <= hi


def test_decimal_multiple_of_under_the_mask_validates(engine):
    schema = {"type": "object", "properties": {"price": {"type": "number", "multipleOf": 0.01, "minimum": 0,
                                                         "maximum": 5}},
              "required": ["price"], "additionalProperties": False}
    for r in _sample(engine, schema):
        if r.finished:
            assert _plain_valid(schema, r.text), r.text


def test_dyadic_and_integer_steps_keep_the_keyword():
    narrowed, _ = sound_schema({"type": "number", "multipleOf": 0.5})
    assert narrowed["multipleOf"] == 0.5 and "enum" not in narrowed
    assert sound_schema({"type": "integer", "multipleOf": 3}) == ({"type": "integer", "multipleOf": 3}, [])


def test_multiple_of_no_float_accepts_is_refused():
    with pytest.raises(ConstraintError, match="multipleOf"):
        sound_schema({"type": "number", "multipleOf": 0.1, "exclusiveMinimum": 0.0, "exclusiveMaximum": 0.1})


def test_draft3_is_refused_for_the_mask_but_scored_softly():
    schema = {"$schema": "http://json-schema.org/draft-03/schema#", "type": "object",
              "properties": {"a": {"type": "integer", "required": True}}}
    with pytest.raises(ConstraintError, match="draft-03"):
        GrammarConstraint.json_schema(schema)
    soft = JsonSchemaReward(schema)
    assert soft.is_valid('{"a": 1}') and not soft.is_valid("{}")


def test_unique_items_is_refused_unless_trivial():
    with pytest.raises(ConstraintError, match="uniqueItems"):
        GrammarConstraint.json_schema({"type": "array", "items": {"type": "integer"}, "uniqueItems": True})
    GrammarConstraint.json_schema({"type": "array", "items": {"type": "integer"}, "uniqueItems": True,
                                   "maxItems": 1}).check()


def test_boolean_schemas():
    GrammarConstraint.json_schema(True).check()
    with pytest.raises(ConstraintError, match="false"):
        GrammarConstraint.json_schema(False)


@pytest.mark.parametrize("fmt", sorted(jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers))
def test_checked_formats_under_the_mask_pass_the_checker(engine, fmt):
    """For every format the installed jsonschema checks, sampled strings under the mask pass
    the checker (the mask's patterns and native formats are subsets of what it accepts), or
    the format is refused with a reason."""
    schema = {"type": "string", "format": fmt}
    if fmt not in FORMAT_PATTERNS and fmt not in NATIVE_FORMATS:
        with pytest.raises(ConstraintError, match="cannot be enforced"):
            GrammarConstraint.json_schema(schema)
        return
    finished = [r for r in _sample(engine, schema, n=8, tokens=40) if r.finished]
    assert finished, "no sample finished"
    for r in finished:
        assert _plain_valid(schema, r.text), (fmt, r.text)


def test_unchecked_unknown_format_is_left_free_with_a_note():
    c = GrammarConstraint.json_schema({"type": "string", "format": "x-colour"})
    assert any("x-colour" in w for w in c.check())


def test_repeated_keys_are_invalid_and_masked(engine):
    r = JsonSchemaReward({"type": "object", "minProperties": 2})
    assert not r.is_valid('{"x": 1, "x": 2}')
    assert r.is_valid('{"x": 1, "y": 2}')
    assert "duplicate key 'x'" in r.text_errors('{"x": 1, "x": 2}')
    state = JsonLexer().feed('{"x": 1, "y": {"x": 2}, ')
    assert not state.repeated_key
    assert state.copy().feed('"y"').repeated_key
    # under the mask, free-form objects never repeat a key
    schema = {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 3, "maxProperties": 5}
    for res in _sample(engine, schema, n=6, tokens=80):
        if res.finished:
            assert r.text_errors(res.text) is not None
            assert not [e for e in JsonSchemaReward(schema).text_errors(res.text) if "duplicate" in e], res.text


def test_refs_must_resolve_inside_the_document():
    with pytest.raises(ValueError, match="points to nothing"):
        JsonSchemaReward({"properties": {"a": {"$ref": "#/$defs/missing"}}})
    with pytest.raises(ValueError, match="outside the schema"):
        JsonSchemaReward({"$dynamicRef": "https://example.com/x#meta"})
    # an anchor and the document's own $id are local
    JsonSchemaReward({"$id": "https://example.com/root", "$defs": {"n": {"$anchor": "num", "type": "integer"}},
                      "properties": {"a": {"$ref": "#num"}, "b": {"$ref": "https://example.com/root#/$defs/n"}}})
    # a "$ref" key inside enum data is data
    assert JsonSchemaReward({"enum": [{"$ref": "nowhere"}]}).is_valid('{"$ref": "nowhere"}')


def test_patterns_are_matched_in_linear_time():
    with pytest.raises(ValueError, match="pattern"):
        JsonSchemaReward({"type": "string", "pattern": "(?=a)b"})
    r = JsonSchemaReward({"type": "string", "pattern": "^(a+)+$"})
    start = time.perf_counter()
    assert not r.is_valid(json.dumps("a" * 5000 + "!"))
    assert time.perf_counter() - start < 5  # Python's re would take longer than the universe
    keys = JsonSchemaReward({"type": "object", "patternProperties": {"^x_": {"type": "integer"}},
                             "additionalProperties": False})
    assert keys.is_valid('{"x_a": 1}') and not keys.is_valid('{"y": 1}') and not keys.is_valid('{"x_a": "1"}')


def test_prefix_of_one_branch_scores_as_a_valid_prefix():
    schema = {"anyOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "b"]},
                        {"type": "array"}]}
    r = JsonSchemaReward(schema)
    good, bad = r.score(['{"a": 1, "b', '{"a": "x", "b'], None)
    assert good > bad > 0.5
    one_of = JsonSchemaReward({"oneOf": [{"type": "object", "required": ["k"]},
                                         {"type": "object", "required": ["k", "j"]}]})
    [partial] = one_of.score(['{"k": 1, "j'], None)
    assert partial == pytest.approx(0.9)


def test_closing_window_scales_with_small_budgets():
    assert closing_window(16) == 4 and closing_window(200) == 50


def test_json_and_harmless_rewards_are_exported():
    import rewards

    assert rewards.JsonSchemaReward is JsonSchemaReward
    from rewards.harmless import HarmlessReward

    assert rewards.HarmlessReward is HarmlessReward


def test_deeply_nested_schema_file_is_a_located_error(tmp_path):
    from deal_chains.spec import load_spec
    from deal_chains.errors import SpecError

    deep = tmp_path / "deep.json"
    deep.write_text('{"items": ' * 3000 + "{}" + "}" * 3000)
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nrewards:\n  - json_schema:\n      schema_file: deep.json\n")
    with pytest.raises(SpecError, match="deep") as err:
        load_spec(spec)
    assert "schema_file" in str(err.value)


def _mask_accepts(tiny_lm, schema, text):
    """Whether the hard mask lets ``text`` through as a whole document."""
    state = GrammarConstraint.json_schema(schema).compile(tiny_lm).new_state()
    ids = tiny_lm.tokenizer.encode(text, add_special_tokens=False)
    return all(state.consume_token(i) for i in ids) and state.is_accepting()


@pytest.mark.parametrize("schema, texts", [
    # the engine let the exclusive bound itself through when the other bound is near
    ({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5}, ["0", "0.25"]),
    ({"type": "number", "exclusiveMinimum": 0, "maximum": 0.001}, ["0", "0.0005"]),
    ({"type": "number", "exclusiveMinimum": 1, "exclusiveMaximum": 1.5}, ["1", "1.1"]),
    ({"type": "number", "exclusiveMinimum": -0.1, "exclusiveMaximum": 0}, ["-0", "-0.05"]),
    ({"$schema": "http://json-schema.org/draft-04/schema#", "type": "number", "minimum": 0,
      "exclusiveMinimum": True, "maximum": 0.5}, ["0", "0.1"]),
    # a decimal past a float's precision equals the bound for jsonschema
    ({"type": "number", "exclusiveMinimum": 0.1}, ["0.10000000000000000001", "0.2"]),
    ({"type": "number", "minimum": 2, "exclusiveMaximum": 3}, ["2.99999999999999999999", "2.5"]),
    # integer bounds past 2**53 were read as 64-bit floats (and saturated at int64)
    ({"type": "integer", "minimum": -10**20, "maximum": 5}, ["5", "-9007199254740993"]),
    ({"type": "integer", "minimum": 9007199254740000}, ["9007199254740993", "9007199254740000"]),
])
def test_numeric_bounds_under_the_mask_agree_with_jsonschema(tiny_lm, schema, texts):
    check = jsonschema.validators.validator_for(schema)(schema)
    for text in texts:
        if _mask_accepts(tiny_lm, schema, text):
            assert check.is_valid(json.loads(text)), text
    assert any(_mask_accepts(tiny_lm, schema, t) for t in texts)  # still satisfiable


@pytest.mark.parametrize("schema", [
    {"type": "integer", "minimum": 10**20},
    {"type": "integer", "minimum": 9007199254740993, "maximum": 9007199254740999},
    {"type": "integer", "minimum": -10**20, "maximum": -99999999999999999990},  # crashed the engine
])
def test_integer_bounds_past_2_53_are_refused_not_misread(schema):
    with pytest.raises(ConstraintError, match="2\\*\\*53"):
        GrammarConstraint.json_schema(schema)


def test_out_of_range_bounds_do_not_crash_the_soft_load():
    from deal_chains.spec import load_spec

    schema = {"type": "integer", "minimum": -10**20, "maximum": -99999999999999999990}
    load_spec({"rewards": [{"json_schema": {"schema": schema, "mode": "soft"}}]})


@pytest.mark.parametrize("schema", [
    {"type": "number", "maximum": float("inf")},
    {"type": "integer", "minimum": float("-inf")},  # used to overflow while bounding integers
    {"enum": [float("nan"), 1]},
    {"type": "object", "properties": {"x": {"const": float("inf")}}},
])
def test_non_finite_numbers_in_a_schema_are_refused(schema):
    with pytest.raises(ConstraintError, match="not finite"):
        GrammarConstraint.json_schema(schema).check()


def test_non_finite_schema_number_from_yaml_is_a_located_spec_error(tmp_path):
    from deal_chains.errors import SpecError
    from deal_chains.spec import load_spec

    path = tmp_path / "spec.yaml"
    path.write_text("rewards:\n  - json_schema: {mode: hard, schema: {type: integer, minimum: -1e400}}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (problem,) = info.value.errors
    assert problem["line"] == 2 and "not finite" in problem["message"]
