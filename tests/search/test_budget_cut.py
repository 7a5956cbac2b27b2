"""Reading back which JSON values a search limit (closing pressure, the string cap) closed."""

from __future__ import annotations

import string

from deal_chains.search.budget_cut import limited_closes
from deal_chains.search.constraints import GrammarConstraint

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


def _ids(lm, text: str) -> list[int]:
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_no_limit_no_cut(tiny_lm):
    c = GrammarConstraint.json_schema(SCHEMA).compile(tiny_lm)
    assert limited_closes(c, _ids(tiny_lm, '{"a":"xy"}'), max_new_tokens=200) == {}


def test_closes_under_the_budget_pressure_are_found(tiny_lm):
    c = GrammarConstraint.json_schema(SCHEMA).compile(tiny_lm)
    ids = _ids(tiny_lm, '{"a":"xy"}')
    closes = limited_closes(c, ids, max_new_tokens=len(ids))  # the budget ends with the document
    text = [tiny_lm.tokenizer.decode([ids[i]]) for i in sorted(closes)]
    assert '"' in text and "}" in text and not any(v.by_cap for v in closes.values())
    assert all(v.before.in_string for i, v in closes.items() if tiny_lm.tokenizer.decode([ids[i]]) == '"')


def test_a_string_closed_at_the_cap_is_found(tiny_lm):
    c = GrammarConstraint.json_schema(SCHEMA, max_string_length=4).compile(tiny_lm)
    assert c.declaration.string_cap == 4
    at_cap = limited_closes(c, _ids(tiny_lm, '{"a":"wxyz"}'), max_new_tokens=500)
    assert [v.by_cap for v in at_cap.values()] == [True]
    assert limited_closes(c, _ids(tiny_lm, '{"a":"xyz"}'), max_new_tokens=500) == {}
    # a schema's own maxLength is no cap of the search's
    own = GrammarConstraint.json_schema({**SCHEMA, "properties": {"a": {"type": "string", "maxLength": 30}}},
                                        max_string_length=4).compile(tiny_lm)
    assert limited_closes(own, _ids(tiny_lm, '{"a":"' + string.ascii_letters[:30] + '"}'), max_new_tokens=500) == {}


def test_the_search_reports_a_string_the_cap_closed(tiny_lm):
    from deal_chains import DeALEngine, SearchConfig

    # a 4-character cap and a random model that never closes a string on its own
    constraint = GrammarConstraint.json_schema(SCHEMA, max_string_length=4)
    results = DeALEngine(tiny_lm).generate(["a", "b", "c"], None, SearchConfig(strategy="greedy", max_new_tokens=200),
                                           constraints=constraint)
    for r in results:
        value = __import__("json").loads(r.text)["a"]  # valid JSON all the same
        if len(value) == 4:
            assert r.closed_by == "string_cap" and r.finish_reason == "length" and not r.finished
    assert any(r.closed_by == "string_cap" for r in results)
