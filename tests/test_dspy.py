"""The DSPy adapter: lazy import, and a dspy.Predict program on the default model."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest
import torch

from deal_chains import SpecError


def test_missing_dspy_is_a_clear_import_error(monkeypatch):
    import deal_chains.dspy as mod

    monkeypatch.setattr(mod, "_CLASS", None)
    monkeypatch.setitem(sys.modules, "dspy", None)  # `import dspy` now fails
    with pytest.raises(ImportError, match=r"pip install 'deal-chains\[dspy\]'"):
        mod.DeALLM  # noqa: B018
    # importing deal_chains (or deal_chains.dspy itself) never imports dspy
    importlib.reload(mod)


def test_bad_spec_fails_at_construction(tiny_model_dir):
    pytest.importorskip("dspy")
    from deal_chains.dspy import DeALLM

    with pytest.raises(SpecError, match="search.beam"):
        DeALLM(str(tiny_model_dir), spec="rewards: [{length: {max_words: 5}}]\nsearch: {beam: 0}")


@pytest.mark.integration
def test_dspy_predict_runs_with_the_spec_rewards(default_lm):
    dspy = pytest.importorskip("dspy")
    from deal_chains.dspy import DeALLM
    from rewards import KeywordCoverage

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    # a set greedy decoding does not fully cover through DSPy's JSON prompt
    concepts = ["river", "boat", "paddle"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # DSPy 3.4 deprecates BaseLM.forward
            lm = DeALLM(default_lm, spec="commongen", max_tokens=40)
            with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
                write = dspy.Predict("concepts: list[str] -> sentence: str")
                out = write(concepts=concepts, config={"reward_vars": {"concepts": concepts}})
            greedy = DeALLM(default_lm, spec="commongen", max_tokens=40, strategy="greedy")
            with dspy.context(lm=greedy, adapter=dspy.JSONAdapter()):
                baseline = write(concepts=concepts, config={"reward_vars": {"concepts": concepts}})
    finally:
        torch.set_num_threads(before)
    assert isinstance(out.sentence, str) and out.sentence
    deal = lm.history[-1]["response"].deal[0]
    assert deal["strategy"] == "deal" and set(deal["rewards"]) == {"keywords"}
    # the output field covers every concept (the search's reward, recomputed on the
    # parsed field) where greedy decoding under the same prompt does not
    kw = KeywordCoverage(concepts)
    assert kw.score([baseline.sentence], None)[0] < 1.0, baseline.sentence
    assert kw.score([out.sentence], None)[0] == 1.0, out.sentence
    assert deal["rewards"]["keywords"] == 1.0
