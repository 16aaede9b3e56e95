"""Tests for evores.core.stats: the median and Spearman's rank correlation."""

from __future__ import annotations

import numpy as np
import pytest

from evores.core.seeding import derive_rng
from evores.core.stats import bootstrap_interval, kendall, median, spearman


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


# --- kendall ----------------------------------------------------------------------------------


def test_kendall_counts_concordant_and_discordant_pairs():
    # (1,2,3,4) against (1,3,2,4): 5 concordant pairs, 1 discordant: (5 - 1) / 6
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert kendall([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_kendall_tau_b_corrects_for_ties_and_is_undefined_without_variation():
    # x ties one pair, y ties one: S = 3 - 1 = 2, pairs untied 5 and 5 of 6: 2 / sqrt(5 * 5)
    assert kendall([1, 2, 2, 4], [1, 3, 2, 2]) == pytest.approx(0.4)
    assert kendall([1, 2, 2, 4], [1, 3, 3, 3]) == pytest.approx(3 / np.sqrt(5 * 3))  # S = 3
    assert kendall([1, 1, 1], [1, 2, 3]) is None and kendall([1], [2]) is None


# --- the bootstrap interval ---------------------------------------------------------------------


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(5)
    x = rng.random(12)
    y = x + rng.normal(0, 0.3, 12)
    first = bootstrap_interval(x, y, derive_rng(0, "fidelity", 1))
    assert first == bootstrap_interval(x, y, derive_rng(0, "fidelity", 1))
    assert first != bootstrap_interval(x, y, derive_rng(1, "fidelity", 1))
    low, high = first
    assert -1.0 <= low < spearman(x, y) < high <= 1.0


def test_bootstrap_interval_narrows_with_more_pairs_and_needs_three():
    rng = np.random.default_rng(6)
    x = rng.random(200)
    y = x + rng.normal(0, 0.3, 200)
    wide = bootstrap_interval(x[:10], y[:10], np.random.default_rng(0))
    narrow = bootstrap_interval(x, y, np.random.default_rng(0))
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 2
    assert bootstrap_interval([0.1, 0.2], [0.3, 0.4], np.random.default_rng(0)) is None
