"""A run's progress on the log: the progress lines, the stage and final lines, and the ETA.

Everything here reads a search through its typed view (:class:`evores.strategies.ladder.Progress`)
and returns text; the driver decides when to log it. Lines look like ``stage 2/3  64 px  evals
40/72  best 0.812  median 0.640  elapsed 3m12s  eta 1m40s [1m10s-2m30s]`` (see
``report.format_progress``); the median is ``stats.median``, the one the plots draw. The ETA,
its range and the failure count come from :class:`RunCosts`, which the driver feeds every
record it logs; :func:`evaluation_line` is the line of one finished evaluation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from evores.core.results import FAILED, KIND_SEARCH, OK, PRUNED
from evores.core.stats import median
from evores.reporting.summary import _duration, format_progress
from evores.strategies.ladder import SEARCH, Progress

# Until a second resolution is measured, a later stage's evaluation is assumed to cost its
# pixel count's share (cost ~ resolution ** 2), the compute of a convolution.
PIXEL_EXPONENT = 2.0
# Its range until then: a fixed cost per evaluation (loading, the optimiser's steps) scales
# slower than the pixels; the measured exponent of two resolutions replaces both.
UNMEASURED_EXPONENTS = (1.0, PIXEL_EXPONENT)
# The ETA's range takes each measured mean cost within this many standard errors.
STANDARD_ERRORS = 2.0


class RunCosts:
    """What a run's evaluations measured so far: their cost per resolution, how busy the
    workers were, and the running count of failed search evaluations.

    Fed every finished record (``add``) in log order; interrupted records cost nothing. The
    ETA of :meth:`remaining_seconds` rests on these measurements, not on the pace of the
    first generation, whose evaluations also paid for the warm-up of the whole process.
    """

    def __init__(self, final_candidates: int = 0, records: Iterable[dict] = ()) -> None:
        self.final_candidates = final_candidates
        self.seconds: dict[int, float] = {}
        self.squares: dict[int, float] = {}  # the squared seconds: the spread of the costs
        self.counts: dict[int, int] = {}
        self.busy = 0.0  # evaluation seconds summed over every worker
        self.failed = 0
        for record in records:
            self.add(record)

    def add(self, record: dict[str, Any]) -> None:
        """Count one logged record."""
        if record.get("status") not in (OK, FAILED, PRUNED):
            return
        resolution, seconds = int(record["resolution"]), float(record.get("wall_seconds") or 0)
        self.seconds[resolution] = self.seconds.get(resolution, 0.0) + seconds
        self.squares[resolution] = self.squares.get(resolution, 0.0) + seconds * seconds
        self.counts[resolution] = self.counts.get(resolution, 0) + 1
        self.busy += seconds
        self.failed += record["status"] == FAILED and record.get("kind") == KIND_SEARCH

    def per_evaluation(self, resolution: int, bound: int = 0) -> float | None:
        """Mean seconds of an evaluation at ``resolution``: measured, or extrapolated from the
        measured resolutions (their fitted exponent once there are two, else pixel count).

        ``bound`` -1 or +1: the low or high end of the ETA's range instead: a measured mean
        within :data:`STANDARD_ERRORS` standard errors, an unmeasured resolution extrapolated
        with the low or high end of :data:`UNMEASURED_EXPONENTS` until two are measured."""
        if resolution in self.counts:
            return self._measured(resolution, bound)
        measured = sorted(r for r in self.counts if self.seconds[r] > 0)
        if not measured:
            return None
        low, high = measured[0], measured[-1]
        exponent = PIXEL_EXPONENT
        if high > low:
            ratio = self._measured(high) / self._measured(low)
            exponent = min(max(math.log(ratio) / math.log(high / low), 0.0), 3.0)
        elif bound:
            exponent = UNMEASURED_EXPONENTS[bound > 0]
        base = high if resolution > high else low
        return self._measured(base, bound) * (resolution / base) ** exponent

    def _measured(self, resolution: int, bound: int = 0) -> float:
        n = self.counts[resolution]
        mean = self.seconds[resolution] / n
        if not bound or n < 2:
            return mean
        variance = max(0.0, self.squares[resolution] / n - mean * mean) * n / (n - 1)
        return max(0.0, mean + bound * STANDARD_ERRORS * math.sqrt(variance / n))

    def remaining_seconds(
        self, progress: Progress, elapsed: float, just_done: int = 0, bound: int = 0
    ) -> float | None:
        """Seconds left: the evaluations left in every stage and the final retraining, each at
        its resolution's cost, over the parallelism measured so far (evaluation seconds per
        second of run time). ``just_done``: evaluations logged but not yet told to the search;
        ``bound``: as for :meth:`per_evaluation`. None until something has been measured."""
        if progress.phase != SEARCH or self.busy <= 0 or elapsed <= 0:
            return None
        stage, resolutions, budgets = progress.stage, progress.resolutions, progress.budgets
        left = [max(0, budgets[stage] - progress.stage_used - just_done)]
        left += list(budgets[stage + 1 :])
        work = sum(
            n * self.per_evaluation(r, bound)
            for n, r in zip(left, resolutions[stage:], strict=True)
        )
        work += self.final_candidates * self.per_evaluation(resolutions[-1], bound)
        return work / (self.busy / elapsed)

    def eta(self, progress: Progress, elapsed: float, just_done: int = 0) -> str:
        """The ETA as text: ``1m40s [1m10s-2m30s]`` (the range where it is wider than the
        rounding), ``?`` before anything is measured."""
        point = self.remaining_seconds(progress, elapsed, just_done)
        if point is None:
            return "?"
        low, high = (self.remaining_seconds(progress, elapsed, just_done, b) for b in (-1, 1))
        text = _duration(point)
        if _duration(low) != text or _duration(high) != text:
            text += f" [{_duration(low)}-{_duration(high)}]"
        return text


def progress_line(
    progress: Progress,
    scores: list[float],
    done: int,
    elapsed: float,
    costs: RunCosts,
    just_done: int = 0,
) -> str:
    """The current stage's line: best and median of ``scores``, ``done`` evaluations so far,
    the ETA and the run's failed evaluations so far."""
    line = format_progress(
        progress.stage + 1,
        progress.n_stages,
        progress.resolution,
        done,
        progress.total_evaluations,
        max(scores) if scores else None,
        median(scores),
        elapsed,
        None,
    )
    line = line.removesuffix("?") + costs.eta(progress, elapsed, just_done)
    return line + (f"  ({costs.failed} failed)" if costs.failed else "")


def generation_line(
    progress: Progress,
    tasks: list[dict],
    results: list[dict[str, Any]],
    elapsed: float,
    costs: RunCosts,
) -> str:
    """Synchronous mode: the line of a generation evaluated and not yet told to the search."""
    if progress.phase != SEARCH:
        tests = [r.get("test_accuracy") for r in results]
        resolution = tasks[0]["resolution"] if tasks else progress.resolutions[-1]
        return f"final retraining at {resolution} px: test accuracies {tests}"
    scores = list(progress.stage_scores) + [r["val_accuracy"] for r in results if r["status"] == OK]
    done = progress.n_evaluations + len(results)
    return progress_line(progress, scores, done, elapsed, costs, just_done=len(results))


def evaluation_line(record: dict[str, Any]) -> str:
    """The line of one finished evaluation: its key, resolution, accuracy or failure type and
    seconds; a failed one's also its reason and genome, to find it in the log and run it
    again."""
    kind = "evaluation" if record["kind"] == KIND_SEARCH else f"{record['kind']} retraining"
    text = f"{kind} {record['key']} at {record['resolution']} px"
    seconds = _duration(float(record.get("wall_seconds") or 0.0))
    if record["status"] == OK:
        score = record.get("val_accuracy") if record["kind"] == KIND_SEARCH else None
        name, value = ("val", score) if score is not None else ("test", record.get("test_accuracy"))
        return f"{text}: {name} {'-' if value is None else f'{value:.3f}'} in {seconds}"
    if record["status"] == PRUNED:
        return (
            f"{text}: pruned after {record.get('epochs')} epochs (best val "
            f"{float(record.get('val_accuracy') or 0.0):.3f}) in {seconds}: {record.get('reason')}"
        )
    genome = json.dumps(record.get("hparams"), sort_keys=True)
    return (
        f"{text}: failed ({record.get('failure') or record['status']}) in {seconds}: "
        f"{record.get('reason') or ''}; genome {genome}"
    )


def stage_closed_line(progress: Progress) -> str:
    """Asynchronous mode: the line of the stage that just closed."""
    stage = progress.stages[-1]
    return (
        f"stage {len(progress.stages)}/{progress.n_stages} at {stage['resolution']} px closed: "
        f"best {stage['best_val_accuracy'] or 0.0:.3f} after {stage['n_evaluations']} evaluations"
    )


def transition_line(transition: dict[str, Any]) -> str:
    """The fidelity of a stage change, once its re-evaluations are in: Spearman's rho, its
    90 % bootstrap interval, the pairs used and the failures left out."""
    rho, interval = transition.get("spearman"), transition.get("interval")
    text = f"{transition['from_resolution']}→{transition['to_resolution']} px: ρ "
    text += "n/a" if rho is None else f"{rho:.2f}"
    if interval is not None:
        text += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
    text += f", n {transition.get('n', len(transition['low']))}"
    if transition.get("n_failed"):
        text += f" ({transition['n_failed']} failed, left out)"
    return text


def final_line(progress: Progress) -> str:
    """Asynchronous mode: the final candidates' test accuracies, once all are in."""
    return f"final retraining: test accuracies {[f.get('test_accuracy') for f in progress.final]}"


def resume_line(progress: Progress, n_records: int) -> str:
    return (
        f"resuming: stage {progress.stage + 1}, {progress.n_evaluations} evaluations done, "
        f"{n_records} records in the log"
    )
