"""Tests for evores.stats: the median and Spearman's rank correlation."""

from __future__ import annotations

import numpy as np
import pytest

from evores.stats import median, spearman


def test_median_is_the_true_median():
    assert median([]) is None
    assert median([0.3, 0.9, 0.1]) == 0.3
    assert median([0.9, 0.1, 0.4, 0.6]) == pytest.approx(0.5)  # the mean of the middle two
    assert median((0.2, 0.2)) == 0.2


# --- spearman ---------------------------------------------------------------------------------


def test_spearman_perfect_monotone_is_plus_or_minus_one():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_spearman_known_value_without_ties():
    # d = ranks differ by (0, 0, -1, 1, 0) -> rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert spearman([1, 2, 3, 4, 5], [5, 6, 8, 7, 10]) == pytest.approx(0.9)


def test_spearman_with_ties_uses_average_ranks():
    # x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4): Pearson of the ranks = 0.9486833
    assert spearman([0.1, 0.5, 0.5, 0.9], [1, 2, 3, 4]) == pytest.approx(3 / np.sqrt(10))
    # both tied: x ranks (1.5, 1.5, 3, 4), y ranks (1, 2.5, 2.5, 4)
    rx, ry = np.array([1.5, 1.5, 3, 4]), np.array([1, 2.5, 2.5, 4])
    expected = np.corrcoef(rx, ry)[0, 1]
    assert spearman([2, 2, 5, 7], [0.3, 0.6, 0.6, 0.9]) == pytest.approx(expected)


def test_spearman_undefined_cases_give_none():
    assert spearman([], []) is None
    assert spearman([0.5], [0.7]) is None
    assert spearman([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]) is None
    assert spearman([0.1, 0.2, 0.3], [0.4, 0.4, 0.4]) is None


def test_spearman_rejects_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        spearman([1, float("nan")], [1, 2])
