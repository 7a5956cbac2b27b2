"""Execute every cookbook notebook (small budgets) and fail if any cell fails.

Each notebook has a cell tagged ``parameters`` (papermill's convention); the test injects
``SMOKE = True`` after it, which every notebook reads to shrink its budgets (fewer prompts,
fewer new tokens) so the whole cookbook runs in a few minutes on a 2-core CPU. The
committed notebooks carry the outputs of a full run (``make cookbook``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

COOKBOOK = Path(__file__).resolve().parent.parent / "cookbook"
NOTEBOOKS = sorted(COOKBOOK.glob("[0-9][0-9]_*.ipynb"))

pytestmark = pytest.mark.integration


def test_cookbook_has_the_seven_notebooks():
    names = [p.stem.split("_", 1)[1] for p in NOTEBOOKS]
    assert names == ["quickstart", "yaml_specs", "json_structured_output", "safety", "agents",
                     "dspy", "benchmarks"], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_has_parameters_and_saved_outputs(path: Path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name}: no code cells"
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), (
        f"{path.name}: no cell tagged 'parameters'")
    assert "SMOKE" in "".join("".join(c["source"]) for c in code), f"{path.name}: never reads SMOKE"
    unrun = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not unrun, f"{path.name}: code cells {unrun} were not executed in the committed file"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: the committed file holds an error output: {errors[0].get('ename')}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / path.name
    # a failing cell raises PapermillExecutionError naming the cell and the exception
    papermill.execute_notebook(str(path), str(out), parameters={"SMOKE": True},
                               kernel_name="python3", cwd=str(COOKBOOK), progress_bar=False,
                               execution_timeout=540)
    nb = json.loads(out.read_text(encoding="utf-8"))
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
