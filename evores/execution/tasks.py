"""One task run by any evaluator: the work function's shape, and the rule that an exception it
raises becomes a failed result instead of killing a rank."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from evores.core.errors import is_machine_fault
from evores.core.results import FAILURE_EXCEPTION, FAILURE_MACHINE, Task, failed_result, one_line

Work = Callable[[Task], dict]

logger = logging.getLogger("evores.execution.tasks")


OnResult = Callable[[Task, dict], None]
NextTask = Callable[[], Task | None]


def stalled() -> RuntimeError:
    return RuntimeError(
        "steady(): no task to hand out, none running, and the search is not finished; "
        "the search's ask_one/tell_one lost track of its tasks (a bug)"
    )


def run_task(work: Work, task: Task, rank: int) -> dict:
    """Run one task; never lets an Exception escape (it becomes a failed result)."""
    start = time.perf_counter()
    try:
        result = work(task)
        if hasattr(result, "to_dict"):  # tolerate a FitnessResult; only plain dicts travel
            result = result.to_dict()
        if not isinstance(result, dict):
            raise TypeError(f"work returned {type(result).__name__}, expected a dict")
        result = dict(result)
    except Exception as exc:
        # The time lost to a failing task is real and belongs in utilisation figures.
        elapsed = time.perf_counter() - start
        if is_machine_fault(exc):
            logger.error("task %s on rank %d: the machine failed: %s", task.get("key"), rank, exc)
            reason = f"the machine failed ({one_line(exc)})"
            result = failed_result(reason, FAILURE_MACHINE, wall_seconds=elapsed)
        else:
            logger.exception("task %s failed on rank %d", task.get("key"), rank)
            result = failed_result(one_line(exc), FAILURE_EXCEPTION, wall_seconds=elapsed)
    result["rank"] = rank
    return result


@contextlib.contextmanager
def interruptible(stop: Any) -> Iterator[None]:
    """While tasks run in this process, a second stop signal interrupts the running one."""
    if stop is None:
        yield
        return
    stop.interrupt_running = True
    try:
        yield
    finally:
        stop.interrupt_running = False
