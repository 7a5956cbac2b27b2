"""``deal-chains generate --engine ray`` (deal_chains.scale.ray_data) on the tiny saved
Llama: same records as the single-process path, per-file resume, clear errors before Ray
starts. One local Ray (2 CPUs) for the whole module."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own
pytest.importorskip("ray.data")

from deal_chains.cli import main  # noqa: E402
from deal_chains.errors import DealChainsError, InputError  # noqa: E402
from deal_chains.scale import DatasetGenerationError, RayMissingError, generate_dataset  # noqa: E402

SPEC = """\
version: 1
search: {strategy: deal, top_k: 3, beam: 2, lookahead: 2, max_new_tokens: 8}
prompt: "Use these words: {concepts}."
rewards:
  - keywords: {words: "{concepts}"}
"""

FILES = {
    "one.jsonl": [
        {"id": "a", "concepts": ["dog", "frisbee"]},
        {"id": "b", "prompt": "Say something with sun and sea.", "concepts": ["sun", "sea"], "extra": 7},
        {"id": "c", "concepts": ["kid", "room", "dance"], "meta": {"nested": [1, 2.5, None]}},
    ],
    "two.jsonl": [
        {"id": "x", "prompt": "Tell me about cats.", "concepts": ["cats"]},
        {"id": "y", "concepts": ["rain", "umbrella"], "note": "caf\u00e9 \u2028 line"},
        {"id": "z", "prompt": "Bread, butter and jam.", "concepts": ["bread"]},
    ],
}


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records),
                    encoding="utf-8")
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_records(got: list[dict], want: list[dict]) -> None:
    """Same records, field by field; ``stats`` (timing, batch-dependent counters) dropped and
    ``score`` compared to float32 rounding (a different batch composition pads differently)."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = dict(g), dict(w)
        assert set(g.pop("stats")) == set(w.pop("stats"))
        assert g.pop("score") == pytest.approx(w.pop("score"), rel=1e-5, abs=1e-6)
        assert g == w


@pytest.fixture(scope="module")
def ray_session():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray-gen")
    (root / "spec.yaml").write_text(SPEC, encoding="utf-8")
    for name, records in FILES.items():
        write_jsonl(root / "in" / name, records)
    return root


@pytest.fixture(scope="module")
def first_run(ray_session, work, tiny_model_dir) -> Path:
    """The CLI with --engine ray over the input directory (batches of 2 cross the file
    boundary, so one worker call holds records of both files)."""
    out = work / "ray-out"
    rc = main(["generate", "--engine", "ray", "--spec", str(work / "spec.yaml"), "--input", str(work / "in"),
               "--output", str(out), "--model", str(tiny_model_dir), "--device", "cpu", "--concurrency", "2",
               "--batch-size", "2", "--quiet"])
    assert rc == 0
    return out


@pytest.fixture
def no_ray_start(monkeypatch):
    """Fails the test if Ray would be started or given data."""
    def boom(*a, **k):
        raise AssertionError("Ray was reached before the inputs were validated")

    monkeypatch.setattr(ray, "init", boom)
    monkeypatch.setattr(ray.data, "from_items", boom)


def test_ray_output_equals_single_process_output(first_run, work, tiny_model_dir, capsys):
    assert sorted(p.name for p in first_run.iterdir()) == ["one.jsonl", "two.jsonl"]
    for name, records in FILES.items():
        local = work / "local" / name
        rc = main(["generate", "--spec", str(work / "spec.yaml"), "--input", str(work / "in" / name),
                   "--output", str(local), "--model", str(tiny_model_dir), "--device", "cpu", "--quiet"])
        assert rc == 0, capsys.readouterr().err
        got = read_rows(first_run / name)
        assert [r["id"] for r in got] == [r["id"] for r in records], "input order is kept"
        assert [r["input_line"] for r in got] == [1, 2, 3]
        assert_same_records(got, read_rows(local))
    # the JSONL writer is the local one: U+2028 stays escaped, other text is UTF-8 as is
    raw = (first_run / "two.jsonl").read_text(encoding="utf-8")
    assert "\\u2028" in raw and "caf\u00e9" in raw


def test_resume_completes_a_partial_file_and_leaves_a_complete_one(first_run, work, tiny_model_dir, tmp_path,
                                                                  monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    one, two = out / "one.jsonl", out / "two.jsonl"
    first_one = read_rows(first_run / "one.jsonl")
    # an interrupted run: one full record, then a line cut short by the crash
    lines = one.read_text(encoding="utf-8").splitlines(keepends=True)
    one.write_text(lines[0] + lines[1][:25], encoding="utf-8")
    two_bytes, two_mtime = two.read_bytes(), two.stat().st_mtime_ns

    summary = generate_dataset(work / "spec.yaml", work / "in", out, model=str(tiny_model_dir), device="cpu",
                               concurrency=1, batch_size=2, resume=True, progress=False)
    assert summary["generated"] == 2
    assert summary["skipped_files"] == [str(two)]
    assert two.read_bytes() == two_bytes and two.stat().st_mtime_ns == two_mtime, "a complete file is untouched"
    assert_same_records(read_rows(one), first_one)

    # everything complete: nothing to do, Ray is not even reached
    def boom(*a, **k):
        raise AssertionError("no work, yet Ray was given data")

    monkeypatch.setattr(ray.data, "from_items", boom)
    again = generate_dataset(work / "spec.yaml", [work / "in" / "one.jsonl", work / "in" / "two.jsonl"], out,
                             model=str(tiny_model_dir), device="cpu", resume=True, progress=False)
    assert again["generated"] == 0 and len(again["skipped_files"]) == 2


def test_worker_error_names_file_and_line_and_keeps_finished_records(ray_session, work, tiny_model_dir,
                                                                     tmp_path):
    # valid JSONL with a prompt, so only the model (context 256 tokens) can tell it is too long
    inp = write_jsonl(tmp_path / "in" / "long.jsonl", [
        {"id": 0, "prompt": "Short one.", "concepts": ["a"]},
        {"id": 1, "prompt": "word " * 80, "concepts": ["b"]},
    ])
    out = tmp_path / "out"
    with pytest.raises(DatasetGenerationError) as exc:
        generate_dataset(work / "spec.yaml", inp, out, model=str(tiny_model_dir), device="cpu",
                         batch_size=1, progress=False)
    msg = str(exc.value)
    assert f"{inp}:2:" in msg
    assert "1 of 2 records were written" in msg and "--resume" in msg
    assert [r["id"] for r in read_rows(out / "long.jsonl")] == [0]


def test_missing_ray_says_how_to_install(monkeypatch, work, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(ImportError) as exc:
        generate_dataset(work / "spec.yaml", work / "in", tmp_path / "out")
    assert isinstance(exc.value, RayMissingError) and isinstance(exc.value, DealChainsError)
    assert "pip install 'deal-chains[ray]'" in str(exc.value)
    rc = main(["generate", "--engine", "ray", "--spec", str(work / "spec.yaml"), "--input", str(work / "in"),
               "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install 'deal-chains[ray]'" in err and "Traceback" not in err


def test_bad_inputs_fail_before_ray_starts(ray_session, no_ray_start, work, tmp_path, capsys):
    spec = work / "spec.yaml"

    def fails(inputs, *needles):
        with pytest.raises(InputError) as exc:
            generate_dataset(spec, inputs, tmp_path / "out", progress=False)
        for needle in needles:
            assert needle in str(exc.value)

    fails(tmp_path / "no-such-dir", "input not found", "no-such-dir")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "no *.jsonl files")
    fails(str(tmp_path / "nothing-*.jsonl"), "no input files match")

    good = write_jsonl(tmp_path / "in" / "good.jsonl", FILES["one.jsonl"])
    bad = write_jsonl(tmp_path / "in" / "bad.jsonl", [FILES["two.jsonl"][0], "", '{"id": "q", "concepts": [1,}'])
    fails(str(tmp_path / "in" / "*.jsonl"), f"{bad}:3:", "invalid JSON")
    write_jsonl(bad, [FILES["two.jsonl"][0], {"id": "q"}])  # no prompt, and the template needs {concepts}
    fails(tmp_path / "in", f"{bad}:2:", "{concepts}", "not set")
    write_jsonl(bad, [{"prompt": "fine", "id": "q"}])  # a prompt, but the reward needs {concepts}
    fails([good, bad], f"{bad}:1:", "{concepts}")
    write_jsonl(bad, [{"prompt": "   ", "concepts": ["x"]}])
    fails(bad, f"{bad}:1:", "prompt")
    bad.write_text("", encoding="utf-8")
    fails(bad, "no input records")
    assert not (tmp_path / "out").exists(), "nothing is written before the inputs are valid"

    # the same through the CLI: a clean error, exit 2; --output must be a directory
    (tmp_path / "file-out").write_text("x", encoding="utf-8")
    rc = main(["generate", "--engine", "ray", "--spec", str(spec), "--input", str(good),
               "--output", str(tmp_path / "file-out")])
    err = capsys.readouterr().err
    assert rc == 2 and "error: " in err and "directory" in err
    rc = main(["generate", "--spec", str(spec), "--input", str(good), "--output", str(tmp_path / "o.jsonl"),
               "--concurrency", "2"])
    assert rc == 2 and "--engine ray" in capsys.readouterr().err


def test_result_field_matches_the_local_path_and_resume_checks_settings(ray_session, work, tiny_model_dir,
                                                                       tmp_path, capsys, monkeypatch):
    records = [{"text": "The cat sat.", "id": 1}, {"text": "Dogs bark.", "id": 2}]
    inp = write_jsonl(tmp_path / "in" / "t.jsonl", records)
    spec = tmp_path / "sum.yaml"
    spec.write_text("search: {strategy: greedy, max_new_tokens: 4}\nprompt: \"Summarize: {text}\"\n"
                    "rewards: [{length: {max_words: 10}}]\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"{inp}:1: .*'text'.*--result-field"):
        generate_dataset(spec, inp, tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "out"
    generate_dataset(spec, inp, out, model=str(tiny_model_dir), device="cpu", result_field="gen", progress=False)
    local = tmp_path / "local.jsonl"
    rc = main(["generate", "--spec", str(spec), "--input", str(inp), "--output", str(local), "--model",
               str(tiny_model_dir), "--device", "cpu", "--quiet", "--result-field", "gen"])
    assert rc == 0, capsys.readouterr().err
    got, want = read_rows(out / "t.jsonl"), read_rows(local)
    assert [{k: r[k] for k in ("text", "id")} for r in got] == records
    assert_same_records([r["gen"] for r in got], [r["gen"] for r in want])
    assert got[0]["gen"]["stats"]["fingerprint"] == want[0]["gen"]["stats"]["fingerprint"]

    # resume: a cut file completes under the same settings; another strategy is refused
    lines = (out / "t.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "t.jsonl").write_text(lines[0].rstrip("\n"), encoding="utf-8")  # newline lost too
    with pytest.raises(InputError, match=r"strategy 'greedy' \(this run: 'deal'\)"):
        generate_dataset(spec, inp, out, strategy="deal", result_field="gen", resume=True, progress=False)
    summary = generate_dataset(spec, inp, out, model=str(tiny_model_dir), device="cpu", result_field="gen",
                               resume=True, progress=False)
    assert summary["generated"] == 1
    assert [r["gen"]["input_line"] for r in read_rows(out / "t.jsonl")] == [1, 2]


def test_spec_without_model_uses_the_default_model(work, tmp_path, monkeypatch):
    import deal_chains.scale.ray_data as ray_data

    seen = {}

    def fake_run(ray, spec, config, model, device, *rest, **kw):
        seen["model"] = model
        seen["worker"] = rest[-1] if rest else kw

    monkeypatch.setattr(ray_data, "_run", fake_run)
    generate_dataset(work / "spec.yaml", work / "in", tmp_path / "out", progress=False, trust_remote_code=True)
    assert seen["model"] == "default"
    assert seen["worker"]["trust_remote_code"] is True


def test_an_error_before_any_record_leaves_existing_outputs(ray_session, work, tiny_model_dir, tmp_path):
    inp = write_jsonl(tmp_path / "in" / "long.jsonl", [{"id": 0, "prompt": "word " * 80, "concepts": ["b"]}])
    out = tmp_path / "out"
    out.mkdir()
    (out / "long.jsonl").write_text('{"keep": "me"}\n', encoding="utf-8")
    with pytest.raises(DatasetGenerationError) as exc:
        generate_dataset(work / "spec.yaml", inp, out, model=str(tiny_model_dir), device="cpu", progress=False)
    assert f"{inp}:1:" in str(exc.value)
    assert "no records were written" in str(exc.value) and "--resume" not in str(exc.value)
    assert (out / "long.jsonl").read_text(encoding="utf-8") == '{"keep": "me"}\n'
