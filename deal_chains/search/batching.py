"""How many prompts one batch searches together: as many as the memory holds at their worst
case, and as many as the rows the search actually keeps allow per forward.

A forward pays a fixed cost (reading the weights, launching every layer) whatever rows it
carries, and a batch runs as many forwards as its longest answer needs. So fewer, fuller
batches pay fewer tails (a batch's last long answers, run for a few rows): on a 2-core CPU,
the 40 AdvBench requests of the harmless preset took 99 s in one batch against 115 s in batches
of 7, 14 and 19 (the CommonGen 5-word slice: 2.47x greedy against 2.84x), with the same answers.
The limit is memory: a prompt may keep up to ``top_k x beam`` hypotheses in flight (its worst
case), each with its own KV cache, so a batch takes no more prompts than half the free memory
holds if every one kept its worst case. Bounded candidates (``max_logprob_drop``) and finished
beams usually leave far fewer rows (~6 of 16 on the harmless preset), so the rows per forward
are counted at what the batches so far kept: the first batch is sized for the worst case,
later ones for the rows per live prompt observed.

>>> planner = BatchPlanner(worst_rows=16, max_rows=128, max_row_tokens=10**6)
>>> len(planner.take([200] * 40))                  # the first batch: 8 prompts x 16 rows
8
>>> planner.observe(row_forwards=3_200, prompt_forwards=800)   # they kept 4 rows each
>>> len(planner.take([200] * 32))                  # 32 x 4 rows; 32 x 16 x 200 row-tokens fit
32
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# when the free memory is unknown: rows (beams x candidates) one forward may carry, and rows
# x sequence length one batch may hold (every candidate row carries its own copy of the KV
# cache, so long prompts must share a batch with fewer others)
DEFAULT_MAX_ROWS = 128
DEFAULT_MAX_ROW_TOKENS = 24_576
# otherwise batches are sized from the memory free when the engine is built: this share of it
# may go to the KV cache (the rest: weights' workspace, logits, the copies a step makes), and
# a forward may carry this many rows
GPU_KV_MEMORY_FRACTION = 0.5
CPU_KV_MEMORY_FRACTION = 0.5
MAX_ROWS = 1024


def batch_budget(device_type: str, free_bytes: int | None, kv_bytes_per_row_token: int) -> tuple[int, int]:
    """(max rows, max rows x tokens) of one batch, from the free memory of the device (a
    fixed budget where it is unknown): fuller batches pay fewer forwards on a CPU as on a GPU,
    so the KV cache's memory is the limit.

    >>> batch_budget("cpu", 20 * 1024**3, 46_080)   # SmolLM2-135M in float32, 20 GiB free
    (1024, 233016)
    """
    if not free_bytes or kv_bytes_per_row_token <= 0:
        return DEFAULT_MAX_ROWS, DEFAULT_MAX_ROW_TOKENS
    fraction = GPU_KV_MEMORY_FRACTION if device_type == "cuda" else CPU_KV_MEMORY_FRACTION
    row_tokens = int(free_bytes * fraction) // kv_bytes_per_row_token
    # never below the fixed budget's shape: a search that fits nowhere is SearchLimits' to refuse
    return MAX_ROWS, max(row_tokens, DEFAULT_MAX_ROW_TOKENS // 8)


@dataclass
class BatchPlanner:
    """Takes the next batch of prompts, sized by the rows per prompt seen so far.

    ``worst_rows``: the most rows one prompt may keep; ``max_rows``: the rows one forward
    should carry, at the rows a prompt is expected to keep (compute); ``max_row_tokens``: the
    rows x tokens one batch may hold if every prompt kept its worst case (memory).
    """

    worst_rows: int
    max_rows: int
    max_row_tokens: int
    row_forwards: int = 0  # rows x forwards of the batches so far
    prompt_forwards: int = 0  # live prompts x forwards of the batches so far

    @property
    def expected_rows(self) -> float:
        """Rows one live prompt keeps per forward: its worst case until a batch has run."""
        if self.prompt_forwards <= 0:
            return float(self.worst_rows)
        return min(float(self.worst_rows), max(1.0, self.row_forwards / self.prompt_forwards))

    def observe(self, row_forwards: int, prompt_forwards: int) -> None:
        """A batch ran ``row_forwards`` rows over its forwards while its prompts were live
        ``prompt_forwards`` forwards in all (each prompt counted per forward it took part in)."""
        self.row_forwards += max(0, int(row_forwards))
        self.prompt_forwards += max(0, int(prompt_forwards))

    def take(self, lengths: Iterable[int]) -> list[int]:
        """The indices (a prefix, input order kept) of ``lengths`` (each prompt's longest row:
        prompt + budget; read lazily, only as far as the batch goes) that the next batch
        searches; at least one."""
        rows = self.expected_rows
        out: list[int] = []
        longest = 0
        for i, length in enumerate(lengths):
            longest = max(longest, length)
            n = len(out) + 1
            if out and (n * rows > self.max_rows or n * self.worst_rows * longest > self.max_row_tokens):
                break
            out.append(i)
        return out
