"""Tests for evores.execution.evaluators: serial contract, failure handling, MPI launch detection
and an
``mpiexec`` run at two world sizes (tests/mpi_evaluator_script.py)."""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evores.core import results
from evores.core.results import KIND_SEARCH, failed_result, make_task
from evores.execution.evaluators import (
    Evaluator,
    MPIEvaluator,
    SerialEvaluator,
    make_evaluator,
)
from evores.training import fitness

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "mpi_evaluator_script.py"
RESULT_FIELDS = {
    "val_accuracy",
    "status",
    "reason",
    "failure",
    "epochs",
    "best_epoch",
    "wall_seconds",
    "seconds_per_epoch",
    "n_parameters",
    "peak_memory_bytes",
    "images_per_second",
    "repairs",
    "test_accuracy",
    "precision",
}
LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCAL", "HYDI_")


def make_tasks(n: int, fail: int = -1) -> list[dict]:
    return [make_task([0, 0, i], KIND_SEARCH, {"raise": i == fail}, 16, 100 + i) for i in range(n)]


def toy_work(task: dict) -> dict:
    if task["hparams"]["raise"]:
        raise ValueError(f"bad seed {task['seed']}\nsecond line")
    return {
        **failed_result("", "none"),
        "status": "ok",
        "reason": None,
        "failure": None,
        "val_accuracy": task["seed"] / 1000,
    }


def clean_env() -> dict[str, str]:
    """The environment of a process that no MPI launcher started."""
    return {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serial_map_keeps_order_and_calls_on_result():
    seen = []
    results = SerialEvaluator(toy_work).map(
        make_tasks(5), on_result=lambda t, r: seen.append((t["key"][2], r["val_accuracy"]))
    )
    assert [r["val_accuracy"] for r in results] == [0.1, 0.101, 0.102, 0.103, 0.104]
    assert seen == [(i, (100 + i) / 1000) for i in range(5)]
    assert all(r["rank"] == 0 for r in results)


def test_serial_map_of_nothing_is_empty():
    evaluator = SerialEvaluator(toy_work)
    assert evaluator.map([]) == []
    assert evaluator.n_workers == 1
    evaluator.close()
    evaluator.close()


def test_raising_work_gives_failed_result_and_later_tasks_run(caplog):
    with caplog.at_level(logging.ERROR, logger="evores.execution.evaluators"):
        results = SerialEvaluator(toy_work).map(make_tasks(4, fail=1))
    failed = results[1]
    assert failed["status"] == "failed" and failed["failure"] == "exception"
    assert failed["val_accuracy"] == 0.0
    assert failed["reason"] == "ValueError: bad seed 101 second line"  # one line
    assert set(failed) == RESULT_FIELDS | {"rank"}
    assert [r["status"] for r in results] == ["ok", "failed", "ok", "ok"]
    assert "Traceback" in caplog.text and "bad seed 101" in caplog.text


def test_work_returning_a_non_dict_fails_cleanly():
    (result,) = SerialEvaluator(lambda task: 0.5).map(make_tasks(1))
    assert result["status"] == "failed"
    assert "expected a dict" in result["reason"]


def test_failed_result_zeroes_every_field():
    result = failed_result("out of memory", "oom")
    assert result == {
        "val_accuracy": 0.0,
        "status": "failed",
        "reason": "out of memory",
        "failure": "oom",
        "epochs": 0,
        "best_epoch": 0,
        "wall_seconds": 0.0,
        "seconds_per_epoch": 0.0,
        "n_parameters": 0,
        "peak_memory_bytes": 0,
        "images_per_second": 0.0,
        "repairs": [],
        "test_accuracy": None,
        "precision": "fp32",
    }
    json.dumps(result)  # plain data


def test_failed_result_round_trips_through_fitness_result():
    assert fitness.FitnessResult is results.FitnessResult  # one class, re-exported
    result = failed_result("x", "nan")
    restored = fitness.FitnessResult.from_dict(result)
    assert restored.to_dict() == result  # exactly the FitnessResult fields, nothing else


def test_a_config_error_in_the_work_is_reported_and_later_tasks_run():
    """An invalid genome makes evores.training.fitness raise ConfigError; the evaluator reports it
    as a
    failed result with its message, as for any exception, and keeps running tasks."""

    def work(task: dict) -> dict:
        if task["hparams"]["raise"]:
            fitness.evaluate({"learning_rate": 5.0}, 16, None, seed=0, max_epochs=1)
        return toy_work(task)

    outcome = SerialEvaluator(work).map(make_tasks(3, fail=0))
    assert [r["status"] for r in outcome] == ["failed", "ok", "ok"]
    assert outcome[0]["failure"] == "exception"
    assert outcome[0]["reason"].startswith("ConfigError: ")
    assert "learning_rate" in outcome[0]["reason"]


@pytest.mark.parametrize("evaluator_class", [SerialEvaluator, MPIEvaluator])
def test_both_evaluators_offer_the_evaluator_protocol(evaluator_class):
    for name in ("map", "steady", "close"):
        offered = inspect.signature(getattr(evaluator_class, name))
        assert offered == inspect.signature(getattr(Evaluator, name)), name
    assert isinstance(evaluator_class.busy, property)


def test_make_evaluator_gives_an_evaluator():
    # n_workers and abandoned are instance attributes; tests/mpi_evaluator_script.py checks
    # isinstance(evaluator, Evaluator) on a real MPIEvaluator.
    assert isinstance(SerialEvaluator(toy_work), Evaluator)
    assert isinstance(make_evaluator(toy_work), Evaluator)


class FakeComm:
    """Just enough of a communicator for make_evaluator's decisions (no MPI)."""

    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size = rank, size

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.size


def test_make_evaluator_without_mpi_is_serial():
    assert isinstance(make_evaluator(toy_work), SerialEvaluator)


def test_make_evaluator_on_size_one_warns_and_runs_serially(caplog):
    with caplog.at_level(logging.WARNING, logger="evores.execution.evaluators"):
        evaluator = make_evaluator(toy_work, FakeComm(0, 1))
    assert isinstance(evaluator, SerialEvaluator)
    assert "running serially" in caplog.text


def test_make_evaluator_refuses_worker_ranks():
    with pytest.raises(RuntimeError, match="serve"):
        make_evaluator(toy_work, FakeComm(1, 3))


def test_import_and_mpi_world_do_not_load_mpi4py():
    code = (
        "import sys, evores.execution.evaluators as e\n"
        "assert 'mpi4py' not in sys.modules, 'import loaded mpi4py'\n"
        "assert e.mpi_world() is None\n"
        "assert 'mpi4py' not in sys.modules, 'mpi_world loaded mpi4py'\n"
    )
    proc = run_python(code, clean_env())
    assert proc.returncode == 0, proc.stderr


def test_mpi_world_without_an_mpi_library_raises_config_error():
    code = (
        "import sys; sys.modules['mpi4py'] = None  # as if mpi4py could not load\n"
        "from evores.core.errors import ConfigError\n"
        "from evores.execution.evaluators import mpi_world\n"
        "try:\n    mpi_world()\nexcept ConfigError as exc:\n    print(exc)\n"
    )
    proc = run_python(code, {**clean_env(), "PMI_SIZE": "3", "PMI_RANK": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "pip install mpich" in proc.stdout
    assert len(proc.stdout.strip().splitlines()) == 1


@pytest.mark.mpi
def test_mpi_world_detects_a_foreign_launcher():
    """Open MPI's mpirun with the mpich wheel: every process sees a world of size 1."""
    pytest.importorskip("mpi4py")
    code = (
        "from evores.core.errors import ConfigError\n"
        "from evores.execution.evaluators import mpi_world\n"
        "try:\n    mpi_world()\nexcept ConfigError as exc:\n    print('ConfigError', exc)\n"
    )
    proc = run_python(code, {**clean_env(), "OMPI_COMM_WORLD_SIZE": "2"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ConfigError") and "size 1" in proc.stdout


def test_mpi_evaluator_refuses_worker_ranks():
    with pytest.raises(RuntimeError, match="rank 0"):
        MPIEvaluator(FakeComm(2, 3))


@pytest.mark.mpi
@pytest.mark.parametrize("size", [3, 2])
def test_mpi_evaluator_matches_serial(size: int):
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec not on PATH")
    proc = subprocess.run(
        [
            mpiexec,
            "-n",
            str(size),
            sys.executable,
            str(SCRIPT),
            "--size",
            str(size),
            "--tasks",
            "12",
            "--fail",
            "3",
        ],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr  # includes a clean shutdown of every rank
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["n_workers"] == size - 1
    assert report["same_as_serial"]  # values and order equal the serial run
    assert report["statuses"] == ["ok"] * 3 + ["failed"] + ["ok"] * 8
    assert report["failures"][3] == "exception"
    assert report["reasons"][3] == "ValueError: toy failure for seed 1111"
    assert set(report["ranks"]) == set(range(1, size))  # spread over every worker
    assert sorted(report["completed_keys"]) == [[0, 0, i] for i in range(12)]
    assert report["interrupted"] and report["second_ok"] and report["empty"] == []
    assert "Traceback" in proc.stderr and "toy failure for seed 1111" in proc.stderr
