"""The driver loop of a run: ask -> evaluate -> log -> tell -> checkpoint.

A generation's tasks are looked up in the evaluation log first: a task whose record is there
(same key, genome, resolution and seed) was finished before a crash or a requeue and is not
evaluated again. Because every task is a pure function of its seed, the reused result is the
one a fresh evaluation would give, and a resumed run ends exactly like an uninterrupted one.
The progress lines come from ``evores.reporting.progress`` (a line per evaluation, and a bar
on a terminal from ``evores.reporting.console``), the summary and the plots from
``evores.reporting.summary``; the user's callbacks and MLflow hear of every evaluation and
stage through ``evores.reporting.callbacks``. The driver reads the search only through its
progress view. A stage change's provisional report is drawn beside the run from a snapshot of
plain data (``evores.reporting.background``), so that no worker waits for it.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, NamedTuple

from evores.core.atomic import write_json
from evores.core.results import FAILED, FAILURE_MACHINE, INTERRUPTED, LogRecord, Task, make_record
from evores.execution.evaluators import Evaluator
from evores.execution.stopping import RunStopped, StopRequest
from evores.reporting import console, importance, plots, progress, tensorboard, tracking
from evores.reporting import summary as report
from evores.reporting.background import BackgroundReports
from evores.reporting.callbacks import Callbacks
from evores.reporting.winner import keep_winner
from evores.store import resume, rundir
from evores.store.checkpoint import RunDirectory
from evores.store.state import checkpoint
from evores.strategies.generational import LadderSearch
from evores.strategies.ladder import FINAL, SEARCH, Progress
from evores.strategies.steady import SteadyStateSearch

log = logging.getLogger("evores")

# In asynchronous mode the checkpoint is written at most this often (and at stage changes).
CHECKPOINT_SECONDS = 1.0

Search = LadderSearch | SteadyStateSearch
Logged = dict[tuple, LogRecord]  # the evaluation log's latest record of each task key


def _reusable(task: Task, record: dict[str, Any] | None) -> bool:
    return (
        record is not None
        and record.get("status") != INTERRUPTED
        and all(
            record.get(field) == task[field] for field in ("kind", "hparams", "resolution", "seed")
        )
    )


class Snapshot(NamedTuple):
    """The plain data a report is made from, taken at one moment of the run."""

    records: list[dict[str, Any]]
    view: Progress
    winner: dict[str, Any] | None
    elapsed: float


class Driver:
    """Runs one search to the end, from scratch or from the run directory's checkpoint."""

    def __init__(
        self, config: dict[str, Any], run_dir: RunDirectory, cache: Any, evaluator: Evaluator,
        stop: StopRequest | None = None, callbacks: list | None = None,
    ):  # fmt: skip
        self.config = config
        self.run_dir = run_dir
        self.cache = cache  # the dataset cache: its class names and report go in the summary
        self.evaluator = evaluator
        # A stop request: a signal's, or the driver's own when the machine fails an evaluation.
        self.stop = stop if stop is not None else StopRequest()
        self.faulted: list[Task] = []  # evaluations the machine failed: re-run on --resume
        self.population = config["search"]["population"]
        self.last_checkpoint = time.monotonic()
        self.started = time.perf_counter()
        self.elapsed_before = 0.0
        self.config_record = resume.fingerprinted(config)  # stored in every checkpoint
        self.user_callbacks = list(callbacks or [])
        self.bar: console.RunBar | None = None
        self.reports = BackgroundReports()  # provisional reports, drawn beside the run

    def elapsed(self) -> float:
        """Seconds of run time, summed over every process that worked on this run."""
        return self.elapsed_before + time.perf_counter() - self.started

    def run(self) -> dict[str, Any]:
        """Run the search to its end; the summary, also written with the plots."""
        checkpoint, records = resume.read_back(self.run_dir, self.config)
        state = checkpoint["search"] if checkpoint else None
        asynchronous = self.config["search"]["asynchronous"]
        search = (SteadyStateSearch if asynchronous else LadderSearch)(self.config, state)
        logged = {tuple(record["key"]): record for record in records}
        self.cache = rundir.keep_data_report(self.run_dir, self.cache)
        finished = report.completed(records)
        self.costs = progress.RunCosts(self.config["schedule"]["elites"], finished)
        self.scalars = tensorboard.open_scalars(self.config, self.run_dir.path, finished)
        self.callbacks = Callbacks(
            [*self.user_callbacks, *tracking.open_tracking(self.config, self.run_dir.path)]
        )
        self.search = search
        self.stages_heard = len(search.progress().stages)
        if checkpoint:
            self.elapsed_before = checkpoint["elapsed"]
            log.info("%s", progress.resume_line(search.progress(), len(logged)))
        self._open_bar(search, finished)
        try:
            if asynchronous:
                self._run_steady(search, logged)
            else:
                self._run_generations(search, logged)
        finally:
            if self.bar is not None:
                self.bar.close()
        return self._report(search)

    def _open_bar(self, search: Search, finished: list[dict[str, Any]]) -> None:
        """The run's progress bar, where stderr is a terminal that shows the progress lines."""
        stream = console.bar_stream()
        if stream is not None:
            self.bar = console.RunBar(stream, search.progress(), self.costs, finished)

    def _report(self, search: Search) -> dict[str, Any]:
        """The final summary, plots and importance, written after any provisional report still
        being drawn (the final files must be the last written)."""
        self.reports.wait()
        snapshot = self._snapshot(search)
        summary = self._summary(snapshot, provisional=False)
        # The winner's files before summary.json, which says the run is finished.
        keep_winner(self.run_dir.path, self.config, self.cache,
                           search.state.get("final", []), search.winner())  # fmt: skip
        self.run_dir.write_summary(summary)
        self.run_dir.file(report.PROVISIONAL_SUMMARY).unlink(missing_ok=True)
        self._draw(snapshot, with_importance=True)
        if self.scalars:
            self.scalars.close()
        return summary

    def _snapshot(self, search: Search) -> Snapshot:
        """What a report is made of, as plain data no later step of the run changes: the log
        as it reads now (on this thread: reading it counts the run directory's records), the
        progress view, the winner and the run time."""
        view, winner = copy.deepcopy((search.progress(), search.winner()))
        return Snapshot(resume.read_log(self.run_dir), view, winner, self.elapsed())

    def _summary(self, snapshot: Snapshot, provisional: bool) -> dict[str, Any]:
        return report.summary(self.config, snapshot.view, snapshot.winner, snapshot.records,
                              self.cache, snapshot.elapsed, provisional)  # fmt: skip

    def _draw(self, snapshot: Snapshot, with_importance: bool) -> None:
        """The plots, and the genes' importance (seconds for a large stage) where asked."""
        plots.plot_run(self.run_dir.path, snapshot.records, snapshot.view.transitions)
        if with_importance:
            importance.write_importance(self.run_dir.path, self.config, snapshot.records)

    def _provisional(self, snapshot: Snapshot, with_importance: bool) -> None:
        """A provisional summary.json (summary.json itself means "finished": the batch scripts
        requeue until it exists) and the plots."""
        write_json(self.run_dir.file(report.PROVISIONAL_SUMMARY), self._summary(snapshot, True))
        self._draw(snapshot, with_importance)

    def _report_so_far(self, search: Search) -> None:
        """The provisional report at a stage change, drawn beside the run from a snapshot; the
        importance waits for the end or a stop."""
        snapshot = self._snapshot(search)
        if self.scalars:
            self.scalars.flush()
        self.reports.submit(lambda: self._provisional(snapshot, with_importance=False))

    def _report_at_stop(self, search: Search) -> None:
        """The provisional report of a stopped run, importance included, after the one being
        drawn; a failure to write it never hides the stop."""
        self.reports.wait()
        try:
            self._provisional(self._snapshot(search), with_importance=True)
            if self.scalars:
                self.scalars.flush()
        except Exception as error:  # noqa: BLE001 - reporting is not the run
            log.warning("could not write the provisional summary and plots: %s", error)

    def _checkpoint(self, search: Search) -> None:
        self.run_dir.save_checkpoint(
            checkpoint(search.state, self.elapsed(), self.run_dir.n_logged, self.config_record)
        )
        self.last_checkpoint = time.monotonic()

    def _log(self, task: Task, result: dict[str, Any], logged: Logged) -> None:
        if result.get("failure") == FAILURE_MACHINE:
            # Not the genome's failure: stop with a checkpoint, so that a resume (after the
            # disk is freed, say) runs this evaluation again.
            self.faulted.append(task)
            self.stop.request(result["reason"], 0.0)
            return
        record = make_record(task, result, self.elapsed())
        self.run_dir.append_record(record)
        logged[tuple(task["key"])] = record
        self.costs.add(record)
        level = logging.WARNING if record["status"] == FAILED else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "%s", progress.evaluation_line(record))
        if self.bar is not None:
            self.bar.add(record, self.search.progress(), self.elapsed())
        if self.scalars:
            self.scalars.add(record)
        self.callbacks.evaluation(record)

    # -- synchronous mode --------------------------------------------------------------------

    def _run_generations(self, search: LadderSearch, logged: Logged) -> None:
        """A generation at a time, checkpointed after each."""
        while not search.done:
            if self.stop:
                self._stopped(search, [])
            tasks = search.ask()
            results = self._evaluate(tasks, logged)
            if self.faulted or any(result is None for result in results):
                self._stopped(search, [*self.evaluator.abandoned, *self.faulted])
            view = search.progress()
            line = progress.generation_line(view, tasks, results, self.elapsed(), self.costs)
            log.info("%s", line)
            search.tell(tasks, results, self.elapsed())
            self._log_transition(search, len(view.transitions))
            self._checkpoint(search)
            if (search.stage, search.phase) != (view.stage, view.phase):
                self._stage_closed(search)

    def _evaluate(self, tasks: list[Task], logged: Logged) -> list[dict | None]:
        results: list[dict | None] = [logged.get(tuple(t["key"])) for t in tasks]
        todo = [i for i, task in enumerate(tasks) if not _reusable(task, results[i])]
        if len(todo) < len(tasks):
            log.info("reusing %d evaluations finished before the restart", len(tasks) - len(todo))
        fresh = self.evaluator.map(
            [tasks[i] for i in todo],
            on_result=lambda task, result: self._log(task, result, logged),
            stop=self.stop,
        )
        for i, result in zip(todo, fresh, strict=True):
            results[i] = result
        return results

    # -- asynchronous mode -------------------------------------------------------------------

    def _run_steady(self, search: SteadyStateSearch, logged: Logged) -> None:
        """One task per free worker, one result at a time."""
        told = {"count": 0}

        def next_task() -> Task | None:
            while True:
                task = search.ask_one()
                if task is None or not _reusable(task, logged.get(tuple(task["key"]))):
                    return task
                on_told(task, logged[tuple(task["key"])])  # finished before the restart

        def on_result(task: Task, result: dict) -> None:
            self._log(task, result, logged)
            if result.get("failure") != FAILURE_MACHINE:
                on_told(task, result)

        def on_told(task: Task, result: dict) -> None:
            phase, stage = search.phase, search.stage
            n_transitions = len(search.state["transitions"])
            search.tell_one(task, result, self.elapsed())
            self._log_transition(search, n_transitions)
            told["count"] += 1
            changed = search.phase != phase or search.stage != stage
            # Every result is in the log at once; the checkpoint, which a resumed run breeds
            # from, at most every CHECKPOINT_SECONDS and at every stage change. A crash in
            # between costs re-breeding a few tasks, and with the serial evaluator not even
            # that: it breeds the same ones again and finds their results in the log.
            if changed or time.monotonic() - self.last_checkpoint >= CHECKPOINT_SECONDS:
                self._checkpoint(search)
            if changed:
                self._stage_closed(search)
            if phase == SEARCH and (changed or told["count"] % self.population == 0):
                self._log_steady_progress(search, stage_closed=changed)
            if phase == FINAL and search.done:
                log.info("%s", progress.final_line(search.progress()))

        abandoned = self.evaluator.steady(
            next_task, on_result, finished=lambda: search.done, stop=self.stop
        )
        if self.stop:
            self._stopped(search, [*abandoned, *self.faulted])
        self._checkpoint(search)

    def _stage_closed(self, search: Search) -> None:
        """The callbacks hear of the stages closed since they last heard; the provisional
        report, unless the run is over."""
        stages = search.progress().stages
        for index in range(self.stages_heard, len(stages)):
            self.callbacks.stage({"stage": index, **stages[index]})
        self.stages_heard = len(stages)
        if not search.done:
            self._report_so_far(search)

    def _log_transition(self, search: Search, before: int) -> None:
        """The fidelity line of a stage change whose re-evaluations just came in."""
        transitions = search.progress().transitions
        if len(transitions) > before:
            log.info("%s", progress.transition_line(transitions[-1]))

    def _log_steady_progress(self, search: SteadyStateSearch, stage_closed: bool) -> None:
        """A line per population's worth of results and per stage."""
        view = search.progress()
        if stage_closed:
            log.info("%s", progress.stage_closed_line(view))
            return
        line = progress.progress_line(
            view, list(view.stage_scores), view.n_evaluations, self.elapsed(), self.costs
        )
        log.info("%s", line)

    # -- stopping ----------------------------------------------------------------------------

    def _stopped(self, search: Search, abandoned: list[Task]) -> None:
        """Record the evaluations a stop left unfinished, checkpoint, and end the run here."""
        reason = self.stop.reason
        for task in abandoned:
            self.run_dir.append_record(
                make_record(task, {"status": INTERRUPTED, "reason": reason}, self.elapsed())
            )
        self._checkpoint(search)
        self._report_at_stop(search)
        view = search.progress()
        log.warning(
            "%s: stopped in stage %d after %d evaluations (%d abandoned, to be re-run); "
            "checkpoint written; continue with --resume",
            reason, view.stage + 1, view.n_evaluations, len(abandoned),
        )  # fmt: skip
        raise RunStopped(reason, len(abandoned))
