"""The OpenAI-compatible server on the tiny random-weight model (float64: a batched search
equals a single one token for token), driven by the real clients: ``openai``, LangChain's
``ChatOpenAI`` and DSPy's ``dspy.LM``."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from deal_chains.runtime.worker import worker_for  # noqa: E402
from deal_chains.serve import ServeLimits, ServerThread, create_app, served_model  # noqa: E402

KEY = "test-key"
HELLO = [{"role": "user", "content": "hello"}]
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
ADD = {"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9},
                                   "b": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["a", "b"],
    "additionalProperties": False}}}
# holds the end of the answer until 300 tokens: a search long enough to abandon
# a search that cannot end before its client gives up: it must place a word the random model
# never writes, and hold_eos keeps it from ending while the budget could still place it
LONG = {"spec": {"rewards": [{"keywords": {"words": ["zebra"]}}]}, "search": {"hold_eos": True}}


@pytest.fixture(scope="module")
def server(tiny_lm_1k):
    app = create_app([served_model(tiny_lm_1k, name="tiny")], ServeLimits(max_tokens=400), api_key=KEY)
    with ServerThread(app) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)


def chat(client, messages=HELLO, **kw):
    return client.chat.completions.create(model="tiny", messages=messages, **{"max_tokens": 12, **kw})


def metric(server, name: str) -> float:
    text = httpx.get(server.base_url[:-3] + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def wait_for(condition, seconds: float = 30.0) -> None:
    """Poll ``condition`` (the server notices a closed connection on its own time; on a
    loaded 2-core machine that can take seconds)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


# ------------------------------------------------------------------ the routes


def test_models_health_and_a_chat_answer_equal_to_the_runtime(server, client, tiny_lm_1k):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert httpx.get(server.base_url[:-3] + "/health").json()["status"] == "ok"
    r = chat(client)
    [choice] = r.choices
    # the same request straight through the runtime: the same answer
    from deal_chains.runtime import ModelRuntime
    from deal_chains.search.config import SearchConfig

    runtime = ModelRuntime(tiny_lm_1k)
    [direct] = runtime.generate([runtime.request(HELLO, config=SearchConfig(max_new_tokens=12))])
    assert choice.message.content == direct.text and choice.message.role == "assistant"
    assert choice.finish_reason == direct.finish_reason
    assert r.usage.prompt_tokens == direct.prompt_tokens
    assert r.usage.completion_tokens == len(direct.result.token_ids)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert choice.model_extra["deal"]["strategy"] == "deal"


def test_stream_sends_the_answer_in_chunks_then_usage(client):
    whole = chat(client, max_tokens=24)
    chunks = list(chat(client, max_tokens=24, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_json_schema_response_format_parses_and_validates(client):
    r = chat(client, max_tokens=None, response_format={"type": "json_schema",
                                                       "json_schema": {"name": "person", "schema": PERSON}})
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)


def test_tool_calls_parse_and_validate(client):
    r = chat(client, [{"role": "user", "content": "Add 2 and 3."}], max_tokens=None, tools=[ADD],
             tool_choice="required")
    [choice] = r.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "add" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), ADD["function"]["parameters"])
    # the call and its result go back in the history; with tools off the turn replies in text
    followed = chat(client, [{"role": "user", "content": "Add 2 and 3."}, choice.message.model_dump(exclude_none=True),
                             {"role": "tool", "tool_call_id": call.id, "content": "5"}], tools=[ADD],
                    tool_choice="none", max_tokens=16)
    text = followed.choices[0].message.content
    assert followed.choices[0].message.tool_calls is None and text and text[0] not in ' {["`'  # REPLY_START


def test_streamed_tool_calls_and_replies_equal_the_whole_answers(client):
    ask = [{"role": "user", "content": "Add 2 and 3."}]
    whole = chat(client, ask, max_tokens=None, tools=[ADD], tool_choice="required").choices[0]
    chunks = list(chat(client, ask, max_tokens=None, tools=[ADD], tool_choice="required", stream=True))
    [call] = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]  # sent whole, once
    assert (call.function.name, call.function.arguments) == (whole.message.tool_calls[0].function.name,
                                                             whole.message.tool_calls[0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # after the tool's result, an "auto" turn: the streamed reply is the whole reply
    history = ask + [whole.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": whole.message.tool_calls[0].id, "content": "5"}]
    # (the random model calls again here; a real model replies, and its reply is then
    # generated again in words: the stream sends only that)
    reply = chat(client, history, tools=[ADD], max_tokens=None).choices[0]
    streamed = list(chat(client, history, tools=[ADD], max_tokens=None, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == (reply.message.content or "")
    calls = [(d.function.name, d.function.arguments) for c in streamed for d in (c.choices[0].delta.tool_calls or [])]
    assert calls == [(t.function.name, t.function.arguments) for t in reply.message.tool_calls or []]
    assert streamed[-1].choices[0].finish_reason == reply.finish_reason


def test_a_tool_call_cut_by_the_budget_is_not_returned_as_a_call(client):
    r = chat(client, [{"role": "user", "content": "Add 2 and 3."}], max_tokens=6, tools=[ADD], tool_choice="required")
    [choice] = r.choices
    assert choice.finish_reason == "length" and not choice.message.tool_calls and choice.message.content is None
    [bad] = choice.model_extra["deal"]["invalid_tool_calls"]
    assert "cut by the token budget" in bad["error"] and "max_tokens" in bad["error"]


def test_n_returns_distinct_answers_and_counts_their_tokens(client):
    r = chat(client, n=2)
    assert len(r.choices) == 2 and [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content != r.choices[1].message.content
    assert r.choices[0].message.content == chat(client).choices[0].message.content  # the best comes first
    spent = sum(c.model_extra["deal"]["stats"]["new_tokens"] for c in r.choices)
    assert r.usage.completion_tokens == spent


def test_a_preset_and_an_inline_spec_reach_the_rewards(client):
    inline = chat(client, extra_body={"deal": {"spec": {"rewards": [{"regex": {"must_match": "e"}, "name": "has_e"}]}}})
    assert set(inline.choices[0].model_extra["deal"]["rewards"]) == {"has_e"}
    preset = chat(client, extra_body={"deal": {"preset": "commongen", "vars": {"concepts": ["dog", "park"]}}})
    assert "keywords" in preset.choices[0].model_extra["deal"]["rewards"]


def test_completions_search_every_prompt_of_a_request(client):
    r = client.completions.create(model="tiny", prompt=["hello", "abc"], max_tokens=8)
    assert [c.index for c in r.choices] == [0, 1]
    alone = client.completions.create(model="tiny", prompt="abc", max_tokens=8)
    assert r.choices[1].text == alone.choices[0].text
    assert r.usage.prompt_tokens == sum(client.completions.create(model="tiny", prompt=p, max_tokens=8)
                                        .usage.prompt_tokens for p in ("hello", "abc"))


# ------------------------------------------------------------------ refused requests


@pytest.mark.parametrize("kw, status, words", [
    ({"extra_body": {"deal": {"spec": {"rewards": [{"length": {"max_wordz": 3}}]}}}}, 400,
     ["rewards.0.length.max_wordz", "did you mean 'max_words'"]),
    ({"extra_body": {"deal": {"spec": {"rewards": [{"json_schema": {"schema_file": "/etc/passwd"}}]}}}}, 400,
     ["deal.spec.rewards.0.json_schema.schema_file", "may not name a file"]),
    ({"extra_body": {"deal": {"spec": {"rewards": [{"classifier": {"model": "./m", "label": "x"}}]}}}}, 400,
     ["rewards.0.classifier.model"]),
    ({"extra_body": {"deal": {"spec": {"extends": "../secret.yaml"}}}}, 400, ["deal.spec.extends"]),
    ({"extra_body": {"deal": {"preset": "nope"}}}, 400, ["unknown preset 'nope'", "commongen"]),
    ({"extra_body": {"deal": {"spec": "rewards.yaml"}}}, 400, ["deal.spec must be a spec as a JSON object"]),
    ({"max_tokens": 100_000}, 400, ["max_tokens=100000", "limit of 400"]),
    ({"extra_body": {"deal": {"search": {"top_k": 64, "beam": 8}}}}, 400, ["search too large", "hypotheses"]),
    ({"logprobs": True}, 400, ["logprobs are not available"]),
    ({"top_p": 0.5}, 400, ["top_p must be 1"]),
    ({"n": 2, "stream": True}, 400, ["stream with n > 1"]),
    ({"extra_body": {"deal": {"search": {"strategy": "greedy"}}}, "n": 2}, 400, ["greedy", "n=2"]),
    ({"extra_body": {"frobnicate": 1}}, 400, ["unrecognized request argument", "frobnicate"]),
    ({"model": "gpt-4o"}, 404, ["'gpt-4o' does not exist", "tiny"]),
])
def test_bad_requests_get_an_openai_error_naming_the_field(client, kw, status, words):
    kw = {"model": "tiny", "messages": HELLO, **kw}
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(**kw)
    assert info.value.status_code == status
    error = info.value.body
    assert set(error) >= {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"]


def test_api_key_body_size_and_bad_json(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.post(server.base_url + "/chat/completions", json={"model": "tiny", "messages": HELLO},
                       headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    auth = {"Authorization": f"Bearer {KEY}"}
    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    r = httpx.post(server.base_url + "/chat/completions", json=big, headers=auth)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    r = httpx.post(server.base_url + "/chat/completions", content=b"{not json", headers=auth)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.get(server.base_url + "/nowhere", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


# ------------------------------------------------------------------ other clients


def test_langchain_chat_openai_in_a_chain(server, client):
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=server.base_url, api_key=KEY, model="tiny", max_tokens=12, max_retries=0)
    chain = ChatPromptTemplate.from_messages([("human", "Say {word}.")]) | llm | StrOutputParser()
    assert chain.invoke({"word": "hello"}) == chat(client, [{"role": "user", "content": "Say hello."}]) \
        .choices[0].message.content
    [chunk_text] = [("".join(chain.stream({"word": "hello"})))]
    assert chunk_text == chain.invoke({"word": "hello"})


def test_a_dspy_program_through_dspy_lm(server):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network for model prices
    dspy = pytest.importorskip("dspy")

    # the answer's JSON shape as a hard constraint, sent per request through extra_body
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
              "additionalProperties": False}
    lm = dspy.LM("openai/tiny", api_base=server.base_url, api_key=KEY, cache=False, max_tokens=64,
                 extra_body={"deal": {"spec": {"rewards": [{"json_schema": {"schema": schema, "mode": "hard"}}]}}})

    class Sum(dspy.Signature):
        """Add the numbers."""

        question: str = dspy.InputField()
        answer: int = dspy.OutputField()

    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        out = dspy.Predict(Sum)(question="2 + 3?")
    assert isinstance(out.answer, int)


# ------------------------------------------------------------------ concurrency, cancellation


def test_sixteen_concurrent_clients_share_batches_and_equal_their_sequential_answers(server, client, tiny_lm_1k):
    prompts = [f"prompt number {i}: {'ab' * i}" for i in range(16)]
    sequential = [chat(client, [{"role": "user", "content": p}]).choices[0].message.content for p in prompts]
    calls = worker_for(tiny_lm_1k).engine_calls
    start = threading.Barrier(16)

    def one(p: str) -> str:
        c = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
        start.wait()
        return chat(c, [{"role": "user", "content": p}]).choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(one, prompts))
    assert concurrent == sequential
    assert worker_for(tiny_lm_1k).engine_calls - calls < 16  # several clients per batched search


def test_a_client_that_disconnects_cancels_its_search(server):
    before = metric(server, 'deal_cancelled_searches_total{reason="client gone"}')
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 400, "stream": True, "deal": LONG}
    with httpx.stream("POST", server.base_url + "/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        for line in r.iter_lines():
            if '"content"' in line and '"role"' not in line:
                break  # the search is committing text: hang up
    wait_for(lambda: metric(server, 'deal_cancelled_searches_total{reason="client gone"}') > before)
    assert metric(server, 'deal_cancelled_searches_total{reason="client gone"}') == before + 1
    wait_for(lambda: metric(server, "deal_queue_depth") == 0)
    assert metric(server, "deal_queue_depth") == 0


def test_a_client_that_gives_up_on_a_whole_answer_cancels_its_search(server):
    before = metric(server, 'deal_cancelled_searches_total{reason="client gone"}')
    # a prompt of its own: never joined to the search the test before abandoned
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello again"}], "max_tokens": 400,
            "deal": LONG}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=0.5)
    wait_for(lambda: metric(server, 'deal_cancelled_searches_total{reason="client gone"}') > before)
    assert metric(server, 'deal_cancelled_searches_total{reason="client gone"}') == before + 1


def test_a_request_past_the_timeout_gets_408_and_its_search_ends(tiny_lm_1k):
    app = create_app([served_model(tiny_lm_1k, name="tiny")], ServeLimits(max_tokens=400, timeout_s=0.3))
    with ServerThread(app) as s:
        c = openai.OpenAI(base_url=s.base_url, api_key="-", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            chat(c, max_tokens=400, extra_body={"deal": LONG})
        assert info.value.status_code == 408 and info.value.body["code"] == "timeout"
