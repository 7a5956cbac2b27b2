"""More of the LangChain and DSPy integration on the tiny random-weight model: stop
sequences in bindings, local token counting, tools with a response format, call arguments
through ``include_raw``, rewards on the content of JSON answers, seeds, batch plans
(``spec=`` text, ``with_reward_vars``), streamed invalid tool calls, the system prompt,
guard checks, tool rounds, copies and settings."""

from __future__ import annotations

import asyncio
import json
import warnings

import jsonschema
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage, trim_messages
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from deal_chains import ChatDeAL, DeALLLM, InputError
from deal_chains.runtime import ContentView, ModelRuntime, resolve_spec
from deal_chains.runtime.worker import worker_for as _worker_for
from deal_chains.jsonkit.lexer import json_content
from deal_chains.langchain import guard_final_answer, with_reward_vars
from deal_chains.langchain._base import TOOL_CONTENT
from deal_chains.langchain.chat_models import _feeds_back
from deal_chains.langchain.tool_calling import ToolSet
from rewards import KeywordCoverage
from tiny import build_tiny_model

PROMPTS = ["hello world", "a longer prompt, so the batch is left-padded", "abc", "Why?"]
SPEC = """
search: {strategy: deal, top_k: 3, beam: 2, lookahead: 2, lam: 3.0, max_new_tokens: 16}
system: "{topic}"
rewards:
  - regex: {must_match: "e"}
    name: has_e
  - keywords: {words: "{topic}", inflections: false}
    weight: 0.5
"""


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from deal_chains.models import load_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny-1k"), context=1024)
    return load_model(str(path), device="cpu", dtype="float64")


def engine_calls(lm) -> int:
    return _worker_for(lm).engine_calls


@tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return "sunny"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Short(BaseModel):
    """A short answer."""

    word: str = Field(max_length=8)


class Where(BaseModel):
    """A city and an answer."""

    city: str = Field(max_length=8)
    answer: str = Field(max_length=8)


def _format(model: type[BaseModel]) -> dict:
    return {"type": "json_schema", "json_schema": {"name": model.__name__, "schema": model.model_json_schema()}}


# ------------------------------------------------------------------ 1. stop in bindings


def test_stop_can_be_bound(lm):
    chat = ChatDeAL(model=lm, strategy="greedy", max_tokens=40)
    full = chat.invoke(PROMPTS[0]).content
    assert len(full) > 6
    stop = full[3:5]
    bound = chat.bind(stop=[stop]).invoke(PROMPTS[0])
    assert bound.content == full[:full.index(stop)]
    assert bound.response_metadata["stop_sequence"] == stop
    # a single string is one stop sequence, not a list of characters
    assert chat.bind(stop=stop).invoke(PROMPTS[0]).content == bound.content
    llm = DeALLLM(model=lm, strategy="greedy", max_tokens=40)
    text = llm.invoke(PROMPTS[0])
    assert llm.bind(stop=[text[3:5]]).invoke(PROMPTS[0]) == text[:text.index(text[3:5])]
    chat.bind_tools([get_weather], tool_choice="none", stop=["x"])  # accepted with tools too
    with pytest.raises(InputError, match=r"ChatDeAL.bind: stop must be a string or a list of strings, got \[1\]"):
        chat.bind(stop=[1])


# ------------------------------------------------------------------ 2. token counting


def test_token_counts_use_the_model_tokenizer(lm, monkeypatch):
    import langchain_core.language_models.base as lc_base

    def no_gpt2():
        raise AssertionError("LangChain's GPT-2 tokenizer was asked for (a download)")

    monkeypatch.setattr(lc_base, "get_tokenizer", no_gpt2)
    chat = ChatDeAL(model=lm, max_tokens=2)
    assert chat.get_token_ids("hello") == list(lm.tokenizer("hello", add_special_tokens=False)["input_ids"])
    assert chat.get_num_tokens("hello") == 5  # one token per byte
    assert DeALLLM(model=lm).get_num_tokens("hello") == 5
    msgs = [SystemMessage("Be brief."), HumanMessage("hi there")]
    # as the chat template formats them: what the call reports as its input tokens
    assert chat.get_num_tokens_from_messages(msgs) == chat.invoke(msgs).usage_metadata["input_tokens"]
    with_tools = chat.bind_tools([get_weather]).invoke(msgs).usage_metadata["input_tokens"]
    assert chat.get_num_tokens_from_messages(msgs, tools=[get_weather]) == with_tools
    assert chat.get_num_tokens_from_messages([]) == 0
    history = [SystemMessage("s"), HumanMessage("a " * 100), AIMessage("b " * 100), HumanMessage("now?")]
    trimmed = trim_messages(history, max_tokens=80, token_counter=chat, strategy="last", include_system=True)
    assert [m.content for m in trimmed] == ["s", "now?"]


# ------------------------------------------------------------------ 3. tools + response_format


def test_a_reply_next_to_tools_matches_the_response_format(lm):
    class Inner(BaseModel):
        name: str = Field(max_length=6)

    class Outer(BaseModel):
        """Nested: the schema has $defs."""

        inner: Inner

    ts = ToolSet.build([get_weather]).with_answer_schema(Outer.model_json_schema())
    schema = ts.schema()
    jsonschema.validate({"answer": {"inner": {"name": "x"}}}, schema)  # $defs still resolve
    jsonschema.validate({"name": "get_weather", "arguments": {"city": "Paris"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"answer": "plain text"}, schema)
    ts.check(lm)
    # max_tool_rounds=0: the turn must reply, and the reply is an object of the schema
    chat = ChatDeAL(model=lm, max_tokens=120, max_tool_rounds=0)
    msg = chat.bind_tools([get_weather], response_format=_format(Short)).invoke("Where?")
    assert not msg.tool_calls and Short.model_validate_json(msg.content)


def test_create_agent_provider_strategy_with_tools(lm):
    from langchain.agents import create_agent
    from langchain.agents.structured_output import ProviderStrategy

    agent = create_agent(ChatDeAL(model=lm, max_tokens=120, max_tool_rounds=0), tools=[get_weather],
                         response_format=ProviderStrategy(Short))
    out = agent.invoke({"messages": [("human", "Where?")]}, {"recursion_limit": 4})
    assert isinstance(out["structured_response"], Short)


# ------------------------------------------------------------------ 4. include_raw + reward_vars

VAR_SPEC = "rewards: [{keywords: {words: '{topic}', inflections: false}}]"


def test_include_raw_passes_call_arguments_and_batches(lm):
    chat = ChatDeAL(model=lm, spec=VAR_SPEC, max_tokens=40)
    raw_llm = chat.with_structured_output(Short, include_raw=True)
    prompt = ChatPromptTemplate.from_messages([("human", "Say {topic}.")])
    out = with_reward_vars(prompt, raw_llm).invoke({"topic": "e"})
    assert set(out) == {"raw", "parsed", "parsing_error"}
    assert set(out["raw"].response_metadata["rewards"]) == {"keywords"}
    assert raw_llm.invoke("Say e.", reward_vars={"topic": "e"})["raw"].content == out["raw"].content
    before = engine_calls(lm)
    outs = with_reward_vars(prompt, raw_llm).batch([{"topic": t} for t in "abc"])
    assert engine_calls(lm) - before == 1
    assert [o["raw"].content for o in outs] == [raw_llm.invoke(f"Say {t}.", reward_vars={"topic": t})["raw"].content
                                                for t in "abc"]


# ------------------------------------------------------------------ 5. rewards on JSON content


def test_json_content():
    assert json_content('{"city": "Paris", "answer": "It is sunny", "n": -2.5e3, "ok": true, "x": null}') \
        == "Paris\nIt is sunny\n-2.5e3"
    # a prefix, as the search sees it: an unfinished value counts as far as it goes
    assert json_content('{"city":"Pa') == "Pa"
    assert json_content('{"city":"Paris","ans') == "Paris"
    assert json_content('{"a":"x\\"y\\n\\u00e9\\ud83d\\ude00","b":["one",{"c":"two"}],"d":""}') \
        == 'x"y\né\U0001F600\none\ntwo'
    assert json_content('{"a":"tr\\u00') == "tr"  # a cut escape is left out
    assert json_content('{"name":"get_weather","arguments":{"name":"Bob"}}', skip_keys=["name"]) == "Bob"
    assert json_content("not json") == "not json"


def test_rewards_score_the_content_of_structured_output_and_tool_calls(lm):
    spec = ("rewards:\n  - keywords: {words: [city, answer], inflections: false}\n"
            "  - json_schema: {schema: {type: object, required: [city]}}")
    chat = ChatDeAL(model=lm, spec=spec, max_tokens=80)
    raw = chat.with_structured_output(Where, include_raw=True).invoke("Where?")["raw"]
    rewards = raw.response_metadata["rewards"]
    kw = KeywordCoverage(["city", "answer"], inflections=False)
    assert kw.score([raw.content], None)[0] == 1.0  # the keys alone would cover both words
    on_content = kw.score([json_content(raw.content)], None)[0]
    assert rewards["keywords"] == pytest.approx(on_content) and on_content < 1.0, raw.content
    assert rewards["json_schema"] == 1.0  # json_schema rewards judge the JSON itself
    call = chat._call([HumanMessage("Where?")], None, {"response_format": _format(Where)})
    kw_reward, schema_reward = call.request.rewards
    assert isinstance(kw_reward, ContentView) and not isinstance(schema_reward, ContentView)
    # a tool call is scored on its arguments' values, not the tool's name or the keys
    msg = ChatDeAL(model=lm, spec="rewards: [{keywords: {words: [get_weather, city], inflections: false}}]",
                   max_tokens=60).bind_tools([get_weather], tool_choice="any").invoke("Weather?")
    [tc] = msg.tool_calls
    content = TOOL_CONTENT(json.dumps({"name": tc["name"], "arguments": tc["args"]}))
    assert content == tc["args"]["city"]
    assert msg.response_metadata["rewards"]["keywords"] == pytest.approx(
        KeywordCoverage(["get_weather", "city"], inflections=False).score([content], None)[0])


# ------------------------------------------------------------------ 6. seeds


def test_sampling_differs_per_call_and_the_seed_reproduces_it(lm):
    chat = ChatDeAL(model=lm, strategy="sample", temperature=1.0, max_tokens=12)
    outs = [chat.invoke(PROMPTS[2]) for _ in range(4)]
    assert len({m.content for m in outs}) > 1
    seed = outs[0].response_metadata["seed"]
    assert chat.invoke(PROMPTS[2], seed=seed).content == outs[0].content


def test_dspy_n_is_one_batched_search_and_rollouts_differ(lm):
    pytest.importorskip("dspy")
    from deal_chains.dspy import DeALLM as DSPyLM

    dlm = DSPyLM(lm, strategy="sample", temperature=1.0, max_tokens=12)
    before = engine_calls(lm)
    outs = dlm(PROMPTS[2], n=3)
    assert engine_calls(lm) - before == 1 and len(outs) == 3 and len(set(outs)) > 1
    # a fixed seed: each rollout gets its own seed, and the same one again next time
    fixed = DSPyLM(lm, strategy="sample", temperature=1.0, max_tokens=12, seed=5)
    first = [fixed(PROMPTS[2], rollout_id=i)[0] for i in range(3)]
    assert len(set(first)) > 1
    assert first == [fixed(PROMPTS[2], rollout_id=i)[0] for i in range(3)]


# ------------------------------------------------------------------ 7. spec= text in batch


def test_a_spec_given_as_text_per_call_batches_once(lm):
    chat = ChatDeAL(model=lm)
    text = SPEC.replace('"{topic}"', "e")
    adapter = ModelRuntime(lm)
    one, two = resolve_spec(text), resolve_spec(text)
    msgs = [{"role": "user", "content": "hi"}]
    assert adapter.request(msgs, spec=one).key == adapter.request(msgs, spec=two).key
    before = engine_calls(lm)
    out = chat.batch(PROMPTS, spec=text)
    assert engine_calls(lm) - before == 1
    assert [m.content for m in out] == [m.content for m in chat.bind(spec=text).batch(PROMPTS)]
    before = engine_calls(lm)
    asyncio.run(chat.abatch(PROMPTS, spec=text))
    assert engine_calls(lm) - before == 1


# ------------------------------------------------------------------ 8. with_reward_vars batches


@pytest.mark.parametrize("config", [None, {"max_concurrency": 1}])
def test_with_reward_vars_batch_is_one_search(lm, config):
    chain = with_reward_vars(ChatPromptTemplate.from_messages([("human", "Say {topic}.")]),
                             ChatDeAL(model=lm, spec=SPEC)) | StrOutputParser()
    inputs = [{"topic": t} for t in "abcdef"]
    singles = [chain.invoke(x) for x in inputs]
    before = engine_calls(lm)
    assert chain.batch(inputs, config=config) == singles
    assert engine_calls(lm) - before == 1
    before = engine_calls(lm)
    assert asyncio.run(chain.abatch(inputs, config=config)) == singles
    assert engine_calls(lm) - before == 1


def test_with_reward_vars_batch_on_deal_llm_and_bindings(lm):
    llm = DeALLLM(model=lm, spec=SPEC)
    chain = with_reward_vars(PromptTemplate.from_template("Say {topic}."), llm)
    inputs = [{"topic": t} for t in "abc"]
    before = engine_calls(lm)
    out = chain.batch(inputs)
    assert engine_calls(lm) - before == 1
    assert out == [chain.invoke(x) for x in inputs]
    # through bindings (with_retry, bind) too; an input that fails does not stop the others
    bound = with_reward_vars(ChatPromptTemplate.from_messages([("human", "Say {topic}.")]),
                             ChatDeAL(model=lm, spec=SPEC).bind(top_k=2).with_retry(stop_after_attempt=1))
    before = engine_calls(lm)
    results = bound.batch(inputs + ["not a dict"], return_exceptions=True)
    assert engine_calls(lm) - before == 1
    assert isinstance(results[-1], InputError) and all(isinstance(r, AIMessage) for r in results[:-1])


# ------------------------------------------------------------------ 9. streamed invalid tool calls


class Search(BaseModel):
    """Search the web."""

    query: str = Field(max_length=200)


def test_a_cut_tool_call_streams_as_invalid_with_its_error(lm):
    bound = ChatDeAL(model=lm, max_tokens=36, strategy="greedy").bind_tools([Search], tool_choice="any")
    msg = bound.invoke("x")
    [bad] = msg.invalid_tool_calls
    assert not msg.tool_calls and "token budget" in bad["error"] and bad["name"] == "Search"
    # the arguments as generated, not the whole envelope (nor a JSON-encoded string)
    assert bad["args"].startswith("{") and not bad["args"].startswith('{"name"')
    chunks = list(bound.stream("x"))
    [streamed] = chunks[-1].invalid_tool_calls
    assert {k: streamed[k] for k in ("name", "args", "error")} == {k: bad[k] for k in ("name", "args", "error")}
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.tool_calls == []  # never a complete-looking call made of partial arguments
    assert merged.response_metadata["invalid_tool_calls"][0]["error"] == bad["error"]


# ------------------------------------------------------------------ 10. the system prompt


def test_the_spec_system_comes_first_and_is_never_dropped(lm):
    chat = ChatDeAL(model=lm, spec=SPEC, reward_vars={"topic": "dogs"})
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{q}")])
    call = chat._call(prompt.invoke({"q": "hi"}).to_messages(), None, {})
    assert call.request.messages[0] == {"role": "system", "content": "dogs\n\nBe brief."}
    # a system message later in the conversation does not replace the spec's
    call = chat._call([HumanMessage("hi"), AIMessage("hello"), SystemMessage("Be terse."), HumanMessage("bye")],
                      None, {})
    assert call.request.messages[0] == {"role": "system", "content": "dogs"}
    # tool instructions come last, in the same system message
    call = chat._call([SystemMessage("Be brief."), HumanMessage("hi")], None, {"tools": [get_weather]})
    first = call.request.messages[0]["content"]
    assert first.startswith("dogs\n\nBe brief.\n\nYou can call these tools:")
    dspy = pytest.importorskip("dspy")  # noqa: F841
    from deal_chains.dspy import DeALLM as DSPyLM

    [req] = DSPyLM(lm, spec=SPEC)._requests(None, [{"role": "system", "content": "Fields."},
                                                     {"role": "user", "content": "hi"}],
                                            {"reward_vars": {"topic": "dogs"}})
    assert req.messages[0] == {"role": "system", "content": "dogs\n\nFields."}


# ------------------------------------------------------------------ 11. guard_final_answer


def test_guard_checks_its_spec_variables_at_construction(lm):
    spec = "rewards: [{keywords: {words: '{words}'}}]"
    with pytest.raises(InputError, match=r"the spec uses \{words\} but reward_vars does not set it"):
        guard_final_answer(ChatDeAL(model=lm), spec=spec)
    guard_final_answer(ChatDeAL(model=lm), spec=spec, reward_vars={"words": ["sunny"]})
    guard_final_answer(ChatDeAL(model=lm, reward_vars={"words": ["sunny"]}).bind(top_k=2), spec=spec)


# ------------------------------------------------------------------ 12. tool rounds


def test_tool_rounds_end_in_a_reply(lm):
    round_ = [HumanMessage("Add 2 and 40"),
              AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 40}, "id": "c1"}]),
              ToolMessage("42", tool_call_id="c1")]
    kwargs = {"tools": [add], "tool_choice": "auto"}
    assert ChatDeAL(model=lm, max_tool_rounds=1)._call(round_, None, kwargs).toolset.answer_only
    assert not ChatDeAL(model=lm, max_tool_rounds=2)._call(round_, None, kwargs).toolset.answer_only
    assert not ChatDeAL(model=lm, max_tool_rounds=None)._call(round_ * 5, None, kwargs).toolset.answer_only
    # rounds count from the last human message
    assert not ChatDeAL(model=lm, max_tool_rounds=1)._call(round_ + [AIMessage("42"), HumanMessage("more")],
                                                           None, kwargs).toolset.answer_only
    msg = ChatDeAL(model=lm, max_tool_rounds=1, max_tokens=40).bind_tools([add]).invoke(round_)
    assert not msg.tool_calls
    # feeding a tool's latest result back into the same tool: the result already answered
    assert _feeds_back({"name": "add", "args": {"a": 42, "b": 42}}, round_)
    assert _feeds_back({"name": "add", "args": {"a": 42.0, "b": 1}}, round_)
    assert not _feeds_back({"name": "add", "args": {"a": 5, "b": 1}}, round_)
    assert not _feeds_back({"name": "get_weather", "args": {"city": "42"}}, round_)
    assert not _feeds_back({"name": "add", "args": {"a": 42, "b": 1}}, round_ + [HumanMessage("again")])


def test_tool_results_as_user_messages_on_a_generic_template(lm):
    round_ = [HumanMessage("Add 2 and 40"),
              AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 40}, "id": "c1"}]),
              ToolMessage("42", tool_call_id="c1")]
    chat = ChatDeAL(model=lm)
    # the tiny model's template renders any role but never names "tool": a tool-calling
    # turn reads results as user messages, a plain reply keeps the tool role
    tool_turn = chat._call(round_, None, {"tools": [add]}).request.messages
    assert tool_turn[-1] == {"role": "user", "content": "Tool result:\n42"}
    assert chat._call(round_, None, {}).request.messages[-1] == {"role": "tool", "content": "42"}


# ------------------------------------------------------------------ 13. copies and settings


def test_copies_settings_and_warnings(lm, monkeypatch):
    chat = ChatDeAL(model=lm, top_k=2)
    copy = chat.model_copy(update={"top_k": 3})
    assert copy._config.top_k == 3 and copy._identifying_params["search"]["top_k"] == 3
    assert chat._config.top_k == 2
    params = DeALLLM(model=lm, temperature=0.5, max_tokens=7, stop=["\n"])._get_ls_params()
    assert params["ls_temperature"] == 0.5 and params["ls_max_tokens"] == 7 and params["ls_stop"] == ["\n"]
    # trust_remote_code reaches the model loader
    import deal_chains.models.loader as loader

    seen = {}

    def fake_load(name, **kw):
        seen.update(kw)
        return lm

    monkeypatch.setattr(loader, "load_model", fake_load)
    assert ChatDeAL(model="some/remote-model", trust_remote_code=True)._adapter.lm is lm
    assert seen["trust_remote_code"] is True
    dspy = pytest.importorskip("dspy")  # noqa: F841
    from deal_chains.dspy import DeALLM as DSPyLM

    assert DSPyLM("another/remote-model", trust_remote_code=True).adapter.trust_remote_code is True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DSPyLM(lm, max_tokens=4)(PROMPTS[0])
    assert not [w for w in caught if "forward()" in str(w.message)], [str(w.message) for w in caught]


DEFS_TOOL = {"type": "function", "function": {"name": "place", "description": "Place a point.", "parameters": {
    "type": "object", "$defs": {"P": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0,
                                                                           "maximum": 9}},
                                      "required": ["x"], "additionalProperties": False}},
    "properties": {"p": {"$ref": "#/$defs/P"}}, "required": ["p"], "additionalProperties": False}}}


def test_a_dict_tool_with_local_defs_binds_and_its_calls_validate(lm):
    """A tool schema's "#/$defs/..." refs point into that schema, not into the envelope
    the mask is built from: they were refused as dangling at bind time."""
    params = DEFS_TOOL["function"]["parameters"]
    ts = ToolSet.build([DEFS_TOOL, get_weather])
    schema = ts.schema()
    jsonschema.validate({"name": "place", "arguments": {"p": {"x": 3}}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "place", "arguments": {"p": {"x": 30}}}, schema)
    ts.check(lm)
    chat = ChatDeAL(model=lm, max_tokens=90, strategy="sample", temperature=1.0, seed=1)
    for msg in chat.bind_tools([DEFS_TOOL], tool_choice="any").batch(["go", "now"]):
        for call in msg.tool_calls:
            jsonschema.validate(call["args"], params)


def test_a_draft3_tool_schema_is_refused_at_bind(lm):
    """Nested in the call envelope, a draft-03 schema's required: true went unread and calls
    missing the argument came out."""
    params = {"$schema": "http://json-schema.org/draft-03/schema#", "type": "object",
              "properties": {"a": {"type": "string", "required": True}}}
    tool_def = {"type": "function", "function": {"name": "d3", "description": "d", "parameters": params}}
    with pytest.raises(InputError, match="draft-03"):
        ChatDeAL(model=lm, max_tokens=20).bind_tools([tool_def], tool_choice="any")


def _schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}


# a $defs schema whose ref sits beside other keywords: capped apart from the ref (the old
# way, the defs lifted to the envelope root), P was closed and "y" could never be given
DEFS_ANSWER = {"$defs": {"P": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}},
                               "required": ["x"]}},
               "type": "object",
               "properties": {"p": {"$ref": "#/$defs/P", "properties": {"y": {"type": "boolean"}}, "required": ["y"]}},
               "required": ["p"], "additionalProperties": False}
# "#" and "#/properties/..." refs of an answer schema mean that schema, not the envelope
ROOT_REF_ANSWER = {"type": "object", "properties": {
    "v": {"type": "integer", "minimum": 0, "maximum": 9},
    "w": {"$ref": "#/properties/v"},
    "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
    "required": ["v", "w", "next"], "additionalProperties": False}


@pytest.mark.parametrize("answer", [DEFS_ANSWER, ROOT_REF_ANSWER], ids=["defs", "root-and-properties"])
def test_a_response_format_with_local_refs_binds_and_its_answer_validates(lm, answer):
    """The answer schema's refs point into that schema: inside the envelope they pointed at
    the envelope's root (``#``), at nothing (``#/properties/v``), or its defs were capped
    apart from the refs that combine them with other keywords."""
    ts = ToolSet.build([get_weather]).with_answer_schema(answer)
    schema = ts.schema()
    good = {"p": {"x": 3, "y": True}} if answer is DEFS_ANSWER else \
        {"v": 1, "w": 2, "next": {"v": 3, "w": 4, "next": None}}
    bad = {"p": {"x": 30, "y": True}} if answer is DEFS_ANSWER else {"v": 1, "w": 20, "next": None}
    jsonschema.validate({"answer": good}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"answer": bad}, schema)
    chat = ChatDeAL(model=lm, max_tokens=120, max_tool_rounds=0, strategy="sample", temperature=1.0, seed=1)
    for msg in chat.bind_tools([get_weather], response_format=_schema_format(answer)).batch(["go", "now"]):
        assert not msg.tool_calls
        jsonschema.validate(json.loads(msg.content), answer)


def test_a_draft3_response_format_is_refused_at_bind(lm):
    """Its $schema was dropped in the envelope, so required: true went unread."""
    answer = {"$schema": "http://json-schema.org/draft-03/schema#", "type": "object",
              "properties": {"a": {"type": "string", "required": True}}}
    with pytest.raises(InputError, match="response_format: draft-03"):
        ChatDeAL(model=lm, max_tokens=20).bind_tools([get_weather], response_format=_schema_format(answer))


def test_a_response_format_with_tools_off_is_checked_at_bind(lm):
    """tool_choice="none" makes the reply plain structured output: its schema must still fail
    at bind time, not mid-generation."""
    from deal_chains.search.constraints import ConstraintError

    bad = {"$schema": "http://json-schema.org/draft-03/schema#", "type": "object",
           "properties": {"a": {"type": "string", "required": True}}}
    with pytest.raises((InputError, ConstraintError), match="draft-03"):
        ChatDeAL(model=lm, max_tokens=20).bind_tools([get_weather], tool_choice="none",
                                                      response_format=_schema_format(bad))


def test_a_tool_argument_named_like_a_data_keyword_keeps_its_refs(lm):
    """A property called "default" is a schema, not data: its "#" ref was left pointing at
    the envelope's root."""
    params = {"type": "object", "properties": {"default": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
              "required": ["default"], "additionalProperties": False}
    tool_def = {"type": "function", "function": {"name": "nest", "description": "n", "parameters": params}}
    schema = ToolSet.build([tool_def]).schema()
    jsonschema.validate({"name": "nest", "arguments": {"default": {"default": None}}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "nest", "arguments": {"default": {"name": "nest", "arguments": {}}}}, schema)
