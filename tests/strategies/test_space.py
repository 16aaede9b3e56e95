"""Tests for evores.strategies.space: gene types, SearchSpace, the genome round trips, repair,
narrow."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_strategies import seeds, spaces

from evores.core.errors import ConfigError
from evores.strategies.genes import ZERO_PROBABILITY, Categorical, Integer, LogFloat
from evores.strategies.space import DEPRECATED_NAMES, SearchSpace, max_conv_layers, repair

ISSUE_DICT = {
    "learning_rate": [1e-4, 1.0],
    "conv_layers": [1, 6],
    "conv_filters": [8, 256],
    "conv_kernels": [3, 5, 7],
    "fc_layers": [1, 3],
    "fc_units": [16, 1024],
    "batch_size": [16, 32, 64, 128, 256, 512],
    "l1": [1e-7, 1e-2],
    "l1_allow_zero": True,
    "l2": [1e-7, 1e-2],
    "l2_allow_zero": True,
}


def good_genome() -> dict:
    return {
        "learning_rate": 0.01,
        "conv_filters": [32, 64],
        "conv_kernels": [3, 5],
        "fc_units": [128],
        "batch_size": 64,
        "l1": 0.0,
        "l2": 1e-4,
    }


def assert_one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---- random spaces for property tests -------------------------------------------------------


# ---- gene types and the space itself --------------------------------------------------------


def test_defaults_match_design() -> None:
    space = SearchSpace()
    assert space.learning_rate == LogFloat(1e-4, 1.0)
    assert space.conv_layers == Integer(1, 6)
    assert space.conv_filters == Integer(8, 256, log=True)
    assert space.conv_kernels == Categorical((3, 5, 7))
    assert space.fc_layers == Integer(1, 3)
    assert space.fc_units == Integer(16, 1024, log=True)
    assert space.batch_size == Categorical((16, 32, 64, 128, 256, 512))
    assert space.l1 == space.l2 == LogFloat(1e-7, 1e-2, allow_zero=True)


def test_issue_dict_is_the_default_and_round_trips() -> None:
    assert SearchSpace.from_dict(ISSUE_DICT) == SearchSpace()
    assert SearchSpace().to_dict() == ISSUE_DICT
    assert json.loads(json.dumps(SearchSpace().to_dict())) == ISSUE_DICT


def test_from_dict_partial_overrides_defaults() -> None:
    space = SearchSpace.from_dict(
        {"conv_layers": [2, 4], "conv_kernels": [3], "l1_allow_zero": False}
    )
    assert space.conv_layers == Integer(2, 4)
    assert space.conv_kernels == Categorical((3,))
    assert space.l1 == LogFloat(1e-7, 1e-2, allow_zero=False)
    assert space.conv_filters == SearchSpace().conv_filters


LEGACY_CHECKPOINT = (
    Path(__file__).resolve().parents[1]
    / "data"
    / "legacy-runs"
    / "sync-stopped"
    / "checkpoint.json"
)


def test_a_checkpoints_space_under_the_earlier_gene_names_reads_silently(caplog) -> None:
    stored = json.loads(LEGACY_CHECKPOINT.read_text())["state"]["search"]["space"]
    assert {"filters", "kernel", "units"} <= set(stored)
    space = SearchSpace.from_dict(stored)
    assert space.conv_filters == Integer(8, 64, log=True)
    assert space.conv_kernels == Categorical((3, 5))
    assert space.fc_units == Integer(16, 256, log=True)
    renamed = {DEPRECATED_NAMES.get(key, key): value for key, value in stored.items()}
    assert space.to_dict() == renamed
    assert caplog.records == []


@pytest.mark.parametrize("earlier, name", sorted(DEPRECATED_NAMES.items()))
def test_both_names_of_one_gene_is_one_line_error(earlier: str, name: str) -> None:
    plain = SearchSpace().to_dict()
    with pytest.raises(ConfigError) as exc:
        SearchSpace.from_dict({**plain, earlier: plain[name]})
    assert_one_line(exc, f"both {earlier!r} and {name!r}", f"keep only {name!r}")


def test_from_dict_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as exc:
        SearchSpace.from_dict({"learning_rates": [1e-3, 1e-1]})
    assert_one_line(exc, "learning_rates", "learning_rate, conv_layers", "l2_allow_zero")


@pytest.mark.parametrize(
    ("plain", "fragments"),
    [
        ({"learning_rate": [1.0, 1e-4]}, ["learning_rate", "inverted", "low <= high"]),
        ({"conv_filters": [0, 256]}, ["conv_filters", "low=0", ">= 1"]),
        ({"l1": [0.0, 1e-2]}, ["l1", "low=0.0", "> 0"]),
        ({"l2": [-1e-3, 1e-2]}, ["l2", "-0.001"]),
        ({"conv_kernels": []}, ["conv_kernels", "empty"]),
        ({"conv_kernels": [3, 3, 5]}, ["conv_kernels", "duplicates", "[3, 3, 5]"]),
        ({"conv_kernels": 3}, ["conv_kernels", "list of choices"]),
        ({"conv_kernels": [3, "x"]}, ["conv_kernels", "positive integers"]),
        ({"conv_layers": [0, 6]}, ["conv_layers", "low=0", "[1, 6]"]),
        ({"fc_layers": [0, 2]}, ["fc_layers", "low=0"]),
        ({"conv_layers": [1.5, 6]}, ["conv_layers", "1.5", "whole number"]),
        ({"fc_units": [16]}, ["fc_units", "[low, high] pair"]),
        ({"batch_size": [0, 16]}, ["batch_size", "positive"]),
        ({"learning_rate": [float("nan"), 1.0]}, ["learning_rate", "nan"]),
        ({"l1_allow_zero": "yes"}, ["l1_allow_zero", "'yes'", "true or false"]),
        ({"fc_units": None}, ["fc_units", "None"]),
    ],
)
def test_from_dict_rejects_bad_bounds(plain: dict, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        SearchSpace.from_dict(plain)
    assert_one_line(exc, *fragments)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogFloat(1.0, 0.1),
        lambda: LogFloat(0.0, 1.0),
        lambda: LogFloat(-1.0, 1.0),
        lambda: LogFloat(1e-3, math.inf),
        lambda: LogFloat(True, 1.0),
        lambda: LogFloat(1e-3, 1.0, allow_zero=1),
        lambda: Integer(5, 2),
        lambda: Integer(0, 8, log=True),
        lambda: Integer(1.0, 3),
        lambda: Integer(True, 3),
        lambda: Categorical(()),
        lambda: Categorical((3, 3)),
        lambda: Categorical(([1],)),
        lambda: Categorical("357"),
        lambda: SearchSpace(conv_layers=Integer(0, 3)),
        lambda: SearchSpace(conv_filters=Integer(8, 256)),
        lambda: SearchSpace(conv_layers=Integer(1, 6, log=True)),
        lambda: SearchSpace(learning_rate=LogFloat(1e-4, 1.0, allow_zero=True)),
        lambda: SearchSpace(learning_rate=Integer(1, 2)),
        lambda: SearchSpace(batch_size=Categorical((32.0, 64.0))),
    ],
)
def test_constructors_validate_themselves(make) -> None:
    with pytest.raises(ConfigError) as exc:
        make()
    assert "\n" not in str(exc.value)


def test_gene_normalisation() -> None:
    assert LogFloat(1, 10).low == 1.0 and isinstance(LogFloat(1, 10).low, float)
    assert Integer(np.int64(2), np.int64(5)) == Integer(2, 5)
    assert Categorical([3, np.int64(5)]).choices == (3, 5)
    assert LogFloat(0.5, 0.5).high == 0.5  # a fixed value is a valid (degenerate) range


# ---- validate -------------------------------------------------------------------------------


def _set(**changes):
    def edit(h: dict) -> dict:
        h.update(changes)
        return h

    return edit


def _drop(key: str):
    def edit(h: dict) -> dict:
        del h[key]
        return h

    return edit


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (_drop("l2"), ["missing", "'l2'"]),
        (_set(dropout=0.5), ["unknown", "dropout", "learning_rate"]),
        (_set(batch_size=True), ["batch_size", "True"]),
        (_set(batch_size=64.0), ["batch_size", "64.0"]),
        (_set(batch_size=48), ["batch_size", "48", "one of"]),
        (_set(conv_filters=[32.0, 64]), ["conv_filters[0]", "32.0", "integer"]),
        (_set(conv_filters=[True, 64]), ["conv_filters[0]", "True"]),
        (_set(conv_filters=[32, 300]), ["conv_filters[1]", "300", "[8, 256]"]),
        (_set(conv_kernels=[4, 5]), ["conv_kernels[0]", "4"]),
        (_set(conv_kernels=[3]), ["2 conv_filters", "1 conv_kernels"]),
        (_set(conv_filters=[], conv_kernels=[]), ["0 conv layers", "[1, 6]"]),
        (_set(conv_filters=[8] * 7, conv_kernels=[3] * 7), ["7 conv layers"]),
        (_set(fc_units=[]), ["0 fc layers", "[1, 3]"]),
        (_set(fc_units=128), ["fc_units", "128", "list"]),
        (_set(fc_units=[8]), ["fc_units[0]", "8", "[16, 1024]"]),
        (_set(learning_rate=2.0), ["learning_rate", "2.0", "[0.0001, 1.0]"]),
        (_set(learning_rate=0.0), ["learning_rate", "0.0"]),
        (_set(learning_rate=float("nan")), ["learning_rate", "nan"]),
        (_set(learning_rate="0.01"), ["learning_rate", "'0.01'"]),
        (_set(l1=1.0), ["l1", "0 or [1e-07, 0.01]"]),
        (_set(l2=-1e-4), ["l2", "-0.0001"]),
    ],
)
def test_validate_rejects(edit, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        SearchSpace().validate(edit(good_genome()))
    assert_one_line(exc, *fragments)


def test_validate_rejects_non_dict_and_zero_when_not_allowed() -> None:
    with pytest.raises(ConfigError):
        SearchSpace().validate([("learning_rate", 0.01)])
    no_zero = SearchSpace(l2=LogFloat(1e-7, 1e-2))
    with pytest.raises(ConfigError, match="l2"):
        no_zero.validate(_set(l2=0.0)(good_genome()))


def test_validate_returns_normalised_copy() -> None:
    raw = {
        "learning_rate": np.float64(0.01),
        "conv_filters": (np.int64(32), 64),
        "conv_kernels": [np.int32(3), 5],
        "fc_units": [128],
        "batch_size": np.int64(64),
        "l1": 0,
        "l2": 1e-4,
    }
    before = copy.deepcopy(raw)
    out = SearchSpace().validate(raw)
    assert out == good_genome()
    assert type(out["learning_rate"]) is float and type(out["l1"]) is float
    assert all(type(v) is int for v in out["conv_filters"] + out["conv_kernels"])
    assert type(out["batch_size"]) is int and isinstance(out["conv_filters"], list)
    assert raw == before
    h = good_genome()
    assert SearchSpace().validate(h)["conv_filters"] is not h["conv_filters"]


# ---- sample ---------------------------------------------------------------------------------


def test_sample_is_deterministic_and_varies() -> None:
    space = SearchSpace()
    a = [space.sample(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    others = [space.sample(np.random.default_rng(s)) for s in range(10)]
    assert len({json.dumps(o) for o in others}) == 10


def test_sample_draws_zero_with_the_documented_probability() -> None:
    rng = np.random.default_rng(0)
    draws = [SearchSpace().sample(rng)["l1"] for _ in range(4000)]
    assert abs(sum(d == 0.0 for d in draws) / len(draws) - ZERO_PROBABILITY) < 0.03
    no_zero = SearchSpace(l1=LogFloat(1e-7, 1e-2))
    assert all(no_zero.sample(rng)["l1"] > 0 for _ in range(200))


def test_log_integer_sample_reaches_both_bounds() -> None:
    rng = np.random.default_rng(1)
    assert {Integer(1, 3, log=True).sample(rng) for _ in range(300)} == {1, 2, 3}
    assert Integer(4, 4, log=True).sample(rng) == 4
    assert LogFloat(0.3, 0.3).sample(rng) == 0.3


# ---- encode / decode ------------------------------------------------------------------------


def test_encode_flat_keys() -> None:
    flat = SearchSpace().encode(good_genome())
    assert flat == {
        "learning_rate": 0.01,
        "conv_layers": 2,
        "conv_filters_0": 32,
        "conv_filters_1": 64,
        "conv_kernels_0": 3,
        "conv_kernels_1": 5,
        "fc_layers": 1,
        "fc_units_0": 128,
        "batch_size": 64,
        "l1": 0.0,
        "l2": 1e-4,
    }


def test_decode_reads_the_earlier_flat_kernel_names() -> None:
    flat = SearchSpace().encode(good_genome())
    earlier = {k.replace("conv_kernels_", "conv_kernel_"): v for k, v in flat.items()}
    assert "conv_kernel_1" in earlier and "conv_kernels_1" not in earlier
    assert SearchSpace().decode(earlier) == good_genome()


def test_decode_ignores_layer_keys_beyond_depth() -> None:
    flat = SearchSpace().encode(good_genome())
    flat.update(conv_filters_2=16, conv_kernels_5=7, conv_kernel_5=7, fc_units_1=999999)
    assert SearchSpace().decode(flat) == good_genome()


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (_set(dropout=0.1), ["unknown", "dropout"]),
        (_set(conv_filters_x=3), ["unknown", "conv_filters_x"]),
        (_set(conv_filters_01=3), ["unknown", "conv_filters_01"]),
        (_set(conv_kernels_x=3), ["unknown", "conv_kernels_x"]),
        (_set(conv_kernel_0=3), ["both", "'conv_kernel_0'", "'conv_kernels_0'"]),
        (_drop("batch_size"), ["missing", "batch_size"]),
        (_drop("conv_kernels_1"), ["missing", "conv_kernels_1", "conv_layers = 2"]),
        (_drop("fc_units_0"), ["missing", "fc_units_0"]),
        (_set(conv_layers=7), ["conv_layers", "7", "[1, 6]"]),
        (_set(conv_layers=2.0), ["conv_layers", "2.0"]),
        (_set(fc_layers=True), ["fc_layers", "True"]),
        (_set(conv_filters_1=64.0), ["conv_filters[1]", "64.0"]),
    ],
)
def test_decode_rejects(edit, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        SearchSpace().decode(edit(SearchSpace().encode(good_genome())))
    assert_one_line(exc, *fragments)


@settings(max_examples=150, deadline=None)
@given(space=spaces(), seed=seeds)
def test_sampled_genomes_validate_and_round_trip(space: SearchSpace, seed: int) -> None:
    g = space.sample(np.random.default_rng(seed))
    assert space.validate(g) == g
    assert space.decode(space.encode(g)) == g
    assert space.decode(json.loads(json.dumps(space.encode(g)))) == g
    assert space.validate(json.loads(json.dumps(g))) == g


@settings(max_examples=100, deadline=None)
@given(space=spaces())
def test_space_plain_form_round_trips(space: SearchSpace) -> None:
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


# ---- resolution -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resolution", "expected"),
    [(1, 0), (2, 1), (3, 1), (8, 3), (31, 4), (32, 5), (33, 5), (64, 6), (224, 7)],
)
def test_max_conv_layers(resolution: int, expected: int) -> None:
    assert max_conv_layers(resolution) == expected
    size = resolution
    for _ in range(expected):  # the definition: floor-halving keeps the map >= 1 px
        size //= 2
    assert size >= 1 and size // 2 == 0


@pytest.mark.parametrize("resolution", [0, -4, 2.5, True, "32"])
def test_max_conv_layers_rejects(resolution) -> None:
    with pytest.raises(ConfigError):
        max_conv_layers(resolution)


def test_repair_drops_deepest_layers_with_a_note() -> None:
    h = _set(conv_filters=[8, 16, 32, 64, 128, 256], conv_kernels=[3, 5, 7, 3, 5, 7])(good_genome())
    before = copy.deepcopy(h)
    out, notes = repair(h, 32)
    assert out["conv_filters"] == [8, 16, 32, 64, 128]
    assert out["conv_kernels"] == [3, 5, 7, 3, 5]
    assert notes == ["conv layers 6 -> 5: 32 px allows at most 5 poolings"]
    assert h == before
    assert repair(h, 32) == (out, notes)
    assert {k: v for k, v in out.items() if not k.startswith("conv")} == {
        k: v for k, v in h.items() if not k.startswith("conv")
    }
    assert repair(h, 4)[0]["conv_filters"] == [8, 16]


def test_repair_without_change() -> None:
    h = good_genome()
    out, notes = repair(h, 32)
    assert out == h and notes == []
    out["conv_filters"].append(1)
    assert h == good_genome()  # a copy, not the caller's lists


def test_repair_rejects_tiny_resolution_and_bad_genomes() -> None:
    with pytest.raises(ConfigError, match="1 px"):
        repair(good_genome(), 1)
    with pytest.raises(ConfigError, match="conv_kernels"):
        repair(_set(conv_kernels=[3])(good_genome()), 32)
    with pytest.raises(ConfigError, match="missing"):
        repair(_drop("conv_kernels")(good_genome()), 32)


# ---- narrow ---------------------------------------------------------------------------------


def test_narrow_example() -> None:
    space = SearchSpace()
    a = good_genome()
    b = _set(learning_rate=0.1, conv_filters=[16], conv_kernels=[7], fc_units=[64, 256])(
        good_genome()
    )
    narrowed = space.narrow([a, b], 0.1)
    factor = 1e4**0.1  # learning rate spans 4 decades; 10% of that each side
    assert narrowed.learning_rate == LogFloat(0.01 / factor, 0.1 * factor)
    assert narrowed.conv_layers == Integer(1, 3)  # [1, 2] +- ceil(0.1 * 5)
    assert narrowed.conv_filters == Integer(11, 91, log=True)  # floor(16 / 1.41), ceil(64 * 1.41)
    assert narrowed.fc_layers == Integer(1, 3)
    assert narrowed.conv_kernels == space.conv_kernels and narrowed.batch_size == space.batch_size
    assert narrowed.l1 == space.l1  # elites all have l1 = 0: no log range to centre on
    assert narrowed.l2.allow_zero and narrowed.l2.low < 1e-4 < narrowed.l2.high
    for elite in (a, b):
        narrowed.validate(elite)


def test_narrow_margin_extremes() -> None:
    space = SearchSpace()
    g = good_genome()
    tight = space.narrow([g], 0.0)
    assert tight.learning_rate == LogFloat(0.01, 0.01)
    assert tight.conv_filters == Integer(32, 64, log=True)
    assert tight.conv_layers == Integer(2, 2)
    assert tight.validate(g) == g
    assert space.narrow([g], 1.0) == space
    assert space.narrow([g], 1e9) == space


@pytest.mark.parametrize("margin", [-0.1, float("nan"), math.inf, "0.1", True])
def test_narrow_rejects_bad_margin(margin) -> None:
    with pytest.raises(ConfigError, match="margin"):
        SearchSpace().narrow([good_genome()], margin)


def test_narrow_rejects_no_elites_and_invalid_elites() -> None:
    with pytest.raises(ConfigError, match="elite"):
        SearchSpace().narrow([], 0.1)
    with pytest.raises(ConfigError, match="batch_size"):
        SearchSpace().narrow([_set(batch_size=3)(good_genome())], 0.1)


def _within(inner, outer) -> bool:
    return outer.low <= inner.low <= inner.high <= outer.high


@settings(max_examples=100, deadline=None)
@given(
    space=spaces(),
    seed=seeds,
    n_elites=st.integers(1, 5),
    margin=st.floats(0.0, 1.5, allow_nan=False),
)
def test_narrow_keeps_elites_inside_current_bounds(
    space: SearchSpace, seed: int, n_elites: int, margin: float
) -> None:
    rng = np.random.default_rng(seed)
    elites = [space.sample(rng) for _ in range(n_elites)]
    narrowed = space.narrow(elites, margin)
    for elite in elites:
        assert narrowed.validate(elite) == elite
    for name in (
        "learning_rate",
        "conv_layers",
        "conv_filters",
        "fc_layers",
        "fc_units",
        "l1",
        "l2",
    ):
        assert _within(getattr(narrowed, name), getattr(space, name)), name
    assert narrowed.l1.allow_zero == space.l1.allow_zero
    assert narrowed.conv_kernels == space.conv_kernels and narrowed.batch_size == space.batch_size
    assert SearchSpace.from_dict(narrowed.to_dict()) == narrowed
    assert narrowed.narrow(elites, margin) == narrowed.narrow(elites, margin)


# ----------------------------------------------------------------------------- Optuna


def test_suggest_draws_valid_genomes_over_the_whole_default_space(quiet_optuna):
    optuna = quiet_optuna
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = SearchSpace()
    genomes = []
    for _ in range(200):
        trial = study.ask()
        genomes.append(space.suggest(trial))
        study.tell(trial, 0.5)
    assert all(space.validate(g) == g for g in genomes)
    depths = {len(g["conv_filters"]) for g in genomes}
    assert depths == set(range(1, 7))
    assert any(g["l1"] == 0.0 for g in genomes) and any(g["l1"] > 0 for g in genomes)
    assert {g["batch_size"] for g in genomes} == set(space.batch_size.choices)
    # The trial's parameters are the flat encoding's names (a zero penalty: its flag instead).
    for trial, genome in zip(study.trials, genomes, strict=True):
        flat = space.encode(genome)
        zero = {name for name in ("l1", "l2") if genome[name] == 0.0}
        assert {k for k in trial.params if not k.endswith("_zero")} == set(flat) - zero


def test_suggest_respects_a_narrowed_space(quiet_optuna):
    optuna = quiet_optuna
    space = SearchSpace(conv_layers=Integer(2, 2), l2=LogFloat(1e-3, 1e-2))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        genome = space.suggest(study.ask())
        assert len(genome["conv_filters"]) == 2 and 1e-3 <= genome["l2"] <= 1e-2
