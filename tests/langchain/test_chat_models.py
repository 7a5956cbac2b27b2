"""ChatDeAL / DeALLLM on the tiny random-weight model (float64: batched and single searches
agree exactly, so concurrency and batching can be checked token for token)."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import ConfigurableField
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from deal_chains import ChatDeAL, ConfigError, DeALEngine, DeALLLM, InputError, SearchConfig, SpecError
from deal_chains.runtime.worker import worker_for as _worker_for
from deal_chains.langchain import with_reward_vars
from deal_chains.langchain.chat_models import to_engine_messages
from deal_chains.langchain.tool_calling import AnswerStream, ToolSet
from deal_chains.search.constraints import ConstraintError
from rewards import KeywordCoverage
from tiny import build_tiny_model

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


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from deal_chains.models import load_model

    # a longer context than the shared tiny model: tool instructions are long in a
    # byte-level tokenizer
    path = build_tiny_model(tmp_path_factory.mktemp("tiny-1k"), context=1024)
    return load_model(str(path), device="cpu", dtype="float64")


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


def test_message_conversion():
    msgs = [SystemMessage("s"), HumanMessage([{"type": "text", "text": "h"}]),
            AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1}, "id": "1"}]),
            ToolMessage("3", tool_call_id="1"), AIMessage("done"), ChatMessage(role="critic", content="c")]
    assert to_engine_messages(msgs) == [
        {"role": "system", "content": "s"}, {"role": "user", "content": "h"},
        {"role": "assistant", "content": '{"name":"add","arguments":{"a":1}}'},
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


def _slow_requests(lm, prompts, max_new_tokens=120):
    """Requests whose search takes a while (a reward that sleeps), so a test can cancel one
    mid-search."""
    import time

    from deal_chains.runtime import ModelRuntime as DeALAdapter
    from rewards import BaseReward

    class Slow(BaseReward):
        name = "slow"

        def score(self, texts, context):
            time.sleep(0.005)
            return [float("e" in t) for t in texts]

    adapter = DeALAdapter(lm)
    cfg = SearchConfig(strategy="deal", top_k=2, beam=1, lookahead=2, max_new_tokens=max_new_tokens)
    reqs = [adapter.request([{"role": "user", "content": p}], config=cfg) for p in prompts]
    for r in reqs:
        r.rewards = [Slow()]
    return adapter, reqs


async def test_cancelling_an_awaiting_task_ends_its_search_and_spares_the_others(lm):
    adapter, reqs = _slow_requests(lm, ["hello world", "abc"])
    [full_a, full_b] = adapter.generate(reqs)
    assert len(full_a.result.token_ids) > 20  # long enough to be cut
    a, b = adapter.submit(reqs)  # searched together in one batch
    task = asyncio.create_task(a.aresult())
    async for _ in a.atexts():  # its search is running: tokens are being committed
        break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cut = await asyncio.to_thread(a.result)
    # the cancelled request stopped at a commit soon after (its slot in the batch freed);
    # the other request in the same batch finished exactly as when searched alone
    assert cut.finish_reason == "cancelled"
    assert len(cut.result.token_ids) < len(full_a.result.token_ids)
    assert full_a.result.token_ids[:len(cut.result.token_ids)] == cut.result.token_ids
    assert (await b.aresult()).text == full_b.text


async def test_a_request_cancelled_while_queued_is_never_searched(lm):
    from deal_chains.runtime import CancelledRequest

    adapter, reqs = _slow_requests(lm, ["hello world", "abc", "Why?"], max_new_tokens=40)
    first = adapter.submit(reqs[:1])[0]
    async for _ in first.atexts():  # the worker is busy with it: later requests wait
        break
    queued = adapter.submit(reqs[1:])
    task = asyncio.create_task(queued[0].aresult())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(CancelledRequest):
        await asyncio.to_thread(queued[0].result)
    assert (await queued[1].aresult()).finish_reason in ("stop", "length")
    assert (await first.aresult()).finish_reason in ("stop", "length")


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


def test_a_failing_request_does_not_fail_the_others_in_its_batch(lm):
    from rewards import BaseReward

    class Fails(BaseReward):
        name = "fails"

        def score(self, texts, context):
            if "boom" in context.prompt:
                raise RuntimeError("boom")
            return [0.5] * len(texts)

    from deal_chains.runtime import ModelRuntime as DeALAdapter

    adapter = DeALAdapter(lm)
    cfg = SearchConfig(strategy="deal", top_k=2, beam=1, lookahead=2, max_new_tokens=8)
    reqs = [adapter.request([{"role": "user", "content": p}], config=cfg) for p in ("ok", "boom", "fine")]
    for r in reqs:
        r.rewards = [Fails()]
    good, bad, fine = adapter.submit(reqs)
    assert good.result().text == adapter.generate([reqs[0]])[0].text
    assert fine.result().result.rewards == {"fails": 0.5}
    with pytest.raises(Exception, match="boom"):
        bad.result()


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


class Pet(BaseModel):
    """A pet."""

    name: str = Field(description="the pet's name")
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
    assert out["parsed"] is None and out["parsing_error"] is not None


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
