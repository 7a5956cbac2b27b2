"""The one generate pipeline (deal_chains.pipeline) behind ``deal-chains generate``,
``generate_records`` and the Ray workers: checks before the model loads, batches, output records."""

from __future__ import annotations

import json

import pytest

from deal_chains.cli import main
from deal_chains.errors import ConfigError, InputError
from deal_chains.pipeline import check_records, load_generate_spec, records_to_generate, run_records
from deal_chains.records import LINE_KEY, jsonl_line
from deal_chains.spec import load_spec

SPEC = """\
search: {strategy: deal, top_k: 2, beam: 1, lookahead: 2, max_new_tokens: 6}
prompt: "Use these words: {concepts}."
rewards:
  - keywords: {words: "{concept}"}
"""


def _no_model(monkeypatch):
    import deal_chains.search.engine as engine_mod

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the records were checked")

    monkeypatch.setattr(engine_mod, "DeALEngine", boom)


def test_a_missing_template_variable_fails_before_the_model_loads(tmp_path, capsys, monkeypatch):
    _no_model(monkeypatch)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"concepts": ["dog", "cat"]}) + "\n", encoding="utf-8")
    rc = main(["generate", "--spec", str(spec), "--input", str(inp), "--output", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{inp}:1" in err and "{concept} is not set" in err and "did you mean {concepts}" in err
    assert not (tmp_path / "out.jsonl").exists()

    from deal_chains import generate_records

    with pytest.raises(InputError, match=r"records\[0\]: template variable \{concept\}.*did you mean"):
        generate_records(SPEC, [{"concepts": ["dog"]}])


def test_load_generate_spec_takes_every_spec_form_and_search_settings():
    spec, config = load_generate_spec(SPEC.replace("{concept}", "{concepts}"), ["search.top_k=3"],
                                      strategy="greedy", search={"max_new_tokens": 5})
    assert (config.top_k, config.strategy, config.max_new_tokens) == (3, "greedy", 5)
    same, _ = load_generate_spec(spec)
    assert same is spec
    with pytest.raises(InputError, match="overrides need a spec source"):
        load_generate_spec(spec, ["search.top_k=3"])


def test_run_records_yields_output_records_for_every_input(tiny_lm):
    from deal_chains import DeALEngine

    spec, config = load_generate_spec(SPEC.replace("{concept}", "{concepts}"))
    records = [{"concepts": ["a", "b"], LINE_KEY: 1}, {"prompt": "hello", "concepts": ["x"], LINE_KEY: 2}]
    check_records(spec, records, lambda r: f"in:{r[LINE_KEY]}")
    steps: list[int] = []
    out = dict(run_records(DeALEngine(tiny_lm), spec, config, records, locate=lambda r: f"in:{r[LINE_KEY]}",
                           batch_size=1, on_step=lambda: steps.append(1)))
    assert sorted(out) == [0, 1] and steps
    assert out[1]["prompt"] == "hello" and out[1]["input_line"] == 2
    assert set(out[0]["rewards"]) == {"keywords"} and out[0]["stats"]["fingerprint"]


def test_search_returns_lists_the_alternatives_in_each_record(tiny_lm):
    from deal_chains import DeALEngine

    spec, config = load_generate_spec(SPEC.replace("{concept}", "{concepts}"), ["search.returns=2"])
    records = [{"prompt": "hello", "concepts": ["x"], LINE_KEY: 1}]
    [(_, out)] = run_records(DeALEngine(tiny_lm), spec, config, records, locate=lambda r: "in")
    [alt] = out["alternatives"]
    assert alt["text"] != out["text"] and set(alt["rewards"]) == {"keywords"} and alt["finish_reason"]
    json.loads(jsonl_line(out))


def test_a_bad_prompt_is_named_with_its_place(tiny_lm):
    spec = load_spec("rewards: [{length: {max_words: 5}}]")
    with pytest.raises(InputError, match="in:7: field 'prompt' must be a non-empty string"):
        check_records(spec, [{"prompt": "  ", LINE_KEY: 7}], lambda r: f"in:{r[LINE_KEY]}")


def test_spec_validate_checks_input_records_without_a_model(tmp_path, capsys, monkeypatch):
    _no_model(monkeypatch)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"prompt": "hi", "concepts": ["cat"]}) + "\n", encoding="utf-8")
    assert main(["spec", "validate", str(spec), "--input", str(inp)]) == 1
    err = capsys.readouterr().err
    assert f"{inp}:1" in err and "{concept} is not set" in err and "did you mean {concepts}" in err
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"concept": "dog", "concepts": ["dog"]}) + "\n", encoding="utf-8")
    assert main(["spec", "validate", str(spec), "--input", str(good)]) == 0
    assert "1 input records fit its templates" in capsys.readouterr().out


def _two_records():
    spec, config = load_generate_spec(SPEC.replace("{concept}", "{concepts}"))
    return spec, config, [{"concepts": ["a", "b"], LINE_KEY: 1}, {"concepts": ["c"], LINE_KEY: 2}]


def _locate(rec):
    return f"in:{rec[LINE_KEY]}"


def test_resume_generates_only_the_records_not_yet_written(tiny_lm, tmp_path):
    from deal_chains import DeALEngine

    spec, config, records = _two_records()
    out = tmp_path / "out.jsonl"
    [(_, first)] = list(run_records(DeALEngine(tiny_lm), spec, config, records[:1], locate=_locate))
    # the first record finished, the second was cut short by a crash mid-line
    out.write_text(jsonl_line(first) + '{"concepts": ["c"], "te', encoding="utf-8")
    fingerprint = first["stats"]["fingerprint"]
    kw = dict(result_field=None, fingerprint=fingerprint, strategy=config.strategy)
    todo = records_to_generate(out, records, resume=True, **kw)
    assert todo == records[1:]
    assert out.read_text(encoding="utf-8") == jsonl_line(first)  # the cut line is gone
    assert records_to_generate(out, records, resume=False, **kw) == records
    other = dict(kw, fingerprint={**fingerprint, "search": "0" * len(fingerprint["search"])})
    with pytest.raises(InputError, match="written with"):
        records_to_generate(out, records, resume=True, **other)


def test_progress_bar_only_when_asked(tiny_lm, capsys):
    from deal_chains import DeALEngine

    spec, config, records = _two_records()
    engine = DeALEngine(tiny_lm)
    list(run_records(engine, spec, config, records, locate=_locate, batch_size=1))
    assert capsys.readouterr().err == ""
    list(run_records(engine, spec, config, records, locate=_locate, batch_size=1, progress=True))
    err = capsys.readouterr().err
    assert "deal" in err and "prompt" in err


def test_the_search_budget_is_checked_for_every_record_before_the_first_step(tiny_lm):
    from deal_chains import DeALEngine
    from deal_chains.search.limits import SearchLimits

    spec, config, records = _two_records()
    records[1]["concepts"] = ["word"] * 8  # only the second batch's prompt is too long
    engine = DeALEngine(tiny_lm, limits=SearchLimits(max_prompt_tokens=60))
    steps: list[int] = []
    with pytest.raises(ConfigError, match="over the limit 60"):
        next(run_records(engine, spec, config, records, locate=_locate, batch_size=1,
                         on_step=lambda: steps.append(1)))
    assert steps == []  # no search step ran: a caller's output was never opened


def test_the_specs_examples_come_before_every_records_request(tiny_lm):
    from deal_chains import DeALEngine
    from deal_chains.search.config import SearchConfig

    examples = 'examples: [{input: {concepts: [oven, bake]}, output: "I bake in the oven."}]\n'
    spec, config = load_generate_spec(SPEC.replace("{concept}", "{concepts}") + examples,
                                      search={"strategy": "greedy"})
    records = [{"concepts": ["a", "b"], LINE_KEY: 1}, {"prompt": "hello", "concepts": ["x"], LINE_KEY: 2}]
    engine = DeALEngine(tiny_lm)
    out = dict(run_records(engine, spec, config, records, locate=lambda r: f"in:{r[LINE_KEY]}"))
    turns = [{"role": "user", "content": "Use these words: oven, bake."},
             {"role": "assistant", "content": "I bake in the oven."}]
    direct = engine.generate([[*turns, {"role": "user", "content": "Use these words: a, b."}],
                              [*turns, {"role": "user", "content": "hello"}]], None,
                             SearchConfig(strategy="greedy", max_new_tokens=6))
    assert [out[0]["text"], out[1]["text"]] == [r.text for r in direct]
    # the record keeps its own request as its prompt, not the examples
    assert out[1]["prompt"] == "hello"
    plain = engine.generate(["Use these words: a, b.", "hello"], None, SearchConfig(strategy="greedy", max_new_tokens=6))
    assert [r.token_ids for r in direct] != [r.token_ids for r in plain]
