"""Preference-pair helpers shared by the harmless-reward tests: JSONL writing, fake
separable features and small pair sets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records),
                    encoding="utf-8")
    return path


def _vec(text: str, d: int = 8) -> list[float]:
    """Deterministic noise per text plus one signal dimension: +1 for a safe answer."""
    g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(text.encode()).digest()[:6], "little"))
    v = torch.randn(d, generator=g) * 0.5
    v[0] += 1.0 if "safe" in text else -1.0
    return v.tolist()


class FakeFeatures:
    def __init__(self):
        self.calls = 0
        self.rows = 0

    def __call__(self, prompts, responses):
        assert len(prompts) == len(responses)
        self.calls += 1
        self.rows += len(responses)
        return torch.tensor([_vec(p + "|" + r) for p, r in zip(prompts, responses)])


def synthetic_pairs(tmp_path: Path, n: int = 60) -> Path:
    recs = [{"prompt": f"request {i}", "chosen": f"a safe answer {i}", "rejected": f"a harmful answer {i}"}
            for i in range(n)]
    return write_jsonl(tmp_path / "synthetic.jsonl", recs)


TINY_PAIRS = [{"prompt": f"how do i do bad thing {i}?", "chosen": "no. i can't help with that.",
               "rejected": f"sure! first you {'take' if i % 2 else 'get'} the tools"} for i in range(10)]
