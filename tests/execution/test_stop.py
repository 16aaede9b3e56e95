"""Stopping and resuming: signals, a worker killed hard, and the run directory's lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY_RUN, assert_same_result, require_mpiexec, summary

from evores.core.errors import CheckpointError
from evores.core.exits import EXIT_CHECKPOINTED
from evores.store.checkpoint import LOCK, RunDirectory


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "evaluations.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def wait_for_records(process, run_dir: Path, count: int, log: Path, timeout=300.0) -> None:
    deadline = time.monotonic() + timeout
    while len(records(run_dir)) < count:
        assert process.poll() is None, f"the run ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {count} records in {timeout} s"
        time.sleep(0.1)


@pytest.mark.slow
def test_sigusr1_finishes_the_running_evaluation_then_checkpoints(
    cli, cli_started, tmp_path, tiny_run
):
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    process = cli_started("--out", str(run_dir), overrides=TINY_RUN, log=log)
    wait_for_records(process, run_dir, 2, log)
    process.send_signal(signal.SIGUSR1)  # SLURM's walltime warning
    assert process.wait(timeout=120) == EXIT_CHECKPOINTED, log.read_text()
    assert "continue with --resume" in log.read_text()
    assert (run_dir / "checkpoint.json").is_file() and not (run_dir / "summary.json").exists()
    assert not (run_dir / LOCK).exists()
    # Serially the evaluation in hand is finished (within the grace period), none abandoned.
    assert all(r["status"] != "interrupted" for r in records(run_dir))
    resumed = cli("--out", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_result(run_dir, tiny_run[0])


@pytest.mark.slow
@pytest.mark.mpi
def test_sigterm_under_mpi_abandons_running_work_and_resumes_serially(
    cli, cli_started, tmp_path, tiny_run
):
    require_mpiexec()
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    # Each evaluation first pauses 3 s (then trains as the built-in fitness does). After the
    # first 2 of the first generation's 4, the other 2 are running for seconds: the signal
    # comes while both workers hold one (after the 3rd, the 4th could end the generation).
    slow = TINY_RUN + ["fitness.function=fitness_plugins:slow_evaluate"]
    process = cli_started("--out", str(run_dir), overrides=slow, mpi_ranks=3, log=log,
                          env={"EVORES_TEST_SLEEP": "3"})  # fmt: skip
    wait_for_records(process, run_dir, 2, log)
    process.send_signal(signal.SIGTERM)  # scancel, preemption: no grace period
    assert process.wait(timeout=120) == EXIT_CHECKPOINTED, log.read_text()
    statuses = [r["status"] for r in records(run_dir)]
    assert "interrupted" in statuses, statuses
    # Resumed with 1 rank instead of 3: the interrupted ones are re-run, the rest reused.
    resumed = cli("--out", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_result(run_dir, tiny_run[0])
    assert summary(run_dir)["failures"] == {}


@pytest.mark.slow
@pytest.mark.mpi
def test_a_worker_killed_hard_loses_nothing(cli, tmp_path, tiny_run):
    require_mpiexec()
    run_dir = tmp_path / "run"
    plugin = ["fitness.function=fitness_plugins:dies_hard_once"]
    # Each worker exits at once (as under kill -9) in its 4th evaluation: the MPI job ends.
    died = cli("--out", str(run_dir), overrides=TINY_RUN + plugin, mpi_ranks=3,
               env={"EVORES_TEST_DIE_AT": "4"})  # fmt: skip
    assert died.returncode != 0
    assert not (run_dir / "summary.json").exists()
    finished = [tuple(r["key"]) for r in records(run_dir)]
    assert 0 < len(finished) < 12
    resumed = cli("--out", str(run_dir), "--resume", mpi_ranks=3)
    assert resumed.returncode == 0, resumed.stderr
    keys = [tuple(r["key"]) for r in records(run_dir)]
    assert keys[: len(finished)] == finished and not set(keys[len(finished) :]) & set(finished)
    assert_same_result(run_dir, tiny_run[0])


def test_a_live_run_holds_its_directory(tmp_path):
    run_dir = RunDirectory(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "evores"])
    try:
        (tmp_path / LOCK).write_text(
            json.dumps({"host": os.uname().nodename, "pid": holder.pid, "job": ""})
        )
        with pytest.raises(CheckpointError, match="in use by a live run"):
            run_dir.lock()
    finally:
        holder.kill()
        holder.wait()
    run_dir.lock()  # its holder is dead now: the lock is stale and taken over
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    run_dir.unlock()
    assert not (tmp_path / LOCK).exists()


@pytest.mark.parametrize(
    "holder, env, live",
    [
        ({"host": "node-elsewhere", "pid": 1, "job": ""}, {}, True),  # cannot check: refuse
        ({"host": "node-elsewhere", "pid": 1, "job": "42"}, {"SLURM_JOB_ID": "42"}, False),
        ({"host": "HERE", "pid": 2**22 + 7, "job": ""}, {}, False),  # no such process
        ({"host": "HERE", "pid": "torn"}, {}, False),
    ],
)
def test_stale_locks_are_told_from_live_ones(tmp_path, monkeypatch, holder, env, live):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if holder["host"] == "HERE":
        holder["host"] = os.uname().nodename
    (tmp_path / LOCK).write_text(json.dumps(holder))
    run_dir = RunDirectory(tmp_path)
    if live:
        with pytest.raises(CheckpointError, match="node-elsewhere"):
            run_dir.lock()
    else:
        run_dir.lock()
        run_dir.unlock()


def test_cli_refuses_a_directory_a_live_run_holds(cli, tmp_path, tiny_run):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("config.toml", "checkpoint.json", "evaluations.jsonl"):
        (run_dir / name).write_bytes((tiny_run[0] / name).read_bytes())
    (run_dir / LOCK).write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "job": "7"}))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    result = cli("--out", str(run_dir), "--resume")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("evores: error:") and "live run" in result.stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


@pytest.mark.slow
@pytest.mark.mpi
def test_asynchronous_run_stopped_under_mpi_resumes_without_retraining(cli, cli_started, tmp_path):
    require_mpiexec()
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    overrides = TINY_RUN + ["search.asynchronous=true"]
    process = cli_started("--out", str(run_dir), overrides=overrides, mpi_ranks=3, log=log)
    wait_for_records(process, run_dir, 3, log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == EXIT_CHECKPOINTED, log.read_text()
    finished = {tuple(r["key"]) for r in records(run_dir) if r["status"] != "interrupted"}
    resumed = cli("--out", str(run_dir), "--resume", mpi_ranks=3)
    assert resumed.returncode == 0, resumed.stderr
    completed = [r for r in records(run_dir) if r["status"] != "interrupted"]
    keys = [tuple(r["key"]) for r in completed]
    assert len(keys) == len(set(keys)) == 12  # nothing finished before the stop ran again
    assert finished <= set(keys)
    run_summary = summary(run_dir)
    assert [s["n_evaluations"] for s in run_summary["stages"]] == [6, 4]
    assert 0.0 <= run_summary["test_accuracy"] <= 1.0


def test_a_live_holder_started_from_a_users_own_script_keeps_its_directory(tmp_path):
    """The lock's liveness test looked for "evores" in the holder's command line, so a run
    started as `python train.py` was taken for dead and its lock deleted (issue 23, class 15)."""
    script = tmp_path / "train.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from evores.store.checkpoint import RunDirectory\n"
        "RunDirectory(Path(sys.argv[1])).lock()\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE, text=True,
        env=environment,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointError, match="in use by a live run"):
            RunDirectory(run_dir).lock()
        assert (run_dir / LOCK).exists()
    finally:
        holder.kill()
        holder.wait()
    taken = RunDirectory(run_dir)
    taken.lock()  # its holder is dead: the lock is taken over
    taken.unlock()


def test_after_a_run_a_walltime_warning_no_longer_ends_the_process():
    """A warning during the job's teardown must not end rank 0: the other ranks would wait for
    it in MPI_Finalize until the time limit. The other stop signals get their handlers back."""
    from evores.engine.session import _stop_signals
    from evores.execution.stopping import StopRequest

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        with _stop_signals(StopRequest()):
            assert signal.getsignal(signal.SIGUSR1) != signal.SIG_DFL
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
        assert {signum: signal.getsignal(signum) for signum in previous} == previous
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
