"""The old ``deal_chains.adapter`` module: a shim over ``deal_chains.runtime`` that warns."""

from __future__ import annotations

import importlib
import sys

import pytest

# every public name the module had before the runtime package
OLD_NAMES = ["CancelledRequest", "ContentView", "DeALAdapter", "Handle", "Outcome", "Request", "TextStream",
             "content_view", "json_content", "resolve_spec", "score_text", "search_config"]


def test_the_old_adapter_module_warns_and_keeps_its_names():
    sys.modules.pop("deal_chains.adapter", None)
    with pytest.warns(DeprecationWarning, match="deal_chains.runtime"):
        adapter = importlib.import_module("deal_chains.adapter")
    import deal_chains.runtime as runtime
    from deal_chains.jsonkit.lexer import json_content

    assert adapter.DeALAdapter is runtime.ModelRuntime
    assert adapter.json_content is json_content
    for name in OLD_NAMES:
        assert getattr(adapter, name) is getattr(runtime, name, getattr(adapter, name)), name
        assert name in adapter.__all__
