"""How many prompts one batch searches together: sized by the rows a search actually keeps,
with its worst case held to the memory budget.

A prompt may keep up to ``top_k x beam`` hypotheses in flight (its worst case), but bounded
candidates (``max_logprob_drop``) and finished beams usually leave far fewer: on the harmless
preset a live request keeps ~6 rows of its worst-case 16. Sizing every batch for the worst case
then runs forwards of ~25 rows where the machine gains up to ~128, and a batch's tail (its last
long answers) pays each forward's fixed cost (reading the weights) for a few rows. So the first batch is sized for the
worst case, and later ones for the rows per live prompt the batches so far kept, as long as
their worst case still fits the memory budget.

>>> planner = BatchPlanner(worst_rows=16, max_rows=128, max_row_tokens=10**6, memory_row_tokens=10**6)
>>> len(planner.take([200] * 40))                  # the first batch: 8 prompts x 16 rows
8
>>> planner.observe(row_forwards=3_200, prompt_forwards=800)   # they kept 4 rows each
>>> len(planner.take([200] * 32))
32
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# rows (beams x candidates) one forward may carry when the caller does not say; beyond
# this a 2-core CPU stops gaining from batching
DEFAULT_MAX_ROWS = 128
# rows x sequence length one batch may hold: every candidate row carries its own copy of
# the KV cache, so long prompts must share a batch with fewer others (memory and the
# per-step cache copies grow with this product)
DEFAULT_MAX_ROW_TOKENS = 24_576
# on a GPU, batches are sized from the memory free when the engine is built: this share of
# it may go to the KV cache (the rest: weights' workspace, logits, fragmentation), and a
# forward may carry this many rows
GPU_KV_MEMORY_FRACTION = 0.5
GPU_MAX_ROWS = 1024
# on a CPU, the share of the free memory a batch's worst case may take
CPU_KV_MEMORY_FRACTION = 0.5


def batch_budget(device_type: str, free_bytes: int | None, kv_bytes_per_row_token: int) -> tuple[int, int]:
    """(max rows, max rows x tokens) of one batch: fixed on a CPU, where batching gains
    little past ~128 rows; on a GPU from the free memory, so a big card batches more."""
    if device_type != "cuda" or not free_bytes or kv_bytes_per_row_token <= 0:
        return DEFAULT_MAX_ROWS, DEFAULT_MAX_ROW_TOKENS
    row_tokens = int(free_bytes * GPU_KV_MEMORY_FRACTION) // kv_bytes_per_row_token
    # never below the CPU budget's shape: a search that fits nowhere is SearchLimits' to refuse
    return GPU_MAX_ROWS, max(row_tokens, DEFAULT_MAX_ROW_TOKENS // 8)


def memory_row_tokens(device_type: str, free_bytes: int | None, kv_bytes_per_row_token: int,
                      max_row_tokens: int) -> int:
    """Rows x tokens a batch's worst case may hold in memory: on a GPU the budget already
    comes from its free memory; on a CPU a share of the free memory (never below
    ``max_row_tokens``, so a batch sized for the worst case is never refused)."""
    if device_type == "cuda" or not free_bytes or kv_bytes_per_row_token <= 0:
        return max_row_tokens
    return max(max_row_tokens, int(free_bytes * CPU_KV_MEMORY_FRACTION) // kv_bytes_per_row_token)


@dataclass
class BatchPlanner:
    """Takes the next batch of prompts, sized by the rows per prompt seen so far.

    ``worst_rows``: the most rows one prompt may keep; ``max_rows`` and ``max_row_tokens``:
    what one batch should carry at the rows it is expected to keep (compute);
    ``memory_row_tokens``: what it may hold if every prompt kept its worst case (memory).
    """

    worst_rows: int
    max_rows: int
    max_row_tokens: int
    memory_row_tokens: int
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
            if out and (n * rows > self.max_rows or n * rows * longest > self.max_row_tokens
                        or n * self.worst_rows * longest > self.memory_row_tokens):
                break
            out.append(i)
        return out
