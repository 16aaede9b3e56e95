"""Shared fixtures: the CLI as a subprocess, a session-wide dataset cache, ../shared data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_cluster import slurm_cluster  # noqa: F401  (a fixture, for the slurm tests)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
# The tests live in folders that mirror evores' subpackages, and some import helpers of another
# (test_initial drives runs as test_driver does): every folder is importable by module name.
TEST_FOLDERS = sorted(str(path) for path in Path(__file__).parent.iterdir()
                      if path.is_dir() and any(path.glob("test_*.py")))  # fmt: skip
sys.path[:0] = [folder for folder in TEST_FOLDERS if folder not in sys.path]

# A run small enough for a test: two rungs, a handful of short trainings.
TINY_RUN = [
    "schedule.resolutions=[8, 16]",
    "schedule.evaluations=[6, 4]",
    "search.population=4",
    "search.elitism=1",
    "schedule.elites=2",
    "train.max_epochs=2",
    "train.patience=1",
    # No train.threads: the default must give the same evaluations at any number of ranks.
    "space.fc_units=[16, 64]",
    "space.conv_filters=[8, 32]",
]


def shared_dataset(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the shared datasets live beside the checkout in ../shared")
    return path


@pytest.fixture
def quiet_optuna():
    """Optuna with its INFO lines off for one test, and its verbosity restored after: a test
    that checks what Optuna logs must not depend on which tests ran before it."""
    optuna = pytest.importorskip("optuna", reason="optuna is in the test extra")
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield optuna
    optuna.logging.set_verbosity(before)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("evores-cache")


def cli_command(cache_dir: Path, args, overrides=(), mpi_ranks: int = 0, env=None):
    """The command line and environment of ``python -m evores run`` as the tests run it."""
    command = [sys.executable, "-m", "evores", "run", *args]
    for item in overrides:
        command += ["--set", item]
    if mpi_ranks:
        command = ["mpiexec", "-n", str(mpi_ranks), *command]
    environment = {**os.environ, "EVORES_CACHE_DIR": str(cache_dir), **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "tests"), str(ROOT), environment.get("PYTHONPATH", "")]
    )
    return command, environment


@pytest.fixture
def cli(cache_dir):
    """Run ``python -m evores run`` (optionally under mpiexec) and return the CompletedProcess."""

    def run(*args: str, overrides=(), mpi_ranks: int = 0, env=None, timeout=600):
        command, environment = cli_command(cache_dir, args, overrides, mpi_ranks, env)
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT
        )

    return run


@pytest.fixture
def cli_started(cache_dir):
    """Start ``python -m evores.run`` in the background; returns the Popen (stderr to a file)."""
    started = []

    def start(*args: str, overrides=(), mpi_ranks: int = 0, env=None, log: Path):
        command, environment = cli_command(cache_dir, args, overrides, mpi_ranks, env)
        process = subprocess.Popen(
            command, env=environment, cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=log.open("w"), start_new_session=True,
        )  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:  # a failed test must not leave a run training in the background
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()


def require_mpiexec() -> None:
    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec is not installed (pip install mpich)")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, cache_dir):
    """One uninterrupted serial tiny run on the embedded data, shared by the comparisons."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    command, environment = cli_command(cache_dir, ["--out", str(run_dir)], TINY_RUN)
    result = subprocess.run(
        command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=900
    )
    assert result.returncode == 0, result.stderr
    return run_dir, result


def evaluations(run_dir: Path) -> dict[tuple, dict]:
    """The run's evaluations keyed by position, with the fields that must be reproducible."""
    out = {}
    for line in (run_dir / "evaluations.jsonl").read_text().splitlines():
        record = json.loads(line)
        out[tuple(record["key"])] = {
            field: record.get(field)
            for field in ("kind", "hparams", "resolution", "seed", "status", "val_accuracy",
                          "test_accuracy", "epochs", "best_epoch", "repairs")
        }  # fmt: skip
        if record["kind"] == "final":
            # No validation in a final retraining: logs written before it was null say 0.0.
            out[tuple(record["key"])]["val_accuracy"] = None
    return out


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_same_result(run_dir: Path, reference: Path) -> None:
    """The same evaluations and the same final answer (wall times aside)."""
    assert evaluations(run_dir) == evaluations(reference)
    ours, theirs = summary(run_dir), summary(reference)
    for field in ("best_hparams", "test_accuracy", "n_evaluations", "failures"):
        assert ours[field] == theirs[field], field

    def timeless(stages):
        return [{k: v for k, v in s.items() if k != "wall_seconds"} for s in stages]

    assert timeless(ours["stages"]) == timeless(theirs["stages"])
