"""Error messages (deal_chains.errors): a spec problem names its file as the user can open it."""

from __future__ import annotations

import pytest

from deal_chains.errors import SpecError
from deal_chains.spec import load_spec, preset_path


def _message_for_preset(monkeypatch, where) -> str:
    monkeypatch.chdir(where)
    with pytest.raises(SpecError) as info:
        load_spec("commongen").build_rewards({"topic": "dogs"})
    return str(info.value)


def test_a_spec_problem_names_its_file_relative_to_where_the_user_is(monkeypatch, tmp_path):
    preset = preset_path("commongen").resolve()
    repo = preset.parent.parent.parent  # rewards/presets/commongen.yaml
    assert _message_for_preset(monkeypatch, repo).startswith("rewards/presets/commongen.yaml:")
    assert _message_for_preset(monkeypatch, repo / "rewards" / "presets").startswith("commongen.yaml:")
    # beside it (a folder next to rewards/, as the cookbook's): one level up
    assert _message_for_preset(monkeypatch, repo / "deal_chains").startswith("../rewards/presets/commongen.yaml:")
    # far from it: as it is
    assert _message_for_preset(monkeypatch, tmp_path).startswith(f"{preset}:")
