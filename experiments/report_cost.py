"""What the report costs on the driver's path: at a stage change, at a walltime stop, at a start.

    python experiments/report_cost.py                 # launches mpiexec -n 3 itself

1. A whole asynchronous run (``mpiexec -n 3``, no-op evaluations, the budget of
   ``driver_throughput.py``); then, on its finished run directory and in this process, the
   seconds of each part of the report: reading the log, the summary, the plots, fANOVA
   importance (what the driver's provisional report does at a stage change and at a stop).
2. A walltime stop: the same run again, SIGUSR1 to ``mpiexec`` (which forwards it to every
   rank, as SLURM's ``--signal`` does) once the log holds ``--stop-at`` records; the seconds
   from the signal to the job's end (checkpoint, provisional report, teardown).
3. The start that follows: ``--resume`` launched, the seconds until the log grows (its first
   new evaluation), beside the same figure for a fresh start of the same run.

Figures are printed, never asserted: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGET = "[1500, 1000, 500]"


def command(ranks: int, out: Path, resume: bool = False) -> list[str]:
    return [
        "mpiexec", "-n", str(ranks), sys.executable, "-m", "evores.run", "--quiet",
        "--out", str(out), *(["--resume"] if resume else [
            "--set", "fitness.function=benchmark_functions:no_op",
            "--set", "schedule.resolutions=[16, 32, 64]",
            "--set", f"schedule.evaluations={BUDGET}",
            "--set", "search.asynchronous=true",
            "--set", "train.threads=1",
        ]),
    ]  # fmt: skip


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "experiments"), str(ROOT)])}


def log_lines(out: Path) -> int:
    try:
        with (out / "evaluations.jsonl").open("rb") as stream:
            return sum(1 for _ in stream)
    except FileNotFoundError:
        return 0


def launch_until_logged(ranks: int, out: Path, resume: bool, more: int) -> tuple:
    """Launch; the seconds until the log has grown by ``more`` lines, and the process."""
    before = log_lines(out)
    started = time.perf_counter()
    process = subprocess.Popen(command(ranks, out, resume), env=environment(), cwd=ROOT)
    while log_lines(out) < before + more and process.poll() is None:
        time.sleep(0.002)
    return time.perf_counter() - started, process


def report_parts(out: Path) -> dict[str, float]:
    """Seconds of each part of the driver's report on the run directory ``out``."""
    from evores import config as configuration
    from evores.reporting import importance, plots
    from evores.reporting import summary as report
    from evores.store.checkpoint import RunDirectory
    from evores.store.resume import read_log
    from evores.store.rundir import RunData
    from evores.strategies.steady import SteadyStateSearch

    config = configuration.load(out / "config.toml")
    run_dir = RunDirectory(out)
    state = run_dir.load_checkpoint()["search"]
    search = SteadyStateSearch(config, state)
    kept = json.loads((out / "data_report.json").read_text())
    data = RunData(kept["classes"], kept["report"])
    seconds = {}
    clock = time.perf_counter()
    records = read_log(run_dir)
    seconds["read the log"] = time.perf_counter() - clock
    clock = time.perf_counter()
    report.summary(config, search.progress(), search.winner(), records, data, 1.0, True)
    seconds["summary"] = time.perf_counter() - clock
    clock = time.perf_counter()
    plots.plot_run(out, records, search.progress().transitions)
    seconds["plots"] = time.perf_counter() - clock
    with tempfile.TemporaryDirectory() as scratch:
        clock = time.perf_counter()
        importance.write_importance(Path(scratch), config, records)
        seconds["importance (fANOVA)"] = time.perf_counter() - clock
    seconds["n records"] = len(records)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=3)
    parser.add_argument("--stop-at", type=int, default=2000, help="log records before SIGUSR1")
    parser.add_argument("--keep", type=Path, help="keep the run directories here (new folder)")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=args.keep) as scratch:
        if args.keep:
            scratch = args.keep
        whole = Path(scratch) / "whole"
        first, process = launch_until_logged(args.ranks, whole, False, 1)
        process.wait()
        parts = report_parts(whole)
        print(f"report parts on a finished run of {parts.pop('n records')} records:")
        for part, value in parts.items():
            print(f"  {part:22} {value:7.3f} s")
        stopped = Path(scratch) / "stopped"
        _, process = launch_until_logged(args.ranks, stopped, False, args.stop_at)
        signalled = time.perf_counter()
        process.send_signal(signal.SIGUSR1)
        code = process.wait()
        stop = time.perf_counter() - signalled
        print(f"walltime stop at {log_lines(stopped)} records: {stop:.3f} s from SIGUSR1 to "
              f"the job's end (exit {code})")  # fmt: skip
        resumed, process = launch_until_logged(args.ranks, stopped, True, 1)
        process.wait()
        print(f"start to the first evaluation logged: fresh {first:.3f} s, resumed {resumed:.3f} s")


if __name__ == "__main__":
    main()
