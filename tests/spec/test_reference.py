"""docs/spec-reference.md: generated from the spec models, fresh, and every example in it loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deal_chains.cli import main
from deal_chains.errors import SpecError
from deal_chains.spec import REWARD_TYPES, load_spec
from deal_chains.spec.reference import EXAMPLES, example_spec, render_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "spec-reference.md"


def test_the_committed_reference_is_fresh():
    assert DOC.read_text(encoding="utf-8") == render_reference(), \
        "docs/spec-reference.md is stale: run `deal-chains spec reference --out docs/spec-reference.md`"


def test_every_reward_type_and_field_is_documented():
    text = render_reference()
    assert set(EXAMPLES) == set(REWARD_TYPES)
    for rtype, spec in REWARD_TYPES.items():
        assert f"\n## {rtype}\n" in text
        for field, info in spec.params.model_fields.items():
            assert f"| `{info.alias or field}` |" in text, (rtype, field)


@pytest.mark.parametrize("rtype", sorted(EXAMPLES))
def test_every_example_loads(rtype):
    yaml_blocks = re.findall(r"```yaml\n(.*?)```", render_reference(), flags=re.S)
    assert example_spec(rtype) in yaml_blocks
    if rtype == "plugin":  # needs the named plugin installed: the error says so
        with pytest.raises(SpecError, match="unknown reward plugin 'toxicity'"):
            load_spec(example_spec(rtype))
        return
    spec = load_spec(example_spec(rtype))
    assert spec.rewards[0].reward_type == rtype


def test_cli_prints_the_reference(capsys):
    assert main(["spec", "reference"]) == 0
    assert capsys.readouterr().out == render_reference()
