"""evores.execution.worker in process: the built-in and a user's fitness function on one task, the
final
retraining's view of the splits, and what a user function may return."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evores import config as config_module
from evores.core.errors import ConfigError
from evores.core.results import (
    FAILED,
    FAILURE_NAN,
    KIND_FINAL,
    KIND_SEARCH,
    OK,
    RESULT_FIELDS,
    FitnessResult,
    make_task,
)
from evores.data.cache import open_cache
from evores.execution import worker
from evores.execution.worker import FinalSplits, make_work, result_from_user
from evores.training.fitness import evaluate, train_and_test

PX = 8
GENOME = {
    "learning_rate": 0.05,
    "conv_filters": [8],
    "conv_kernels": [3],
    "fc_units": [16],
    "batch_size": 64,
    "l1": 0.0,
    "l2": 1e-4,
}
TIMING = ("wall_seconds", "seconds_per_epoch", "images_per_second", "peak_memory_bytes")


@pytest.fixture(scope="module")
def cache(cache_dir):
    return open_cache("embedded", [PX], cache_dir=cache_dir)


def make_config(function: str = "", max_seconds: float = 60.0) -> dict:
    return config_module.load(
        overrides=[
            f"schedule.resolutions=[{PX}]",
            "train.max_epochs=1",
            "train.patience=1",
            'train.device="cpu"',
            f"train.max_seconds={max_seconds}",
            f'fitness.function="{function}"',
        ]
    )


def search_task(seed: int = 3) -> dict:
    return make_task([0, 0, 0], KIND_SEARCH, GENOME, PX, seed)


def final_task(seed: int = 4, epochs: int = 2) -> dict:
    return make_task([1, 0, 0], KIND_FINAL, GENOME, PX, seed, epochs=epochs, val_accuracy=0.5)


def untimed(result: dict) -> dict:
    return {key: value for key, value in result.items() if key not in TIMING}


# ----------------------------------------------------------------------------- built-in


def test_builtin_search_task_is_evaluate_on_train_and_val(cache):
    result = make_work(make_config(), cache)(search_task())
    assert tuple(result) == RESULT_FIELDS  # plain data, in the logged order
    assert result["status"] == OK and result["epochs"] == result["best_epoch"] == 1
    assert result["test_accuracy"] is None
    direct = evaluate(GENOME, PX, cache, seed=3, device="cpu", max_epochs=1, patience=1)
    assert untimed(result) == untimed(direct.to_dict())


def test_builtin_final_task_trains_the_given_epochs_and_scores_the_test_split(cache):
    result = make_work(make_config(), cache)(final_task(epochs=2))
    assert result["status"] == OK and result["epochs"] == result["best_epoch"] == 2
    assert result["val_accuracy"] == 0.0 and 0.0 <= result["test_accuracy"] <= 1.0
    direct = train_and_test(GENOME, PX, cache, seed=4, epochs=2, device="cpu")
    assert untimed(result) == untimed(direct.to_dict())


def test_builtin_search_task_obeys_the_time_budget(cache):
    result = make_work(make_config(max_seconds=1e-9), cache)(search_task())
    assert (result["status"], result["failure"]) == (FAILED, "budget")


# ----------------------------------------------------------------------------- user function


def test_user_builtin_plugin_gives_the_builtin_results(cache):
    builtin = make_work(make_config(), cache)
    plugin = make_work(make_config("fitness_plugins:builtin"), cache)
    for task in (search_task(), final_task()):
        assert untimed(plugin(task)) == untimed(builtin(task))


def test_user_float_for_a_final_task_lands_in_test_accuracy(cache):
    work = make_work(make_config("fitness_plugins:accuracy_from_seed"), cache)
    task = final_task(seed=250)
    result = work(task)
    expected = 0.125 + len(GENOME["conv_filters"]) / 20 + PX / 1000  # accuracy_from_seed
    assert result["status"] == OK
    assert result["val_accuracy"] == 0.0 and result["test_accuracy"] == pytest.approx(expected)
    searched = work(search_task(seed=250))
    assert searched["val_accuracy"] == pytest.approx(expected)
    assert searched["test_accuracy"] is None


def test_user_function_gets_the_task_and_the_final_splits(cache, monkeypatch):
    calls = []

    def recorder(hparams, resolution, data, **options):
        calls.append((hparams, resolution, data, options))
        labels = data.arrays(resolution, "val")[1]
        return float(np.mean(labels == 0))  # a fingerprint of the split it was handed

    monkeypatch.setattr(worker, "load_function", lambda spec: recorder)
    work = make_work(make_config("anything:recorder", max_seconds=30.0), cache)
    searched, final = work(search_task()), work(final_task(epochs=3))

    (_, _, search_data, search_options), (hparams, resolution, final_data, options) = calls
    assert search_data is cache
    assert search_options["max_epochs"] == 1 and search_options["max_seconds"] == 30.0
    assert isinstance(final_data, FinalSplits) and (hparams, resolution) == (GENOME, PX)
    assert options["max_epochs"] == options["patience"] == 3 and options["max_seconds"] is None
    assert options["seed"] == 4 and options["filter"] == "box"
    test_labels = cache.arrays(PX, "test")[1]
    val_labels = cache.arrays(PX, "val")[1]
    assert final["test_accuracy"] == float(np.mean(test_labels == 0))  # its "val" is the test
    assert searched["val_accuracy"] == float(np.mean(val_labels == 0))


def test_final_splits_map_train_and_val_to_train_val_and_test(cache):
    splits = FinalSplits(cache)
    assert (splits.n_classes, splits.resolutions) == (cache.n_classes, cache.resolutions)
    for asked, served in (("train", "train+val"), ("val", "test")):
        x, y = splits.arrays(PX, asked)
        expected_x, expected_y = cache.arrays(PX, served)
        assert np.array_equal(x, expected_x) and np.array_equal(y, expected_y)
    with pytest.raises(ConfigError, match="'test'"):
        splits.arrays(PX, "test")


def test_a_user_function_that_cannot_be_loaded_is_a_config_error(cache):
    with pytest.raises(ConfigError, match="cannot import module"):
        make_work(make_config("no_such_module_here:f"), cache)
    with pytest.raises(ConfigError, match="has no function"):
        make_work(make_config("fitness_plugins:no_such_function"), cache)


# ----------------------------------------------------------------------------- return values


@pytest.mark.parametrize(
    ("value", "accuracy"), [(0.5, 0.5), (1, 1.0), (np.float32(0.25), 0.25), (np.int64(0), 0.0)]
)
def test_a_number_is_a_successful_accuracy(value, accuracy):
    result = result_from_user(value, wall_seconds=2.5)
    assert (result.status, result.val_accuracy, result.wall_seconds) == (OK, accuracy, 2.5)
    assert type(result.val_accuracy) is float
    assert result.reason is None and result.failure is None and result.epochs == 0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float64("nan")])
def test_a_non_finite_number_is_a_nan_failure(value):
    result = result_from_user(value, wall_seconds=1.0)
    assert (result.status, result.failure, result.val_accuracy) == (FAILED, FAILURE_NAN, 0.0)
    assert result.reason == f"the fitness function returned {float(value)}"
    assert result.wall_seconds == 1.0 and result.test_accuracy is None


@pytest.mark.parametrize("value", [True, False, None, "0.5", [0.5]])
def test_other_values_are_refused_with_what_to_return(value):
    with pytest.raises(TypeError, match="return a FitnessResult or a float"):
        result_from_user(value, wall_seconds=0.0)


def test_a_fitness_result_is_passed_through():
    given = FitnessResult.succeeded(0.75, epochs=4, best_epoch=3, repairs=["a note"])
    assert result_from_user(given, wall_seconds=9.0) is given
