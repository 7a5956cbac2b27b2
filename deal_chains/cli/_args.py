"""Argument types shared by the subcommands: checked when the command line is read."""

from __future__ import annotations

import argparse

import math
import re


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _device_arg(value: str) -> str:
    """--device: checked when the command line is read, not after the inputs and spec
    (the loader then checks that the device is really there)."""
    if not _DEVICE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"invalid device {value!r}: use auto, cpu, cuda, cuda:N (N a GPU "
                                         "index) or mps")
    return value


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _fraction(text: str) -> float:
    v = float(text)
    if not 0.0 <= v < 1.0 or math.isnan(v):
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return v


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes must be a comma list of integers, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return sizes
