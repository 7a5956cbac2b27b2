"""The spec document (deal_chains.spec.document): few-shot examples."""

from __future__ import annotations

import pytest

from deal_chains.errors import SpecError
from deal_chains.spec import load_spec

BASE = """\
prompt: "Write one sentence with: {concepts}."
rewards:
  - keywords: {words: "{concepts}"}
"""


def test_examples_become_chat_turns_before_the_request():
    spec = load_spec(BASE + """\
examples:
  - input: {concepts: [oven, bake]}
    output: She bakes bread in the oven.
  - input: {concepts: [letter, quiet]}
    output: He wrote a letter in the quiet room.
""")
    turns = spec.example_turns()
    assert turns == [
        {"role": "user", "content": "Write one sentence with: oven, bake."},
        {"role": "assistant", "content": "She bakes bread in the oven."},
        {"role": "user", "content": "Write one sentence with: letter, quiet."},
        {"role": "assistant", "content": "He wrote a letter in the quiet room."},
    ]
    assert spec.with_examples("Write one sentence with: dog.") == [
        *turns, {"role": "user", "content": "Write one sentence with: dog."}]
    # without examples the request stays a plain string
    assert load_spec(BASE).with_examples("hi") == "hi"


def test_an_example_without_a_prompt_variable_is_named_with_its_place():
    with pytest.raises(SpecError) as info:
        load_spec(BASE + """\
examples:
  - input: {concepts: [oven]}
    output: An oven.
  - input: {concept: [letter]}
    output: A letter.
""")
    msg = str(info.value)
    assert "examples.1.input" in msg and "{concepts} is not set" in msg and "did you mean {concept}" in msg
    assert "examples.0" not in msg


def test_examples_need_a_prompt_and_a_real_output():
    with pytest.raises(SpecError) as info:
        load_spec("rewards: [{length: {max_words: 9}}]\nexamples: [{input: {}, output: Hi.}]\n")
    assert "add `prompt:`" in str(info.value)
    for output, words in (('" "', "must not be blank"), ('"Use {concepts}."', "placeholder {concepts}")):
        with pytest.raises(SpecError) as info:
            load_spec(BASE + f"examples: [{{input: {{concepts: [a]}}, output: {output}}}]\n")
        assert words in str(info.value) and "examples" in str(info.value)
    with pytest.raises(SpecError) as info:
        load_spec(BASE + "examples: [{input: {concepts: [a]}, output: Hi., answer: no}]\n")
    assert "answer" in str(info.value)


def test_a_spec_extending_the_commongen_preset_keeps_its_examples_unless_it_sets_its_own():
    base = load_spec("preset: commongen\n")
    assert base.examples and all(e.input.get("concepts") for e in base.examples)
    own = load_spec("preset: commongen\nexamples: [{input: {concepts: [a, b]}, output: A and b.}]\n")
    assert [e.output for e in own.examples] == ["A and b."]
