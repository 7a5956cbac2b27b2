"""LangChain's ``n``: n generations per prompt (the n best distinct answers of one search), in
ChatDeAL and DeALLLM, on the tiny random-weight model (float64: searches are deterministic)."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from pydantic import BaseModel
from tiny import build_tiny_model

from deal_chains import ChatDeAL, DeALLLM, InputError, SpecError
from deal_chains.runtime.worker import worker_for

PROMPTS = ["hello world", "a longer prompt, so the batch is left-padded", "abc"]
SPEC = """
search: {strategy: deal, top_k: 3, beam: 3, lookahead: 2, lam: 3.0, max_new_tokens: 10}
rewards:
  - regex: {must_match: "e"}
    name: has_e
"""


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from deal_chains.models import load_model

    # tool instructions are long in a byte-level tokenizer: a longer context than the shared model's
    path = build_tiny_model(tmp_path_factory.mktemp("tiny-n"), context=1024)
    return load_model(str(path), device="cpu", dtype="float64")


def ranked(metas):
    keys = [(m["finish_reason"] not in ("stop", "tool_calls"), -m["score"]) for m in metas]
    return keys == sorted(keys)


def test_chat_generate_returns_n_ranked_generations_per_prompt(lm):
    llm = ChatDeAL(model=lm, spec=SPEC, n=2)
    before = worker_for(lm).engine_calls
    result = llm.generate([[HumanMessage(p)] for p in PROMPTS[:2]])
    assert worker_for(lm).engine_calls - before == 1  # both prompts, both answers: one batched search
    assert [len(g) for g in result.generations] == [2, 2]
    one = ChatDeAL(model=lm, spec=SPEC)  # the same search (beam 3 >= n): its one answer is the best
    for prompt, gens in zip(PROMPTS, result.generations):
        texts = [g.message.content for g in gens]
        assert len(set(texts)) == 2
        assert texts[0] == one.invoke(prompt).content == llm.invoke(prompt).content
        metas = [g.message.response_metadata for g in gens]
        assert ranked(metas)
        for g, meta in zip(gens, metas):
            assert set(meta["rewards"]) == {"has_e"} and meta["finish_reason"] in ("stop", "length")
            assert meta["strategy"] == "deal" and meta["model_name"]
            assert meta["score"] == pytest.approx(meta["logprob"] + 3.0 * meta["reward"])
            usage = g.message.usage_metadata
            assert usage["output_tokens"] == meta["stats"]["new_tokens"]
    # llm_output: each prompt counted once, every answer's tokens
    usage = result.llm_output["token_usage"]
    assert usage["completion_tokens"] == sum(g.message.usage_metadata["output_tokens"]
                                             for gens in result.generations for g in gens)
    assert usage["prompt_tokens"] == sum(gens[0].message.usage_metadata["input_tokens"]
                                         for gens in result.generations)


def test_n_per_call_batch_and_async(lm):
    llm = ChatDeAL(model=lm, spec=SPEC)
    result = llm.generate([[HumanMessage(PROMPTS[0])]], n=3)
    texts = [g.message.content for g in result.generations[0]]
    assert len(texts) == 3 and len(set(texts)) == 3
    assert texts[0] == llm.invoke(PROMPTS[0]).content == llm.invoke(PROMPTS[0], n=3).content
    # batch returns the best of each input
    assert [m.content for m in llm.batch(PROMPTS[:2], n=3)] == [llm.invoke(p).content for p in PROMPTS[:2]]
    agen = asyncio.run(llm.agenerate([[HumanMessage(PROMPTS[0])]], n=3))
    assert [g.message.content for g in agen.generations[0]] == texts
    assert asyncio.run(llm.ainvoke(PROMPTS[0], n=3)).content == texts[0]
    # best_of_n: n generations, the samples still the search's n
    sampled = ChatDeAL(model=lm, strategy="best_of_n", search={"n": 4}, seed=1, max_tokens=8, n=2)
    gens = sampled.generate([[HumanMessage(PROMPTS[2])]]).generations[0]
    assert len(gens) == 2 and gens[0].message.response_metadata["strategy"] == "best_of_n"
    assert gens[0].message.content == sampled.invoke(PROMPTS[2]).content


def test_streaming_with_n(lm):
    llm = ChatDeAL(model=lm, spec=SPEC, n=2)
    best = llm.invoke(PROMPTS[0]).content
    assert "".join(str(c.content) for c in llm.stream(PROMPTS[0])) == best  # the best generation only
    # streaming=True makes invoke stream; generate keeps every generation
    streaming = ChatDeAL(model=lm, spec=SPEC, n=2, streaming=True)
    gens = streaming.generate([[HumanMessage(PROMPTS[0])]]).generations[0]
    assert len(gens) == 2 and gens[0].message.content == best
    assert streaming.invoke(PROMPTS[0]).content == best
    assert "".join(DeALLLM(model=lm, spec=SPEC, n=2).stream(PROMPTS[0])) == \
        DeALLLM(model=lm, spec=SPEC).invoke(PROMPTS[0])


def test_llm_generate_returns_n_generations_per_prompt(lm):
    llm = DeALLLM(model=lm, spec=SPEC, n=2)
    result = llm.generate(PROMPTS[:2])
    assert [len(g) for g in result.generations] == [2, 2]
    for prompt, gens in zip(PROMPTS, result.generations):
        assert len({g.text for g in gens}) == 2
        assert gens[0].text == llm.invoke(prompt) == DeALLLM(model=lm, spec=SPEC).invoke(prompt)
        assert ranked([g.generation_info for g in gens])
        assert all(g.generation_info["usage"]["output_tokens"] == g.generation_info["stats"]["new_tokens"]
                   for g in gens)
    three = asyncio.run(DeALLLM(model=lm, spec=SPEC).agenerate(PROMPTS[:1], n=3))
    assert len({g.text for g in three.generations[0]}) == 3
    assert [g.text for g in three.generations[0]][:2] == [g.text for g in result.generations[0]]


def test_a_bad_n_is_a_clear_error(lm):
    for cls in (ChatDeAL, DeALLLM):
        with pytest.raises(InputError, match=f"{cls.__name__}: n=0: n is the number of generations"):
            cls(model=lm, n=0)
        with pytest.raises(InputError, match=r"n=2: strategy 'greedy' has one answer per prompt.*'deal'"):
            cls(model=lm, n=2, strategy="greedy")
    llm = ChatDeAL(model=lm, strategy="greedy", max_tokens=4)
    with pytest.raises(InputError, match="n=3: strategy 'greedy'"):
        llm.invoke("hi", n=3)
    with pytest.raises(InputError, match="n=3: strategy 'greedy'"):
        llm.bind(n=3)
    with pytest.raises(InputError, match="n=-1"):
        ChatDeAL(model=lm).invoke("hi", n=-1)
    with pytest.raises(InputError, match="'greedy' has one answer"):  # the search setting n maps to
        ChatDeAL(model=lm, search={"strategy": "greedy", "returns": 2})
    with pytest.raises(SpecError, match="'greedy' has one answer"):  # in a spec
        ChatDeAL(model=lm, spec="search: {strategy: greedy, returns: 2}\nrewards: [{regex: {must_match: e}}]")


@tool
def echo(text: str) -> str:
    """Repeat a text."""
    return text


class Pet(BaseModel):
    name: str


def test_tool_calls_and_structured_output_parse_every_generation(lm):
    import json

    llm = ChatDeAL(model=lm, max_tokens=120, top_k=3, beam=1, lookahead=2, n=2)
    bound = llm.bind_tools([echo], tool_choice="any")
    gens = llm.generate([[HumanMessage("hello")]], **bound.kwargs).generations[0]
    assert len(gens) == 2
    def shape(m):
        return [(c["name"], c["args"]) for c in m.tool_calls], [c["args"] for c in m.invalid_tool_calls], m.content

    assert shape(gens[0].message) == shape(bound.invoke("hello"))
    for g in gens:
        msg = g.message
        # each is parsed as the answer is: a tool call, or an invalid one when the budget cut it
        assert len(msg.tool_calls) + len(msg.invalid_tool_calls) == 1, msg
        if msg.tool_calls:
            assert msg.tool_calls[0]["name"] == "echo" and msg.response_metadata["finish_reason"] == "tool_calls"
    assert all(g.message.tool_calls for g in gens)  # on this model and budget, both calls complete
    assert len({json.dumps(g.message.tool_calls[0]["args"]) for g in gens}) == 2
    structured = llm.with_structured_output(Pet, include_raw=True)
    out = structured.invoke("A pet, please.")
    kwargs = structured.llm.kwargs
    gens = llm.generate([[HumanMessage("A pet, please.")]], **kwargs).generations[0]
    assert len(gens) == 2 and gens[0].message.content == out["raw"].content
    assert gens[0].message.response_metadata["finish_reason"] == "stop" and out["parsed"] is not None
    for g in gens:  # every generation is JSON under the schema's mask (a cut one says length)
        if g.message.response_metadata["finish_reason"] == "stop":
            Pet.model_validate_json(g.message.content)
        else:
            assert g.message.response_metadata["finish_reason"] == "length"
