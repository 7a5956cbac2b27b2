"""``deal-chains bench report`` on the tiny random-weight Llama: a tiny grid and 2-3 prompts,
so the whole report (four sections, four PNGs, markdown, JSON) takes seconds. Checks the
files, the internal consistency of report.json and the one-line errors for bad input.
No timing assertions: timings on a shared machine are not reproducible."""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from deal_chains.bench import report as report_mod
from deal_chains.bench.report import (FIGURES, Grid, ReportSettings, bootstrap_ci, pareto_front, run_report)
from deal_chains.cli import bench as cli_bench
from deal_chains.cli import main
from deal_chains.errors import InputError
from deal_chains.spec import load_spec, preset_path

DATA = Path(__file__).parents[1] / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_SCHEMAS = {
    "a_person.json": {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]},
    "b_flag.json": {"type": "boolean"},
}
TINY_PAIRS = [{"prompt": f"how do i do bad thing {i}?", "chosen": "no. i can't help with that.",
               "rejected": f"sure! first you {'take' if i % 2 else 'get'} the tools"} for i in range(8)]


def tiny_settings() -> ReportSettings:
    return ReportSettings(mode="quick", n_commongen=3, n_json=2, n_harmless=2, max_new_tokens=6,
                          json_max_new_tokens=10, harmless_max_new_tokens=4,
                          grid=Grid(top_k=[1, 2], lookahead=[2], beam=[1], commit=[1, "block"]),
                          bootstrap=200, seed=3, repeats=2)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_lm):
    from deal_chains.train_reward import train_reward_head

    root = tmp_path_factory.mktemp("report-inputs")
    schemas = root / "schemas"
    schemas.mkdir()
    for name, schema in TINY_SCHEMAS.items():
        (schemas / name).write_text(json.dumps(schema), encoding="utf-8")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in TINY_PAIRS), encoding="utf-8")
    # a harmless head on the tiny model's own features (the shipped one needs the default model)
    head = train_reward_head(pairs, root / "head", model=tiny_lm, layer=-1, pooling="all", epochs=5,
                             holdout=0.0, progress=False)["weights"]
    return {"commongen_data": DATA / "commongen_dev20.txt",
            "commongen_constraints": DATA / "commongen_dev20.constraint.json",
            "schemas": schemas, "advbench": DATA / "advbench_dev3.csv", "head": Path(head)}


@pytest.fixture(scope="module")
def engine(tiny_lm):
    from deal_chains.search.engine import DeALEngine

    return DeALEngine(tiny_lm)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, engine, inputs):
    out = tmp_path_factory.mktemp("report") / "out"  # created by run_report
    report = run_report(engine, out, tiny_settings(), commongen_data=inputs["commongen_data"],
                        commongen_constraints=inputs["commongen_constraints"], schemas=inputs["schemas"],
                        advbench=inputs["advbench"], harmless_head=inputs["head"],
                        harmless_system="Be safe.",  # the preset's long prompt overflows the tiny context
                        command="deal-chains bench report --out X --quick", progress=False)
    return out, report


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert len(data) > 5_000, f"{path.name} is suspiciously small ({len(data)} bytes)"
    # IHDR: width, height of a real figure; IDAT chunks inflate without error
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 400 and height >= 300
    pos, idat = 8, b""
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    assert len(zlib.decompress(idat)) > width * height  # at least a byte per pixel
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path))
    assert pixels.shape[:2] == (height, width)
    assert float(pixels[..., :3].std()) > 0.02, f"{path.name} is a blank image"


# ----------------------------------------------------------------------------- files


def test_report_writes_markdown_json_and_pngs(report_dir):
    out, report = report_dir
    assert (out / "report.md").is_file() and (out / "report.json").is_file()
    for name in FIGURES.values():
        assert_png(out / name)
    on_disk = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert on_disk["figures"]["pareto"]["pareto"] == report["figures"]["pareto"]["pareto"]
    assert on_disk["mode"] == "quick" and on_disk["benchmark"] == "report"
    assert isinstance(on_disk["shared_machine"], bool)
    if on_disk["cpu_contention"] is not None:
        assert 0 <= on_disk["cpu_contention"]["others_share"]
    assert set(on_disk["figures"]) == {"pareto", "matched", "json", "harmless"}


def test_markdown_has_command_machine_model_and_tables_per_figure(report_dir):
    out, report = report_dir
    md = (out / "report.md").read_text(encoding="utf-8")
    m = report["machine"]
    sections = md.split("\n## ")[1:]
    assert len(sections) == 4
    for section, png in zip(sections, FIGURES.values()):
        assert f"]({png})" in section
        assert "Command: `deal-chains bench report --out X --quick`" in section
        assert f"{m['cpu_count']} CPU cores" in section and f"torch {m['torch']}" in section
        assert f"device {m['device']}" in section
        assert f"Model: `{m['model']}`" in section
        assert "How to read it:" in section
        assert "\n| " in section and "|---|" in section
    assert "How n was matched:" in md


# ----------------------------------------------------------------------------- numbers


def test_pareto_section_is_consistent(report_dir):
    _, report = report_dir
    part = report["figures"]["pareto"]
    rows = part["rows"]
    assert rows[0]["strategy"] == "greedy" and rows[0]["setting"] is None
    assert len(rows) == 1 + len(tiny_settings().grid.settings()) == 5  # greedy + top_k {1,2} x commit {1,2}
    g = part["greedy_seconds_per_prompt"]
    assert g == rows[0]["seconds_per_prompt"] > 0
    for r in rows:
        assert r["ratio_to_greedy"] == pytest.approx(r["seconds_per_prompt"] / g, rel=1e-9)
        assert 0 <= r["hard_coverage"] <= r["soft_coverage"] <= 1
        for key in ("soft_ci", "hard_ci"):
            ci = r[key]
            assert ci["low"] <= ci["mean"] <= ci["high"]
        assert r["soft_ci"]["mean"] == pytest.approx(r["soft_coverage"], abs=1e-4)
        assert len(r["wall_seconds_repeats"]) == 2 and r["wall_seconds"] == min(r["wall_seconds_repeats"])
        if r["setting"]:
            assert r["config"]["top_k"] == r["setting"]["top_k"] and r["config"]["max_new_tokens"] == 6
    for metric in ("soft_coverage", "hard_coverage"):
        front = set(part["pareto"][metric])
        assert front
        pts = {r["strategy"]: (r["seconds_per_prompt"], r[metric]) for r in rows}

        def dominates(a, b):
            return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])

        for name in front:  # non-dominated
            assert not any(dominates(p, pts[name]) for other, p in pts.items() if other != name)
        for name in set(pts) - front:  # everything else is beaten by someone
            assert any(dominates(p, pts[name]) for p in pts.values())
        assert [r[f"pareto_{metric.split('_')[0]}"] for r in rows] == [r["strategy"] in front for r in rows]


def test_matched_section_is_consistent(report_dir):
    _, report = report_dir
    part = report["figures"]["matched"]
    rows = {r["strategy"]: r for r in part["rows"]}
    assert list(rows) == ["greedy", "sample", "best_of_n", "rerank", "deal"]
    match = part["matching"]
    assert rows["best_of_n"]["config"]["n"] == match["best_of_n_n"] == rows["best_of_n"]["n"] >= 1
    assert rows["rerank"]["config"]["n"] == match["rerank_n"] == rows["rerank"]["n"] >= 1
    # the chosen n is the one whose estimate is closest to DeAL's work
    d, s, g = match["deal_decode_tokens"], match["sample_decode_tokens"], match["greedy_decode_tokens"]
    assert d == rows["deal"]["decode_tokens_per_prompt"] and g == rows["greedy"]["decode_tokens_per_prompt"]
    def err(n, unit, power):
        return abs(math.log(unit * n ** power / d))

    for n in range(1, 33):
        assert err(match["best_of_n_n"], s, 1) <= err(n, s, 1) + 1e-12
        assert err(match["rerank_n"], g, 2) <= err(n, g, 2) + 1e-12
    greedy_s = rows["greedy"]["seconds_per_prompt"]
    for r in rows.values():
        assert r["ratio_to_greedy"] == pytest.approx(r["seconds_per_prompt"] / greedy_s, rel=1e-9)
        assert r["work_vs_deal"] == pytest.approx(r["decode_tokens_per_prompt"] / d, rel=1e-9)
        assert r["mean_forward_passes"] > 0 and r["seconds_per_prompt"] > 0
        for key in ("soft_ci", "hard_ci"):
            assert 0 <= r[key]["low"] <= r[key]["mean"] <= r[key]["high"] <= 1
        outs = report["figures"]["matched"]["outputs"][r["strategy"]]
        assert len(outs) == 3
        assert r["seconds_per_prompt"] == pytest.approx(sum(o["seconds"] for o in outs) / 3)
        assert r["mean_forward_passes"] == pytest.approx(sum(o["forward_passes"] for o in outs) / 3, abs=0.01)
    assert rows["greedy"]["n"] is None and rows["deal"]["config"]["top_k"] == 6


def test_json_and_harmless_sections(report_dir):
    _, report = report_dir
    js = report["figures"]["json"]
    assert [r["strategy"] for r in js["rows"]] == ["greedy", "soft", "hard"]
    assert js["n_schemas"] == 2 and js["max_new_tokens"] == 10
    for r in js["rows"]:
        ci = r["valid_ci"]
        assert 0 <= ci["low"] <= ci["mean"] <= ci["high"] <= 1
        assert ci["mean"] == pytest.approx(r["valid"], abs=1e-4)
    harm = report["figures"]["harmless"]
    assert [r["strategy"] for r in harm["rows"]] == ["greedy", "deal"] and harm["n"] == 2
    assert harm["system"] == "Be safe."
    for r in harm["rows"]:
        assert r["config"]["max_new_tokens"] == 4
        assert r["harmless_ci"]["low"] <= r["harmless_ci"]["mean"] <= r["harmless_ci"]["high"]
        assert 0 <= r["harmless_median"] <= 1
    deal_cfg = harm["rows"][1]["config"]
    preset = dict(load_spec(preset_path("harmless")).search)
    assert [deal_cfg[k] for k in ("top_k", "lookahead", "lam", "length_penalty")] == [
        preset[k] for k in ("top_k", "lookahead", "lam", "length_penalty")]  # the harmless preset
    assert harm["deal_higher"] + harm["deal_lower"] <= 2


def test_shared_machine_warning():
    start = {"machine_busy": 100.0, "self": 10.0, "wall": 1000.0}
    alone = {"machine_busy": 120.0, "self": 29.0, "wall": 1010.0}  # 19 of 20 busy CPU seconds were ours
    crowded = {"machine_busy": 120.0, "self": 14.0, "wall": 1010.0}  # others: 16 s of 20 available
    c_alone = report_mod.cpu_contention(start, alone, 2)
    c_crowded = report_mod.cpu_contention(start, crowded, 2)
    assert c_alone["others_share"] == 0.05 and not report_mod._shared(c_alone)
    assert c_crowded["others_share"] == 0.8 and report_mod._shared(c_crowded)
    assert report_mod.cpu_contention(None, alone, 2) is None and not report_mod._shared(None)
    text = report_mod.shared_warning({"cpu_contention": c_crowded, "machine": {"cpu_count": 2, "torch_threads": 2}})
    assert "80%" in text and "DEAL_CHAINS_THREADS=1" in text
    one = report_mod.shared_warning({"cpu_contention": c_crowded, "machine": {"cpu_count": 2, "torch_threads": 1}})
    assert "80%" in one and "--threads 1" not in one
    sample = report_mod._cpu_sample()
    if sample is not None:  # Linux
        assert sample["machine_busy"] > 0 and sample["self"] > 0


def test_bootstrap_and_pareto_helpers():
    ci = bootstrap_ci([0, 0, 1, 1, 1, 0, 1, 1], n_boot=500, seed=1)
    assert ci["low"] <= ci["mean"] == 0.625 <= ci["high"] and ci["low"] < ci["high"]
    assert bootstrap_ci([0, 0, 1, 1, 1, 0, 1, 1], n_boot=500, seed=1) == ci  # seeded
    assert bootstrap_ci([0.4]) == {"mean": 0.4, "low": 0.4, "high": 0.4}
    # cost, quality: (1, .5) (2, .4)x (2, .7) (3, .7)x (0.5, .1)
    assert pareto_front([1, 2, 2, 3, 0.5], [0.5, 0.4, 0.7, 0.7, 0.1]) == [4, 0, 2]
    assert Grid(top_k=[2], lookahead=[1, 2], beam=[1], commit=[1, 2, "block"]).settings() == [
        {"top_k": 2, "lookahead": 1, "beam": 1, "commit": 1},
        {"top_k": 2, "lookahead": 2, "beam": 1, "commit": 1},
        {"top_k": 2, "lookahead": 2, "beam": 1, "commit": 2},
    ]
    quick, full = ReportSettings.quick(), ReportSettings.full()
    assert 6 <= len(quick.grid.settings()) <= 8 and quick.n_commongen <= 12
    assert len(full.grid.settings()) > len(quick.grid.settings()) and full.n_commongen >= 50
    assert quick.with_n(4).n_json == 4


# ----------------------------------------------------------------------------- CLI


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def cli(tmp_path, inputs, *extra, out=None, model="unused"):
    return main(["bench", "report", "--out", str(out or tmp_path / "rep"), "--model", str(model), "--device", "cpu",
                 "--commongen-data", str(inputs["commongen_data"]),
                 "--commongen-constraints", str(inputs["commongen_constraints"]),
                 "--schemas", str(inputs["schemas"]), "--advbench", str(inputs["advbench"]), "--quiet", *extra])


@pytest.mark.parametrize("option", ["--commongen-data", "--schemas", "--advbench"])
def test_missing_data_path_is_a_one_line_error(capsys, tmp_path, inputs, option):
    missing = tmp_path / "nowhere" / "data"
    rc = cli(tmp_path, inputs, option, str(missing))
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, option, str(missing), "not found")


@pytest.mark.parametrize("n", ["0", "-3"])
def test_bad_n_is_a_one_line_error(capsys, tmp_path, inputs, n):
    rc = cli(tmp_path, inputs, "--n", n)
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, "--n", n)
    assert not (tmp_path / "rep").exists()  # nothing was started


def test_unwritable_out_is_a_one_line_error(capsys, tmp_path, inputs):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc = cli(tmp_path, inputs, out=blocker / "sub")  # a folder inside a file cannot be made
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, "--out", str(blocker / "sub"), "cannot write")
    rc = cli(tmp_path, inputs, out=blocker)
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, "--out", "not a folder")


def test_run_report_checks_inputs_before_model_work(tmp_path, inputs):
    with pytest.raises(InputError, match="--schemas"):
        run_report(object(), tmp_path / "o", tiny_settings(), commongen_data=inputs["commongen_data"],
                   commongen_constraints=None, schemas=tmp_path / "none", advbench=inputs["advbench"])
    with pytest.raises(InputError, match="--n"):
        run_report(object(), tmp_path / "o", replace(tiny_settings(), n_json=0),
                   commongen_data=inputs["commongen_data"], schemas=inputs["schemas"], advbench=inputs["advbench"])
    assert not (tmp_path / "o").exists()


def test_bad_threads_is_a_one_line_error(capsys, tmp_path, inputs):
    rc = cli(tmp_path, inputs, "--threads", "0")
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, "--threads", "0")


def test_report_threads_choice(monkeypatch):
    from types import SimpleNamespace

    import torch

    cpu = SimpleNamespace(lm=SimpleNamespace(device=torch.device("cpu")))
    gpu = SimpleNamespace(lm=SimpleNamespace(device=torch.device("cuda", 0)))
    monkeypatch.delenv("DEAL_CHAINS_THREADS", raising=False)
    args = lambda threads=None, full=False: SimpleNamespace(threads=threads, full=full)  # noqa: E731
    assert cli_bench.report_threads(args(), cpu) == 1  # --quick on a CPU
    assert cli_bench.report_threads(args(3), cpu) == 3
    assert cli_bench.report_threads(args(full=True), cpu) is None
    assert cli_bench.report_threads(args(), gpu) is None
    monkeypatch.setenv("DEAL_CHAINS_THREADS", "2")  # the CLI already applied it
    assert cli_bench.report_threads(args(), cpu) is None


def test_cli_end_to_end_prints_tables(capsys, tmp_path, inputs, tiny_model_dir, monkeypatch):
    # --quick's sizes would overflow the tiny model's 256-token context: shrink them
    monkeypatch.setattr(ReportSettings, "quick", classmethod(lambda cls: tiny_settings()))
    monkeypatch.delenv("DEAL_CHAINS_THREADS", raising=False)
    out = tmp_path / "cli-report"
    rc = cli(tmp_path, inputs, "--head", str(inputs["head"]), "--harmless-system", "Be safe.", "--n", "2",
             out=out, model=tiny_model_dir)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    for title in ("## 1. CommonGen", "## 2. strategies", "## 3. JSON", "## 4. harmless"):
        assert title in captured.out
    assert "| setting | top_k | lookahead | beam | commit | soft cov |" in captured.out
    assert f"wrote {out / 'report.md'}" in captured.out
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["figures"]["pareto"]["n"] == 2 and report["figures"]["json"]["n_schemas"] == 2
    assert report["command"].startswith(f"deal-chains bench report --out {out} --quick --n 2 --device cpu")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert report["command"] in md
    for name in FIGURES.values():
        assert_png(out / name)


def test_registered_in_cli_help(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "report", "--help"])
    out = capsys.readouterr().out
    for option in ("--out", "--quick", "--full", "--n", "--device", "--threads"):
        assert option in out
    # the CLI wiring lives in the CLI: the bench module exposes functions only
    assert not hasattr(report_mod, "register_bench_report")


def test_benchmark_sampling_rows_are_seeded():
    """The engine gives sampling a fresh seed per prompt unless one is set; benchmark rows
    must replay exactly, so theirs default to 0 and a given seed wins."""
    from deal_chains.bench.runner import parse_strategy

    assert parse_strategy("sample", {})[1].seed == 0
    assert parse_strategy("best_of_n", {"seed": 5})[1].seed == 5
    assert parse_strategy("sample:seed=3", {})[1].seed == 3
    assert parse_strategy("greedy", {})[1].seed is None


def test_strategies_split_between_entries_not_inside_a_list_value():
    from deal_chains.bench.runner import parse_strategy, split_strategies

    entries = split_strategies('greedy, deal:hold_eos=true:hold_ends=[".", "!", "\\n"],deal:note="a,b"')
    assert entries == ['greedy', 'deal:hold_eos=true:hold_ends=[".", "!", "\\n"]', 'deal:note="a,b"']
    assert parse_strategy(entries[1], {})[1].hold_ends == [".", "!", "\n"]


def test_plot_commongen_draws_several_reports_and_refuses_other_files(tmp_path, capsys):
    import json

    from deal_chains.cli import main

    def report(hard: float) -> dict:
        rows = [{"strategy": "greedy", "hard_coverage": 0.2, "ratio_to_greedy": 1.0, "bad_rate": 0.1},
                {"strategy": "deal", "hard_coverage": hard, "ratio_to_greedy": 2.5, "bad_rate": 0.05,
                 "mean_logprob_per_token": -1.2}]
        return {"benchmark": "commongen", "n": 40, "rows": rows}

    files = []
    for words, hard in ((3, 0.95), (4, 0.9)):
        f = tmp_path / f"words{words}.json"
        f.write_text(json.dumps(report(hard)))
        files.append(f)
    png = tmp_path / "fig.png"
    assert main(["bench", "plot-commongen", f"3 words={files[0]}", str(files[1]), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    fluency = tmp_path / "fluency.png"
    assert main(["bench", "plot-commongen", str(files[0]), "--x", "logprob", "--out", str(fluency)]) == 0
    assert fluency.stat().st_size > 10_000 and fluency.read_bytes() != png.read_bytes()
    other = tmp_path / "json.json"
    other.write_text(json.dumps({"benchmark": "json", "rows": []}))
    assert main(["bench", "plot-commongen", str(other), "--out", str(png)]) != 0
    assert "not a `bench commongen` report" in capsys.readouterr().err
    assert main(["bench", "plot-commongen", str(tmp_path / "missing.json"), "--out", str(png)]) != 0
    assert "cannot read the report" in capsys.readouterr().err


def test_commongen_plot_title_names_the_x_axis_it_plots(monkeypatch, tmp_path):
    from deal_chains.bench import plots

    titles = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: titles.append(fig._suptitle.get_text()) or path)
    rows = [{"strategy": "greedy", "hard_coverage": 0.2, "ratio_to_greedy": 1.0, "bad_rate": 0.1,
             "mean_logprob_per_token": -1.0}]
    report = {"benchmark": "commongen", "n": 1, "rows": rows}
    plots.plot_commongen_runs([("3 words", report)], tmp_path / "t.png", x="time")
    plots.plot_commongen_runs([("3 words", report)], tmp_path / "f.png", x="logprob")
    assert titles == ["CommonGen: quality vs time per strategy", "CommonGen: quality vs fluency per strategy"]


def test_plot_commongen_names_a_strategys_points(monkeypatch, tmp_path, capsys):
    import json

    from deal_chains.bench import plots
    from deal_chains.cli import main

    labels = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: labels.extend(
        t.get_text() for ax in fig.axes for t in ax.texts) or path)
    rows = [{"strategy": "greedy", "hard_coverage": 0.2, "ratio_to_greedy": 1.0, "bad_rate": 0.1},
            {"strategy": "deal:fluency_prompt=null:estimate=false", "hard_coverage": 0.9, "ratio_to_greedy": 1.5,
             "bad_rate": 0.05}]
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"benchmark": "commongen", "n": 40, "rows": rows}))
    assert main(["bench", "plot-commongen", str(f), "--name", "deal:fluency_prompt=null:estimate=false=before",
                 "--out", str(tmp_path / "p.png")]) == 0
    assert sorted(set(labels)) == ["before", "greedy"]
    assert main(["bench", "plot-commongen", str(f), "--name", "before", "--out", str(tmp_path / "p.png")]) != 0
    assert "expected STRATEGY=NAME" in capsys.readouterr().err
