"""One mapping of call options to a request, shared by the LangChain and DSPy shells."""

from __future__ import annotations

import pytest

from deal_chains.errors import InputError
from deal_chains.runtime.options import response_schema, search_overrides, stop_list


def test_call_settings_override_the_models_in_one_order():
    out = search_overrides({"top_k": 4, "lam": 2.0}, {"top_k": 5, "max_tokens": 40, "beam": None},
                           {"search": {"top_k": 6, "beam": 3}, "top_k": 7, "max_tokens": 20})
    assert out == {"top_k": 7, "lam": 2.0, "max_new_tokens": 20, "beam": 3}


def test_max_tokens_wins_over_max_new_tokens_at_the_same_level():
    assert search_overrides({}, {}, {"max_new_tokens": 10, "max_tokens": 12}) == {"max_new_tokens": 12}
    assert search_overrides({}, {"max_tokens": 30}, {"max_new_tokens": 10}) == {"max_new_tokens": 10}


def test_stop_and_response_format_are_checked():
    assert stop_list("###", "x") == ["###"] and stop_list(None, "x") == []
    with pytest.raises(InputError, match="x: stop must be a string or a list of strings"):
        stop_list([1], "x")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert response_schema({"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}) == schema
    assert response_schema({"type": "json_object"}) == {"type": "object"}
    with pytest.raises(InputError, match="response_format must be"):
        response_schema({"type": "text"})


def test_the_langchain_and_dspy_shells_use_it(tiny_model_dir):
    from deal_chains.langchain import ChatDeAL

    llm = ChatDeAL(model=str(tiny_model_dir), device="cpu", max_tokens=9, top_k=3)
    assert llm._overrides({"max_tokens": 5}) == {"top_k": 3, "max_new_tokens": 5}
