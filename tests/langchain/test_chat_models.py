"""ChatDeAL / DeALLLM on the tiny random-weight model (float64: batched and single searches
agree exactly, so concurrency and batching can be checked token for token)."""

from __future__ import annotations

import asyncio
import json
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage, trim_messages
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import ConfigurableField
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from deal_chains import ChatDeAL, ConfigError, DeALEngine, DeALLLM, InputError, SpecError
from deal_chains.jsonkit.lexer import json_content
from deal_chains.langchain import guard_final_answer, with_reward_vars
from deal_chains.langchain._base import TOOL_CONTENT
from deal_chains.langchain.messages import _feeds_back, to_engine_messages
from deal_chains.runtime.tool_calling import AnswerStream, ToolSet
from deal_chains.runtime import ContentView, ModelRuntime, resolve_spec
from deal_chains.runtime.worker import worker_for as _worker_for
from deal_chains.search.constraints import ConstraintError
from rewards import KeywordCoverage

PROMPTS = ["hello world", "a longer prompt, so the batch is left-padded", "abc", "Why?"]
# a spec whose rewards the random model's text varies in, and a {variable}
SPEC = """
search: {strategy: deal, top_k: 3, beam: 2, lookahead: 2, lam: 3.0, max_new_tokens: 16}
system: "{topic}"
rewards:
  - regex: {must_match: "e"}
    name: has_e
  - keywords: {words: "{topic}", inflections: false}
    weight: 0.5
"""


@pytest.fixture()
def lm(tiny_lm_1k):
    return tiny_lm_1k


@pytest.fixture()
def llm(lm):
    return ChatDeAL(model=lm, spec=SPEC, reward_vars={"topic": "e"})


def engine_calls(lm) -> int:
    return _worker_for(lm).engine_calls


# ------------------------------------------------------------------ invoke, metadata


def test_invoke_equals_the_engine_and_reports_rewards_usage_and_stats(llm, lm):
    msg = llm.invoke(PROMPTS[0])
    assert isinstance(msg, AIMessage) and msg.content
    messages = [{"role": "system", "content": "e"}, {"role": "user", "content": PROMPTS[0]}]
    from deal_chains.spec import load_spec

    spec = load_spec(SPEC)
    [ref] = DeALEngine(lm).generate([messages], [spec.build_rewards({"topic": "e"})], spec.search_config())
    assert msg.content == ref.text
    meta = msg.response_metadata
    assert meta["rewards"] == pytest.approx(ref.rewards) and set(meta["rewards"]) == {"has_e", "keywords"}
    assert meta["reward"] == pytest.approx(ref.reward) and meta["score"] == pytest.approx(ref.score)
    assert meta["strategy"] == "deal" and meta["stats"]["forward_passes"] > 0
    assert meta["finish_reason"] in ("stop", "length") and meta["model_name"] == lm.name
    assert msg.usage_metadata == {"input_tokens": len(lm.format_prompt(messages)),
                                  "output_tokens": len(ref.token_ids),
                                  "total_tokens": len(lm.format_prompt(messages)) + len(ref.token_ids)}


def test_system_message_precedence(llm):
    # no system message: the spec's (rendered with the reward variables)
    call = llm._call([HumanMessage("hi")], None, {"reward_vars": {"topic": "cats"}})
    assert call.request.messages[0] == {"role": "system", "content": "cats"}
    # the input's system message joins the spec's (which comes first) in one system message
    call = llm._call([SystemMessage("Be brief."), HumanMessage("hi")], None, {})
    assert [m["content"] for m in call.request.messages] == ["e\n\nBe brief.", "hi"]


def test_the_specs_examples_follow_the_system_message_and_precede_the_conversation(lm):
    spec = SPEC + 'prompt: "Say {topic}."\nexamples: [{input: {topic: cats}, output: "Cats purr."}]\n'
    chat = ChatDeAL(model=lm, spec=spec, reward_vars={"topic": "dogs"})
    call = chat._call([SystemMessage("Be brief."), HumanMessage("hi")], None, {})
    assert call.request.messages == [
        {"role": "system", "content": "dogs\n\nBe brief."}, {"role": "user", "content": "Say cats."},
        {"role": "assistant", "content": "Cats purr."}, {"role": "user", "content": "hi"}]
    # the rewards' context is the caller's request, not the examples
    assert call.request.context.prompt == "hi"


def test_message_conversion():
    msgs = [SystemMessage("s"), HumanMessage([{"type": "text", "text": "h"}]),
            AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1}, "id": "1"}]),
            ToolMessage("3", tool_call_id="1"), AIMessage("done"), ChatMessage(role="critic", content="c")]
    assert to_engine_messages(msgs) == [
        {"role": "system", "content": "s"}, {"role": "user", "content": "h"},
        {"role": "assistant", "content": 'I called add(a=1).'},
        {"role": "tool", "content": "3"}, {"role": "assistant", "content": "done"},
        {"role": "critic", "content": "c"}]
    # in a tool-calling turn a plain reply is shown in the envelope the model must produce
    assert to_engine_messages([AIMessage("done")], tool_mode=True)[0]["content"] == '{"answer":"done"}'
    with pytest.raises(InputError, match="'image_url' content block"):
        to_engine_messages([HumanMessage([{"type": "image_url", "image_url": {"url": "x"}}])])


# ------------------------------------------------------------------ streaming


class Tokens(BaseCallbackHandler):
    def __init__(self):
        self.tokens = []

    def on_llm_new_token(self, token, **kwargs):
        self.tokens.append(token)


@pytest.mark.parametrize("settings", [{}, {"strategy": "greedy", "max_tokens": 24}, {"commit": 1, "beam": 1}])
def test_stream_concatenates_to_the_invoke_text(llm, settings):
    bound = llm.bind(**settings)
    full = bound.invoke("x")
    handler = Tokens()
    chunks = list(bound.stream("x", config={"callbacks": [handler]}))
    assert "".join(c.content for c in chunks) == full.content
    assert "".join(handler.tokens) == full.content  # on_llm_new_token saw the same text
    assert chunks[-1].chunk_position == "last"
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.usage_metadata == full.usage_metadata
    assert merged.response_metadata["rewards"] == full.response_metadata["rewards"]
    if settings.get("strategy") == "greedy":
        assert len([c for c in chunks if c.content]) > 3  # committed text arrives piece by piece


async def test_astream_and_ainvoke(llm):
    full = await llm.ainvoke(PROMPTS[0])
    chunks = [c async for c in llm.astream(PROMPTS[0])]
    assert "".join(c.content for c in chunks) == full.content == llm.invoke(PROMPTS[0]).content
    assert chunks[-1].chunk_position == "last"


def test_stop_sequences_cut_the_answer_and_end_the_search(llm):
    full = llm.invoke(PROMPTS[2], strategy="greedy", max_tokens=40)
    text = full.content
    assert len(text) > 6
    stop = text[3:5]
    cut = llm.invoke(PROMPTS[2], strategy="greedy", max_tokens=40, stop=[stop])
    assert cut.content == text[:text.index(stop)]
    assert cut.response_metadata["finish_reason"] == "stop"
    assert cut.response_metadata["stop_sequence"] == stop
    # the search ended once the stop sequence was committed, not at the token budget
    assert cut.usage_metadata["output_tokens"] < full.usage_metadata["output_tokens"]
    streamed = "".join(c.content for c in llm.stream(PROMPTS[2], strategy="greedy", max_tokens=40, stop=[stop]))
    assert streamed == cut.content
    # a constructor-level stop applies to every call
    assert ChatDeAL(model=llm.model, spec=SPEC, reward_vars={"topic": "e"}, stop=[stop], strategy="greedy",
                    max_tokens=40).invoke(PROMPTS[2]).content == cut.content


# ------------------------------------------------------------------ batching, concurrency


def test_batch_is_one_engine_call_and_equals_single_calls(llm, lm):
    singles = [llm.invoke(p).content for p in PROMPTS]
    before = engine_calls(lm)
    batched = llm.batch(PROMPTS)
    assert engine_calls(lm) - before == 1
    assert [m.content for m in batched] == singles
    assert batched[0].response_metadata["stats"]["batch_size"] == len(PROMPTS)
    # through a binding and with per-input configs too
    before = engine_calls(lm)
    out = llm.bind(strategy="greedy").batch(PROMPTS, config=[{"tags": [str(i)]} for i in range(len(PROMPTS))])
    assert engine_calls(lm) - before == 1
    assert [m.content for m in out] == [llm.invoke(p, strategy="greedy").content for p in PROMPTS]


async def test_abatch_is_one_engine_call(llm, lm):
    singles = [llm.invoke(p).content for p in PROMPTS]
    before = engine_calls(lm)
    batched = await llm.abatch(PROMPTS)
    assert engine_calls(lm) - before == 1
    assert [m.content for m in batched] == singles


def test_concurrent_threads_give_the_sequential_results(llm, lm):
    cfg = {"strategy": "sample", "temperature": 1.0, "seed": 11}  # seeded sampling: reproducible per prompt
    prompts = PROMPTS * 3
    sequential = [llm.invoke(p, **cfg).content for p in prompts]
    before = engine_calls(lm)
    barrier = threading.Barrier(len(prompts))

    def call(p):
        barrier.wait()
        return llm.invoke(p, **cfg).content

    with ThreadPoolExecutor(len(prompts)) as pool:
        concurrent = list(pool.map(call, prompts))
    assert concurrent == sequential
    assert engine_calls(lm) - before < len(prompts)  # waiting requests were batched together


async def test_concurrent_tasks_give_the_sequential_results(llm):
    prompts = PROMPTS * 2
    sequential = [llm.invoke(p).content for p in prompts]
    results = await asyncio.gather(*[llm.ainvoke(p) for p in prompts])
    assert [r.content for r in results] == sequential
    streams = await asyncio.gather(*[_collect(llm, p) for p in prompts])
    assert streams == sequential


async def _collect(llm, prompt):
    return "".join([c.content async for c in llm.astream(prompt)])


async def test_cancelled_ainvoke_frees_the_worker_for_the_next_call(lm, monkeypatch):
    handles = []
    submit = ChatDeAL._submit

    def spy(self, call):
        handle = submit(self, call)
        handles.append(handle)
        return handle

    import time

    from deal_chains.search import tree

    score_texts = tree.score_texts

    def slow_score_texts(*args, **kwargs):  # a slow reward: the search is still running when cancelled
        time.sleep(0.005)
        return score_texts(*args, **kwargs)

    monkeypatch.setattr(ChatDeAL, "_submit", spy)
    monkeypatch.setattr(tree, "score_texts", slow_score_texts)
    llm = ChatDeAL(model=lm, spec='rewards: [{regex: {must_match: "zz"}}]')
    expected = llm.invoke("abc").content
    kw = {"max_tokens": 200, "lookahead": 1, "commit": 1, "top_k": 2, "beam": 1}
    lengths = {p: llm.invoke(p, **kw).usage_metadata["output_tokens"] for p in PROMPTS}
    prompt = max(lengths, key=lengths.get)
    assert lengths[prompt] > 20
    handles.clear()
    task = asyncio.create_task(llm.ainvoke(prompt, **kw))
    while not handles:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handles[-1].cancelled
    cut = await handles[-1].aresult()
    assert cut.finish_reason == "cancelled" and len(cut.result.token_ids) < lengths[prompt]
    # the next call on the same instance completes with its usual answer
    assert (await asyncio.wait_for(llm.ainvoke("abc"), timeout=60)).content == expected


# ------------------------------------------------------------------ reward variables, overrides


def test_reward_vars_from_the_chain_input(lm):
    llm = ChatDeAL(model=lm, spec=SPEC)
    prompt = ChatPromptTemplate.from_messages([("human", "Tell me about {topic}.")])
    chain = with_reward_vars(prompt, llm)
    for topic in ("a", "e b"):
        msg = chain.invoke({"topic": topic})
        expected = KeywordCoverage(topic.split(), inflections=False).score([msg.content], None)[0]
        assert msg.response_metadata["rewards"]["keywords"] == pytest.approx(expected)
        # the same as binding the variables by hand
        assert llm.bind(reward_vars={"topic": topic}).invoke(prompt.invoke({"topic": topic})).content == msg.content
    streamed = "".join(c.content for c in chain.stream({"topic": "a"}))
    assert streamed == chain.invoke({"topic": "a"}).content
    assert [m.content for m in chain.batch([{"topic": "a"}, {"topic": "e b"}])] == \
        [chain.invoke({"topic": t}).content for t in ("a", "e b")]
    with pytest.raises(SpecError, match="topic"):
        llm.invoke("hi")  # the spec needs {topic}: named in the error
    with pytest.raises(InputError, match="no 'topic'"):
        with_reward_vars(prompt, llm, keys=["topic"]).invoke({"other": 1})


def test_per_call_overrides_and_configurable_fields(llm):
    assert llm.invoke(PROMPTS[0], strategy="greedy").response_metadata["strategy"] == "greedy"
    assert llm.bind(search={"strategy": "rerank", "n": 2}).invoke(PROMPTS[0]).response_metadata["strategy"] == "rerank"
    short = llm.bind(max_tokens=3).invoke(PROMPTS[0])
    assert short.usage_metadata["output_tokens"] <= 3
    other = llm.bind(spec="rewards: [{length: {max_words: 3}}]").invoke(PROMPTS[0])
    assert set(other.response_metadata["rewards"]) == {"length"}
    configurable = llm.configurable_fields(strategy=ConfigurableField(id="strategy"))
    out = configurable.with_config(configurable={"strategy": "greedy"}).invoke(PROMPTS[0])
    assert out.response_metadata["strategy"] == "greedy"


# ------------------------------------------------------------------ errors at construction / bind time


def test_bad_spec_fails_at_construction_and_bind(lm):
    with pytest.raises(SpecError, match=r"<spec>:2:\d+: search.top_k"):
        ChatDeAL(model=lm, spec="rewards: [{length: {max_words: 3}}]\nsearch: {top_k: 0}")
    with pytest.raises(SpecError, match="has steps"):
        ChatDeAL(model=lm, spec={"steps": {"a": {"rewards": [{"length": {"max_words": 3}}]}}})
    llm = ChatDeAL(model=lm)
    with pytest.raises(SpecError, match="rewards.0.length"):
        llm.bind(spec="rewards: [{length: {max_wordz: 3}}]")
    with pytest.raises(ConfigError, match="search.top_k"):
        llm.bind(top_k=0)
    with pytest.raises(InputError, match="unknown argument.*tempurature"):
        llm.bind(tempurature=0.5)
    with pytest.raises(ConfigError, match="temperature > 0"):
        ChatDeAL(model=lm, strategy="sample", temperature=0.0)
    with pytest.raises(Exception, match="top_kk"):
        ChatDeAL(model=lm, top_kk=3)
    ChatDeAL(model=lm, api_key="unused", timeout=5, max_retries=1)  # hosted-model settings are accepted


@tool
def echo(text: str) -> str:
    """Repeat a text."""
    return text


@tool
def shout(text: str, times: int = 1) -> str:
    """Shout a text."""
    return text.upper() * times


def test_bad_tools_fail_at_bind_time(llm):
    bad_type = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {
        "type": "object", "properties": {"x": {"type": "int"}}}}}
    with pytest.raises(InputError, match="tool 'f': unknown type 'int' at properties/x/type"):
        llm.bind_tools([bad_type])
    # a property named like a data keyword is still a schema, read by structure
    named_enum = {"type": "function", "function": {"name": "e", "description": "d", "parameters": {
        "type": "object", "properties": {"enum": {"type": "strng"}}}}}
    with pytest.raises(InputError, match="tool 'e': unknown type 'strng' at properties/enum/type"):
        llm.bind_tools([named_enum])
    remote = {"type": "function", "function": {"name": "g", "parameters": {
        "type": "object", "properties": {"x": {"$ref": "https://example.com/s.json"}}}}}
    with pytest.raises(InputError, match="tool 'g': remote \\$ref"):
        llm.bind_tools([remote])
    refused = {"type": "function", "function": {"name": "h", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "pattern": "(?<=a)b"}}, "required": ["x"]}}}
    with pytest.raises(ConstraintError, match="tool 'h': the grammar engine refused"):
        llm.bind_tools([refused])
    with pytest.raises(InputError, match="not one of the bound tools"):
        llm.bind_tools([echo], tool_choice="nope")
    with pytest.raises(InputError, match="two different tools are named 'echo'"):
        llm.bind_tools([echo, {"name": "echo", "parameters": {"type": "object", "properties": {}}}])
    with pytest.raises(InputError, match="tool 0 .*cannot be turned into a tool schema"):
        llm.bind_tools([42])
    with pytest.raises(InputError, match="hard json_schema constraint"):
        ChatDeAL(model=llm.model, spec="rewards: [{json_schema: {schema: {type: object}, mode: hard}}]") \
            .bind_tools([echo])


def test_structured_output_errors_at_bind_time(llm):
    with pytest.raises(ConstraintError, match="refused"):
        llm.with_structured_output({"type": "object", "properties": {"a": {"type": "integer", "minimum": 5,
                                                                             "maximum": 2}}, "required": ["a"]})
    with pytest.raises(InputError, match="unknown method"):
        llm.with_structured_output({"type": "object"}, method="xml")


# ------------------------------------------------------------------ tools, structured output


@pytest.mark.parametrize("choice", ["any", "shout"])
def test_tool_calls_follow_the_schema(lm, choice):
    llm = ChatDeAL(model=lm, max_tokens=120, top_k=2, beam=1, lookahead=2)
    msg = llm.bind_tools([echo, shout], tool_choice=choice).invoke("hello")
    assert msg.response_metadata["finish_reason"] == "tool_calls", msg
    [call] = msg.tool_calls
    assert call["id"].startswith("call_") and call["type"] == "tool_call"
    assert call["name"] in ("echo", "shout") if choice == "any" else call["name"] == "shout"
    schema = (echo if call["name"] == "echo" else shout).tool_call_schema.model_json_schema()
    jsonschema.validate(call["args"], schema)
    # streamed: the same call, whole, in the last chunk
    chunks = list(llm.bind_tools([echo, shout], tool_choice=choice).stream("hello"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [(call["name"], call["args"])]


def test_tool_choice_none_and_auto(lm):
    llm = ChatDeAL(model=lm, max_tokens=40, top_k=2, beam=1, lookahead=2)
    plain = llm.bind_tools([echo], tool_choice="none").invoke("hello")
    assert plain.content == llm.invoke("hello").content and not plain.tool_calls
    # auto: a tool call or a reply (the random model's reply may run to the budget)
    auto = llm.bind_tools([echo]).invoke("hello")
    reason = auto.response_metadata["finish_reason"]
    assert reason in ("tool_calls", "stop", "length")
    assert bool(auto.tool_calls) == (reason == "tool_calls")
    assert auto.tool_calls or auto.content or auto.invalid_tool_calls
    ts = ToolSet.build([echo])
    assert ts.choice == "auto" and '{"answer"' in ts.instructions()
    assert ts.parse('{"answer":"hi"}', finished=True) == ("hi", [], [])
    content, calls, invalid = ts.parse('{"name":"echo","arguments":{"te', finished=False)
    assert (content, calls) == ("", []) and invalid[0]["name"] == "echo" and "token budget" in invalid[0]["error"]


def test_answer_stream_unescapes_incrementally():
    final = {"answer": 'h\u00e9llo "x" \\ \n 🙂 done'}
    text = json.dumps(final)  # ASCII escapes, a surrogate pair
    stream, out = AnswerStream(), []
    for ch in text:
        out.append(stream.feed(ch))
    assert "".join(out) + stream.rest(final["answer"]) == final["answer"]
    assert AnswerStream().feed('{"name":"echo","arguments":{}}') == ""

    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]  # deltas that split escapes and the pair
    stream = AnswerStream()
    assert "".join(stream.feed(p) for p in pieces) == final["answer"]


def test_answer_schema_shown_without_titles_but_with_its_data():
    schema = {"type": "object", "title": "Reply", "properties": {
        "title": {"type": "string", "title": "Title"},
        "kind": {"enum": [{"title": "kept"}], "title": "Kind"}}}
    shown = ToolSet.build([echo]).with_answer_schema(schema).instructions()
    assert '"properties":{"title":{"type":"string"},"kind":{"enum":[{"title":"kept"}]}}' in shown
    assert "Reply" not in shown and "Title" not in shown and "Kind" not in shown


class Pet(BaseModel):
    """A pet."""

    # short: a random model loops inside an open string, and a value the budget's closing
    # pressure ends is reported as cut (tested below), not parsed
    name: str = Field(max_length=6, description="the pet's name")
    legs: int = Field(ge=0, le=99)


def test_structured_output_validates(lm):
    llm = ChatDeAL(model=lm, max_tokens=120, top_k=2, beam=1, lookahead=2)
    pet = llm.with_structured_output(Pet).invoke("A pet, please.")
    assert isinstance(pet, Pet)
    raw = llm.with_structured_output(Pet, include_raw=True).invoke("A pet, please.")
    assert raw["parsing_error"] is None and raw["parsed"] == pet
    assert Pet.model_validate_json(raw["raw"].content) == pet
    as_dict = llm.with_structured_output(Pet.model_json_schema()).invoke("A pet, please.")
    assert as_dict == pet.model_dump()
    # cut by the budget: returned as a parsing error with include_raw, never as a wrong object
    out = ChatDeAL(model=lm, max_tokens=3).with_structured_output(Pet, include_raw=True).invoke("A pet, please.")
    assert out["parsed"] is None and "token budget" in str(out["parsing_error"])
    assert "raise max_tokens" in str(out["parsing_error"])


# ------------------------------------------------------------------ DeALLLM


def test_deal_llm_batch_stream_and_info(lm):
    llm = DeALLLM(model=lm, spec=SPEC, reward_vars={"topic": "e"})
    chat = ChatDeAL(model=lm, spec=SPEC, reward_vars={"topic": "e"})
    text = llm.invoke(PROMPTS[0])
    assert text == chat.invoke(PROMPTS[0]).content  # the same request as a user turn
    assert "".join(llm.stream(PROMPTS[0])) == text
    singles = [chat.invoke(p).content for p in PROMPTS]
    before = engine_calls(lm)
    assert llm.batch(PROMPTS) == singles
    assert engine_calls(lm) - before == 1
    result = llm.generate([PROMPTS[0]])
    info = result.generations[0][0].generation_info
    assert set(info["rewards"]) == {"has_e", "keywords"} and info["usage"]["output_tokens"] > 0
    chain = with_reward_vars(PromptTemplate.from_template("About {topic}:"), DeALLLM(model=lm, spec=SPEC))
    assert isinstance(chain.invoke({"topic": "e"}), str)


def test_aligned_tool_reports_bad_arguments_to_the_agent(lm):
    from langchain_core.messages import ToolMessage
    from pydantic import BaseModel

    from deal_chains.langchain import aligned_tool

    class Args(BaseModel):
        concepts: list[str]

    write = aligned_tool("write_sentence", "Write one sentence using the words.", spec="commongen",
                         llm=ChatDeAL(model=lm, max_tokens=4), args_schema=Args)
    # no words to cover: the agent gets an error message it can act on, the run goes on
    msg = write.invoke({"name": "write_sentence", "args": {"concepts": []}, "id": "c1", "type": "tool_call"})
    assert isinstance(msg, ToolMessage) and msg.status == "error"
    assert "write_sentence" in msg.content and "no words to cover" in msg.content
    # the auto-built argument says what it is for
    auto = aligned_tool("write_sentence", "Write.", spec="commongen", llm=ChatDeAL(model=lm))
    assert "keywords reward" in auto.args["concepts"]["description"]


# ---- merged from test_langchain_more.py: More of the LangChain and DSPy integration on the tiny random-weight model: stop


@tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return "sunny"


class ShortWeather(BaseModel):
    """Get the weather in a city."""

    # bounded: a random model's open string runs until a limit closes it, and a call with a
    # value a limit closed is reported as invalid, not made
    city: str = Field(max_length=8)


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
                   max_tokens=120).bind_tools([ShortWeather], tool_choice="any").invoke("Weather?")
    [tc] = msg.tool_calls
    content = TOOL_CONTENT(json.dumps({"name": tc["name"], "arguments": tc["args"]}))
    assert content == tc["args"]["city"]
    assert msg.response_metadata["rewards"]["keywords"] == pytest.approx(
        KeywordCoverage(["get_weather", "city"], inflections=False).score([content], None)[0])


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


def test_guard_checks_its_spec_variables_at_construction(lm):
    spec = "rewards: [{keywords: {words: '{words}'}}]"
    with pytest.raises(InputError, match=r"the spec uses \{words\} but reward_vars does not set it"):
        guard_final_answer(ChatDeAL(model=lm), spec=spec)
    guard_final_answer(ChatDeAL(model=lm), spec=spec, reward_vars={"words": ["sunny"]})
    guard_final_answer(ChatDeAL(model=lm, reward_vars={"words": ["sunny"]}).bind(top_k=2), spec=spec)


def test_tool_rounds_end_in_a_reply(lm):
    round_ = [HumanMessage("Add 2 and 40"),
              AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 40}, "id": "c1"}]),
              ToolMessage("42", tool_call_id="c1")]
    kwargs = {"tools": [add], "tool_choice": "auto"}
    # rounds spent: the turn is a plain-text reply (no tools, the reply constraint)
    spent = ChatDeAL(model=lm, max_tool_rounds=1)._call(round_, None, kwargs)
    assert spent.toolset is None and spent.request.constraint.kind == "regex"
    assert ChatDeAL(model=lm, max_tool_rounds=2)._call(round_, None, kwargs).toolset.active
    assert ChatDeAL(model=lm, max_tool_rounds=None)._call(round_ * 5, None, kwargs).toolset.active
    # rounds count from the last human message
    assert ChatDeAL(model=lm, max_tool_rounds=1)._call(round_ + [AIMessage("42"), HumanMessage("more")],
                                                       None, kwargs).toolset.active
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
    # the tiny model's template renders any role but never names "tool": tool-calling turns
    # and plain replies read results as user messages
    tool_turn = chat._call(round_, None, {"tools": [add]}).request.messages
    assert tool_turn[-1] == {"role": "user", "content": "Tool result:\n42"}
    reply = chat._call(round_, None, {}).request.messages
    assert reply[-1] == {"role": "user", "content": "Tool result:\n42"}
    # the call is shown in words in a plain reply (the JSON envelope only in a tool turn)
    assert reply[-2] == {"role": "assistant", "content": 'I called add(a=2, b=40).'}
    assert tool_turn[-2] == {"role": "assistant", "content": '{"name":"add","arguments":{"a":2,"b":40}}'}


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


def test_llm_output_carries_model_name_and_token_usage_to_callbacks(lm):
    from langchain_core.callbacks import BaseCallbackHandler

    ends = []

    class Seen(BaseCallbackHandler):
        def on_llm_end(self, response, **kwargs):
            ends.append(response.llm_output)

    llm = ChatDeAL(model=lm, max_tokens=6, strategy="greedy")
    msg = llm.invoke("hello", config={"callbacks": [Seen()]})
    [out] = ends
    assert out["model_name"] == msg.response_metadata["model_name"]
    assert out["token_usage"]["completion_tokens"] == msg.usage_metadata["output_tokens"] > 0
    assert out["token_usage"]["total_tokens"] == msg.usage_metadata["total_tokens"]
    both = llm.generate([[HumanMessage("hello")], [HumanMessage("abc")]])
    assert both.llm_output["token_usage"]["completion_tokens"] == sum(
        g[0].message.usage_metadata["output_tokens"] for g in both.generations)


def test_model_name_is_an_alias_and_model_kwargs_is_refused_with_what_to_use(lm):
    from pydantic import ValidationError

    assert ChatDeAL(model_name=lm).model is lm
    assert DeALLLM(model_name=lm).model is lm
    with pytest.raises(ValidationError, match="model_kwargs is not used by deal-chains.*device=.*top_k="):
        ChatDeAL(model=lm, model_kwargs={"temperature": 0.5})
    with pytest.raises(ValidationError, match="disagree"):
        ChatDeAL(model="default", model_name="other/model")


def test_n_is_refused_where_it_cannot_apply(lm):
    # n is the generations returned per prompt (tests/langchain/test_n.py); greedy has one
    with pytest.raises(InputError, match="n=2: strategy 'greedy' has one answer per prompt"):
        ChatDeAL(model=lm, n=2, strategy="greedy")
    with pytest.raises(InputError, match="n=2: strategy 'greedy' has one answer per prompt"):
        DeALLLM(model=lm, n=2, strategy="greedy")
    llm = ChatDeAL(model=lm, max_tokens=4, strategy="greedy")
    with pytest.raises(InputError, match="n=3"):
        llm.invoke("hi", n=3)
    assert len(ChatDeAL(model=lm, n=2, max_tokens=4).generate([[HumanMessage("hi")]]).generations[0]) == 2
