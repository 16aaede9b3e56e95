"""Tests for evores.strategies.operators: crossover, mutate, tournament."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_strategies import seeds, spaces

from evores.core.errors import ConfigError
from evores.strategies.genes import Categorical, Integer, LogFloat
from evores.strategies.operators import crossover, mutate, tournament
from evores.strategies.space import SearchSpace


def genome(**changes) -> dict:
    h = {
        "learning_rate": 0.01,
        "conv_filters": [32, 64],
        "conv_kernels": [3, 5],
        "fc_units": [128],
        "batch_size": 64,
        "l1": 0.0,
        "l2": 1e-4,
    }
    h.update(changes)
    return h


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---- crossover ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(space=spaces(), seed=seeds)
def test_crossover_children_validate_and_inherit(space: SearchSpace, seed: int) -> None:
    g = rng(seed)
    a, b = space.sample(g), space.sample(g)
    before = copy.deepcopy((a, b))
    c1, c2 = crossover(a, b, space, g)
    assert (a, b) == before
    assert space.validate(c1) == c1 and space.validate(c2) == c2
    for key in ("learning_rate", "batch_size", "l1", "l2"):
        assert sorted([c1[key], c2[key]]) == sorted([a[key], b[key]])
    for layers in ("conv_filters", "fc_units"):
        assert sorted([len(c1[layers]), len(c2[layers])]) == sorted(
            [len(a[layers]), len(b[layers])]
        )
    blocks = {id(h): list(zip(h["conv_filters"], h["conv_kernels"], strict=True)) for h in (a, b)}
    for child in (c1, c2):
        for i, block in enumerate(zip(child["conv_filters"], child["conv_kernels"], strict=True)):
            assert block in [bl[i] for bl in blocks.values() if i < len(bl)]
        for i, unit in enumerate(child["fc_units"]):
            assert unit in [p["fc_units"][i] for p in (a, b) if i < len(p["fc_units"])]


def test_crossover_mixes_genes_and_layers() -> None:
    space = SearchSpace()
    a = genome()
    b = genome(
        learning_rate=0.5,
        conv_filters=[8, 16, 128],
        conv_kernels=[7, 7, 7],
        fc_units=[16, 32],
        batch_size=256,
        l1=1e-5,
        l2=0.0,
    )
    children = [crossover(a, b, space, rng(s)) for s in range(40)]
    lrs = {c1["learning_rate"] for c1, _ in children}
    assert lrs == {0.01, 0.5}
    firsts = {(c1["conv_filters"][0], c1["conv_kernels"][0]) for c1, _ in children}
    assert firsts == {(32, 3), (8, 7)}  # blocks travel whole, never (32, 7)
    assert {len(c1["conv_filters"]) for c1, _ in children} == {2, 3}


def test_crossover_is_deterministic() -> None:
    space, a = SearchSpace(), genome()
    b = genome(conv_filters=[8, 16, 128], conv_kernels=[7, 7, 7], learning_rate=0.5)
    assert crossover(a, b, space, rng(3)) == crossover(a, b, space, rng(3))


def test_crossover_rejects_invalid_parent() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        crossover(genome(), genome(batch_size=3), SearchSpace(), rng())


# ---- mutate ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    space=spaces(),
    seed=seeds,
    gene_prob=st.floats(0.0, 1.0),
    sigma=st.floats(0.0, 5.0),
)
def test_mutate_outputs_validate(
    space: SearchSpace, seed: int, gene_prob: float, sigma: float
) -> None:
    g = rng(seed)
    h = space.sample(g)
    before = copy.deepcopy(h)
    child = mutate(h, space, g, gene_prob=gene_prob, sigma=sigma)
    assert h == before
    assert space.validate(child) == child


def test_mutate_is_deterministic_and_zero_prob_is_identity() -> None:
    space, h = SearchSpace(), genome()
    assert mutate(h, space, rng(5)) == mutate(h, space, rng(5))
    assert mutate(h, space, rng(5), gene_prob=0.0) == h
    assert len({repr(mutate(h, space, rng(s))) for s in range(20)}) > 10


FIXED_DEPTH = SearchSpace(conv_layers=Integer(3, 3), fc_layers=Integer(2, 2))


def test_mutate_categoricals_always_change() -> None:
    h = genome(conv_filters=[8, 16, 32], conv_kernels=[3, 5, 7], fc_units=[16, 32])
    for seed in range(30):
        child = mutate(h, FIXED_DEPTH, rng(seed), gene_prob=1.0)
        assert all(
            k != old for k, old in zip(child["conv_kernels"], h["conv_kernels"], strict=True)
        )
        assert child["batch_size"] != h["batch_size"]
    single = SearchSpace(
        conv_layers=Integer(2, 2), conv_kernels=Categorical((3,)), batch_size=Categorical((32,))
    )
    child = mutate(genome(conv_kernels=[3, 3], batch_size=32), single, rng(), gene_prob=1.0)
    assert child["conv_kernels"] == [3, 3] and child["batch_size"] == 32


def test_mutate_log_ints_change_by_at_least_one_even_at_bounds() -> None:
    h = genome(conv_filters=[8, 100, 256], conv_kernels=[3, 5, 7], fc_units=[16, 1024])
    for seed in range(20):
        child = mutate(h, FIXED_DEPTH, rng(seed), gene_prob=1.0, sigma=1e-12)
        assert [
            abs(c - p) for c, p in zip(child["conv_filters"], h["conv_filters"], strict=True)
        ] == [1] * 3
        assert [abs(c - p) for c, p in zip(child["fc_units"], h["fc_units"], strict=True)] == [1, 1]
    fixed = SearchSpace(conv_filters=Integer(32, 32, log=True))
    child = mutate(genome(conv_filters=[32, 32]), fixed, rng(), gene_prob=1.0)
    assert set(child["conv_filters"]) == {32}


def test_mutate_log_floats_step_in_log_space_and_clip() -> None:
    space = SearchSpace(l1=LogFloat(1e-7, 1e-2), l2=LogFloat(1e-7, 1e-2))
    h = genome(l1=1e-4)
    small = [
        mutate(h, space, rng(s), gene_prob=1.0, sigma=0.01)["learning_rate"] for s in range(50)
    ]
    assert all(abs(math.log10(v) - math.log10(0.01)) < 0.2 for v in small)
    assert len(set(small)) > 40
    big = [mutate(h, space, rng(s), gene_prob=1.0, sigma=50.0)["learning_rate"] for s in range(50)]
    assert all(1e-4 <= v <= 1.0 for v in big)
    assert big.count(1e-4) + big.count(1.0) >= 45 and min(big) == 1e-4 and max(big) == 1.0
    assert mutate(h, space, rng(), gene_prob=1.0, sigma=0.0)["l1"] == 1e-4


def test_mutate_toggles_zero_allowed_genes() -> None:
    space = SearchSpace()
    from_nonzero = [mutate(genome(l1=1e-4), space, rng(s), gene_prob=1.0)["l1"] for s in range(300)]
    from_zero = [mutate(genome(l1=0.0), space, rng(s), gene_prob=1.0)["l1"] for s in range(300)]
    assert 0 < sum(v == 0.0 for v in from_nonzero) < 100
    assert 0 < sum(v != 0.0 for v in from_zero) < 100
    assert all(v == 0.0 or 1e-7 <= v <= 1e-2 for v in from_nonzero + from_zero)


def test_mutate_depth_adds_and_removes_layers() -> None:
    space = SearchSpace(conv_layers=Integer(1, 3), fc_layers=Integer(1, 2))
    deep = genome(conv_filters=[8, 16, 32], conv_kernels=[3, 5, 7], fc_units=[16, 32])
    shallow = genome(conv_filters=[32], conv_kernels=[5], fc_units=[64])
    for seed in range(30):
        cut = mutate(deep, space, rng(seed), gene_prob=1.0)
        grown = mutate(shallow, space, rng(seed), gene_prob=1.0)
        assert len(cut["conv_filters"]) == 2 and len(cut["fc_units"]) == 1
        assert len(grown["conv_filters"]) == 2 and len(grown["fc_units"]) == 2
    middle = genome(conv_filters=[8, 16], conv_kernels=[3, 5])
    depths = {len(mutate(middle, space, rng(s), gene_prob=1.0)["conv_filters"]) for s in range(30)}
    assert depths == {1, 3}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gene_prob": 1.5},
        {"gene_prob": -0.1},
        {"sigma": -1.0},
        {"sigma": math.nan},
        {"sigma": True},
    ],
)
def test_mutate_rejects_bad_rates(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        mutate(genome(), SearchSpace(), rng(), **kwargs)


def test_mutate_rejects_invalid_genome() -> None:
    with pytest.raises(ConfigError, match="conv_kernels"):
        mutate(genome(conv_kernels=[3]), SearchSpace(), rng())


# ---- selection ------------------------------------------------------------------------------


def test_tournament_full_size_picks_the_best_with_ties_to_lower_index() -> None:
    fits = [0.1, 0.9, float("nan"), 0.9, 0.3]
    assert tournament(fits, 6, size=5, rng=rng()) == [1] * 6
    assert tournament(fits, 3, size=100, rng=rng()) == [1] * 3
    assert tournament([math.nan, math.nan], 2, size=2, rng=rng()) == [0, 0]
    assert tournament(fits, 0, size=3, rng=rng()) == []


def test_tournament_draws_without_replacement() -> None:
    fits = [5.0, 1.0, 2.0, 3.0]
    winners = tournament(fits, 400, size=2, rng=rng(1))
    # index 1 is the worst: with two distinct aspirants it can never win
    assert 1 not in winners and set(winners) == {0, 2, 3}
    assert winners.count(0) > winners.count(3) > winners.count(2)


def test_tournament_is_deterministic_and_size_one_is_uniform() -> None:
    fits = list(range(10))
    assert tournament(fits, 20, 3, rng(9)) == tournament(fits, 20, 3, rng(9))
    assert len(set(tournament(fits, 200, 1, rng(2)))) == 10


@pytest.mark.parametrize(("fits", "n", "size"), [([1.0], -1, 1), ([1.0], 1, 0), ([], 1, 1)])
def test_tournament_rejects(fits: list, n: int, size: int) -> None:
    with pytest.raises(ConfigError):
        tournament(fits, n, size, rng())


# ---- global state ---------------------------------------------------------------------------


def test_operators_leave_global_random_state_alone() -> None:
    random.seed(123)
    np.random.seed(123)
    py_state, np_state = random.getstate(), np.random.get_state()
    space, g = SearchSpace(), rng(4)
    a, b = space.sample(g), space.sample(g)
    crossover(a, b, space, g)
    mutate(a, space, g, gene_prob=1.0)
    tournament([1.0, 2.0, 3.0], 5, 2, g)
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]
