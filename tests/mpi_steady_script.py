"""Run under ``mpiexec -n 3``: a SteadyStateSearch through MPIEvaluator.steady, whole and stopped.

Usage: ``mpiexec -n 3 python tests/mpi_steady_script.py``. Rank 0 prints one JSON object (the
last line of stdout) that tests/strategies/test_steady.py parses.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "strategies"))

from test_steady import make_config, toy_result  # noqa: E402

from evores.execution.evaluators import MPIEvaluator, mpi_world, serve  # noqa: E402
from evores.execution.stopping import StopRequest  # noqa: E402
from evores.strategies.steady import SteadyStateSearch  # noqa: E402


def work(task: dict) -> dict:
    """The toy fitness after an uneven, seeded 2-20 ms, so results arrive out of order."""
    time.sleep(0.002 + 0.018 * (task["seed"] % 97) / 97)
    return toy_result(task)


def drive(evaluator: MPIEvaluator, search: SteadyStateSearch, stop=None, stop_after=None):
    told, ranks, plain = [], set(), [True]

    def on_result(task: dict, result: dict) -> None:
        search.tell_one(task, result, elapsed=float(len(told)))
        told.append(task)
        ranks.add(result["rank"])
        plain[0] &= json.loads(json.dumps(search.state, allow_nan=False)) == search.state
        if stop_after is not None and len(told) == stop_after:
            stop.request("SIGTERM", 0.0)

    abandoned = evaluator.steady(search.ask_one, on_result, lambda: search.done, stop)
    return told, abandoned, sorted(ranks), plain[0]


def counts(tasks: list[dict]) -> dict[str, int]:
    return dict(Counter(str(t["resolution"]) for t in tasks if t["kind"] == "search"))


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    comm = mpi_world()
    assert comm is not None and comm.Get_size() == 3, "run under mpiexec -n 3"
    if comm.Get_rank() != 0:
        serve(comm, work)
        comm.Barrier()
        return
    with MPIEvaluator(comm) as evaluator:
        search = SteadyStateSearch(make_config())
        told, abandoned, ranks, plain = drive(evaluator, search)
        progress = search.progress()
        whole = {
            "phase": progress.phase,
            "abandoned": abandoned,
            "counts": counts(told),
            "n_evaluations": progress.n_evaluations,
            "transitions": len(progress.transitions),
            "final": len(progress.final),
            "ranks": ranks,
            "state_is_json": plain,
        }
        stopped = SteadyStateSearch(make_config())
        stop = StopRequest()
        before, abandoned, _, _ = drive(evaluator, stopped, stop=stop, stop_after=6)
        busy, pending = evaluator.busy, stopped.pending()
        resumed = SteadyStateSearch(make_config(), json.loads(json.dumps(stopped.state)))
        after, _, _, _ = drive(evaluator, resumed)  # first discards the abandoned results
        report = {
            "whole": whole,
            "stopped": {
                "abandoned": [t["key"] for t in abandoned],
                "pending": [t["key"] for t in pending],
                "busy": busy,
                "resumed_phase": resumed.phase,
                "resumed_counts": counts(before + after),
            },
        }
    print(json.dumps(report), flush=True)
    comm.Barrier()  # every rank got past its loop: shutdown was clean


if __name__ == "__main__":
    main()
