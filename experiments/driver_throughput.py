"""Worker utilisation and driver overhead of real runs (``python -m evores.run`` under MPI).

    python experiments/driver_throughput.py            # launches mpiexec -n 3 itself

Runs the whole product — config, run directory, evaluation log, checkpoints, progress — with
the fitness functions of experiments/benchmark_functions.py instead of training, in the
synchronous and the asynchronous mode, side by side in one run:

- ``sleep``: every evaluation sleeps a seeded 20-200 ms. Utilisation = the evaluations' own
  time / (wall time x workers), wall time from the first evaluation's start to the last
  result, as logged in evaluations.jsonl.
- ``no-op``: evaluations return at once. Rate = evaluations / wall time; the driver's
  overhead per evaluation = wall time / evaluations (the evaluations themselves take ~0).

Figures are printed, never asserted: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCENARIOS = {
    "sleep 20-200 ms": ("benchmark_functions:sleeps_20_to_200_ms", "[150, 100, 50]"),
    "no-op": ("benchmark_functions:no_op", "[1500, 1000, 500]"),
}
MODES = {"synchronous": "false", "asynchronous": "true"}


def run(ranks: int, function: str, budget: str, asynchronous: str, out: Path) -> list[dict]:
    command = [
        "mpiexec", "-n", str(ranks), sys.executable, "-m", "evores.run", "--quiet",
        "--out", str(out),
        "--set", f"fitness.function={function}",
        "--set", "schedule.resolutions=[16, 32, 64]",
        "--set", f"schedule.evaluations={budget}",
        "--set", f"search.asynchronous={asynchronous}",
        "--set", "train.threads=1",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "experiments"), str(ROOT)])}
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    return [json.loads(line) for line in (out / "evaluations.jsonl").open()]


def figures(records: list[dict], workers: int) -> dict:
    start = min(r["elapsed"] - r["wall_seconds"] for r in records)
    wall = max(r["elapsed"] for r in records) - start
    busy = sum(r["wall_seconds"] for r in records)
    return {
        "n": len(records),
        "wall": wall,
        "utilisation": busy / (wall * workers),
        "rate": len(records) / wall,
        "overhead_ms": 1e3 * (wall - busy / workers) / len(records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=3, help="MPI ranks (1 driver + workers)")
    args = parser.parse_args()
    workers = args.ranks - 1
    print(f"{args.ranks} MPI ranks ({workers} evaluating), real runs of python -m evores.run")
    print(f"{'scenario':16} {'mode':13} {'evals':>6} {'wall s':>7} {'utilisation':>11} "
          f"{'evals/s':>8} {'overhead ms/eval':>17}")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        for scenario, (function, budget) in SCENARIOS.items():
            for mode, flag in MODES.items():
                out = Path(scratch) / f"{scenario.split()[0]}-{mode}"
                f = figures(run(args.ranks, function, budget, flag, out), workers)
                print(f"{scenario:16} {mode:13} {f['n']:6d} {f['wall']:7.2f} "
                      f"{100 * f['utilisation']:9.1f} % {f['rate']:8.0f} "
                      f"{f['overhead_ms']:17.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
