"""docs/spec-reference.md: generated from the spec models, fresh, and every example in it loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plugins import installed_plugin

from deal_chains.cli import main
from deal_chains.errors import SpecError
from deal_chains.search.config import SearchConfig
from deal_chains.spec import REWARD_TYPES, RewardSpec, load_spec
from deal_chains.spec.entries.registry import _RewardEntryBase
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


def _documented_models():
    yield "top level", RewardSpec
    yield "search", SearchConfig
    yield "reward entry", _RewardEntryBase
    for rtype, spec in REWARD_TYPES.items():
        yield rtype, spec.params


@pytest.mark.parametrize("where, model", list(_documented_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_field_says_what_it_means(where, model):
    # the reference's "meaning" column comes from Field(description=...): a new field without
    # one would show an empty cell
    missing = [name for name, info in model.model_fields.items()
               if not (info.description or "").strip()]
    assert not missing, f"{where}: give these fields a Field(description=...): {missing}"


TOXICITY_PLUGIN = """
from rewards import BaseReward

class Toxicity(BaseReward):
    def __init__(self, threshold=0.5, name="toxicity"):
        self.threshold, self.name = threshold, name
    def score(self, texts, context=None):
        return [0.0 if "!" in t else 1.0 for t in texts]
"""


@pytest.mark.parametrize("rtype", sorted(EXAMPLES))
def test_every_example_loads(rtype, tmp_path):
    yaml_blocks = re.findall(r"```yaml\n(.*?)```", render_reference(), flags=re.S)
    assert example_spec(rtype) in yaml_blocks
    if rtype == "plugin":  # the example names a plugin that must be installed: without it the error says so
        with pytest.raises(SpecError, match="unknown reward plugin 'toxicity'"):
            load_spec(example_spec(rtype))
        with installed_plugin(tmp_path / "site", TOXICITY_PLUGIN, {"toxicity": "Toxicity"}, prefix="dc_ref_plugin"):
            spec = load_spec(example_spec(rtype))
            (reward,) = spec.build_rewards({"concepts": ["dog"]})
        assert (type(reward).__name__, reward.threshold) == ("Toxicity", 0.5)
        return
    spec = load_spec(example_spec(rtype))
    assert spec.rewards[0].reward_type == rtype


def test_cli_prints_the_reference(capsys):
    assert main(["spec", "reference"]) == 0
    assert capsys.readouterr().out == render_reference()
