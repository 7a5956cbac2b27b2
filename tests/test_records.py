"""Records in and out (deal_chains.records) without a model: the JSONL reader's refusals,
the writer's always-valid lines, field collisions, output-path checks, resume state and
the settings fingerprint."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from deal_chains.errors import InputError
from deal_chains.records import (
    check_field_names,
    check_output_path,
    jsonl_line,
    output_record,
    read_jsonl,
    resume_state,
    settings_fingerprint,
)

GOOD = '{"prompt": "Say hi.", "id": 1}'


def strict_loads(line: str):
    """json.loads that refuses what is not JSON (NaN, Infinity)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def fake_result(**over):
    stats = SimpleNamespace(seconds=0.5, new_tokens=3, forward_passes=4, candidates_scored=2, seed=None)
    fields = dict(text="hello", rewards={"keywords": 0.5}, reward=0.5, score=1.25, finished=True,
                  finish_reason="stop", strategy="deal", stats=stats)
    fields.update(over)
    return SimpleNamespace(**fields)


# ----------------------------------------------------------------------------- reading


def test_utf8_bom_at_the_start_is_dropped(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\n" + GOOD.encode() + b"\n")
    recs = read_jsonl(p)
    assert [sorted(k for k in r if k != "__line__") for r in recs] == [["id", "prompt"]] * 2
    assert [r["__line__"] for r in recs] == [1, 2]


@pytest.mark.parametrize("line, needles", [
    ('{"prompt": "hi", "x": NaN}', ["NaN", "not valid JSON"]),
    ('{"prompt": "hi", "x": Infinity}', ["Infinity"]),
    ('{"prompt": "hi", "x": [-Infinity]}', ["-Infinity"]),
    ('{"prompt": "hi", "x": 1e400}', ["1e400", "out of range"]),
    ('{"prompt": "hi", "x": 1' + "0" * 5000 + "}", ["5001 digits"]),
    ('{"prompt": "hi", "x": ' + "[" * 100000 + "]" * 100000 + "}", ["nested too deeply"]),
    ('{"prompt": "hi", "x": ' + "[" * 150 + "]" * 150 + "}", ["'x'", "nested more than 100"]),
    ('{"prompt": "hi \\ud800 there"}', ["'prompt'", "lone surrogate"]),
    ('{"prompt": "hi", "meta": {"notes": ["ok", "bad \\udc80"]}}', ["'meta.notes[1]'", "lone surrogate"]),
    ('{"prompt": "hi", "k\\ud800": 1}', ["field name", "lone surrogate"]),
    ('{"prompt": "hi", "id": 1, "id": 2}', ["'id'", "twice"]),
    ('{"prompt": "hi", "__line__": 3}', ["'__line__'", "reserved"]),
])
def test_bad_values_are_input_errors_naming_file_and_line(tmp_path, line, needles):
    p = tmp_path / "in.jsonl"
    p.write_text(GOOD + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        read_jsonl(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:2: "), msg
    for needle in needles:
        assert needle in msg, msg


def test_large_but_legal_values_are_read(tmp_path):
    p = tmp_path / "in.jsonl"
    rec = {"prompt": "hi", "n": int("9" * 4000), "deep": [[[[1.5e300]]]], "u": "caf\u00e9 \U0001F600"}
    p.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    [got] = read_jsonl(p)
    assert got["n"] == rec["n"] and got["deep"] == rec["deep"] and got["u"] == rec["u"]


# ----------------------------------------------------------------------------- writing


def test_jsonl_line_is_always_valid_json():
    rec = {"a": float("nan"), "b": [float("inf"), -float("inf")], "c": "x\ud800y", "d": "\u2028"}
    line = jsonl_line(rec)
    assert line.endswith("\n") and line.count("\n") == 1
    line.encode("utf-8")  # writable to a UTF-8 file
    back = strict_loads(line)
    assert back["a"] is None and back["b"] == [None, None] and back["d"] == "\u2028"


def test_output_record_nulls_non_finite_scores_and_says_so():
    rec = {"prompt": "p", "__line__": 4}
    out = output_record(rec, fake_result(rewards={"a": float("nan"), "b": 0.5}, reward=float("inf"),
                                         score=-float("inf")))
    assert out["rewards"] == {"a": None, "b": 0.5} and out["reward"] is None and out["score"] is None
    assert out["stats"]["non_finite"] == ["rewards.a", "reward", "score"]
    strict_loads(jsonl_line(out))
    clean = output_record(rec, fake_result())
    assert "non_finite" not in clean["stats"] and clean["input_line"] == 4


def test_output_record_lists_the_alternatives_of_search_returns():
    rec = {"prompt": "p", "__line__": 1}
    alt = fake_result(text="other", score=-float("inf"), finished=False, finish_reason="length")
    out = output_record(rec, fake_result(alternatives=[alt]))
    assert out["text"] == "hello"
    assert out["alternatives"] == [{"text": "other", "rewards": {"keywords": 0.5}, "reward": 0.5, "score": None,
                                    "finished": False, "finish_reason": "length"}]
    assert out["stats"]["non_finite"] == ["alternatives[0].score"]
    strict_loads(jsonl_line(out))
    assert "alternatives" not in output_record(rec, fake_result(alternatives=[]))
    assert "alternatives" not in output_record(rec, fake_result())


def test_output_record_nests_under_result_field():
    rec = {"text": "the source", "rewards": "kept", "__line__": 2}
    fp = {"spec": "s" * 16, "search": "t" * 16}
    out = output_record(rec, fake_result(), result_field="gen", fingerprint=fp)
    assert out["text"] == "the source" and out["rewards"] == "kept"
    assert set(out) == {"text", "rewards", "gen"}
    assert out["gen"]["input_line"] == 2 and out["gen"]["text"] == "hello"
    assert out["gen"]["stats"]["fingerprint"] == fp
    assert "input_line" not in output_record(rec, fake_result(), result_field="gen", line=False)["gen"]


def test_field_collisions_are_refused_unless_nested(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text(GOOD + "\n" + '{"text": "source", "score": 3}\n', encoding="utf-8")
    recs = read_jsonl(p)
    locate = lambda r: f"{p}:{r['__line__']}"  # noqa: E731
    with pytest.raises(InputError) as exc:
        check_field_names(recs, None, locate)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:2: ") and "'text'" in msg and "'score'" in msg and "--result-field" in msg
    check_field_names(recs, "gen", locate)  # nested: nothing collides
    with pytest.raises(InputError, match=rf"{p}:2: .*'text'"):
        check_field_names(recs, "text", locate)
    with pytest.raises(InputError, match="result field"):
        check_field_names(recs, "", locate)
    # the Python API writes no input_line: an input field of that name is fine there
    check_field_names([{"input_line": 5, "__line__": 0}], None, locate, with_line=False)
    with pytest.raises(InputError, match="'input_line'"):
        check_field_names([{"input_line": 5, "__line__": 1}], None, locate)


# ----------------------------------------------------------------------------- output paths


def test_output_path_checks(tmp_path, monkeypatch):
    inp = tmp_path / "in.jsonl"
    inp.write_text(GOOD + "\n", encoding="utf-8")
    before = inp.read_bytes()
    monkeypatch.chdir(tmp_path)
    for same in (inp, Path("in.jsonl"), Path("./sub/../in.jsonl")):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(InputError, match="is the input file"):
            check_output_path(same, [inp])
    link = tmp_path / "link.jsonl"
    link.symlink_to(inp)
    with pytest.raises(InputError, match="is the input file"):
        check_output_path(link, [Path("in.jsonl")])
    assert inp.read_bytes() == before
    with pytest.raises(InputError, match="is a directory"):
        check_output_path(tmp_path / "sub", [inp])
    with pytest.raises(InputError, match=r"in\.jsonl is a file, not a directory"):
        check_output_path(inp / "deeper" / "out.jsonl", [inp])
    made = check_output_path(tmp_path / "a" / "b" / "out.jsonl", [inp])
    assert made.parent.is_dir() and not made.exists(), "parents made, no output file left behind"
    # an existing output is checked for writing without a byte or its mtime changing
    old = tmp_path / "old.jsonl"
    old.write_text("keep me\n", encoding="utf-8")
    mtime = old.stat().st_mtime_ns
    check_output_path(old, [inp])
    assert old.read_text(encoding="utf-8") == "keep me\n" and old.stat().st_mtime_ns == mtime


@pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux's")
def test_unwritable_output_is_a_clear_error():
    with pytest.raises(InputError, match=r"cannot write the output /proc/deal-chains-x\.jsonl"):
        check_output_path("/proc/deal-chains-x.jsonl")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes everywhere")
def test_read_only_directory_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot write the output"):
            check_output_path(ro / "out.jsonl")
    finally:
        ro.chmod(0o700)


# ----------------------------------------------------------------------------- resume


def _inputs(tmp_path, records) -> list[dict]:
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return read_jsonl(p)


FP = {"spec": "a" * 16, "search": "b" * 16}


def test_resume_adds_the_missing_newline(tmp_path):
    recs = _inputs(tmp_path, [{"prompt": "one"}, {"prompt": "two"}])
    out = tmp_path / "out.jsonl"
    out.write_text(jsonl_line(output_record(recs[0], fake_result(), fingerprint=FP)).rstrip("\n"),
                   encoding="utf-8")
    assert resume_state(out, recs, fingerprint=FP, strategy="deal") == {1}
    assert out.read_bytes().endswith(b"\n")
    with out.open("a", encoding="utf-8") as f:  # what generate then does
        f.write(jsonl_line(output_record(recs[1], fake_result(), fingerprint=FP)))
    assert [json.loads(line)["input_line"] for line in out.read_text(encoding="utf-8").splitlines()] == [1, 2]


def test_resume_understands_nested_results(tmp_path):
    recs = _inputs(tmp_path, [{"text": "source one"}, {"text": "source two"}])
    out = tmp_path / "out.jsonl"
    out.write_text(jsonl_line(output_record(recs[0], fake_result(), result_field="gen", fingerprint=FP)),
                   encoding="utf-8")
    assert resume_state(out, recs, result_field="gen", fingerprint=FP, strategy="deal") == {1}
    with pytest.raises(InputError, match="written with --result-field gen"):
        resume_state(out, recs)
    with pytest.raises(InputError, match="without --result-field"):
        flat = tmp_path / "flat.jsonl"
        flat.write_text(jsonl_line(output_record(_inputs(tmp_path, [{"prompt": "p"}])[0], fake_result())),
                        encoding="utf-8")
        resume_state(flat, _inputs(tmp_path, [{"prompt": "p"}]), result_field="gen")


def test_resume_refuses_other_settings_naming_the_difference(tmp_path):
    recs = _inputs(tmp_path, [{"prompt": "one"}, {"prompt": "two"}])
    out = tmp_path / "out.jsonl"
    out.write_text(jsonl_line(output_record(recs[0], fake_result(), fingerprint=FP)), encoding="utf-8")
    before = out.read_bytes()
    cases = [
        (dict(fingerprint=FP, strategy="greedy"), ["strategy 'deal'", "(this run: 'greedy')"]),
        (dict(fingerprint={**FP, "spec": "c" * 16}, strategy="deal"), ["another spec", "a" * 16, "c" * 16]),
        (dict(fingerprint={**FP, "search": "d" * 16}, strategy="deal"), ["other search settings", "d" * 16]),
    ]
    for kwargs, needles in cases:
        with pytest.raises(InputError) as exc:
            resume_state(out, recs, **kwargs)
        msg = str(exc.value)
        assert msg.startswith(f"{out}:1: ") and "mix" in msg, msg
        for needle in needles:
            assert needle in msg, msg
    # a record without a fingerprint cannot be checked: refused too
    bare = tmp_path / "bare.jsonl"
    bare.write_text(jsonl_line(output_record(recs[0], fake_result())), encoding="utf-8")
    with pytest.raises(InputError, match="no settings fingerprint"):
        resume_state(bare, recs, fingerprint=FP, strategy="deal")
    assert out.read_bytes() == before, "a refused resume changes nothing"


def test_settings_fingerprint_tracks_spec_and_search():
    from deal_chains.spec import load_spec

    base = "search: {strategy: deal, top_k: 3}\nrewards: [{length: {max_words: 5}}]\n"
    spec = load_spec(base)
    fp = settings_fingerprint(spec, spec.search_config())
    assert fp == settings_fingerprint(load_spec(base), load_spec(base).search_config()), "stable"
    assert set(fp) == {"spec", "search"} and all(len(v) == 16 for v in fp.values())
    other_search = settings_fingerprint(spec, spec.search_config(top_k=4))
    assert other_search["spec"] == fp["spec"] and other_search["search"] != fp["search"]
    other_spec = load_spec(base.replace("max_words: 5", "max_words: 6"))
    changed = settings_fingerprint(other_spec, other_spec.search_config())
    assert changed["spec"] != fp["spec"] and changed["search"] == fp["search"]
    # the model is not part of it (--model overrides it; paths differ between machines)
    with_model = load_spec("model: default\n" + base)
    assert settings_fingerprint(with_model, with_model.search_config()) == fp
    # search.returns (added later) at its default leaves the digest as it was before it existed,
    # so earlier outputs still resume; another value is other settings
    from deal_chains.records import _digest

    before = {k: v for k, v in spec.search_config().model_dump(mode="json").items() if k != "returns"}
    assert fp["search"] == _digest(before)
    assert settings_fingerprint(spec, spec.search_config(returns=2))["search"] != fp["search"]


def test_a_directory_as_input_says_so(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        read_jsonl(tmp_path)
    with pytest.raises(InputError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl")
