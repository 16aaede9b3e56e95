"""The driver loop of a run: ask -> evaluate -> log -> tell -> checkpoint, then the summary.

A generation's tasks are looked up in the evaluation log first: a task whose record is there
(same key, genome, resolution and seed) was finished before a crash or a requeue and is not
evaluated again. Because every task is a pure function of its seed, the reused result is the
one a fresh evaluation would give, and a resumed run ends exactly like an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from evores import __version__, report
from evores.checkpoint import RunDirectory
from evores.search import LadderSearch
from evores.steady import SteadyStateSearch
from evores.stopping import RunStopped, StopRequest

log = logging.getLogger("evores")

# In asynchronous mode the checkpoint is written at most this often (and at stage changes).
CHECKPOINT_SECONDS = 1.0

# The status logged for an evaluation a stop left unfinished; --resume runs it again.
INTERRUPTED = "interrupted"

PLOTS = {
    "evaluations": "progress_evaluations.png",
    "time": "progress_time.png",
    "elites": "elites_low_vs_high.png",
}


def _reusable(task: dict[str, Any], record: dict[str, Any] | None) -> bool:
    return (
        record is not None
        and record.get("status") != INTERRUPTED
        and all(
            record.get(field) == task[field] for field in ("kind", "hparams", "resolution", "seed")
        )
    )


class Driver:
    """Runs one search to the end, from scratch or from the run directory's checkpoint."""

    def __init__(
        self, config: dict[str, Any], run_dir: RunDirectory, cache, evaluator,
        stop: StopRequest | None = None,
    ):  # fmt: skip
        self.config = config
        self.run_dir = run_dir
        self.cache = cache
        self.evaluator = evaluator
        self.stop = stop
        self.population = config["search"]["population"]
        self.last_checkpoint = time.monotonic()
        self.started = time.perf_counter()
        self.elapsed_before = 0.0

    def elapsed(self) -> float:
        """Seconds of run time, summed over every process that worked on this run."""
        return self.elapsed_before + time.perf_counter() - self.started

    def run(self) -> dict[str, Any]:
        checkpoint = self.run_dir.load_checkpoint()
        state = checkpoint["search"] if checkpoint else None
        asynchronous = self.config["search"]["asynchronous"]
        search_class = SteadyStateSearch if asynchronous else LadderSearch
        search = search_class(self.config, state)
        logged = {tuple(record["key"]): record for record in self.run_dir.read_records()}
        if checkpoint:
            self.elapsed_before = checkpoint["elapsed"]
            self._log_resume(search, logged)
        if asynchronous:
            self._run_steady(search, logged)
        else:
            self._run_generations(search, logged)
        summary = self.summary(search)
        self.run_dir.write_summary(summary)
        self._plot(search)
        return summary

    def _checkpoint(self, search: LadderSearch) -> None:
        self.run_dir.save_checkpoint({"search": search.state, "elapsed": self.elapsed()})
        self.last_checkpoint = time.monotonic()

    def _run_steady(self, search: SteadyStateSearch, logged: dict) -> None:
        """Asynchronous mode: one task per free worker, one result at a time."""
        told = {"count": 0, "failed": 0}

        def next_task() -> dict | None:
            while True:
                task = search.ask_one()
                if task is None or not _reusable(task, logged.get(tuple(task["key"]))):
                    return task
                on_told(task, logged[tuple(task["key"])])  # finished before the restart

        def on_result(task: dict, result: dict) -> None:
            entry = self._record(task, result)
            self.run_dir.append_record(entry)
            logged[tuple(task["key"])] = entry
            on_told(task, result)

        def on_told(task: dict, result: dict) -> None:
            phase, stage = search.state["phase"], search.stage
            search.tell_one(task, result, self.elapsed())
            told["count"] += 1
            told["failed"] += result["status"] != "ok"
            changed = search.state["phase"] != phase or search.stage != stage
            # Every result is in the log at once; the checkpoint, which a resumed run breeds
            # from, at most every CHECKPOINT_SECONDS and at every stage change. A crash in
            # between costs re-breeding a few tasks, and with the serial evaluator not even
            # that: it breeds the same ones again and finds their results in the log.
            if changed or time.monotonic() - self.last_checkpoint >= CHECKPOINT_SECONDS:
                self._checkpoint(search)
            if phase == "search" and (changed or told["count"] % self.population == 0):
                self._log_progress(search, told["failed"], stage_closed=changed)
                told["failed"] = 0
            if phase == "final" and search.done:
                self._log_final(search.state["final"])

        abandoned = self.evaluator.steady(
            next_task, on_result, finished=lambda: search.done, stop=self.stop
        )
        if self.stop:
            self._stopped(search, abandoned)
        self._checkpoint(search)

    def _run_generations(self, search: LadderSearch, logged: dict) -> None:
        """Synchronous mode: a generation at a time, checkpointed after each."""
        while not search.done:
            if self.stop:
                self._stopped(search, [])
            tasks = search.ask()
            results = self._evaluate(tasks, logged)
            if any(result is None for result in results):
                self._stopped(search, self.evaluator.abandoned)
            self._log_generation(search, tasks, results)
            search.tell(tasks, results, self.elapsed())
            self._checkpoint(search)

    def _stopped(self, search: LadderSearch, abandoned: list[dict]) -> None:
        """Record the evaluations a stop left unfinished, checkpoint, and end the run here."""
        reason = self.stop.reason
        for task in abandoned:
            entry = self._record(task, {"status": INTERRUPTED, "reason": reason})
            self.run_dir.append_record(entry)
        self._checkpoint(search)
        log.warning(
            "%s: stopped in stage %d after %d evaluations (%d abandoned, to be re-run); "
            "checkpoint written; continue with --resume",
            reason, search.stage + 1, search.state["n_evaluations"], len(abandoned),
        )  # fmt: skip
        raise RunStopped(reason, len(abandoned))

    def _log_resume(self, search: LadderSearch, logged: dict) -> None:
        state = search.state
        log.info(
            "resuming: stage %d, %d evaluations done, %d records in the log",
            state["stage"] + 1, state["n_evaluations"], len(logged),
        )  # fmt: skip

    def _evaluate(self, tasks: list[dict], logged: dict) -> list[dict | None]:
        results: list[dict | None] = [logged.get(tuple(t["key"])) for t in tasks]
        todo = [i for i, task in enumerate(tasks) if not _reusable(task, results[i])]
        if len(todo) < len(tasks):
            log.info("reusing %d evaluations finished before the restart", len(tasks) - len(todo))

        def record(task: dict, result: dict) -> None:
            entry = self._record(task, result)
            self.run_dir.append_record(entry)
            logged[tuple(task["key"])] = entry

        fresh = self.evaluator.map([tasks[i] for i in todo], on_result=record, stop=self.stop)
        for i, result in zip(todo, fresh, strict=True):
            results[i] = result
        return results

    def _record(self, task: dict, result: dict) -> dict[str, Any]:
        stage, generation, index = task["key"]
        entry = {
            "key": task["key"],
            "kind": task["kind"],
            "stage": stage,
            "generation": generation,
            "index": index,
            "hparams": task["hparams"],
            "resolution": task["resolution"],
            "seed": task["seed"],
            "elapsed": round(self.elapsed(), 3),
        }
        if "elite_of" in task:
            entry["elite_of"] = task["elite_of"]
        entry.update(result)
        return entry

    def _log_generation(self, search: LadderSearch, tasks: list[dict], results: list[dict]) -> None:
        if search.state["phase"] != "search":
            tests = [r.get("test_accuracy") for r in results]
            log.info("final retraining at %d px: test accuracies %s", tasks[0]["resolution"], tests)
            return
        scores = search.state["stage_scores"] + [
            r["val_accuracy"] for r in results if r["status"] == "ok"
        ]
        failed = sum(r["status"] != "ok" for r in results)
        done = search.state["n_evaluations"] + len(results)
        self._progress_line(search, scores, done, len(results), failed)

    def _log_progress(self, search: LadderSearch, failed: int, stage_closed: bool) -> None:
        """Asynchronous mode: a line per population's worth of results and per stage."""
        if stage_closed:
            stage = search.state["stages"][-1]
            log.info(
                "stage %d/%d at %d px closed: best %.3f after %d evaluations",
                len(search.state["stages"]), len(search.schedule["resolutions"]),
                stage["resolution"], stage["best_val_accuracy"] or 0.0, stage["n_evaluations"],
            )  # fmt: skip
            return
        state = search.state
        self._progress_line(search, state["stage_scores"], state["n_evaluations"], 0, failed)

    def _progress_line(
        self, search: LadderSearch, scores: list[float], done: int, just_done: int, failed: int
    ) -> None:
        best = max(scores) if scores else None
        median = sorted(scores)[len(scores) // 2] if scores else None
        line = report.format_progress(
            search.stage + 1, len(search.schedule["resolutions"]), search.resolution,
            done, search.total_evaluations, best, median, self.elapsed(),
            self._remaining_seconds(search, just_done),
        )  # fmt: skip
        log.info("%s%s", line, f"  ({failed} failed)" if failed else "")

    @staticmethod
    def _log_final(final: list[dict]) -> None:
        tests = [f.get("test_accuracy") for f in final]
        log.info("final retraining: test accuracies %s", tests)

    def _remaining_seconds(self, search: LadderSearch, just_done: int) -> float | None:
        """Estimate: this stage's seconds per evaluation, scaled by pixel count for later stages."""
        state = search.state
        used = state["stage_used"] + just_done
        spent = self.elapsed() - state["stage_started"]
        if used == 0 or spent <= 0:
            return None
        per_evaluation = spent / used
        stage = state["stage"]
        resolutions, budgets = search.schedule["resolutions"], search.schedule["evaluations"]
        seconds = (budgets[stage] - used) * per_evaluation
        for later in range(stage + 1, len(resolutions)):
            seconds += (
                budgets[later] * per_evaluation * (resolutions[later] / resolutions[stage]) ** 2
            )
        return seconds

    def summary(self, search: LadderSearch) -> dict[str, Any]:
        winner = search.winner()
        failures = Counter(
            r.get("failure") or "unknown" for r in self._completed() if r["status"] == "failed"
        )
        return {
            "best_hparams": winner["hparams"] if winner else None,
            "test_accuracy": winner["test_accuracy"] if winner else None,
            "test_resolution": self.config["schedule"]["resolutions"][-1],
            "val_accuracy": winner["val_accuracy"] if winner else None,
            "wall_seconds": round(self.elapsed(), 3),
            "n_evaluations": search.state["n_evaluations"],
            "stages": search.state["stages"],
            "transitions": search.state["transitions"],
            "final_candidates": search.state["final"],
            "failures": dict(sorted(failures.items())),
            "seed": self.config["seed"],
            "strategy": self.config["search"]["strategy"],
            "data": {
                "path": self.config["data"]["path"],
                "filter": self.config["data"]["filter"],
                "classes": list(self.cache.class_names),
                "report": self.cache.report,
            },
            "plots": dict(PLOTS),
            "evores_version": __version__,
        }

    def _completed(self) -> list[dict[str, Any]]:
        """One record per finished evaluation, in log order (a re-run replaces an interrupted
        record; a record logged twice around a crash counts once)."""
        latest = {tuple(r["key"]): r for r in self.run_dir.read_records()}
        return [r for r in latest.values() if r["status"] != INTERRUPTED]

    def _plot(self, search: LadderSearch) -> None:
        records = [r for r in self._completed() if r["kind"] == "search"]
        report.plot_progress(
            records, self.run_dir.file(PLOTS["evaluations"]), self.run_dir.file(PLOTS["time"])
        )
        report.plot_elites(search.state["transitions"], self.run_dir.file(PLOTS["elites"]))
