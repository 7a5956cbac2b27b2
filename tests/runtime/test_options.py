"""One mapping of call options to a request, shared by the LangChain and DSPy shells."""

from __future__ import annotations

import pytest

from deal_chains.errors import ConfigError, InputError
from deal_chains.runtime.options import (
    DSPY_RULES,
    CallRules,
    ModelDefaults,
    read_call_options,
    response_schema,
    search_overrides,
    stop_list,
)

LANGCHAIN = CallRules(where="ChatDeAL")
SPEC = 'rewards: [{regex: {must_match: "zz"}}]'


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


def test_each_call_option_lands_in_the_call_options():
    defaults = ModelDefaults(reward_vars={"a": 1, "b": 1}, stop=["model stop"], fields={"top_k": 3})
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    opts = read_call_options(defaults, {
        "strategy": "best_of_n", "n": 3, "temperature": 0.5, "seed": 7, "max_tokens": 9, "search": {"lam": 2.0},
        "reward_vars": {"b": 2}, "stop": "###", "response_format": {"type": "json_object"},
        "tools": tools, "tool_choice": "any", "model": "other",
    }, LANGCHAIN)
    c = opts.config
    # LangChain's n is the generations returned (returns); best_of_n's samples keep their default
    assert (c.strategy, c.returns, c.n, c.temperature, c.seed, c.max_new_tokens, c.lam, c.top_k) == \
        ("best_of_n", 3, 4, 0.5, 7, 9, 2.0, 3)
    assert opts.reward_vars == {"a": 1, "b": 2}  # the call's variables over the model's
    assert opts.stop == ["###"] and opts.response_schema == {"type": "object"}
    assert (opts.tools, opts.tool_choice, opts.model, opts.completions) == (tools, "any", "other", 1)


def test_stop_the_call_then_the_separate_argument_then_the_models():
    defaults = ModelDefaults(stop=["model"])
    assert read_call_options(defaults, {}, LANGCHAIN).stop == ["model"]
    assert read_call_options(defaults, {"stop": ["call"]}, LANGCHAIN).stop == ["call"]
    assert read_call_options(defaults, {"stop": ["call"]}, LANGCHAIN, stop=["arg"]).stop == ["arg"]


def test_a_per_call_spec_replaces_the_models_as_each_shell_reads_it():
    from deal_chains.runtime import resolve_spec

    model_spec = resolve_spec(SPEC)
    defaults = ModelDefaults(spec=SPEC, loaded_spec=model_spec)
    assert read_call_options(defaults, {}, LANGCHAIN).spec is model_spec
    other = read_call_options(defaults, {"spec": 'rewards: [{regex: {must_match: "yy"}}]'}, LANGCHAIN).spec
    assert other is not None and other is not model_spec
    assert read_call_options(defaults, {"spec": other}, LANGCHAIN).spec is other  # loaded at bind time: kept
    # LangChain: spec=None searches without rewards; DSPy: None is "not given"
    assert read_call_options(defaults, {"spec": None}, LANGCHAIN).spec is None
    assert read_call_options(defaults, {"spec": None}, DSPY_RULES).spec is model_spec


def test_n_is_the_generations_returned_for_langchain_and_completions_for_dspy():
    opts = read_call_options(ModelDefaults(), {"n": 2}, LANGCHAIN)
    assert (opts.config.returns, opts.config.n, opts.completions) == (2, 4, 1)  # one search, two answers
    # the samples of best_of_n stay the search's n; the model's n is the default, the call's wins
    opts = read_call_options(ModelDefaults(fields={"n": 3}), {"search": {"strategy": "best_of_n", "n": 8}},
                             LANGCHAIN)
    assert (opts.config.returns, opts.config.n) == (3, 8)
    assert read_call_options(ModelDefaults(fields={"n": 3}), {"n": 1}, LANGCHAIN).config.returns == 1
    assert read_call_options(ModelDefaults(), {"returns": 2}, LANGCHAIN).config.returns == 2
    with pytest.raises(InputError, match="n=2 and returns=3 disagree"):
        read_call_options(ModelDefaults(), {"n": 2, "returns": 3}, LANGCHAIN)
    with pytest.raises(InputError, match=r"ChatDeAL: n=2: strategy 'greedy' has one answer.*strategy='deal'"):
        read_call_options(ModelDefaults(), {"n": 2, "strategy": "greedy"}, LANGCHAIN)
    for bad in (0, -1, 65, 1.5, "2", True):
        with pytest.raises(InputError, match=r"ChatDeAL: n=.*number of generations returned per prompt"):
            read_call_options(ModelDefaults(), {"n": bad}, LANGCHAIN)
    # a spec's greedy strategy is refused the same way
    greedy = ModelDefaults(loaded_spec=None, search={"strategy": "greedy"})
    with pytest.raises(InputError, match="'greedy' has one answer"):
        read_call_options(greedy, {"n": 3}, LANGCHAIN)
    dspy = read_call_options(ModelDefaults(), {"n": 3}, DSPY_RULES)
    assert dspy.completions == 3 and dspy.config.n == 3
    assert len(set(c.model_dump_json() for c in dspy.completion_configs())) == 1  # greedy: one batched search


def test_a_fixed_seed_gives_each_completion_and_rollout_its_own_seed():
    opts = read_call_options(ModelDefaults(), {"n": 3, "temperature": 0.7, "seed": 5}, DSPY_RULES)
    seeds = [c.seed for c in opts.completion_configs()]
    assert seeds[0] == 5 and len(set(seeds)) == 3  # the first keeps the seed, so n=1 is reproducible as given
    again = read_call_options(ModelDefaults(), {"n": 3, "temperature": 0.7, "seed": 5}, DSPY_RULES)
    assert [c.seed for c in again.completion_configs()] == seeds
    rollout = read_call_options(ModelDefaults(), {"n": 1, "temperature": 0.7, "seed": 5, "rollout_id": 1},
                                DSPY_RULES)
    assert rollout.completion_configs()[0].seed not in (5, None)
    unseeded = read_call_options(ModelDefaults(), {"n": 2, "temperature": 0.7}, DSPY_RULES)
    assert [c.seed for c in unseeded.completion_configs()] == [None, None]  # each draws a fresh one


@pytest.mark.parametrize("call,error", [
    ({"max_token": 5}, r"ChatDeAL: unknown argument\(s\) max_token; known: reward_vars"),
    ({"stop": [1]}, "ChatDeAL: stop must be a string or a list of strings"),
    ({"search": 4}, "ChatDeAL: search must be a mapping"),
    ({"reward_vars": ["a"]}, "ChatDeAL: reward_vars must be a mapping"),
    ({"response_format": {"type": "text"}}, "response_format must be"),
])
def test_langchain_refuses_unknown_and_invalid_options(call, error):
    with pytest.raises(InputError, match=error):
        read_call_options(ModelDefaults(), call, LANGCHAIN)


def test_dspy_ignores_options_of_its_own_and_a_format_that_is_no_schema():
    opts = read_call_options(ModelDefaults(), {"rollout_id": 2, "num_retries": 3,
                                               "response_format": {"type": "text"}}, DSPY_RULES)
    assert opts.response_schema is None and opts.rollout_id == 2


def test_bad_search_settings_are_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="search.top_k"):
        read_call_options(ModelDefaults(), {"top_k": 0}, LANGCHAIN)


def test_the_langchain_and_dspy_shells_use_it(tiny_model_dir):
    from deal_chains.langchain import ChatDeAL, DeALLLM

    llm = ChatDeAL(model=str(tiny_model_dir), device="cpu", max_tokens=9, top_k=3, stop=["###"])
    assert llm._overrides({"max_tokens": 5}) == {"top_k": 3, "max_new_tokens": 5}
    call = llm._prepare([{"role": "user", "content": "hi"}], None, {"max_tokens": 5, "reward_vars": {"a": 1}})
    assert call.request.config.max_new_tokens == 5 and call.request.config.top_k == 3
    assert call.request.stop == ("###",) and call.request.context.variables == {"a": 1}
    with pytest.raises(InputError, match=r"DeALLLM: unknown argument\(s\) bogus"):
        DeALLLM(model=str(tiny_model_dir), device="cpu")._prepare([{"role": "user", "content": "hi"}], None,
                                                                  {"bogus": 1})
    pytest.importorskip("dspy")
    from deal_chains.dspy import DeALLM

    lm = DeALLM(str(tiny_model_dir), device="cpu", max_tokens=6)
    reqs = lm._requests("hi", None, {"n": 2, "temperature": 0.7, "seed": 1, "stop": "x"})
    assert len(reqs) == 2 and len({r.config.seed for r in reqs}) == 2
    assert all(r.stop == ("x",) and r.config.max_new_tokens == 6 for r in reqs)
