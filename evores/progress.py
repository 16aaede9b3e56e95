"""A run's progress on the log: the progress lines, the stage and final lines, and the ETA.

Everything here reads a search through its typed view (:class:`evores.ladder.Progress`) and
returns text; the driver decides when to log it. Lines look like ``stage 2/3  64 px  evals
40/72  best 0.812  median 0.640  elapsed 3m12s  eta 1m40s`` (see ``report.format_progress``);
the median is ``stats.median``, the one the plots draw.
"""

from __future__ import annotations

from typing import Any

from evores.ladder import SEARCH, Progress
from evores.report import format_progress
from evores.results import OK
from evores.stats import median


def remaining_seconds(progress: Progress, elapsed: float, just_done: int = 0) -> float | None:
    """Estimate: this stage's seconds per evaluation, scaled by pixel count for later stages.

    ``just_done`` counts evaluations finished but not yet told to the search. None until the
    stage has an evaluation and some time has passed.
    """
    used = progress.stage_used + just_done
    spent = elapsed - progress.stage_started
    if used == 0 or spent <= 0:
        return None
    per_evaluation = spent / used
    stage, resolutions, budgets = progress.stage, progress.resolutions, progress.budgets
    seconds = (budgets[stage] - used) * per_evaluation
    for later in range(stage + 1, len(resolutions)):
        seconds += budgets[later] * per_evaluation * (resolutions[later] / resolutions[stage]) ** 2
    return seconds


def progress_line(
    progress: Progress,
    scores: list[float],
    done: int,
    elapsed: float,
    just_done: int = 0,
    failed: int = 0,
) -> str:
    """The current stage's line: best and median of ``scores``, ``done`` evaluations so far."""
    line = format_progress(
        progress.stage + 1,
        progress.n_stages,
        progress.resolution,
        done,
        progress.total_evaluations,
        max(scores) if scores else None,
        median(scores),
        elapsed,
        remaining_seconds(progress, elapsed, just_done),
    )
    return line + (f"  ({failed} failed)" if failed else "")


def generation_line(
    progress: Progress, tasks: list[dict], results: list[dict[str, Any]], elapsed: float
) -> str:
    """Synchronous mode: the line of a generation evaluated and not yet told to the search."""
    if progress.phase != SEARCH:
        tests = [r.get("test_accuracy") for r in results]
        resolution = tasks[0]["resolution"] if tasks else progress.resolutions[-1]
        return f"final retraining at {resolution} px: test accuracies {tests}"
    scores = list(progress.stage_scores) + [r["val_accuracy"] for r in results if r["status"] == OK]
    failed = sum(r["status"] != OK for r in results)
    done = progress.n_evaluations + len(results)
    return progress_line(progress, scores, done, elapsed, just_done=len(results), failed=failed)


def stage_closed_line(progress: Progress) -> str:
    """Asynchronous mode: the line of the stage that just closed."""
    stage = progress.stages[-1]
    return (
        f"stage {len(progress.stages)}/{progress.n_stages} at {stage['resolution']} px closed: "
        f"best {stage['best_val_accuracy'] or 0.0:.3f} after {stage['n_evaluations']} evaluations"
    )


def final_line(progress: Progress) -> str:
    """Asynchronous mode: the final candidates' test accuracies, once all are in."""
    return f"final retraining: test accuracies {[f.get('test_accuracy') for f in progress.final]}"


def resume_line(progress: Progress, n_records: int) -> str:
    return (
        f"resuming: stage {progress.stage + 1}, {progress.n_evaluations} evaluations done, "
        f"{n_records} records in the log"
    )
