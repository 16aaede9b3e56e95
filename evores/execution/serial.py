"""The serial evaluator: tasks run one after another in this process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evores.core.results import Task
from evores.execution.stopping import RunInterrupted
from evores.execution.tasks import NextTask, OnResult, Work, interruptible, run_task, stalled


class SerialEvaluator:
    """Runs every task in this process, one after another (rank 0, no MPI)."""

    n_workers: int = 1

    def __init__(self, work: Work) -> None:
        self.work = work
        self.abandoned: list[Task] = []  # tasks a stop interrupted, after map()

    def map(
        self, tasks: list[Task], on_result: OnResult | None = None, stop: Any = None
    ) -> list[dict | None]:
        """Results in task order; ``on_result(task, result)`` after each one.

        Once ``stop`` (an evores.execution.stopping.StopRequest) is set, no further task starts;
        their
        results are None. The running task is finished, unless a second stop signal interrupts
        it (RunInterrupted); it is then in ``abandoned``.
        """
        results: list[dict | None] = [None] * len(tasks)
        self.abandoned = []
        with interruptible(stop):
            for index, task in enumerate(tasks):
                if stop:
                    break
                result = self._run_one(task)
                if result is None:
                    break
                results[index] = result
                if on_result is not None:
                    on_result(task, result)
        return results

    def steady(
        self,
        next_task: NextTask,
        on_result: OnResult,
        finished: Callable[[], bool],
        stop: Any = None,
    ) -> list[Task]:
        """Run ``next_task()`` one task at a time, ``on_result`` after each, until it gives None
        and ``finished()`` (else RuntimeError: the search stalled).

        Once ``stop`` is set no further task starts; a running task is finished unless a second
        stop signal interrupts it (RunInterrupted): that task is returned, as abandoned (and kept
        in ``abandoned``). Returns [] otherwise.
        """
        self.abandoned = []
        with interruptible(stop):
            while not stop:
                task = next_task()
                if task is None:
                    if finished():
                        break
                    raise stalled()
                result = self._run_one(task)
                if result is None:
                    break
                on_result(task, result)
        return list(self.abandoned)

    def _run_one(self, task: Task) -> dict | None:
        """The task's result; None, with the task in ``abandoned``, if a second stop signal
        interrupted it."""
        try:
            return run_task(self.work, task, rank=0)
        except RunInterrupted:
            self.abandoned = [task]
            return None

    @property
    def busy(self) -> int:
        """Always 0: when map() or steady() returns, nothing runs in this process any more."""
        return 0

    def close(self) -> None:
        """Nothing to release; present so both evaluators are used the same way."""

    def __enter__(self) -> SerialEvaluator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
