"""Benchmark of the MPI evaluator: master overhead and worker utilisation.

    mpiexec -n 3 python experiments/mpi_overhead.py --evaluations 20000
    mpiexec -n 3 python experiments/mpi_overhead.py --mode sleep --evaluations 60

``noop``: the work function returns a canned result at once, so the wall time per evaluation is
the evaluator's own cost (messaging, scheduling, waiting). ``sleep``: each evaluation sleeps a
seeded random 20-200 ms; utilisation = sum of evaluation time / (wall x workers).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evores.core.results import failed_result  # noqa: E402
from evores.execution.evaluators import MPIEvaluator, mpi_world, serve  # noqa: E402

_CANNED = {**failed_result("", "none"), "status": "ok", "reason": None, "failure": None}


def noop_work(task: dict) -> dict:
    return dict(_CANNED)


def sleep_work(task: dict) -> dict:
    seconds = float(np.random.default_rng(task["seed"]).uniform(0.020, 0.200))
    start = time.perf_counter()
    time.sleep(seconds)
    return {**_CANNED, "wall_seconds": time.perf_counter() - start}


def make_tasks(n: int, offset: int = 0) -> list[dict]:
    """Tasks shaped like the real ones (a full hparams dict), so message sizes are realistic."""
    hparams = {
        "learning_rate": 0.01,
        "conv_filters": [32, 64, 64],
        "conv_kernels": [3, 3, 3],
        "fc_units": [128],
        "batch_size": 64,
        "l1": 0.0,
        "l2": 5e-4,
    }
    return [
        {
            "key": [0, 0, offset + i],
            "kind": "search",
            "hparams": hparams,
            "resolution": 32,
            "seed": offset + i,
            "epochs": None,
        }
        for i in range(n)
    ]


def run_noop(evaluator: MPIEvaluator, n: int) -> None:
    evaluator.map(make_tasks(min(500, n), offset=10**6))  # warm-up: connections, caches
    evaluator.wait_seconds = 0.0
    tasks = make_tasks(n)
    cpu0, t0 = time.process_time(), time.perf_counter()
    evaluator.map(tasks, on_result=lambda task, result: None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    outside = wall - evaluator.wait_seconds
    print(f"mode noop  ranks {evaluator.n_workers + 1}  workers {evaluator.n_workers}")
    print(f"evaluations          {n}")
    print(f"wall                 {wall:.3f} s")
    print(f"evaluations/s        {n / wall:,.0f}")
    print(f"wall per evaluation  {1e6 * wall / n:.1f} us")
    print(
        f"master in receive    {1e6 * evaluator.wait_seconds / n:.1f} us/evaluation (wait+unpickle)"
    )
    print(f"master outside wait  {1e6 * outside / n:.1f} us/evaluation")
    print(f"master CPU time      {1e6 * cpu / n:.1f} us/evaluation")


def greedy_makespan(results: list[dict], n_workers: int) -> float:
    """Makespan if each task went, in order, to the first free worker with no overhead at all."""
    free = [0.0] * n_workers
    for r in results:
        i = free.index(min(free))
        free[i] += r["wall_seconds"]
    return max(free)


def run_sleep(evaluator: MPIEvaluator, n: int) -> None:
    tasks = make_tasks(n)
    t0 = time.perf_counter()
    results = evaluator.map(tasks)
    wall = time.perf_counter() - t0
    busy = sum(r["wall_seconds"] for r in results)
    ranks = sorted({r["rank"] for r in results})
    counts = {rank: sum(r["rank"] == rank for r in results) for rank in ranks}
    print(f"mode sleep  ranks {evaluator.n_workers + 1}  workers {evaluator.n_workers}")
    print(f"evaluations          {n}")
    print(f"wall                 {wall:.3f} s")
    print(f"sum evaluation time  {busy:.3f} s")
    print(f"ideal wall           {busy / evaluator.n_workers:.3f} s (sum / workers)")
    print(f"worker utilisation   {100 * busy / (wall * evaluator.n_workers):.1f} %")
    bound = busy / (greedy_makespan(results, evaluator.n_workers) * evaluator.n_workers)
    print(f"utilisation bound    {100 * bound:.1f} % (zero-overhead greedy schedule, same tasks)")
    print(f"evaluations by rank  {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("noop", "sleep"), default="noop")
    parser.add_argument("--evaluations", type=int, default=20000)
    args = parser.parse_args()
    comm = mpi_world()
    if comm is None or comm.Get_size() < 2:
        sys.exit("run under mpiexec with at least 2 ranks, e.g. mpiexec -n 3 python " + __file__)
    work = noop_work if args.mode == "noop" else sleep_work
    comm.Barrier()  # every rank has finished importing: timing starts with all workers ready
    if comm.Get_rank() != 0:
        serve(comm, work)
        return
    with MPIEvaluator(comm) as evaluator:
        (run_noop if args.mode == "noop" else run_sleep)(evaluator, args.evaluations)


if __name__ == "__main__":
    main()
