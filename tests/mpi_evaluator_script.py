"""Run under ``mpiexec -n N``: checks MPIEvaluator against SerialEvaluator, prints JSON on rank 0.

Usage: ``mpiexec -n N python tests/mpi_evaluator_script.py --size N [--tasks T] [--fail I]``.
Rank 0 prints one JSON object (the last line of stdout) that
tests/execution/test_evaluators.py parses.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evores.core.results import KIND_SEARCH, FitnessResult, make_task  # noqa: E402
from evores.execution.evaluators import (  # noqa: E402
    Evaluator,
    MPIEvaluator,
    SerialEvaluator,
    make_evaluator,
    mpi_world,
    serve,
)


def toy_work(task: dict) -> dict:
    """A deterministic function of the task seed; raises for tasks marked "raise"."""
    if task["hparams"].get("raise"):
        raise ValueError(f"toy failure for seed {task['seed']}")
    time.sleep(0.002 * (task["seed"] % 5))  # uneven durations exercise dynamic scheduling
    accuracy = (task["seed"] * 7919 % 1000) / 1000
    return FitnessResult.succeeded(
        accuracy,
        epochs=task["seed"] % 7 + 1,
        best_epoch=task["seed"] % 3,
        n_parameters=task["seed"] * 10,
    ).to_dict()


def make_tasks(n: int, fail: int) -> list[dict]:
    return [
        make_task(
            [0, 0, i], KIND_SEARCH, {"learning_rate": 0.01, "raise": i == fail}, 16, 1000 + 37 * i
        )
        for i in range(n)
    ]


def without_rank(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("rank", "wall_seconds")} for r in results]


def interrupt(task: dict, result: dict) -> None:
    raise KeyboardInterrupt


def drive(evaluator: MPIEvaluator, n_tasks: int, fail: int) -> dict:
    tasks = make_tasks(n_tasks, fail)
    completed: list[list[int]] = []
    results = evaluator.map(tasks, on_result=lambda t, r: completed.append(t["key"]))
    interrupted = False
    try:  # an exception on the master mid-map: tasks still running must not leak into the next
        evaluator.map(make_tasks(6, -1), on_result=interrupt)
    except KeyboardInterrupt:
        interrupted = True
    second = evaluator.map(make_tasks(3, -1))  # the evaluator is reused across generations
    empty = evaluator.map([])
    evaluator.close()
    evaluator.close()  # idempotent
    serial = SerialEvaluator(toy_work).map(tasks)
    return {
        "n_workers": evaluator.n_workers,
        "same_as_serial": without_rank(results) == without_rank(serial),
        "statuses": [r["status"] for r in results],
        "failures": [r["failure"] for r in results],
        "reasons": [r["reason"] for r in results],
        "ranks": [r["rank"] for r in results],
        "completed_keys": completed,
        "second_ok": without_rank(second)
        == without_rank(SerialEvaluator(toy_work).map(make_tasks(3, -1))),
        "empty": empty,
        "interrupted": interrupted,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, required=True, help="expected communicator size")
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--fail", type=int, default=3, help="index of the task that raises")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)  # a script, not the library

    comm = mpi_world()
    assert comm is not None, "mpi_world() returned None under mpiexec"
    # A launcher from another MPI gives every process a world of size 1 and no error.
    assert comm.Get_size() == args.size, f"world size {comm.Get_size()} != {args.size}"
    if comm.Get_rank() == 0:
        evaluator = make_evaluator(toy_work, comm)
        assert isinstance(evaluator, MPIEvaluator) and isinstance(evaluator, Evaluator)
        report = drive(evaluator, args.tasks, args.fail)
        print(json.dumps(report), flush=True)
    else:
        serve(comm, toy_work)
    comm.Barrier()  # every rank got past its loop: shutdown was clean


if __name__ == "__main__":
    main()
