"""Tests for evores.engine.plan: the estimate's arithmetic, the walltime to ask for, and the command
run on the embedded data."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from evores import config as configuration
from evores.data.cache import DatasetCache
from evores.engine import plan
from evores.engine.plan import ResolutionCost, estimate, rounds, walltime_request

CHEAP = ["schedule.resolutions=[8, 16]", "schedule.evaluations=[8, 4]", "search.population=4",
         "search.elitism=1", "schedule.elites=2", "train.max_epochs=4", "train.patience=1",
         "space.conv_filters=[8, 16]", "space.fc_units=[16, 32]"]  # fmt: skip


def costs(per_epoch: dict[int, float]) -> dict[int, ResolutionCost]:
    return {r: ResolutionCost(r, (s,), 1 << 20, 0) for r, s in per_epoch.items()}


def test_rounds_wait_for_each_generations_last_evaluation_in_the_synchronous_mode():
    assert rounds(8, 2, None) == 4.0  # asynchronous: every worker always busy
    assert rounds(8, 3, None) == pytest.approx(8 / 3)
    assert rounds(8, 3, 4) == 2 + 2  # two generations of 4 on 3 workers: 2 rounds each
    assert rounds(10, 4, 4) == 1 + 1 + 1  # the last, partial generation: one round


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_estimate_is_per_stage_and_spans_the_epochs_early_stopping_allows(asynchronous):
    config = configuration.load(overrides=[*CHEAP, f"search.asynchronous={asynchronous}".lower()])
    phases = estimate(config, costs({8: 1.0, 16: 3.0}), workers=2)
    assert [(p.name, p.resolution, p.evaluations) for p in phases] == [
        ("stage 1", 8, 8), ("stage 2", 16, 4), ("final", 16, 2),
    ]  # fmt: skip
    # 2 to 4 epochs (patience 1, max_epochs 4); 8 evaluations on 2 workers are 4 rounds.
    assert phases[0].seconds == (4 * 1.0 * 2, 4 * 1.0 * 4)
    assert phases[1].seconds == (2 * 3.0 * 2, 2 * 3.0 * 4)
    # Two candidates on two workers: one round of 1 to max_epochs epochs.
    assert phases[2].seconds == (3.0, 3.0 * 4)


def test_the_walltime_adds_the_safety_factor_the_setup_and_the_warning():
    slurm = {"signal_seconds": 120}
    # 600 s * 1.25 + 30 s + 120 s = 900 s: 15 minutes.
    assert walltime_request(600.0, 30.0, slurm) == "00:15:00"
    assert walltime_request(600.0, 31.0, slurm) == "00:16:00"  # rounded up to the minute
    assert walltime_request(30 * 3600.0, 0.0, {"signal_seconds": 0}) == "1-13:30:00"
    assert configuration.walltime_seconds("1-13:30:00") == int(37.5 * 3600)


def test_the_data_per_rank_is_in_memory_under_the_budget_and_mapped_over_it():
    sizes = {"train": 700, "val": 150, "test": 150}
    cache = DatasetCache(Path("c.h5"), ["a", "b"], (8, 16), "box", "centre", {}, sizes)
    # 8 px: 850 images x 192 B = 163,200 B; 16 px: 850 x 768 B = 652,800 B (final: 1000 x 768).
    config = configuration.load(overrides=[*CHEAP, "data.memory_budget=500000"])
    rungs = plan.rung_memory(config, cache, plan.data_budget(config, available=10**9))
    assert [(r.name, r.resolution, r.bytes, r.mapped) for r in rungs] == [
        ("stage 1", 8, 163_200, False), ("stage 2", 16, 652_800, True),
        ("final", 16, 768_000, True),
    ]  # fmt: skip
    lines = plan._memory_lines(config, rungs, 500_000, available=10**9)
    assert (
        "0.2 MiB, in memory, up to 3 x 0.2 MiB on a node" in lines[2]
    )  # 2 workers and the driver's task
    assert "memory-mapped, one copy per node in the page cache (fits in memory here)" in lines[3]
    auto = configuration.load(overrides=CHEAP)  # 0: half of what is available, per task
    assert plan.data_budget(auto, available=6 * 10**9) == 10**9


def run_plan(cache_dir, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "evores.plan", *args]
    env = {**os.environ, "EVORES_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_the_planner_measures_every_resolution_and_prints_the_walltime(cache_dir):
    overrides = [arg for item in CHEAP for arg in ("--set", item)]
    result = run_plan(cache_dir, "--cpus", "3", "--genomes", "2", "--epochs", "1", *overrides)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "2 genome(s) sampled from the search space, 1 epoch(s) each" in out
    assert "     8 px:" in out and "    16 px:" in out and "0 of 2 failed" in out
    assert "expected wall time with 3 worker(s), synchronous mode (extrapolated)" in out
    assert "stage 1    8 px:     8 evaluations" in out and "final   16 px:     2 retrainings" in out
    assert "extrapolated, not measured: each evaluation trains 2 to 4 epochs" in out
    assert "data per rank (uint8 images; budget" in out and "  stage 2   16 px:" in out
    request = next(line for line in out.splitlines() if line.startswith("#SBATCH --time="))
    assert configuration.walltime_seconds(request.removeprefix("#SBATCH --time=")) > 120


def test_the_planner_refuses_in_one_line(cache_dir):
    result = run_plan(cache_dir, "--cpus", "0")
    assert result.returncode == 2 and result.stderr.strip() == (
        "evores: error: --cpus must be >= 1, got 0"
    )
    import torch

    if not torch.cuda.is_available():
        result = run_plan(cache_dir, "--gpus", "2")
        assert result.returncode == 2, result.stderr
        assert "this machine has none to measure on" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_readmes_planner_example_runs(cache_dir):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    [line] = [ln for b in blocks for ln in b.splitlines() if ln.startswith("python -m evores.plan")]
    result = run_plan(cache_dir, *shlex.split(line)[3:])
    assert result.returncode == 0, result.stderr
    assert "expected wall time with 2 worker(s)" in result.stdout
    assert "#SBATCH --time=" in result.stdout
