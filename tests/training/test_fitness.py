"""evaluate / train_and_test on tiny generated data: results, determinism and every failure path."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from evores.core.errors import ConfigError, DataError
from evores.training import fitness
from evores.training.fitness import (
    FitnessResult,
    PreparedData,
    evaluate,
    resolve_device,
    train_and_test,
)

PX = 12
TIMING = ("wall_seconds", "seconds_per_epoch", "images_per_second", "peak_memory_bytes")


def make_split(n: int, seed: int, n_classes: int = 3, px: int = PX):
    """Noisy images where class c brightens one quadrant of channel c: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = rng.integers(0, 160, (n, 3, px, px))
    half = px // 2
    for c in range(n_classes):
        rows, cols = (c // 2) * half, (c % 2) * half
        x[y == c, c % 3, rows : rows + half, cols : cols + half] += 70
    return x.astype(np.uint8), y


@pytest.fixture(scope="module")
def data():
    return PreparedData.from_arrays(*make_split(96, 0), *make_split(48, 1), n_classes=3)


def genome(**changes):
    h = {
        "learning_rate": 0.03,
        "conv_filters": [8, 8],
        "conv_kernels": [3, 3],
        "fc_units": [16],
        "batch_size": 16,
        "l1": 1e-6,
        "l2": 1e-4,
    }
    h.update(changes)
    return h


def without_timing(result: FitnessResult) -> dict:
    d = result.to_dict()
    for key in TIMING:
        d.pop(key)
    return d


class SplitRecorder:
    """Stands in for a DatasetCache at its interface and records which splits were read."""

    n_classes = 3

    def __init__(self):
        self.requested = []
        self.splits = {
            "train": make_split(96, 0),
            "val": make_split(48, 1),
            "train+val": make_split(144, 2),
            "test": make_split(48, 3),
        }

    def arrays(self, resolution, split):
        assert resolution == PX
        self.requested.append(split)
        return self.splits[split]


# ----------------------------------------------------------------------------- success


def test_learns_the_pattern_and_reports_every_field(data):
    result = evaluate(genome(), PX, data, seed=1, max_epochs=8, patience=8)
    assert result.status == "ok" and result.failure is None and result.reason is None
    assert result.val_accuracy > 0.6  # chance is 1/3
    assert 1 <= result.best_epoch <= result.epochs <= 8
    assert result.n_parameters > 0 and result.peak_memory_bytes > 0
    assert result.seconds_per_epoch > 0 and result.images_per_second > 0
    assert result.repairs == () and result.test_accuracy is None


def test_same_seed_is_bit_identical_and_leaves_global_rng_alone(data):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = evaluate(genome(), PX, data, seed=7, max_epochs=3)
    second = evaluate(genome(), PX, data, seed=7, max_epochs=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert without_timing(first) == without_timing(second)


def test_threads_argument_is_restored(data):
    previous = torch.get_num_threads()
    evaluate(genome(), PX, data, seed=7, max_epochs=1, threads=1)
    assert torch.get_num_threads() == previous


def test_early_stopping_stops_after_patience(data):
    # A tiny learning rate barely moves the network, so accuracy stops improving at once.
    result = evaluate(genome(learning_rate=1e-4), PX, data, seed=2, max_epochs=30, patience=1)
    assert result.status == "ok"
    assert result.epochs == result.best_epoch + 1 < 30


def test_max_epochs_caps_training(data):
    result = evaluate(genome(), PX, data, seed=2, max_epochs=2, patience=10)
    assert result.epochs == 2


def test_deep_genome_is_repaired_for_small_images():
    data8 = PreparedData.from_arrays(*make_split(32, 0, px=8), *make_split(16, 1, px=8), 3)
    deep = genome(conv_filters=[8] * 6, conv_kernels=[3] * 6)
    result = evaluate(deep, 8, data8, seed=0, max_epochs=1)
    assert result.status == "ok"
    assert len(result.repairs) == 1 and "6 -> 3" in result.repairs[0]


def test_batches_are_normalised_with_train_statistics(data):
    x, y = data.train_batch(torch.arange(96))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.mean(dim=(0, 2, 3)).abs().max()) < 1e-4
    assert float((x.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max()) < 1e-4


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "bad",
    [genome(learning_rate=5.0), genome(batch_size=17), {"learning_rate": 0.1}],
)
def test_invalid_hparams_raise_config_error(data, bad):
    with pytest.raises(ConfigError):
        evaluate(bad, PX, data, seed=0, max_epochs=1)


def test_resolution_must_match_the_data(data):
    with pytest.raises(ConfigError, match="resolution"):
        evaluate(genome(), 16, data, seed=0, max_epochs=1)


def test_bad_arrays_raise_data_error():
    x, y = make_split(8, 0)
    with pytest.raises(DataError, match="uint8"):
        PreparedData.from_arrays(x.astype(np.float32), y, x, y, 3)
    with pytest.raises(DataError, match="labels"):
        PreparedData.from_arrays(x, y + 5, x, y, 3)


# ----------------------------------------------------------------------------- failures


def nan_objective(model, x, y, l1, l2):
    """A loss that is NaN from the first step (with a graph: the step runs before the check)."""
    return torch.nn.functional.cross_entropy(model(x), y) * float("nan")


def test_nan_loss_fails_with_penalty(data, monkeypatch):
    monkeypatch.setattr(fitness, "objective", nan_objective)
    result = evaluate(genome(), PX, data, seed=0, max_epochs=3)
    assert (result.status, result.failure, result.val_accuracy) == ("failed", "nan", 0.0)
    assert result.epochs == 0 and result.reason == "loss became nan"


def train_checking_every(data, every: int, hparams: dict, **budget) -> FitnessResult:
    """evaluate(), with the device's flags read every ``every`` steps (as on a GPU)."""
    repaired, repairs = fitness._checked_genome(hparams, PX, None)
    limits = {"max_epochs": 4, "patience": 5, **budget, "check_every": every}
    return fitness._train(
        repaired, data, 0, fitness.TrainBudget(**limits), final=False, repairs=repairs,
        start=time.perf_counter(),
    )  # fmt: skip


def test_reading_flags_every_few_steps_changes_no_result(data):
    every_step = without_timing(train_checking_every(data, 1, genome()))
    assert without_timing(train_checking_every(data, 4, genome())) == every_step
    assert every_step == without_timing(evaluate(genome(), PX, data, seed=0, max_epochs=4))


@pytest.mark.parametrize("every", [1, 3, 100])
def test_a_nan_between_checks_is_the_same_failure(data, monkeypatch, every):
    monkeypatch.setattr(fitness, "objective", nan_objective)
    result = train_checking_every(data, every, genome())
    assert (result.status, result.failure, result.reason) == ("failed", "nan", "loss became nan")
    assert result.epochs == 0  # found within the first epoch, at its end at the latest


def test_a_nan_loss_keeps_the_first_bad_value(data):
    watch = fitness._LossWatch(torch.device("cpu"))
    for loss in (1.0, float("inf"), float("nan"), 2.0):
        watch.update(torch.tensor(loss))
    with pytest.raises(fitness._NonFinite, match="loss became inf"):
        watch.check()


def test_budget_is_checked_per_batch(data):
    result = evaluate(genome(), PX, data, seed=0, max_epochs=50, max_seconds=1e-9)
    assert (result.status, result.failure, result.val_accuracy) == ("failed", "budget", 0.0)
    assert result.epochs == 0 and "max_seconds" in result.reason


@pytest.mark.parametrize("every", [2, 100])
def test_budget_is_checked_every_few_batches_and_at_the_epoch_end(data, every):
    result = train_checking_every(data, every, genome(), max_epochs=50, max_seconds=1e-9)
    assert (result.status, result.failure, result.epochs) == ("failed", "budget", 0)
    assert result.images_per_second > 0  # the batches up to the check ran


def flaky_step(monkeypatch, errors):
    """Make the first len(errors) training steps raise the given exceptions."""
    real, pending, sizes = fitness.train_step, list(errors), []

    def step(model, optimizer, x, y, l1, l2):
        sizes.append(x.shape[0])
        if pending:
            raise pending.pop(0)
        return real(model, optimizer, x, y, l1, l2)

    monkeypatch.setattr(fitness, "train_step", step)
    return sizes


def test_out_of_memory_retries_once_at_half_batch(data, monkeypatch):
    sizes = flaky_step(monkeypatch, [torch.OutOfMemoryError("CUDA out of memory")])
    result = evaluate(genome(batch_size=32), PX, data, seed=0, max_epochs=1)
    assert result.status == "ok"
    assert result.repairs == ("batch size 32 -> 16 after out-of-memory",)
    assert sizes[0] == 32 and set(sizes[1:]) == {16}


def test_persistent_out_of_memory_fails(data, monkeypatch):
    oom = RuntimeError("DefaultCPUAllocator: out of memory")
    flaky_step(monkeypatch, [oom, oom])
    result = evaluate(genome(batch_size=32), PX, data, seed=0, max_epochs=1)
    assert (result.status, result.failure, result.val_accuracy) == ("failed", "oom", 0.0)
    assert result.repairs == ("batch size 32 -> 16 after out-of-memory",)


def test_other_exceptions_become_one_line_failures(data, monkeypatch):
    flaky_step(monkeypatch, [ValueError("boom\nsecond line")])
    result = evaluate(genome(), PX, data, seed=0, max_epochs=1)
    assert (result.status, result.failure) == ("failed", "exception")
    assert result.reason == "ValueError: boom second line"


# ----------------------------------------------------------------------------- results


def test_result_round_trips_through_json(data):
    result = evaluate(genome(conv_filters=[8] * 5, conv_kernels=[3] * 5), PX, data, seed=0,
                      max_epochs=1)  # fmt: skip
    assert result.repairs  # a non-empty tuple exercises the list conversion
    text = json.dumps(result.to_dict())
    assert FitnessResult.from_dict(json.loads(text)) == result
    assert FitnessResult.from_dict({**result.to_dict(), "rank": 3}) == result


def test_final_run_reads_only_final_splits_and_search_never_reads_test():
    cache = SplitRecorder()
    searched = evaluate(genome(), PX, cache, seed=0, max_epochs=2)
    assert searched.status == "ok" and sorted(cache.requested) == ["train", "val"]
    cache.requested.clear()
    final = train_and_test(genome(), PX, cache, seed=0, epochs=3)
    assert sorted(cache.requested) == ["test", "train+val"]
    assert final.status == "ok" and final.epochs == final.best_epoch == 3
    assert final.val_accuracy == 0.0 and 0.0 <= final.test_accuracy <= 1.0
    assert math.isfinite(final.test_accuracy)


def test_final_run_refuses_search_data():
    search_data = PreparedData.from_cache(SplitRecorder(), PX)
    with pytest.raises(ConfigError, match="final=True"):
        train_and_test(genome(), PX, search_data, seed=0, epochs=1)


# ----------------------------------------------------------------------------- precision


def test_cpu_trains_in_fp32_and_records_it(data):
    result = evaluate(genome(), PX, data, seed=0, max_epochs=1)
    assert result.precision == "fp32" and result.to_dict()["precision"] == "fp32"
    assert without_timing(evaluate(genome(), PX, data, seed=0, max_epochs=1, precision="fp32")) \
        == without_timing(result)  # fmt: skip


def test_bf16_asked_for_on_the_cpu_autocasts_and_is_recorded(data):
    result = evaluate(genome(), PX, data, seed=0, max_epochs=2, precision="bf16")
    assert (result.status, result.precision) == ("ok", "bf16")
    assert result.val_accuracy > 0.5  # bf16 still learns the pattern


def test_unknown_precision_is_a_config_error(data):
    with pytest.raises(ConfigError, match="train.precision = 'fp16'"):
        evaluate(genome(), PX, data, seed=0, max_epochs=1, precision="fp16")


# ----------------------------------------------------------------------------- devices


def test_resolve_device_defaults_to_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="device"):
        resolve_device("not-a-device")


STEP_OF_3 = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "3", "SLURM_STEP_TASKS_PER_NODE": "3"}


@pytest.mark.parametrize(
    ("env", "count", "expected"),
    [
        # srun, 3 tasks on one node: the driver (task 0) takes no GPU, task 2 the second one
        ({**STEP_OF_3, "SLURM_PROCID": "2", "SLURM_LOCALID": "2"}, 2, "cuda:1"),
        ({**STEP_OF_3, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}, 2, "cpu"),
        # one GPU bound per task (CUDA_VISIBLE_DEVICES names one): it is this task's own
        (
            {**STEP_OF_3, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "3"},
            1,
            "cuda:0",
        ),  # fmt: skip
        ({"MPI_LOCALRANKID": "1"}, 4, "cuda:1"),  # mpiexec outside SLURM
        ({"OMPI_COMM_WORLD_LOCAL_RANK": "1"}, 2, "cuda:1"),
        ({}, 2, "cuda:0"),
    ],
)
def test_auto_device_follows_the_local_rank(monkeypatch, env, count, expected):
    for var in list(os.environ):
        if var.startswith("SLURM_") or var in (
            "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "CUDA_VISIBLE_DEVICES"
        ):  # fmt: skip
            monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert resolve_device() == torch.device(expected)


def test_keep_heap_is_opt_in_and_works_in_a_fresh_process():
    code = (
        "import torch, evores.training.fitness as f; n = torch.get_num_threads(); "
        "print(f.keep_heap(), n == torch.get_num_threads())"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(sys.platform.startswith("linux")), "True"]
