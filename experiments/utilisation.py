"""Worker utilisation and driver overhead: synchronous generations vs the asynchronous steady state.

    mpiexec -n 3 python experiments/utilisation.py
    mpiexec -n 3 python experiments/utilisation.py --checkpoint-dir /dev/shm   # without fsync cost

Both modes run the real search logic with a toy fitness: ``sync`` is LadderSearch.ask ->
MPIEvaluator.map -> tell, one generation at a time; ``async`` is SteadyStateSearch through
MPIEvaluator.steady. "ckpt" rows also write the search state with evores.store.checkpoint.write_json
(atomic, fsync'd) where the driver would: after every generation (sync) or every result (async).

``sleep``: each evaluation sleeps a seeded random 20-200 ms (seed from the task's seed);
utilisation = sum of evaluation time / (wall x workers). ``noop``: the evaluation does nothing,
so the wall time is the driver's own cost; overhead per evaluation = (wall - evaluation time /
workers) / evaluations, i.e. the wall time that work running in parallel does not explain.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evores import config as configuration  # noqa: E402
from evores.core.results import failed_result  # noqa: E402
from evores.execution.evaluators import MPIEvaluator, mpi_world, serve  # noqa: E402
from evores.store.checkpoint import RunDirectory, write_json  # noqa: E402
from evores.strategies.generational import LadderSearch  # noqa: E402
from evores.strategies.steady import SteadyStateSearch  # noqa: E402

_CANNED = {**failed_result("", "none"), "status": "ok", "reason": None, "failure": None}

Checkpoint = Callable[[dict], None] | None


def toy_result(task: dict, seconds: float) -> dict:
    """A smooth toy accuracy of the genome (so the search has something to select on)."""
    h = task["hparams"]
    lr_term = (math.log10(h["learning_rate"]) + 2) ** 2
    score = 1.0 / (1.0 + lr_term + 0.3 * (len(h["conv_filters"]) - 3) ** 2)
    return {**_CANNED, "val_accuracy": score, "best_epoch": 3, "wall_seconds": seconds,
            "test_accuracy": score if task["kind"] == "final" else None}  # fmt: skip


def sleep_work(task: dict) -> dict:
    seconds = float(np.random.default_rng(task["seed"]).uniform(0.020, 0.200))
    start = time.perf_counter()
    time.sleep(seconds)
    return toy_result(task, time.perf_counter() - start)


def noop_work(task: dict) -> dict:
    start = time.perf_counter()
    return toy_result(task, time.perf_counter() - start)


def make_config(evaluations: str, population: int, seed: int = 0) -> dict:
    return configuration.load(
        overrides=[
            f"seed={seed}",
            "schedule.resolutions=[32, 64, 128]",
            f"schedule.evaluations={evaluations}",
            f"search.population={population}",
        ]
    )


def run_sync(evaluator: MPIEvaluator, config: dict, checkpoint: Checkpoint) -> tuple[float, list]:
    """Generation by generation; each done entry is (barrier group, evaluation seconds)."""
    search, done = LadderSearch(config), []
    start = time.perf_counter()
    while not search.done:
        tasks = search.ask()
        results = evaluator.map(tasks)
        search.tell(tasks, results, time.perf_counter() - start)
        if checkpoint is not None:
            checkpoint(search.state)
        pairs = zip(tasks, results, strict=True)
        done += [(tuple(t["key"][:2]), r["wall_seconds"]) for t, r in pairs]
    return time.perf_counter() - start, done


def run_async(evaluator: MPIEvaluator, config: dict, checkpoint: Checkpoint) -> tuple[float, list]:
    """One task per free worker; the only barriers are the stage changes."""
    search, done = SteadyStateSearch(config), []
    start = time.perf_counter()

    def on_result(task: dict, result: dict) -> None:
        search.tell_one(task, result, time.perf_counter() - start)
        if checkpoint is not None:
            checkpoint(search.state)
        done.append((task["key"][0], result["wall_seconds"]))

    evaluator.steady(search.ask_one, on_result, lambda: search.done)
    return time.perf_counter() - start, done


RUNS = {
    "sync  (ckpt per generation)": (run_sync, True),
    "async (ckpt per result)": (run_async, True),
    "async (no ckpt)": (run_async, False),
    "sync  (no ckpt)": (run_sync, False),
}


def barrier_bound(done: list[tuple], workers: int) -> float:
    """Utilisation of the same evaluations with zero overhead: each goes, in completion order,
    to the first free worker, and every barrier group waits for the one before it."""
    groups: dict = {}
    for group, seconds in done:
        groups.setdefault(group, []).append(seconds)
    clock = 0.0
    for durations in groups.values():
        free = [clock] * workers
        for seconds in durations:
            i = free.index(min(free))
            free[i] += seconds
        clock = max(free)
    return sum(seconds for _, seconds in done) / (clock * workers)


def make_writer(kind: str, directory: Path) -> Callable[[dict], None]:
    if kind == "save_checkpoint":  # what the driver calls: compact JSON, previous file kept
        run_dir = RunDirectory(directory)
        return lambda state: run_dir.save_checkpoint({"search": state, "elapsed": 0.0})
    path = directory / "checkpoint.json"
    return lambda state: write_json(path, {"search": state, "elapsed": 0.0})


def measure(evaluator: MPIEvaluator, config: dict, modes: list[str], writer) -> dict:
    figures = {}
    for mode in modes:
        run, with_checkpoint = RUNS[mode]
        wall, done = run(evaluator, config, writer if with_checkpoint else None)
        busy = sum(seconds for _, seconds in done)
        bound = barrier_bound(done, evaluator.n_workers)
        figures[mode] = {"n": len(done), "wall": wall, "busy": busy, "bound": bound}
    return figures


def print_utilisation(figures: dict, workers: int) -> None:
    print(f"\nworker utilisation: evaluations sleep a seeded 20-200 ms, {workers} workers")
    print(f"{'mode':30} {'evals':>6} {'wall s':>7} {'work s':>7} {'utilisation':>11} {'bound':>7}")
    for mode, f in figures.items():
        utilisation = 100 * f["busy"] / (f["wall"] * workers)
        print(f"{mode:30} {f['n']:6d} {f['wall']:7.2f} {f['busy']:7.2f} {utilisation:9.1f} % "
              f"{100 * f['bound']:5.1f} %")  # fmt: skip
    print("bound: the same evaluations and barriers with zero overhead (greedy, completion order)")


def print_overhead(figures: dict, workers: int, where: str) -> None:
    print(f"\ndriver overhead: no-op evaluations, {workers} workers, checkpoints: {where}")
    print(f"{'mode':30} {'evals':>6} {'evals/s':>8} {'wall us/eval':>13} {'overhead us/eval':>17}")
    for mode, f in figures.items():
        per = f["wall"] / f["n"]
        overhead = per - f["busy"] / (f["n"] * workers)
        print(f"{mode:30} {f['n']:6d} {f['n'] / f['wall']:8,.0f} {1e6 * per:13.0f} "
              f"{1e6 * overhead:17.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--sleep-budget", default="[150, 100, 50]", help="evaluations per stage")
    parser.add_argument("--noop-budget", default="[750, 500, 250]", help="evaluations per stage")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="default: system temp")
    parser.add_argument(
        "--writer", choices=("write_json", "save_checkpoint"), default="write_json",
        help="write_json: indented JSON; save_checkpoint: the driver's RunDirectory method",
    )  # fmt: skip
    args = parser.parse_args()
    comm = mpi_world()
    if comm is None or comm.Get_size() < 2:
        sys.exit("run under mpiexec with at least 2 ranks, e.g. mpiexec -n 3 python " + __file__)
    comm.Barrier()  # every rank has finished importing: timing starts with all workers ready
    if comm.Get_rank() != 0:
        serve(comm, sleep_work)  # until the first evaluator closes
        serve(comm, noop_work)
        return
    sleep_config = make_config(args.sleep_budget, args.population)
    noop_config = make_config(args.noop_budget, args.population)
    with tempfile.TemporaryDirectory(dir=args.checkpoint_dir) as temporary:
        writer = make_writer(args.writer, Path(temporary))
        where = f"{args.writer} in {temporary}"
        with MPIEvaluator(comm) as evaluator:
            modes = ["sync  (ckpt per generation)", "async (ckpt per result)", "async (no ckpt)"]
            sleeping = measure(evaluator, sleep_config, modes, writer)
        with MPIEvaluator(comm) as evaluator:
            warm_up = make_config("[100, 50, 25]", args.population, seed=1)
            measure(evaluator, warm_up, list(RUNS), writer)
            noop = measure(evaluator, noop_config, list(RUNS), writer)
            workers = evaluator.n_workers
    print_utilisation(sleeping, workers)
    print_overhead(noop, workers, where)


if __name__ == "__main__":
    main()
