"""The LangChain examples of README.md and docs/integrations.md, run on the embedded default model."""

from __future__ import annotations

import pytest
import torch
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from deal_chains.langchain import ChatDeAL, aligned_tool, guard_final_answer, with_reward_vars
from rewards import KeywordCoverage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lm(default_lm):
    return default_lm


def test_chain_fills_reward_vars_from_the_input(lm):
    # README: a chain with {concepts} reward variables
    prompt = ChatPromptTemplate.from_messages(
        [("human", "Write one short sentence that uses all of these words: {concepts}.")])
    llm = ChatDeAL(model=lm, spec="commongen", max_tokens=32)
    chain = with_reward_vars(prompt, llm) | StrOutputParser()
    concepts = "stand, umbrella, street, hold"
    text = chain.invoke({"concepts": concepts})
    greedy = (with_reward_vars(prompt, llm.bind(strategy="greedy")) | StrOutputParser()).invoke({"concepts": concepts})
    coverage = KeywordCoverage(concepts.split(", "))
    assert coverage.missing(text) == [], text
    assert coverage.missing(greedy), f"greedy covered every word ({greedy!r}): pick a harder set for this test"
    # streamed: the same text, as the search commits it
    assert "".join(chain.stream({"concepts": concepts})) == text


class Person(BaseModel):
    """A person."""

    name: str = Field(description="first name")
    age: int = Field(ge=0, le=120)


def test_structured_output_always_validates(lm):
    # README: structured output under the hard JSON-schema constraint
    llm = ChatDeAL(model=lm, max_tokens=48, top_k=2, beam=1, lookahead=2)
    person = llm.with_structured_output(Person).invoke("Invent a person. Give a name and an age.")
    assert isinstance(person, Person) and person.name


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is sunny and 24 degrees in {city}."


def test_agent_with_a_tool_and_a_guarded_answer(lm):
    # README: a LangChain agent (create_agent) calling a tool, its answer guarded by a spec
    from langchain.agents import create_agent

    llm = ChatDeAL(model=lm, max_tokens=48, top_k=2, beam=1, lookahead=2)
    agent = create_agent(llm, tools=[get_weather])
    guarded = agent | guard_final_answer(llm, spec="rewards: [{keywords: {words: [sunny, Paris]}}]",
                                         threshold=1.0)
    state = guarded.invoke({"messages": [("human", "What is the weather in Paris?")]}, {"recursion_limit": 8})
    messages = state["messages"]
    calls = [m for m in messages if isinstance(m, AIMessage) and m.tool_calls]
    assert calls and calls[0].tool_calls[0]["name"] == "get_weather"
    assert "paris" in calls[0].tool_calls[0]["args"]["city"].lower()
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert results and "sunny" in results[0].content
    final = messages[-1]
    assert isinstance(final, AIMessage) and not final.tool_calls and final.content
    assert final.response_metadata["guard"]["action"] in ("kept", "regenerated")
    assert KeywordCoverage(["sunny", "Paris"]).missing(final.content) == [], final.content


def test_aligned_tool_runs_a_spec_step(lm):
    # README: an aligned generation step (prompt template + spec) as an agent tool
    write = aligned_tool("write_sentence", "Write one sentence that uses all the given words.",
                         spec="commongen", llm=ChatDeAL(model=lm, max_tokens=32))
    assert set(write.args) == {"concepts"}
    message = write.invoke({"name": "write_sentence", "args": {"concepts": "watch, window, look"},
                            "id": "call_1", "type": "tool_call"})
    assert isinstance(message, ToolMessage) and message.content
    assert message.artifact["rewards"]["keywords"] == 1.0, message.content
    assert KeywordCoverage(["watch", "window", "look"]).missing(message.content) == []
