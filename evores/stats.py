"""The statistics evores reports: the median and Spearman's rank correlation, defined once.

The search records the rank correlation of its elites at each stage change; the progress
lines and the plots show the median of a stage's accuracies. Both import them from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["median", "spearman"]


def median(values: Sequence[float]) -> float | None:
    """The median (the mean of the middle two for an even count), or None for no values."""
    return float(np.median(values)) if len(values) else None


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n; tied values share the average of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    new_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(new_group) - 1
    starts = np.r_[np.flatnonzero(new_group), len(values)]  # group g spans starts[g]:starts[g+1]
    ranks = np.empty(len(values))
    ranks[order] = (starts[group] + starts[group + 1] - 1) / 2 + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties), or None when it is undefined.

    Undefined means fewer than 2 pairs or no variation in either sequence. Raises ValueError
    for sequences of different lengths or non-finite values.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"spearman needs two flat sequences of equal length, got {a.shape}, {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("spearman needs finite values; drop NaN or infinite entries first")
    if len(a) < 2:
        return None
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denominator == 0.0:
        return None
    return max(-1.0, min(1.0, float(ra @ rb) / denominator))
