"""The DSPy adapter: lazy import, and a dspy.Predict program on the default model."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest
import torch

from deal_chains import SpecError


def test_missing_dspy_is_a_clear_import_error(monkeypatch):
    import deal_chains.dspy as mod

    monkeypatch.setattr(mod, "_CLASS", None)
    monkeypatch.setitem(sys.modules, "dspy", None)  # `import dspy` now fails
    with pytest.raises(ImportError, match=r"pip install 'deal-chains\[dspy\]'"):
        mod.DeALLM  # noqa: B018
    # importing deal_chains (or deal_chains.dspy itself) never imports dspy
    importlib.reload(mod)


def test_bad_spec_fails_at_construction(tiny_model_dir):
    pytest.importorskip("dspy")
    from deal_chains.dspy import DeALLM

    with pytest.raises(SpecError, match="search.beam"):
        DeALLM(str(tiny_model_dir), spec="rewards: [{length: {max_words: 5}}]\nsearch: {beam: 0}")


@pytest.mark.integration
def test_dspy_predict_runs_with_the_spec_rewards(default_lm):
    dspy = pytest.importorskip("dspy")
    from deal_chains.dspy import DeALLM
    from rewards import KeywordCoverage

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    # a set greedy decoding does not fully cover through DSPy's JSON prompt
    concepts = ["river", "boat", "paddle"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # DSPy 3.4 deprecates BaseLM.forward
            lm = DeALLM(default_lm, spec="commongen", max_tokens=40)
            with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
                write = dspy.Predict("concepts: list[str] -> sentence: str")
                out = write(concepts=concepts, config={"reward_vars": {"concepts": concepts}})
            greedy = DeALLM(default_lm, spec="commongen", max_tokens=40, strategy="greedy")
            with dspy.context(lm=greedy, adapter=dspy.JSONAdapter()):
                baseline = write(concepts=concepts, config={"reward_vars": {"concepts": concepts}})
    finally:
        torch.set_num_threads(before)
    assert isinstance(out.sentence, str) and out.sentence
    deal = lm.history[-1]["response"].deal[0]
    assert deal["strategy"] == "deal" and set(deal["rewards"]) == {"keywords"}
    # the output field covers every concept (the search's reward, recomputed on the
    # parsed field) where greedy decoding under the same prompt does not
    kw = KeywordCoverage(concepts)
    assert kw.score([baseline.sentence], None)[0] < 1.0, baseline.sentence
    assert kw.score([out.sentence], None)[0] == 1.0, out.sentence
    assert deal["rewards"]["keywords"] == 1.0


# --------------------------------------------------------------------- ChatAdapter's format
# DSPy's default adapter (ChatAdapter) asks for [[ ## field ## ]] sections; DeALLM enforces
# them by grammar, so one predict is one LM call and every field parses, even from a model
# with random weights.

@pytest.fixture(scope="module")
def chat_tiny_lm(tmp_path_factory):
    """The tiny random model with room for DSPy's prompts (a character-level tokenizer:
    ChatAdapter's system message alone is ~1,000 tokens)."""
    from deal_chains.models import load_model
    from tiny import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny-long"), context=4096)
    return load_model(str(path), device="cpu", dtype="float32")


@pytest.fixture
def dspy_quiet():
    dspy = pytest.importorskip("dspy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # DSPy 3.4 deprecates BaseLM.forward
        yield dspy


def _typed_signature(dspy):
    from typing import Literal

    import pydantic

    class Person(pydantic.BaseModel):
        name: str
        age: int

    # fields given as (type, field) pairs: this module's annotations are strings
    fields = {"question": (str, dspy.InputField()), "count": (int, dspy.OutputField()),
              "score": (float, dspy.OutputField()), "flag": (bool, dspy.OutputField()),
              "mood": (Literal["happy", "sad", "so-so"], dspy.OutputField()),
              "tags": (list[str], dspy.OutputField()), "person": (Person, dspy.OutputField()),
              "answer": (str, dspy.OutputField())}
    Typed = dspy.Signature(fields, "Describe the question.")

    return Typed, Person


def _assert_typed(out, Person):
    assert isinstance(out.count, int) and not isinstance(out.count, bool)
    assert isinstance(out.score, float)
    assert isinstance(out.flag, bool)
    assert out.mood in ("happy", "sad", "so-so")
    assert isinstance(out.tags, list) and all(isinstance(t, str) for t in out.tags)
    assert isinstance(out.person, Person)
    assert isinstance(out.answer, str) and out.answer and out.answer == out.answer.strip()
    assert out.answer != "{answer}" and "[[ ##" not in out.answer


@pytest.mark.parametrize("strategy", ["greedy", "deal"])
def test_chat_adapter_typed_outputs_parse_in_one_call(chat_tiny_lm, dspy_quiet, strategy):
    dspy = dspy_quiet
    from deal_chains.dspy import DeALLM

    Typed, Person = _typed_signature(dspy)
    lm = DeALLM(chat_tiny_lm, strategy=strategy, max_tokens=700, max_text_chars=12,
                **({"top_k": 2, "lookahead": 2} if strategy == "deal" else {}))
    with dspy.context(lm=lm):  # no adapter: DSPy's default ChatAdapter
        out = dspy.Predict(Typed)(question="What is up?")
    assert len(lm.history) == 1  # no second call: ChatAdapter's parse did not fail over to JSON
    response = lm.history[0]["response"]
    text = response.choices[0].message.content
    assert text.startswith("[[ ## count ## ]]\n") and text.rstrip().endswith("[[ ## completed ## ]]")
    assert response.choices[0].finish_reason == "stop" and response.deal[0]["format"] == "chat_adapter"
    _assert_typed(out, Person)
    # the answer is the section's text as written (no whitespace or marker trimmed from it)
    assert f"[[ ## answer ## ]]\n{out.answer}\n\n[[ ## completed ## ]]" in text
    assert len(out.answer) <= 12


def test_chain_of_thought_is_one_call(chat_tiny_lm, dspy_quiet):
    dspy = dspy_quiet
    from deal_chains.dspy import DeALLM

    lm = DeALLM(chat_tiny_lm, strategy="greedy", max_tokens=200, max_text_chars=20)
    with dspy.context(lm=lm):
        out = dspy.ChainOfThought("question -> answer: int")(question="What is 2 + 2?")
    assert len(lm.history) == 1
    assert isinstance(out.reasoning, str) and out.reasoning and isinstance(out.answer, int)
    assert lm.history[0]["response"].choices[0].message.content.startswith("[[ ## reasoning ## ]]\n")


def test_json_adapter_is_one_call_with_typed_fields(chat_tiny_lm, dspy_quiet):
    dspy = dspy_quiet
    from deal_chains.dspy import DeALLM

    Typed, Person = _typed_signature(dspy)
    lm = DeALLM(chat_tiny_lm, strategy="greedy", max_tokens=700)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        out = dspy.Predict(Typed)(question="What is up?")
    assert len(lm.history) == 1
    assert lm.history[0]["response"].deal[0]["format"] == "json"
    _assert_typed(out, Person)


def test_json_adapter_budget_is_sized_from_the_schema_unless_given(chat_tiny_lm, dspy_quiet):
    dspy = dspy_quiet
    import pydantic

    from deal_chains.dspy import DeALLM

    class Item(pydantic.BaseModel):
        title: str
        tags: list[str]
        notes: list[str]
        owner: dict[str, str]

    fmt = {"type": "json_schema", "json_schema": {"name": "Item", "schema": Item.model_json_schema()}}
    msgs = [{"role": "user", "content": "Describe an item."}]
    [sized] = DeALLM(chat_tiny_lm, strategy="greedy")._requests(None, msgs, {"response_format": fmt})
    assert sized.config.max_new_tokens > 48  # the default budget would cut a typical answer
    [given] = DeALLM(chat_tiny_lm, strategy="greedy", max_tokens=40)._requests(None, msgs, {"response_format": fmt})
    assert given.config.max_new_tokens == 40  # a budget the user set is kept
    [plain] = DeALLM(chat_tiny_lm, strategy="greedy")._requests(None, msgs, {})
    assert plain.config.max_new_tokens == 48


@pytest.mark.parametrize("answer, ok", [
    ('{"sentence":"A boat on the river.","n":3}', True),
    # a sentence longer than the 32 characters a date or an id gets
    ('{"sentence":"In the morning the old man took his boat down the quiet river.","n":3}', True),
    ('{"sentence":"{river} boat paddle","n":3}', False),  # the prompt's template, wrapped round a value
    ('{"sentence":"{sentence}","n":3}', False),  # DSPy's placeholder as the answer
    ('{"sentence":" A boat.","n":3}', False),  # nor leading whitespace
    ('{"sentence":"A boat.","n":3,"code":"{x}"}', True),  # a field with its own pattern is left alone
])
def test_json_adapter_text_fields_never_open_with_the_template(chat_tiny_lm, dspy_quiet, answer, ok):
    from deal_chains.dspy import DeALLM

    schema = {"type": "object", "additionalProperties": False, "required": ["sentence", "n"],
              "properties": {"sentence": {"type": "string"}, "n": {"type": "integer"},
                             "code": {"type": "string", "pattern": "^[{]"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "Out", "schema": schema}}
    # compact JSON: the mask writes no whitespace between tokens
    [request] = DeALLM(chat_tiny_lm, strategy="greedy")._requests(
        None, [{"role": "user", "content": "Write."}], {"response_format": fmt})
    state = request.constraint.compile(chat_tiny_lm).new_state()
    ids = chat_tiny_lm.tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert (state.try_consume_tokens(ids) == len(ids) and state.is_accepting()) is ok


def test_a_cut_chat_answer_reports_length(chat_tiny_lm, dspy_quiet):
    dspy = dspy_quiet
    from deal_chains.dspy import DeALLM

    lm = DeALLM(chat_tiny_lm, strategy="greedy", max_tokens=6)
    with dspy.context(lm=lm), pytest.raises(Exception):  # no format fits in 6 tokens
        dspy.Predict("question -> answer")(question="Hi?")
    first = lm.history[0]["response"]
    assert first.deal[0]["format"] == "chat_adapter"
    assert first.choices[0].finish_reason == "length"  # the budget cut it: not hidden
    assert first.choices[0].message.content == "[[ ## "  # 6 tokens of the forced header


def test_other_adapters_and_plain_calls_are_not_constrained(chat_tiny_lm, dspy_quiet):
    dspy = dspy_quiet
    from deal_chains.dspy import DeALLM

    lm = DeALLM(chat_tiny_lm, strategy="greedy", max_tokens=4)
    lm("Say hi.")
    assert lm.history[-1]["response"].deal[0]["format"] is None
    with dspy.context(lm=lm, adapter=dspy.XMLAdapter()), pytest.raises(Exception):
        dspy.Predict("question -> answer")(question="Hi?")
    assert lm.history[1]["response"].deal[0]["format"] is None


def test_chat_output_fields_recognise_chat_adapter_requests_only(dspy_quiet):
    dspy = dspy_quiet
    from deal_chains.dspy_formats import chat_output_fields

    Typed, _ = _typed_signature(dspy)
    predict = dspy.Predict(Typed)
    inputs = {"question": "Why?"}
    chat = dspy.ChatAdapter().format(signature=Typed, demos=[], inputs=inputs)
    with dspy.context(caller_modules=[predict]):
        fields, input_names = chat_output_fields(chat)
        assert input_names == ["question"]
        assert [(f.name, f.kind) for f in fields] == [
            ("count", "int"), ("score", "float"), ("flag", "bool"), ("mood", "choice"), ("tags", "json"),
            ("person", "json"), ("answer", "text")]
        assert fields[3].options == ("happy", "sad", "so-so")
        assert fields[5].schema["required"] == ["name", "age"]
        # another adapter's request, an edited system message, a different signature
        assert chat_output_fields(dspy.XMLAdapter().format(signature=Typed, demos=[], inputs=inputs)) is None
        edited = [{**chat[0], "content": chat[0]["content"] + " Be brief."}, *chat[1:]]
        assert chat_output_fields(edited) is None
        other = dspy.ChatAdapter().format(signature=dspy.Signature("question -> answer"), demos=[], inputs=inputs)
        assert chat_output_fields(other) is None
    assert chat_output_fields(chat) is None  # no DSPy module being called


@pytest.mark.parametrize("text, ok", [
    ("[[ ## n ## ]]\n-12\n\n[[ ## ok ## ]]\nTrue\n\n[[ ## mood ## ]]\nso-so\n\n[[ ## tags ## ]]\n[\"a\",\"b\"]\n\n"
     "[[ ## answer ## ]]\nLine one.\n\nLine [2]\n\n[[ ## completed ## ]]\n", True),
    ("[[ ## n ## ]]\n-12\n\n[[ ## ok ## ]]\ntrue\n\n", False),  # ChatAdapter's bool is True/False
    ("[[ ## n ## ]]\n1.5\n\n", False),
    ("[[ ## n ## ]]\n1\n\n[[ ## ok ## ]]\nTrue\n\n[[ ## mood ## ]]\nfine\n\n", False),
    ("[[ ## n ## ]]\n1\n\n[[ ## ok ## ]]\nTrue\n\n[[ ## mood ## ]]\nsad\n\n[[ ## tags ## ]]\n[1]\n\n", False),
    ("[[ ## n ## ]]\n1\n\n[[ ## ok ## ]]\nTrue\n\n[[ ## mood ## ]]\nsad\n\n[[ ## tags ## ]]\n[]\n\n"
     "[[ ## answer ## ]]\n{answer}\n\n", False),  # the prompt's placeholder is no value
    ("[[ ## n ## ]]\n1\n\n[[ ## ok ## ]]\nTrue\n\n[[ ## mood ## ]]\nsad\n\n[[ ## tags ## ]]\n[]\n\n"
     "[[ ## answer ## ]]\n see\n\n", False),  # no leading whitespace
    ("[[ ## n ## ]]\n1\n\n[[ ## ok ## ]]\nTrue\n\n[[ ## mood ## ]]\nsad\n\n[[ ## tags ## ]]\n[]\n\n"
     "[[ ## answer ## ]]\nsee [[ ## x ## ]]\n\n", False),  # no marker inside a value
    ("[[ ## n ## ]]\n1\n\n[[ ## ok ## ]]\nTrue\n\n[[ ## mood ## ]]\nsad\n\n[[ ## tags ## ]]\n[]\n\n"
     "[[ ## answer ## ]]\nsee\n\n[[## completed ## ]]\n\n", False),  # nor a near miss
    ("[[ ## n ## ]]\n1\n\n[[ ## ok ## ]]\nTrue\n\n[[ ## mood ## ]]\nsad\n\n[[ ## tags ## ]]\n[]\n\n"
     "[[ ## answer ## ]]\n{answer} is\n\n", False),  # nor a field's placeholder
    ("[[ ## n ## ]]\n1\n\n[[ ## ok ## ]]\nTrue\n\n[[ ## mood ## ]]\nsad\n\n[[ ## tags ## ]]\n[]\n\n"
     "[[ ## answer ## ]]\nIt is {q, a}\n\n", False),  # an input's either
    *[("[[ ## n ## ]]\n1\n\n[[ ## ok ## ]]\nTrue\n\n[[ ## mood ## ]]\nsad\n\n[[ ## tags ## ]]\n[]\n\n"
       f"[[ ## answer ## ]]\n{value}\n\n[[ ## completed ## ]]\n", ok) for value, ok in [
        ("[answer]\n\n[answer]", False), ("[## answer]", False), ("[#]", False),  # what the default
        ("# fruit that is yellow.", False), ("Paris.\n[answer]", False),          # model copied
        ("Paris.\n\n## answer:", False), ("Paris.\n[## completed ## ]", False), ("Paris.\n\n[# done", False), ("\"Hamlet\", by Shakespeare.", True), ("42 is the answer.", True),
        ("Élan, then [answer]s.", True), ("(Yes.)", True)]],
])
def test_chat_grammar_accepts_what_chat_adapter_parses(tiny_lm, text, ok):
    from typing import Literal

    from deal_chains.dspy_formats import chat_format, field_of

    fields = [field_of("n", int), field_of("ok", bool), field_of("mood", Literal["happy", "sad", "so-so"]),
              field_of("tags", list[str]), field_of("answer", str)]
    compiled = chat_format(fields, input_names=["q"]).constraint().compile(tiny_lm)
    state = compiled.new_state()
    ids = tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    consumed = state.try_consume_tokens(ids)
    assert (consumed == len(ids) and state.is_accepting()) is ok
    if ok:
        dspy = pytest.importorskip("dspy")
        sig = dspy.Signature({"q": (str, dspy.InputField()), **{
            name: (t, dspy.OutputField()) for name, t in
            [("n", int), ("ok", bool), ("mood", Literal["happy", "sad", "so-so"]), ("tags", list[str]),
             ("answer", str)]}})
        parsed = dspy.ChatAdapter().parse(sig, text)
        assert parsed["answer"] == text.split("[[ ## answer ## ]]\n")[1].split("\n\n[[ ## completed")[0]
        if "so-so" in text:
            assert parsed == {"n": -12, "ok": True, "mood": "so-so", "tags": ["a", "b"],
                              "answer": "Line one.\n\nLine [2]"}


def test_rewards_score_the_field_values():
    from deal_chains.dspy_formats import values_of

    text = "[[ ## reasoning ## ]]\nBecause.\n\n[[ ## who ## ]]\n{\"name\":\"Al\"}\n\n[[ ## completed ## ]]\n"
    assert values_of(text, json_fields=["who"]) == "Because.\n\nAl"
    assert values_of(text[:35]) == "Because."  # "[[ ## who" being written is no value yet
    assert values_of("[[ ## answer ## ]]\nPar") == "Par"


def test_bad_text_cap_fails_at_construction(tiny_model_dir):
    pytest.importorskip("dspy")
    from deal_chains import ConfigError
    from deal_chains.dspy import DeALLM

    for bad in (0, 401, "12"):
        with pytest.raises(ConfigError, match="max_text_chars"):
            DeALLM(str(tiny_model_dir), max_text_chars=bad)


@pytest.mark.integration
def test_default_adapter_predict_is_one_call_on_the_default_model(default_lm, dspy_quiet):
    dspy = dspy_quiet
    from deal_chains.dspy import DeALLM

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        lm = DeALLM(default_lm, max_tokens=40)
        with dspy.context(lm=lm):
            out = dspy.Predict("question -> answer")(question="What is the capital of France?")
    finally:
        torch.set_num_threads(before)
    assert len(lm.history) == 1
    assert lm.history[0]["response"].deal[0]["format"] == "chat_adapter"
    # the grammar keeps the template out of the answer: it starts with no placeholder and is
    # not the bare field name (what SmolLM2-135M copies from ChatAdapter's prompt otherwise)
    answer = out.answer
    assert answer and answer == answer.strip() and "[[" not in answer, answer
    assert "{answer" not in answer and "{question" not in answer, answer
    # it opens as a sentence does (the model's first choice was "[answer]" or "[## answer]")
    assert answer[0].isalnum(), answer
    assert all(line.strip("[]{}()<># ") != "answer" for line in answer.splitlines()), answer


def test_async_predict_is_recognised_too(chat_tiny_lm, dspy_quiet):
    import asyncio

    dspy = dspy_quiet
    from deal_chains.dspy import DeALLM

    lm = DeALLM(chat_tiny_lm, strategy="greedy", max_tokens=120)  # an int: up to 18 digits
    with dspy.context(lm=lm):
        out = asyncio.run(dspy.Predict("question -> answer: int").acall(question="2 + 2?"))
    assert len(lm.history) == 1 and lm.history[0]["response"].deal[0]["format"] == "chat_adapter"
    assert isinstance(out.answer, int)


def test_the_specs_examples_stay_out_of_dspy_requests(chat_tiny_lm, dspy_quiet):
    # a spec's examples are written for its own prompt; a DSPy program's demos, in its
    # adapter's format, are what DSPy shows the model
    from deal_chains.dspy import DeALLM

    spec = 'prompt: "Use {w}."\nexamples: [{input: {w: a}, output: "A."}]\nrewards: [{length: {max_words: 9}}]\n'
    msgs = [{"role": "user", "content": "Hi"}]
    [request] = DeALLM(chat_tiny_lm, spec=spec, strategy="greedy")._requests(None, msgs, {})
    assert request.messages == msgs
