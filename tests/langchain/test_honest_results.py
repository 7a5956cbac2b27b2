"""What ChatDeAL hands back is what it can vouch for: replies after tool use read as text for
the user, and JSON a search limit closed (a cut value) is reported as cut, never as whole.
All on a tiny random-weight model: it never writes JSON or stops on its own, so every limit
is reached."""

from __future__ import annotations

import json

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic import BaseModel, Field
from tiny import build_tiny_model

from deal_chains import ChatDeAL
from deal_chains.langchain import guard_final_answer

REPLY_OPENERS = tuple('{["`') + (" ", "\n", "\t")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from deal_chains.models import load_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny-honest"), context=1024)
    return load_model(str(path), device="cpu", dtype="float64")


class Weather(BaseModel):
    """Get the weather in a city."""

    city: str


class Note(BaseModel):
    """A dated note."""

    date: str
    text: str


def _after_tool(city: str = "Paris") -> list:
    return [HumanMessage(f"What is the weather in {city}?"),
            AIMessage("", tool_calls=[{"name": "Weather", "args": {"city": city}, "id": "c1"}]),
            ToolMessage(f"It is sunny and 24 degrees in {city}.", tool_call_id="c1")]


def test_a_reply_after_tool_use_is_never_json_or_a_quoted_string(lm):
    chat = ChatDeAL(model=lm, strategy="sample", temperature=1.5, max_tokens=8)
    for seed in range(12):
        text = chat.invoke(_after_tool(), seed=seed).content
        assert text and not text.startswith(REPLY_OPENERS), repr(text)
    # without tool use in the conversation the same model starts with anything it likes
    starts = {chat.invoke("hi", seed=seed).content[:1] for seed in range(12)}
    assert len(starts) > 1


def test_a_reply_in_a_tool_turn_is_text_too(lm):
    chat = ChatDeAL(model=lm, strategy="sample", temperature=1.5, max_tokens=24, max_tool_rounds=None,
                    allow_repeated_tool_calls=True, allow_chained_tool_calls=True)
    replies = 0
    for seed in range(12):
        msg = chat.bind_tools([Weather]).invoke([HumanMessage("Weather in Paris?")], seed=seed)
        if msg.content:
            replies += 1
            assert not msg.content.startswith(REPLY_OPENERS), repr(msg.content)
    assert replies  # the random model replies sometimes (else this test shows nothing)


def test_after_tool_results_a_reply_is_written_as_a_plain_text_turn(lm):
    """An auto turn after tool results that replies in the JSON envelope is answered again as
    a plain-text turn; the envelope's reply is kept in the metadata and its tokens counted."""
    chat = ChatDeAL(model=lm, max_tokens=24, max_tool_rounds=1)
    msg = chat.bind_tools([Weather]).invoke(_after_tool())
    assert not msg.tool_calls and msg.content and not msg.content.startswith(REPLY_OPENERS)
    plain = chat.invoke(_after_tool())  # the same conversation without tools
    assert msg.content == plain.content
    streamed = "".join(c.content for c in chat.bind_tools([Weather]).stream(_after_tool()))
    assert streamed == msg.content


def test_the_conversation_shows_tool_calls_in_words_in_a_plain_turn(lm):
    # what the model reads: no JSON envelope it could copy into its reply
    chat = ChatDeAL(model=lm)
    text = chat.get_num_tokens_from_messages(_after_tool())
    assert text > 0
    call = chat._call(_after_tool(), None, {})
    shown = [m["content"] for m in call.request.messages]
    assert 'I called Weather(city="Paris").' in shown and not any(s.startswith("{") for s in shown)


def test_structured_output_cut_by_the_budget_names_the_budget(lm):
    chat = ChatDeAL(model=lm, max_tokens=30)
    with pytest.raises(OutputParserException, match=r"cut by the token budget after \d+ tokens.*raise max_tokens"):
        chat.with_structured_output(Note).invoke("A note, please.")
    out = chat.with_structured_output(Note, include_raw=True).invoke("A note, please.")
    raw = out["raw"]
    assert out["parsed"] is None and raw.response_metadata["finish_reason"] == "length"
    # the closing pressure closed it in time: it parses, and still is not passed off as whole
    json.loads(raw.content)
    assert raw.response_metadata["closed_by"] == "budget"


def test_a_tool_call_whose_argument_a_limit_closed_is_invalid(lm):
    msg = ChatDeAL(model=lm, max_tokens=60).bind_tools([Weather], tool_choice="any").invoke("Weather?")
    assert not msg.tool_calls
    [bad] = msg.invalid_tool_calls
    assert bad["name"] == "Weather" and "raise max_tokens" in bad["error"]
    assert msg.response_metadata["finish_reason"] == "length"


def test_a_string_closed_by_the_mask_cap_is_named_with_the_knob():
    from deal_chains.jsonkit.schema_rewrite import STRING_CAP
    from deal_chains.langchain.structured import cut_reason

    why = cut_reason({"finish_reason": "length", "closed_by": "string_cap"}, "the structured output")
    assert f"{STRING_CAP}-character cap" in why and "maxLength" in why and "max_tokens" not in why
    why = cut_reason({"finish_reason": "length", "stats": {"new_tokens": 7}}, "the tool call")
    assert "after 7 tokens" in why and "unfinished" in why and "raise max_tokens" in why


def test_a_value_the_schema_closes_is_whole(lm):
    class Short(BaseModel):
        city: str = Field(max_length=6)
        legs: int = Field(ge=0, le=9)

    raw = ChatDeAL(model=lm, max_tokens=200).with_structured_output(Short, include_raw=True).invoke("x")
    assert raw["parsing_error"] is None and isinstance(raw["parsed"], Short)
    assert raw["raw"].response_metadata["finish_reason"] == "stop"


def test_the_default_budget_is_sized_from_the_schema(lm):
    class Address(BaseModel):
        street: str
        city: str

    class Person(BaseModel):
        name: str
        age: int
        address: Address
        hobbies: list[str]

    chat = ChatDeAL(model=lm)
    structured = {"response_format": {"type": "json_schema", "json_schema": {"name": "P", "schema":
                                                                             Person.model_json_schema()}}}
    sized = chat._call([HumanMessage("x")], None, structured).request.config.max_new_tokens
    assert sized > 48 * 2  # well above the plain default
    assert chat._call([HumanMessage("x")], None, {}).request.config.max_new_tokens == 48
    # a budget the caller sets is kept as given
    assert ChatDeAL(model=lm, max_tokens=40)._call([HumanMessage("x")], None, structured) \
        .request.config.max_new_tokens == 40
    assert chat._call([HumanMessage("x")], None, {**structured, "max_tokens": 30}).request.config.max_new_tokens == 30
    tools = chat._call([HumanMessage("x")], None, {"tools": [Person], "tool_choice": "any"})
    assert tools.request.config.max_new_tokens > 48 * 2


def test_the_guard_never_keeps_an_answer_the_budget_cut(lm):
    spec = "rewards: [{keywords: {words: [sunny]}}]"
    cut = AIMessage("It is sunny and", response_metadata={"finish_reason": "length"})
    state = {"messages": _after_tool() + [cut]}
    guard = guard_final_answer(ChatDeAL(model=lm, max_tokens=8), spec=spec, threshold=0.5)
    final = guard.invoke(state)["messages"][-1]
    assert final.response_metadata["guard"]["action"] == "regenerated"
    assert not final.content.startswith(REPLY_OPENERS)
    whole = AIMessage("It is sunny.", response_metadata={"finish_reason": "stop"})
    kept = guard.invoke({"messages": _after_tool() + [whole]})["messages"][-1]
    assert kept.response_metadata["guard"]["action"] == "kept"
