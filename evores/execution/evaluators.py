"""Evaluators: the one seam through which the search runs fitness evaluations.

``SerialEvaluator`` runs tasks in this process; ``MPIEvaluator`` runs on rank 0 and hands each
task to whichever worker rank is free (dynamic scheduling), while ranks 1..n-1 sit in
``serve(comm, work)``. Both keep the same contract: results come back in task order, each with
the ``"rank"`` that ran it, ``on_result(task, result)`` is called on rank 0 as each completes,
and an exception raised by the work function becomes a failed result instead of killing a rank.

``steady(next_task, on_result, finished, stop)`` is the asynchronous counterpart of ``map``
(for evores.strategies.steady.SteadyStateSearch): a worker that frees gets ``next_task()`` at once,
with
no generation barrier, and the loop runs until the search is finished or stopped.

Tasks and results are plain dicts: a task is an :class:`evores.core.results.Task`, a result is
``FitnessResult.to_dict()`` plus the ``"rank"`` that ran it (:mod:`evores.core.results`).

mpi4py is imported only inside the functions that need it, so importing this module (or running
``python -m evores.run`` without a launcher) never initialises MPI.

Waiting is done by probing with a short spin followed by sleeps that back off to
``_MAX_SLEEP`` seconds, instead of a blocking receive: MPICH's blocking receive busy-polls a
core, which an idle worker or the master would otherwise steal from the ranks that are training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from evores.core.results import Task
from evores.execution.mpi import MPIEvaluator, mpi_world, serve
from evores.execution.serial import SerialEvaluator
from evores.execution.tasks import NextTask, OnResult, Work

__all__ = [
    "Evaluator",
    "Work",
    "SerialEvaluator",
    "MPIEvaluator",
    "serve",
    "make_evaluator",
    "mpi_world",
]

logger = logging.getLogger("evores.execution.evaluators")


@runtime_checkable
class Evaluator(Protocol):
    """What the driver needs of an evaluator; SerialEvaluator and MPIEvaluator both offer it.

    Runtime-checkable, so ``isinstance(x, Evaluator)`` tells whether ``x`` has every member
    (not whether their signatures match: tests/execution/test_evaluators.py checks those)."""

    n_workers: int  # evaluations that can run at once
    abandoned: list[Task]  # tasks a stop left unfinished, after map() or steady()

    @property
    def busy(self) -> int:
        """Workers still running a task (after a stop: the abandoned ones still training)."""
        ...

    def map(
        self, tasks: list[Task], on_result: OnResult | None = None, stop: Any = None
    ) -> list[dict | None]:
        """Every task's result in task order (None where a stop prevented it)."""
        ...

    def steady(
        self,
        next_task: NextTask,
        on_result: OnResult,
        finished: Callable[[], bool],
        stop: Any = None,
    ) -> list[Task]:
        """Hand ``next_task()`` to every free worker until ``finished()``; the abandoned tasks."""
        ...

    def close(self) -> None:
        """Release the workers (safe to call twice)."""
        ...


def make_evaluator(work: Work, comm: Any = None) -> Evaluator:
    """The evaluator for this process: serial without MPI, MPI master on rank 0.

    ``comm`` None or of size 1 gives a SerialEvaluator. On a larger communicator this must be
    called on rank 0 only; ranks 1..n-1 must call ``serve(comm, work)`` instead (and get a
    RuntimeError here).
    """
    if comm is None:
        return SerialEvaluator(work)
    size, rank = comm.Get_size(), comm.Get_rank()
    if size == 1:
        logger.warning(
            "MPI communicator has 1 process: running serially (if several processes were "
            "launched, the launcher and mpi4py's MPI library do not match)"
        )
        return SerialEvaluator(work)
    if rank != 0:
        raise RuntimeError(f"make_evaluator called on rank {rank}; call serve(comm, work) there")
    return MPIEvaluator(comm)
