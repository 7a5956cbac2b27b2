"""JSON Schema: the soft reward (prefix scoring, final validation) and the hard token mask."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deal_chains import DeALEngine, SearchConfig
from deal_chains.search.constraints import ConstraintError, GrammarConstraint
from deal_chains.jsonkit.lexer import lex
from deal_chains.jsonkit.lexer import scan_prefix as scan_json_prefix
from rewards.json_schema import JsonSchemaReward

SCHEMA = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "minimum": 0},
        "b": {"type": "string", "maxLength": 5},
        "c": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 3},
    },
    "required": ["a", "b", "c"],
    "additionalProperties": False,
}
DATA = Path(__file__).parents[1] / "data" / "schemas"


@pytest.mark.parametrize("text,valid_prefix,complete", [
    ('{"a": 1}', True, True), ('{"a": [1, 2', True, False), ('{"a": "x\\"y', True, False),
    ('[1, 2]]', True, True), ('{"a":}', False, False), ('{a: 1}', False, False), ("", True, False),
    ('{"a": tr', True, False), ('{"a": trx', False, False), ('{"a": 01}', False, False), ("-1.5e3", True, True),
])
def test_prefix_scanner(text, valid_prefix, complete):
    ok, done, _, _ = scan_json_prefix(text)
    assert (ok, done) == (valid_prefix, complete)


def test_prefix_scanner_closes_partial_objects():
    _, _, closed, _ = scan_json_prefix('{"a": 1, "c": ["x", {"d": 2}, "y", "z')
    assert json.loads(closed) == {"a": 1, "c": ["x", {"d": 2}, "y"]}


def test_soft_reward_orders_outputs_sensibly():
    r = JsonSchemaReward(SCHEMA)
    valid, partial_good, partial_bad, invalid, trailing, broken = r.score([
        '{"a": 1, "b": "hi", "c": ["x"]}', '{"a": 1, "b": "h', '{"a": -4, "b": "h',
        '{"a": 1, "b": "toolong", "c": ["x"]}', '{"a": 1, "b": "hi", "c": []} and more', '{"a": 1,,',
    ], None)
    assert valid == 1.0
    assert 0.5 < partial_bad < partial_good < valid
    assert 0.0 < invalid < partial_bad
    assert trailing == 0.2 and broken == 0.0
    assert r.is_valid('```json\n{"a": 0, "b": "", "c": []}\n```')
    assert not r.is_valid('{"a": 0, "b": "", "c": ["q"]}')


def test_schema_errors_are_clear_and_remote_refs_refused():
    with pytest.raises(ValueError, match="invalid JSON schema"):
        JsonSchemaReward({"type": "objekt"})
    with pytest.raises(ValueError, match="only local refs"):
        JsonSchemaReward({"properties": {"a": {"$ref": "https://example.com/s.json"}}})
    local = JsonSchemaReward({"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}})
    assert local.is_valid('{"a": 3}') and not local.is_valid('{"a": "3"}')


@pytest.fixture(scope="module")
def engine(tiny_lm):
    return DeALEngine(tiny_lm)


@pytest.mark.parametrize("strategy", ["greedy", "deal", "sample"])
def test_hard_mask_makes_random_model_emit_valid_json(engine, strategy):
    """A random-weight model never writes JSON on its own; under the mask every finished
    answer parses and validates."""
    cfg = SearchConfig(strategy=strategy, max_new_tokens=120, top_k=3, lookahead=3,
                       temperature=1.0 if strategy == "sample" else 0.0)
    reward = JsonSchemaReward(SCHEMA)
    results = engine.generate(["hi", "give json", "abc"], [reward], cfg,
                              constraints=GrammarConstraint.json_schema(SCHEMA))
    for r in results:
        assert r.finished, r.text
        assert reward.is_valid(r.text), r.text
        assert r.rewards["json_schema"] == 1.0
    free = engine.generate(["hi"], [reward], SearchConfig(strategy="greedy", max_new_tokens=40))
    assert not reward.is_valid(free[0].text)


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.json")))
def test_hard_mask_on_real_world_schemas(engine, name):
    schema = json.loads((DATA / name).read_text())
    reward = JsonSchemaReward(schema)
    [r] = engine.generate(["json please"], [reward], SearchConfig(strategy="greedy", max_new_tokens=200),
                          constraints=GrammarConstraint.json_schema(schema))
    if r.finished:
        assert reward.is_valid(r.text), r.text
    else:  # the budget may cut a long document: then it is reported as cut, never as done
        assert r.finish_reason == "length"


def test_regex_constraint(engine):
    [r] = engine.generate(["x"], None, SearchConfig(strategy="greedy", max_new_tokens=20),
                          constraints=GrammarConstraint.regex(r"(yes|no), [0-9]{2}"))
    assert r.finished
    import re

    assert re.fullmatch(r"(yes|no), [0-9]{2}", r.text)


@pytest.mark.parametrize("strategy", ["greedy", "deal"])
def test_an_answer_the_grammar_engine_failed_on_is_reported_not_finished(engine, monkeypatch, caplog, strategy):
    """Where the grammar engine fails (e.g. its lexer runs out of states) it allows only the
    end; the answer then ends without completing the grammar and must not be reported as a
    finished, grammatical one."""
    import torch

    from deal_chains.search.constraints import CompiledConstraint

    eos = min(engine.lm.eos_token_ids)

    def failed(self, states):  # what llguidance's mask is in an error state: the end only
        mask = torch.zeros(len(states), self.vocab, dtype=torch.bool)
        mask[:, eos] = True
        return mask

    regex = GrammarConstraint.regex(r"(yes|no), [0-9]{2}")
    cfg = SearchConfig(strategy=strategy, max_new_tokens=20, top_k=2, lookahead=2)
    with monkeypatch.context() as m:
        m.setattr(CompiledConstraint, "allowed", failed)
        [r] = engine.generate(["x"], None, cfg, constraints=regex)
    assert r.finish_reason == "error" and not r.finished, (r.text, r.finish_reason)
    assert "grammar engine failed" in caplog.text
    [ok] = engine.generate(["x"], None, cfg, constraints=regex)
    assert ok.finish_reason == "stop" and ok.finished, ok.text


def test_refused_grammar_fails_before_generation(engine):
    with pytest.raises(ConstraintError, match="refused"):
        engine.generate(["x"], None, SearchConfig(strategy="greedy"),
                        constraints=GrammarConstraint.lark("start: undefined_rule"))
    with pytest.raises(ConstraintError, match="not valid JSON"):
        GrammarConstraint.json_schema("{not json")


def test_per_prompt_constraints_and_batch_equality(engine):
    other = {"type": "array", "items": {"type": "boolean"}, "maxItems": 2}
    cons = [GrammarConstraint.json_schema(SCHEMA), GrammarConstraint.json_schema(other), None]
    cfg = SearchConfig(strategy="deal", top_k=3, lookahead=2, beam=2, max_new_tokens=80)
    batched = engine.generate(["p1", "p2", "p3"], [JsonSchemaReward(True)], cfg, constraints=cons)
    assert JsonSchemaReward(SCHEMA).is_valid(batched[0].text)
    assert JsonSchemaReward(other).is_valid(batched[1].text)
    for i, (p, c) in enumerate(zip(["p1", "p2", "p3"], cons)):
        [single] = engine.generate([p], [JsonSchemaReward(True)], cfg, constraints=[c])
        assert single.token_ids == batched[i].token_ids


def test_bounded_schema_only_narrows():
    from deal_chains.search.constraints import bounded_schema

    schema = {"type": "object", "properties": {"s": {"type": "string"}, "t": {"type": "string", "minLength": 190},
                                               "l": {"type": "array", "items": {"type": "integer"}}},
              "allOf": [{"properties": {"x": {"type": "integer"}}}]}
    capped = bounded_schema(schema)
    assert capped["properties"]["s"]["maxLength"] == 160
    assert capped["properties"]["t"]["maxLength"] == 190  # never below the schema's minimum
    assert capped["properties"]["l"]["maxItems"] == 8
    assert "additionalProperties" not in capped  # allOf may add keys: leave the object open
    assert "additionalProperties" not in capped["allOf"][0]
    assert bounded_schema({"type": "object", "properties": {"a": {"enum": ["x"]}}})["additionalProperties"] is False
    # anything valid for the capped schema is valid for the original
    import jsonschema

    doc = {"s": "x" * 160, "t": "y" * 190, "l": [1] * 8, "x": 3}
    jsonschema.validate(doc, capped)
    jsonschema.validate(doc, schema)


def test_unknown_format_is_left_to_validation_not_refused(engine):
    schema = {"type": "object", "properties": {"a": {"type": "string", "format": "string", "maxLength": 5}},
              "required": ["a"]}
    c = GrammarConstraint.json_schema(schema).compile(engine.lm)
    assert any("Unknown format" in w for w in c.warnings)
    [r] = engine.generate(["x"], None, SearchConfig(strategy="greedy", max_new_tokens=80),
                          constraints=GrammarConstraint.json_schema(schema))
    assert JsonSchemaReward(schema).is_valid(r.text)


def _accepts(compiled, lm, text: str) -> bool:
    """Whether the grammar accepts exactly ``text`` as a complete output."""
    state = compiled.new_state()
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    return state.try_consume_tokens(ids) == len(ids) and state.is_accepting()


@pytest.mark.parametrize("schema, good, bad", [
    # disjoint types: one-of == any-of
    ({"type": "object", "properties": {"f": {"oneOf": [{"type": "string", "maxLength": 3},
                                                       {"type": "array", "items": {"type": "integer"},
                                                        "maxItems": 2}]}},
      "required": ["f"], "additionalProperties": False},
     ['{"f":"ab"}', '{"f":[1,2]}'], ['{"f":1}', '{"f":true}']),
    # required-only branches: exactly one of the keys
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
      "additionalProperties": False, "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
     ['{"a":1}', '{"b":2}'], ['{"a":1,"b":2}', '{}']),
])
def test_one_of_rewritten_exactly(tiny_lm, schema, good, bad):
    import jsonschema

    compiled = GrammarConstraint.json_schema(schema).compile(tiny_lm)
    for text in good:
        jsonschema.validate(json.loads(text), schema)
        assert _accepts(compiled, tiny_lm, text), text
    for text in bad:
        assert not jsonschema.Draft202012Validator(schema).is_valid(json.loads(text))
        assert not _accepts(compiled, tiny_lm, text), text


def test_one_of_that_may_overlap_is_refused_not_approximated(tiny_lm):
    overlapping = {"oneOf": [{"type": "string"}, {"type": "string", "pattern": "^a"}]}
    with pytest.raises(ConstraintError, match="oneOf"):
        GrammarConstraint.json_schema(overlapping).compile(tiny_lm)
    numbers = {"oneOf": [{"type": "integer"}, {"type": "number"}]}  # 1 matches both
    # refused when declared, before any model is involved; the advice is ours, not the
    # engine's option to approximate oneOf (which would break fail-closed)
    with pytest.raises(ConstraintError, match="oneOf") as err:
        GrammarConstraint.json_schema(numbers)
    assert "disjoint" in str(err.value) and "coerce_one_of" not in str(err.value)


@pytest.mark.parametrize("keyword", ["dependencies", "dependentRequired"])
def test_key_dependencies_rewritten_exactly(tiny_lm, keyword):
    import jsonschema

    schema = {"type": "object", "additionalProperties": False,
              "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}},
              keyword: {"a": ["b"], "c": ["a"]}}
    compiled = GrammarConstraint.json_schema(schema).compile(tiny_lm)
    validator = jsonschema.Draft202012Validator(schema) if keyword == "dependentRequired" \
        else jsonschema.Draft7Validator(schema)
    for text in ['{}', '{"b":1}', '{"a":1,"b":2}', '{"a":1,"b":2,"c":3}', '{"a":1}', '{"c":1}',
                 '{"c":1,"a":2}', '{"b":1,"c":2}']:
        assert _accepts(compiled, tiny_lm, text) == validator.is_valid(json.loads(text)), text


def test_schema_dependencies_are_refused(tiny_lm):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}},
              "dependencies": {"a": {"properties": {"b": {"type": "string"}}}}}
    with pytest.raises(ConstraintError, match="dependencies"):
        GrammarConstraint.json_schema(schema).compile(tiny_lm)


RECURSIVE_FOREVER = {"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}},
                                     "required": ["next"]}}, "$ref": "#/$defs/n"}
RECURSIVE_FINE = {"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}},
                  "$ref": "#/$defs/n"}


@pytest.mark.parametrize("mode", ["soft", "hard"])
@pytest.mark.parametrize("schema, words", [
    (RECURSIVE_FOREVER, "no finite JSON value"),
    ({"type": "array", "minItems": 1, "items": {"$ref": "#"}}, "no finite JSON value"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "Unsatisfiable"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "Unsatisfiable"),
    (False, "no value satisfies it"),
    ({"$ref": "#/$defs/missing"}, "points to nothing"),
    ({"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(12_000)}}, "20000 nodes"),
    (json.loads("[" * 70 + "]" * 70) and {"allOf": [json.loads('{"items":' * 70 + "{}" + "}" * 70)]},
     "deeper than 64"),
])
def test_unusable_schemas_fail_at_spec_load(mode, schema, words):
    import time

    from deal_chains.errors import SpecError
    from deal_chains.spec import load_spec

    t0 = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_spec({"rewards": [{"json_schema": {"schema": schema, "mode": mode}}]})
    assert words in str(info.value) and "rewards.0.json_schema.schema" in str(info.value)
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("schema, words", [
    ({"type": []}, "no value satisfies type: [] at #"),
    ({"type": "object", "properties": {"a": False}, "required": ["a"]},
     "required property 'a' has schema false at #/properties/a"),
    ({"$defs": {"n": {"type": "object", "properties": {"b": {"type": []}}, "required": ["b"]}},
      "type": "object", "properties": {"x": {"$ref": "#/$defs/n"}}, "required": ["x"]},
     "no value satisfies type: [] at #/$defs/n/properties/b"),
    ({"type": "array", "prefixItems": [{"type": "integer"}], "items": False, "minItems": 2},
     "items is false at #/items but minItems is 2"),
])
def test_dead_ends_are_named_not_called_recursion(schema, words):
    """No value satisfies these, but none recurses: the message said "recurses into itself"."""
    from deal_chains.errors import SpecError
    from deal_chains.spec import load_spec

    with pytest.raises(SpecError) as info:
        load_spec({"rewards": [{"json_schema": {"schema": schema}}]})
    assert words in str(info.value) and "recurses" not in str(info.value), str(info.value)
    with pytest.raises(SpecError, match="recurses into itself on every path"):  # true recursion keeps its words
        load_spec({"rewards": [{"json_schema": {"schema": RECURSIVE_FOREVER}}]})


@pytest.mark.parametrize("schema", [RECURSIVE_FINE, {"type": ["object", "null"], "required": ["a"],
                                                     "properties": {"a": {"$ref": "#"}}}])
def test_recursive_schemas_with_a_way_out_are_fine(schema, tiny_lm):
    from deal_chains.spec import load_spec

    spec = load_spec({"rewards": [{"json_schema": {"schema": schema, "mode": "hard"}}]})
    spec.build_constraint().compile(tiny_lm)


TUPLE_2020 = {"type": "array", "prefixItems": [{"type": "string", "maxLength": 2}, {"type": "integer"}],
              "items": False, "minItems": 2}
TUPLE_DRAFT7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array",
                "items": [{"type": "integer"}, {"type": "string", "maxLength": 2}],
                "additionalItems": False, "minItems": 2}


@pytest.mark.parametrize("schema", [TUPLE_2020, TUPLE_DRAFT7])
def test_tuple_arrays_with_closed_rest_are_not_called_unsatisfiable(schema, tiny_lm):
    """items: false (or additionalItems: false) only applies past the prefix: a tuple of
    minItems items is a finite instance, not "recursion on every path"."""
    import jsonschema

    from deal_chains.spec import load_spec

    spec = load_spec({"rewards": [{"json_schema": {"schema": schema, "mode": "hard"}}]})
    cfg = SearchConfig(strategy="sample", temperature=1.0, seed=3, max_new_tokens=40)
    results = DeALEngine(tiny_lm).generate(["a", "b"], None, cfg, constraints=spec.build_constraint())
    cls = jsonschema.validators.validator_for(schema)
    for r in results:
        if r.finished:
            assert cls(schema).is_valid(json.loads(r.text)), r.text


def test_a_prefix_shorter_than_min_items_with_a_closed_rest_is_unsatisfiable():
    from deal_chains.errors import SpecError
    from deal_chains.spec import load_spec

    schema = {"type": "array", "prefixItems": [{"type": "integer"}], "items": False, "minItems": 2}
    with pytest.raises(SpecError, match="no finite JSON value"):
        load_spec({"rewards": [{"json_schema": {"schema": schema, "mode": "hard"}}]})


def test_soft_mode_keeps_what_only_the_mask_cannot_do():
    from deal_chains.spec import load_spec

    overlapping = {"oneOf": [{"type": "string"}, {"type": "string", "pattern": "^a"}]}
    load_spec({"rewards": [{"json_schema": {"schema": overlapping, "mode": "soft"}}]})  # jsonschema validates it
    with pytest.raises(Exception, match="oneOf"):
        load_spec({"rewards": [{"json_schema": {"schema": overlapping, "mode": "hard"}}]})


def test_closing_bias_ramps_over_the_end_of_the_budget():
    from deal_chains.search.closing import closing_bias

    assert closing_bias(100, 256) == 0.0 and closing_bias(65, 256) == 0.0
    ramp = [closing_bias(r, 256) for r in (64, 32, 1)]
    assert 0 < ramp[0] < ramp[1] < ramp[2] == 16.0
    # the window scales with the budget (a quarter, at least 4 tokens): a short budget is not
    # pressed from its first token, which emptied every value of a two-key object at 16 tokens
    assert closing_bias(16, 16) == 0.0 and closing_bias(12, 16, needed=6) == 0.0
    assert 0 < closing_bias(4, 16) < closing_bias(1, 16) == 16.0
    assert closing_bias(3, 8) > 0  # at least 4 tokens of window


def test_closing_bias_starts_earlier_for_deeper_documents():
    from deal_chains.search.closing import closing_bias

    # 100 tokens left is far from the end of a 256 budget, unless 40 brackets must close
    assert closing_bias(100, 256) == 0.0 < closing_bias(100, 256, needed=40)
    assert closing_bias(30, 256, needed=30) == 16.0


def test_json_closer_knows_where_the_document_stands(tiny_lm):
    from deal_chains.search.closing import JsonCloser

    vocab = int(tiny_lm.model.get_output_embeddings().weight.shape[0])
    closer = JsonCloser(tiny_lm, vocab)
    tok = tiny_lm.tokenizer

    def at(text):
        lexed = lex(closer.text(tok(text, add_special_tokens=False)["input_ids"]))
        return lexed.depth, lexed.in_string

    assert at('{"a":[{"b":"x') == (3, True)
    assert at('{"a":[{"b":"x}]"') == (3, False)  # brackets inside a string do not count
    assert at('{"a":"q\\"}') == (1, True)  # an escaped quote does not close the string
    assert at('{"a":"q\\\\"') == (1, False)  # an escaped backslash does not escape the quote
    assert at('{"a":[1,2]}') == (0, False)
    ids = {t: tok.convert_tokens_to_ids(t) for t in ['"', "}", "]", ",", ":", "{", "a"]}
    # inside a string only a quote closes; outside, only } and ]; neither set opens or continues
    assert bool(closer.in_string[ids['"']]) and not bool(closer.in_string[ids["}"]])
    assert bool(closer.outside[ids["}"]]) and bool(closer.outside[ids["]"]]) and not bool(closer.outside[ids['"']])
    for t in [",", ":", "{", "a"]:
        assert not bool(closer.in_string[ids[t]]) and not bool(closer.outside[ids[t]])
    assert all(bool(closer.in_string[e]) and bool(closer.outside[e]) for e in tiny_lm.eos_token_ids)


def test_json_closer_token_sets_on_merged_tokens():
    from types import SimpleNamespace

    from deal_chains.search.closing import JsonCloser

    texts = ['"', '"}', '"]}', '\\"', '}', ']}', ' }', '",', '{"', ':', 'ab', "<eos>"]

    class Tok:
        def __len__(self):
            return len(texts)

        def batch_decode(self, ids):
            return [texts[i[0]] for i in ids]

    closer = JsonCloser(SimpleNamespace(tokenizer=Tok(), eos_token_ids=[len(texts) - 1]), len(texts))
    in_string = {texts[i] for i in range(len(texts)) if closer.in_string[i]}
    outside = {texts[i] for i in range(len(texts)) if closer.outside[i]}
    assert in_string == {'"', '"}', '"]}', "<eos>"}  # an escaped quote does not close
    assert outside == {"}", "]}", " }", "<eos>"}
    # where a row stands is read from the tokens' texts by the one JSON lexer
    assert lex(closer.text([8, 10, 0])).in_string is False and lex(closer.text([8, 3])).in_string is True


def test_repeating_tail_finds_loops_not_repeats():
    from deal_chains.search.closing import repeating_tail

    assert repeating_tail([5] * 12) and not repeating_tail([5] * 11)
    assert repeating_tail([9, 9] + [1, 2, 3, 4] * 3)  # period 4, three copies
    assert not repeating_tail([1, 2, 3, 4] * 2)  # two copies of 4 tokens: too short to call a loop
    assert repeating_tail(list(range(20)) * 2) and not repeating_tail(list(range(40)) * 2)  # period <= 32
    assert not repeating_tail(list(range(30))) and not repeating_tail([])


def test_bounded_schema_caps_numbers_and_patterned_strings():
    from deal_chains.jsonkit.schema_rewrite import MAX_ABS_NUMBER
    from deal_chains.search.constraints import bounded_schema

    capped = bounded_schema({"type": "object", "properties": {
        "n": {"type": "integer", "minimum": 0}, "m": {"type": "number"},
        "big": {"type": "integer", "minimum": 10**15}, "e": {"type": "integer", "enum": [1, 2]},
        "p": {"type": "string", "pattern": "^[a-z]+$"}, "f": {"type": "string", "format": "date-time"}}})
    props = capped["properties"]
    assert props["n"] == {"type": "integer", "minimum": 0, "maximum": MAX_ABS_NUMBER}
    assert props["m"]["minimum"] == -MAX_ABS_NUMBER and props["m"]["maximum"] == MAX_ABS_NUMBER
    assert props["big"]["maximum"] > 10**15  # never below the schema's own minimum
    assert "maximum" not in props["e"]
    assert props["p"]["maxLength"] == 32 and props["f"]["maxLength"] == 32
    uuid = bounded_schema({"type": "string", "pattern": "^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$"})
    assert uuid["maxLength"] == 160  # 36 characters do not fit 32: the next cap that fits
    assert "maxLength" not in bounded_schema({"type": "string", "pattern": "^a{170}$"})
    loose = bounded_schema({"type": "string", "pattern": "^a+$"}, cap_patterns=False)
    assert "maxLength" not in loose
    # a pattern anchored at one end only rules how the string starts (or ends): the rest is
    # free text, capped as a string without a pattern (32 characters cut a sentence)
    for pattern in ("^[A-Z]", "[0-9]{3}$", r"^ab\$"):
        assert bounded_schema({"type": "string", "pattern": pattern})["maxLength"] == 160, pattern
    # anchored at both ends (an escaped backslash before the $), or at neither: a date written
    # without anchors is still a date
    for pattern in (r"^a\\$", r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}.\d{6}"):
        assert bounded_schema({"type": "string", "pattern": pattern})["maxLength"] == 32, pattern


def test_patterned_string_longer_than_the_cap_stays_satisfiable(tiny_lm):
    schema = {"type": "object", "properties": {"h": {"type": "string", "pattern": "^[a-f]{100}$"}},
              "required": ["h"]}
    c = GrammarConstraint.json_schema(schema).compile(tiny_lm)
    assert _accepts(c, tiny_lm, json.dumps({"h": "a" * 100}, separators=(",", ":")))


def test_looping_integers_and_patterns_are_cut_by_the_grammar(tiny_lm):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0},
                                               "p": {"type": "string", "pattern": "^[0-9-]+$"}}}
    c = GrammarConstraint.json_schema(schema).compile(tiny_lm)
    assert _accepts(c, tiny_lm, '{"n":123,"p":"1-2"}')
    assert not _accepts(c, tiny_lm, '{"n":' + "1" * 20 + "}")
    assert not _accepts(c, tiny_lm, '{"p":"' + "1-" * 40 + '1"}')


def test_closing_bias_follows_depth_and_strings(tiny_lm):
    import torch

    from deal_chains.search.constraints import apply_masks

    c = GrammarConstraint.json_schema({"type": "array", "items": {"anyOf": [{"$ref": "#"}, {"type": "string"}]}},
                                      max_items=64).compile(tiny_lm)
    tok = tiny_lm.tokenizer
    vocab = int(tiny_lm.model.get_output_embeddings().weight.shape[0])
    close, open_, quote = (tok.convert_tokens_to_ids(t) for t in ("]", "[", '"'))
    eos = min(tiny_lm.eos_token_ids)

    def biased(text, remaining):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        state = c.new_state()
        assert all(c.advance(state, t) for t in ids)
        out = apply_masks(torch.zeros(1, vocab, dtype=torch.float64), [state], [c], eos,
                          remaining, 256, lambda i: ids)
        return out[0]

    # 60 tokens left of 256: a shallow document is not pressed yet, one 30 deep must close now
    shallow, deep = biased("[", 60), biased("[" * 30, 60)
    assert deep[close] > 8 > shallow[close] and deep[open_] == shallow[open_] == 0
    # inside a string a quote closes; "]" is just a character of the string there
    in_string = biased('["abc', 10)
    assert in_string[quote] > 8 and in_string[close] == 0
    # a row caught in a loop is pressed to close with most of the budget left
    assert biased('["' + "ab" * 8, 200)[quote] == 16 and biased('["abcdefghijklmnop', 200)[quote] == 0


def test_documents_close_within_a_tight_budget(engine):
    # open strings and arrays (capped at 160 chars / 8 items) cannot fit 24 tokens of a
    # byte-level model unless the search closes them near the end of the budget
    schema = {"type": "object", "properties": {"s": {"type": "string"}, "t": {"type": "array", "items": {"type": "string"}}},
              "required": ["s", "t"]}
    constraint = GrammarConstraint.json_schema(schema)
    prompts = [f"JSON please {i}" for i in range(6)]
    cfg = SearchConfig(strategy="greedy", max_new_tokens=24)
    results = engine.generate(prompts, None, cfg, constraints=constraint)
    # every document ends complete and valid; a value the closing pressure closed (the
    # random model would have gone on) is reported as cut, not whole
    closed = [r for r in results if r.finished or r.closed_by == "budget"]
    assert len(closed) >= 5, [r.text for r in results]
    for r in closed:
        assert set(json.loads(r.text)) == {"s", "t"}
        assert r.finish_reason == ("stop" if r.closed_by is None else "length")
    assert any(r.closed_by == "budget" for r in results)


def test_required_keys_still_owed_bring_the_closing_window_forward(tiny_lm):
    import torch

    from deal_chains.search.constraints import apply_masks, root_required_keys

    assert root_required_keys({"$defs": {"r": {"required": ["a", "b"]}}, "$ref": "#/$defs/r",
                               "allOf": [{"required": ["c"]}], "required": ["b"]}) == ["a", "b", "c"]
    assert root_required_keys({"type": "array"}) == []
    keys = [f"key{i}" for i in range(8)]
    schema = {"type": "object", "properties": {k: {"type": "string"} for k in keys}, "required": keys}
    c = GrammarConstraint.json_schema(schema).compile(tiny_lm)
    assert set(c.required_keys) == set(keys) and all(v > 4 for v in c.required_keys.values())
    tok = tiny_lm.tokenizer
    vocab = int(tiny_lm.model.get_output_embeddings().weight.shape[0])
    quote = tok.convert_tokens_to_ids('"')

    def bias_on_quote(text, remaining):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        state = c.new_state()
        assert all(c.advance(state, t) for t in ids)
        out = apply_masks(torch.zeros(1, vocab, dtype=torch.float64), [state], [c], min(tiny_lm.eos_token_ids),
                          remaining, 256, lambda i: ids)
        return float(out[0, quote])

    # 120 tokens left is plenty for one open string, not for seven more keys after it
    first = '{"key0":"abc'
    last = "{" + ",".join(f'"{k}":"x"' for k in keys[:-1]) + ',"key7":"abc'
    assert bias_on_quote(first, 120) > 0 and bias_on_quote(last, 120) == 0


def _advanced(c, tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    state = c.new_state()
    assert all(c.advance(state, t) for t in ids), text
    return state, ids


def test_a_key_its_object_already_has_cannot_be_closed(tiny_lm):
    import torch

    from deal_chains.search.constraints import apply_masks

    c = GrammarConstraint.json_schema({"type": "object", "additionalProperties": {}}).compile(tiny_lm)
    assert c.dedupe_keys
    tok = tiny_lm.tokenizer
    vocab = int(tiny_lm.model.get_output_embeddings().weight.shape[0])
    quote = tok.convert_tokens_to_ids('"')

    def quote_allowed(text):
        state, ids = _advanced(c, tok, text)
        out = apply_masks(torch.zeros(1, vocab, dtype=torch.float64), [state], [c], min(tiny_lm.eos_token_ids),
                          row_tokens=lambda i: ids)
        return bool(out[0, quote] > float("-inf"))

    assert quote_allowed('{"x":1,"y') and not quote_allowed('{"x":1,"x')
    assert quote_allowed('{"x":{"x')  # a nested object has keys of its own
    assert not quote_allowed('{"x":{"a":1,"a')
    # the lexer state is memoised per prefix and grows by one token per call
    _, ids = _advanced(c, tok, '{"x":1,"x')
    assert c.lex_state(ids).in_key and c.lex_state(ids[:-1]).root_keys == {"x"}
    # declared properties are kept unique by the grammar itself: no key mask needed
    closed = GrammarConstraint.json_schema({"type": "object", "properties": {"a": {"type": "integer"}},
                                            "additionalProperties": False}).compile(tiny_lm)
    assert not closed.dedupe_keys


def test_a_forked_state_rolls_back_to_where_it_forked(tiny_lm):
    c = GrammarConstraint.json_schema({"type": "object", "properties": {"a": {"type": "integer"}},
                                       "required": ["a"], "additionalProperties": False}).compile(tiny_lm)
    tok = tiny_lm.tokenizer
    state, _ = _advanced(c, tok, '{"a":1')
    before = c.allowed([state])[0].clone()
    fork = c.copy(state)
    for t in tok('2}', add_special_tokens=False)["input_ids"]:
        assert c.advance(fork, t)
    assert not c.advance(c.copy(state), tok.convert_tokens_to_ids("x"))  # the grammar refuses a letter
    assert bool((c.allowed([fork])[0] != before).any())
    c.rollback(fork, 2)
    assert bool((c.allowed([fork])[0] == before).all())
    assert bool((c.allowed([state])[0] == before).all())  # the original never moved
