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
from evores.stopping import RunStopped, StopRequest

log = logging.getLogger("evores")

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
        self.started = time.perf_counter()
        self.elapsed_before = 0.0

    def elapsed(self) -> float:
        """Seconds of run time, summed over every process that worked on this run."""
        return self.elapsed_before + time.perf_counter() - self.started

    def run(self) -> dict[str, Any]:
        checkpoint = self.run_dir.load_checkpoint()
        search = LadderSearch(self.config, checkpoint["search"] if checkpoint else None)
        logged = {tuple(record["key"]): record for record in self.run_dir.read_records()}
        if checkpoint:
            self.elapsed_before = checkpoint["elapsed"]
            self._log_resume(search, logged)
        while not search.done:
            if self.stop:
                self._stopped(search, [])
            tasks = search.ask()
            results = self._evaluate(tasks, logged)
            if any(result is None for result in results):
                self._stopped(search, self.evaluator.abandoned)
            self._log_generation(search, tasks, results)
            search.tell(tasks, results, self.elapsed())
            self.run_dir.save_checkpoint({"search": search.state, "elapsed": self.elapsed()})
        summary = self.summary(search)
        self.run_dir.write_summary(summary)
        self._plot(search)
        return summary

    def _stopped(self, search: LadderSearch, abandoned: list[dict]) -> None:
        """Record the evaluations a stop left unfinished, checkpoint, and end the run here."""
        for task in abandoned:
            entry = self._record(task, {"status": INTERRUPTED, "reason": self.stop.reason})
            self.run_dir.append_record(entry)
        self.run_dir.save_checkpoint({"search": search.state, "elapsed": self.elapsed()})
        reason = self.stop.reason if self.stop else "stopped"
        log.warning(
            "%s: stopped in stage %d, generation %d (%d evaluation(s) abandoned, to be re-run); "
            "checkpoint written; continue with --resume",
            reason, search.stage + 1, search.state["generation"], len(abandoned),
        )  # fmt: skip
        raise RunStopped(reason, len(abandoned))

    def _log_resume(self, search: LadderSearch, logged: dict) -> None:
        state = search.state
        log.info(
            "resuming: stage %d, generation %d, %d evaluations done, %d records in the log",
            state["stage"] + 1, state["generation"], state["n_evaluations"], len(logged),
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
        best = max(scores) if scores else None
        median = sorted(scores)[len(scores) // 2] if scores else None
        line = report.format_progress(
            search.stage + 1, len(search.schedule["resolutions"]), search.resolution,
            done, search.total_evaluations, best, median, self.elapsed(),
            self._remaining_seconds(search, len(results)),
        )  # fmt: skip
        log.info("%s%s", line, f"  ({failed} failed)" if failed else "")

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
