"""LangChain's standard chat-model test suites (langchain-tests) for ChatDeAL.

Unit suite: the tiny random-weight model (fast). Integration suite: the embedded default
model (marked integration). Tests skipped here are listed, with the reason, in docs/integrations.md
("LangChain and DSPy")."""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
import torch

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from deal_chains.langchain import ChatDeAL  # noqa: E402
from tiny import build_tiny_model  # noqa: E402


@lru_cache(maxsize=1)
def tiny_model_path() -> str:
    """A tiny model of our own: class-level test properties cannot use fixtures."""
    return str(build_tiny_model(Path(tempfile.mkdtemp(prefix="deal-chains-tiny-"))))


class TestChatDeALUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatDeAL]:
        return ChatDeAL

    @property
    def chat_model_params(self) -> dict:
        return {"model": tiny_model_path(), "dtype": "float64", "search": {"max_new_tokens": 8}}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True


@pytest.mark.integration
class TestChatDeALIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True, scope="class")
    def _threads(self):
        before = torch.get_num_threads()
        torch.set_num_threads(2)
        yield
        torch.set_num_threads(before)

    @pytest.fixture(autouse=True, scope="class")
    def _default_model(self, default_lm):  # skips (or fails in CI) without the default model
        return default_lm

    @property
    def chat_model_class(self) -> type[ChatDeAL]:
        return ChatDeAL

    @property
    def chat_model_params(self) -> dict:
        # DeAL with a light search and the concise preset (a length reward): the suite
        # checks the LangChain contract, the DeAL tests check the search
        return {"model": "default", "spec": "concise", "top_k": 2, "beam": 1, "lookahead": 2,
                "max_tokens": 96}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return tiny_model_path()
