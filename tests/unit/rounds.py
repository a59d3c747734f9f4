"""How the vectorized engine and detector split a batch, kept for the reference models the tests
compare the batch engine and the compiled detector with."""
from __future__ import annotations

import numpy as np


def rounds(idx: np.ndarray) -> list[np.ndarray]:
    """Split positions of ``idx`` into rounds with at most one position per series each,
    keeping each series' order: round ``k`` holds every series' ``k``-th point.

    >>> [r.tolist() for r in rounds(np.array([3, 1, 3, 3, 1]))]
    [[0, 1], [2, 4], [3]]
    """
    n = len(idx)
    if n == 0:
        return []
    order = np.argsort(idx, kind="stable")
    s = idx[order]
    new = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(new)
    rank_sorted = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = rank_sorted
    if rank_sorted.max() == 0:
        return [np.arange(n)]
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(rank_sorted.max() + 2))
    return [by_rank[bounds[k]:bounds[k + 1]] for k in range(len(bounds) - 1)]
