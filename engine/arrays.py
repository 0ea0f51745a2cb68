"""Growable numpy arrays: the valuation book and the coalescer keep one entry per account or symbol."""

from __future__ import annotations

import numpy as np

_GROW = 1.5


def grown(array: np.ndarray, size: int, fill: float) -> np.ndarray:
    """`array` with room for `size` entries (new ones `fill`), grown by half again so appends stay amortised."""
    if size <= len(array):
        return array
    bigger = np.full(max(size, int(len(array) * _GROW) + 16), fill, dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of `arange(s, s + c)` for each (s, c), without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(counts)
    offsets = np.repeat(starts - (ends - counts), counts)
    return offsets + np.arange(total, dtype=np.int64)
