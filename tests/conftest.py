"""Shared fixtures: the CLI as a subprocess, a session-wide dataset cache, ../shared data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"

# A run small enough for a test: two rungs, a handful of short trainings.
TINY_RUN = [
    "schedule.resolutions=[8, 16]",
    "schedule.evaluations=[6, 4]",
    "search.population=4",
    "search.elitism=1",
    "schedule.elites=2",
    "train.max_epochs=2",
    "train.patience=1",
    "train.threads=1",
    "space.units=[16, 64]",
    "space.filters=[8, 32]",
]


def shared_dataset(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the shared datasets live beside the checkout in ../shared")
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("evores-cache")


@pytest.fixture
def cli(cache_dir):
    """Run ``python -m evores.run`` (optionally under mpiexec) and return the CompletedProcess."""

    def run(*args: str, overrides=(), mpi_ranks: int = 0, env=None, timeout=600):
        command = [sys.executable, "-m", "evores.run", *args]
        for item in overrides:
            command += ["--set", item]
        if mpi_ranks:
            command = ["mpiexec", "-n", str(mpi_ranks), *command]
        environment = {**os.environ, "EVORES_CACHE_DIR": str(cache_dir), **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "tests"), str(ROOT), environment.get("PYTHONPATH", "")]
        )
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT
        )

    return run


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
    return out


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())
