"""The harmless benchmark's reports: paths they name."""

from pathlib import Path

from deal_chains.bench.harmless import shown_path


def test_a_report_names_a_head_in_the_checkout_by_its_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "rewards" / "heads" / "harmless.safetensors"
    assert shown_path(inside) == "rewards/heads/harmless.safetensors"
    outside = Path("/somewhere/else/head.safetensors")
    assert shown_path(outside) == str(outside)
