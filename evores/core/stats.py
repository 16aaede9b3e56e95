"""The statistics evores reports: the median and the rank correlations, defined once.

The search records the rank correlations of its elites and its fidelity probe at each stage
change (Spearman, Kendall, a seeded bootstrap interval for Spearman); the progress lines and
the plots show the median of a stage's accuracies. All import them from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_interval", "kendall", "median", "spearman"]


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
    a, b = _pairs(x, y, "spearman")
    if len(a) < 2:
        return None
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denominator == 0.0:
        return None
    return max(-1.0, min(1.0, float(ra @ rb) / denominator))


def _pairs(x: Sequence[float], y: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"{name} needs two flat sequences of equal length, got {a.shape}, {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{name} needs finite values; drop NaN or infinite entries first")
    return a, b


def kendall(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties counted in neither concordant nor discordant pairs, and corrected
    for in the denominator), or None when it is undefined (as :func:`spearman`)."""
    a, b = _pairs(x, y, "kendall")
    if len(a) < 2:
        return None
    upper = np.triu_indices(len(a), k=1)
    da = np.sign(a[:, None] - a[None, :])[upper]
    db = np.sign(b[:, None] - b[None, :])[upper]
    denominator = math.sqrt(float(np.count_nonzero(da)) * float(np.count_nonzero(db)))
    if denominator == 0.0:
        return None
    return max(-1.0, min(1.0, float(da @ db) / denominator))


def bootstrap_interval(
    x: Sequence[float],
    y: Sequence[float],
    rng: np.random.Generator,
    level: float = 0.9,
    resamples: int = 1000,
) -> list[float] | None:
    """A percentile bootstrap interval for Spearman's rho: the pairs resampled with replacement
    ``resamples`` times, resamples where rho is undefined (all ranks tied) left out. None with
    fewer than 3 pairs, or when fewer than half the resamples give a rho. The interval depends
    only on the pairs and ``rng``: seed it from evores.core.seeding for a reproducible one."""
    a, b = _pairs(x, y, "bootstrap_interval")
    if len(a) < 3:
        return None
    picks = rng.integers(len(a), size=(resamples, len(a)))
    rhos = [rho for row in picks if (rho := spearman(a[row], b[row])) is not None]
    if len(rhos) < resamples / 2:
        return None
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(rhos, [tail, 100 - tail])
    return [float(low), float(high)]
