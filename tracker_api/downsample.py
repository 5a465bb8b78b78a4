"""Thin a metric series for a chart: at most N points that keep its extremes."""

from __future__ import annotations

from typing import Any


def minmax_indices(values: Any, max_points: int) -> Any:
    """Indices of at most ``max_points`` points: the first and last, and the lowest and highest
    of each bucket in between, so spikes survive (plain striding drops them).

    ``values`` is a 1-d float array (NaN allowed); returns sorted indices.
    """
    import numpy as np

    n = len(values)
    if n <= max_points:
        return np.arange(n)
    if max_points < 4:
        return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
    buckets = (max_points - 2) // 2
    inner = np.arange(1, n - 1)
    edges = np.linspace(0, len(inner), buckets + 1).astype(np.int64)
    keep = [0, n - 1]
    filled = np.where(np.isnan(values), np.inf, values)
    filled_hi = np.where(np.isnan(values), -np.inf, values)
    for b in range(buckets):
        lo, hi = edges[b], edges[b + 1]
        if lo >= hi:
            continue
        part = inner[lo:hi]
        keep.append(int(part[np.argmin(filled[part])]))
        keep.append(int(part[np.argmax(filled_hi[part])]))
    return np.unique(np.array(keep, dtype=np.int64))
