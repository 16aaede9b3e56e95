"""Tests for evores.engine.driver, in process and in seconds: the driver loop over an injected
serial
evaluator whose results are derived from each task's seed (no training, no dataset).

A run stopped or crashed part way and resumed must end exactly like an uninterrupted one, in
the synchronous and the asynchronous mode, with one log record per evaluation.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading

import pytest

from evores import config as configuration
from evores.core.results import INTERRUPTED, OK, FitnessResult
from evores.core.stats import median
from evores.engine import driver as driver_module
from evores.engine.driver import Driver
from evores.engine.session import load_config
from evores.execution.evaluators import SerialEvaluator
from evores.execution.stopping import RunInterrupted, RunStopped, StopRequest
from evores.store.checkpoint import RunDirectory
from evores.store.names import PLOTS, PROVISIONAL_SUMMARY

MODES = ["sync", "async"]
N_EVALUATIONS = 12 + 8  # schedule.evaluations below
N_FINAL = 2  # schedule.elites below
SUMMARY_KEYS = {
    "adaptive", "baseline", "warnings",
    "best_hparams", "test_accuracy", "test_resolution", "val_accuracy", "wall_seconds",
    "n_evaluations", "stages", "transitions", "final_candidates", "failures", "seed",
    "strategy", "data", "plots", "evores_version", "outcome", "provisional",
}  # fmt: skip
CLOCK_FIELDS = {"elapsed", "logged_at", "wall_seconds", "stage_started"}  # clocks: never equal


class StandInCache:
    """What the driver reads of a dataset cache: its class names and its build report."""

    class_names = ("ants", "bees")
    report = {"images": 0}


class Crash(BaseException):
    """A process dying mid-run (not an Exception: the evaluator must not catch it)."""


def make_config(mode: str, **sets) -> dict:
    overrides = [
        "schedule.resolutions=[8, 16]", "schedule.evaluations=[12, 8]", "search.population=4",
        "search.elitism=1", f"schedule.elites={N_FINAL}",
        f"search.asynchronous={'true' if mode == 'async' else 'false'}",
    ]  # fmt: skip
    overrides += [f"{k.replace('__', '.')}={v}" for k, v in sets.items()]
    return load_config(overrides=overrides)


def toy_work(task: dict) -> dict:
    """A full result derived from the task alone: seeded accuracy, one failure in seven."""
    score = (task["seed"] % 10_007) / 10_007 * (0.5 + task["resolution"] / 32)
    if task["kind"] == "final":
        return FitnessResult(0.0, OK, None, None, 2, 2, 0.0, 0.0, 10, 0, 0.0,
                             test_accuracy=score).to_dict()  # fmt: skip
    if task["seed"] % 7 == 0:
        return FitnessResult.failed("toy failure", "nan").to_dict()
    return FitnessResult(score, OK, None, None, 3, 2, 0.0, 0.0, 10, 0, 0.0).to_dict()


def stop_after(n: int, stop: StopRequest):
    """toy_work that asks the run to stop once it has returned ``n`` results."""
    calls = []

    def work(task: dict) -> dict:
        calls.append(task["key"])
        if len(calls) == n:
            stop.request("SIGUSR1", 0.0)
        return toy_work(task)

    return work


def crash_after(n: int):
    """toy_work for ``n`` tasks; the next one takes the process down."""
    calls = []

    def work(task: dict) -> dict:
        calls.append(task["key"])
        if len(calls) > n:
            raise Crash(f"died in task {task['key']}")
        return toy_work(task)

    return work


def make_driver(config: dict, path, work=toy_work, stop: StopRequest | None = None) -> Driver:
    run_dir = RunDirectory(path)
    if not run_dir.has_run():
        run_dir.create(configuration.to_toml(config))
    return Driver(config, run_dir, StandInCache(), SerialEvaluator(work), stop)


def drive(config: dict, path, work=toy_work, stop: StopRequest | None = None) -> dict:
    return make_driver(config, path, work, stop).run()


def timeless(value):
    """``value`` without the run's clock readings (wall times differ between runs)."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if k not in CLOCK_FIELDS}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def outcome(path) -> dict:
    """Everything a run leaves that must be reproducible."""
    run_dir = RunDirectory(path)
    return {
        "records": timeless(run_dir.read_records()),
        "search": timeless(run_dir.load_checkpoint()["search"]),
        "summary": timeless(json.loads(run_dir.file("summary.json").read_text())),
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """One uninterrupted run per mode: summary as returned, and its outcome on disk."""
    runs = {}
    for mode in MODES:
        path = tmp_path_factory.mktemp(mode) / "run"
        summary = drive(make_config(mode), path)
        runs[mode] = {"summary": summary, "outcome": outcome(path), "path": path}
    return runs


@pytest.mark.parametrize("mode", MODES)
def test_the_log_has_one_record_per_evaluation_and_the_summary_its_keys(uninterrupted, mode):
    run = uninterrupted[mode]
    records = run["outcome"]["records"]
    assert len(records) == N_EVALUATIONS + N_FINAL
    assert len({tuple(r["key"]) for r in records}) == len(records)
    assert [r["kind"] for r in records].count("final") == N_FINAL
    summary = run["summary"]
    assert set(summary) == SUMMARY_KEYS
    assert summary["n_evaluations"] == N_EVALUATIONS
    assert [s["n_evaluations"] for s in summary["stages"]] == [12, 8]
    assert len(summary["transitions"]) == 1 and len(summary["final_candidates"]) == N_FINAL
    assert summary["failures"] == {"nan": sum(r["status"] != OK for r in records)} != {}
    assert summary["data"]["classes"] == ["ants", "bees"] and summary["test_resolution"] == 16
    finals = [r for r in records if r["kind"] == "final"]
    assert summary["test_accuracy"] in [r["test_accuracy"] for r in finals]
    assert json.loads(json.dumps(summary)) == json.loads((run["path"] / "summary.json").read_text())
    for name in PLOTS.values():
        assert (run["path"] / name).read_bytes().startswith(b"\x89PNG")
    assert not list(run["path"].glob(".*.tmp"))  # the atomic writes left nothing behind


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("results_before_stop", [1, 5, 12, 13, 21])
def test_a_stopped_run_resumes_to_the_uninterrupted_result(
    uninterrupted, tmp_path, mode, results_before_stop
):
    config = make_config(mode)
    stop = StopRequest()
    with pytest.raises(RunStopped):
        drive(config, tmp_path, stop_after(results_before_stop, stop), stop)
    checkpoint = RunDirectory(tmp_path).load_checkpoint()
    assert checkpoint["search"]["phase"] != "done"
    assert len(RunDirectory(tmp_path).read_records()) == results_before_stop
    drive(config, tmp_path)
    assert outcome(tmp_path) == uninterrupted[mode]["outcome"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("results_before_crash", [3, 12, 17])
def test_a_crashed_run_resumes_from_checkpoint_and_log_to_the_uninterrupted_result(
    uninterrupted, tmp_path, mode, results_before_crash
):
    config = make_config(mode)
    with pytest.raises(Crash):
        drive(config, tmp_path, crash_after(results_before_crash))
    assert len(RunDirectory(tmp_path).read_records()) == results_before_crash
    drive(config, tmp_path)  # results found in the log are reused, not evaluated again
    assert outcome(tmp_path) == uninterrupted[mode]["outcome"]


@pytest.mark.parametrize("mode", MODES)
def test_an_interrupted_evaluation_is_logged_as_such_and_run_again(uninterrupted, tmp_path, mode):
    config = make_config(mode)
    stop = StopRequest()
    calls = []

    def work(task: dict) -> dict:
        calls.append(task["key"])
        if len(calls) == 6:  # a second stop signal arrives during the sixth evaluation
            stop.request("SIGTERM", 0.0)
            raise RunInterrupted("SIGTERM (second stop signal)")
        return toy_work(task)

    with pytest.raises(RunStopped):
        drive(config, tmp_path, work, stop)
    records = RunDirectory(tmp_path).read_records()
    assert [r["status"] for r in records][-1] == INTERRUPTED and len(records) == 6
    assert records[-1]["key"] == calls[-1] and records[-1]["reason"] == "SIGTERM"
    drive(config, tmp_path)
    resumed = outcome(tmp_path)
    expected = uninterrupted[mode]["outcome"]
    # The interrupted record stays in the log, followed later by the evaluation's result.
    assert resumed["records"][:5] == expected["records"][:5]
    assert [r for r in resumed["records"] if r["status"] != INTERRUPTED] == expected["records"]
    assert resumed["search"] == expected["search"]
    assert resumed["summary"] == expected["summary"]


@pytest.mark.parametrize("mode", MODES)
def test_a_run_in_which_every_evaluation_fails_ends_without_a_winner(tmp_path, mode):
    summary = drive(
        make_config(mode), tmp_path, lambda task: FitnessResult.failed("toy", "oom").to_dict()
    )
    assert summary["best_hparams"] is None and summary["test_accuracy"] is None
    # The run ends with its first stage, which found nothing to carry up (evores.reporting.outcome).
    assert summary["final_candidates"] == [] and summary["failures"] == {"oom": 12}
    assert summary["outcome"]["status"] == "failed" and summary["outcome"]["stage"] == 1


def test_progress_lines_show_the_true_median_of_the_stage(tmp_path, caplog):
    config = make_config("sync", search__population=6)

    def never_failing(task: dict) -> dict:
        if task["kind"] == "final":
            return toy_work(task)
        score = (task["seed"] % 10_007) / 10_007
        return FitnessResult(score, OK, None, None, 3, 2, 0.0, 0.0, 10, 0, 0.0).to_dict()

    with caplog.at_level(logging.INFO, logger="evores"):
        drive(config, tmp_path, never_failing)
    records = RunDirectory(tmp_path).read_records()
    first_generation = sorted(r["val_accuracy"] for r in records[:6])
    assert all(r["status"] == OK for r in records)
    line = next(m for m in caplog.messages if m.startswith("stage 1/2"))
    assert f"evals 6/{N_EVALUATIONS}" in line
    assert f"best {max(first_generation):.3f}" in line
    # Six scores: the mean of the middle two (report.median, as in the plots).
    middle = (first_generation[2] + first_generation[3]) / 2
    assert median(first_generation) == pytest.approx(middle)
    assert f"median {middle:.3f}" in line


@pytest.mark.parametrize("mode", MODES)
def test_a_provisional_summary_and_plots_are_written_at_a_stage_change(tmp_path, mode):
    seen = {}

    def work(task: dict) -> dict:
        if task["key"][0] == 1 and not seen:  # the first task of the second stage
            driver.reports.wait()  # the report is drawn beside the run
            seen.update(json.loads((tmp_path / PROVISIONAL_SUMMARY).read_text()))
            seen["plots"] = [(tmp_path / name).is_file() for name in PLOTS.values()]
            seen["finished"] = (tmp_path / "summary.json").exists()
        return toy_work(task)

    driver = make_driver(make_config(mode), tmp_path, work)
    final = driver.run()
    assert seen["provisional"] is True and seen["best_hparams"] is None
    assert [s["resolution"] for s in seen["stages"]] == [8] and seen["plots"] == [True] * 3
    # summary.json means "finished" to the batch scripts: it must not appear before the end.
    assert seen["finished"] is False
    assert final["provisional"] is False and final["best_hparams"] is not None
    assert not (tmp_path / PROVISIONAL_SUMMARY).exists()


def slow_plots(monkeypatch, until: threading.Event, timeout: float = 10.0) -> list[str]:
    """Make drawing the plots wait for ``until`` (at most ``timeout`` s); what each drawing
    saw ("released" or "timed out") and, in order, which thread began and ended one."""
    drawn = []
    plot_run = driver_module.plots.plot_run

    def plot_slowly(*args, **kwargs):
        thread = threading.current_thread().name
        drawn.append(f"{thread} began")
        drawn.append("released" if until.wait(timeout) else "timed out")
        plot_run(*args, **kwargs)
        drawn.append(f"{thread} ended")

    monkeypatch.setattr(driver_module.plots, "plot_run", plot_slowly)
    return drawn


@pytest.mark.parametrize("mode", MODES)
def test_the_workers_go_on_while_the_stage_change_report_is_drawn(
    uninterrupted, tmp_path, mode, monkeypatch
):
    """The provisional report of a stage change is drawn beside the run: the next stage's
    first evaluation starts while it is still being drawn (it releases the drawing), and the
    run ends as an uninterrupted one, its final files written after the provisional ones."""
    next_stage_started = threading.Event()
    drawn = slow_plots(monkeypatch, next_stage_started)

    def work(task: dict) -> dict:
        if task["key"][0] == 1:
            next_stage_started.set()
        return toy_work(task)

    drive(make_config(mode), tmp_path, work)
    # On the driver's own thread the drawing would have waited in vain.
    assert drawn[:3] == ["evores-report began", "released", "evores-report ended"]
    assert outcome(tmp_path) == uninterrupted[mode]["outcome"]
    assert not (tmp_path / PROVISIONAL_SUMMARY).exists()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("mode", MODES)
def test_a_stop_waits_for_the_report_being_drawn_then_writes_its_own(tmp_path, mode, monkeypatch):
    stop = StopRequest()
    released = threading.Event()
    drawn = slow_plots(monkeypatch, released)

    def work(task: dict) -> dict:
        if task["key"][0] == 1:  # the stage change's report is being drawn
            stop.request("SIGUSR1", 0.0)
            threading.Timer(0.2, released.set).start()
        return toy_work(task)

    with pytest.raises(RunStopped):
        drive(make_config(mode), tmp_path, work, stop)
    # The stage change's report, drawn to its end, then the stop's (the last to write).
    assert [line for line in drawn if line != "released"] == [
        "evores-report began", "evores-report ended", "MainThread began", "MainThread ended"
    ]  # fmt: skip
    assert json.loads((tmp_path / PROVISIONAL_SUMMARY).read_text())["provisional"] is True
    assert (tmp_path / "importance.json").is_file() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("mode", MODES)
def test_a_stopped_run_leaves_a_provisional_summary_and_plots(tmp_path, mode):
    stop = StopRequest()
    with pytest.raises(RunStopped):
        drive(make_config(mode), tmp_path, stop_after(5, stop), stop)
    assert not (tmp_path / "summary.json").exists()
    written = json.loads((tmp_path / PROVISIONAL_SUMMARY).read_text())
    assert written["provisional"] is True and written["test_accuracy"] is None
    assert written["n_evaluations"] <= 5
    assert all((tmp_path / name).read_bytes().startswith(b"\x89PNG") for name in PLOTS.values())


def test_tensorboard_scalars_follow_the_run(tmp_path):
    pytest.importorskip("tensorboard", reason="report.tensorboard needs the tensorboard extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    drive(make_config("sync", report__tensorboard="true"), tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"search/best_in_stage", "search/median_in_stage", "evaluation/wall_seconds",
            "evaluation/failures", "final/test_accuracy"} <= scalars  # fmt: skip
    wall = events.Scalars("evaluation/wall_seconds")
    assert [event.step for event in wall] == list(range(1, N_EVALUATIONS + 1))
    records = RunDirectory(tmp_path).read_records()
    failures = sum(r["status"] != OK for r in records if r["kind"] == "search")
    assert events.Scalars("evaluation/failures")[-1].value == failures > 0
    best = [e.value for e in events.Scalars("search/best_in_stage")]
    stage_one = [r["val_accuracy"] for r in records[:12] if r["status"] == OK]
    assert max(best[:12]) == pytest.approx(max(stage_one))
    assert len(events.Scalars("final/test_accuracy")) == N_FINAL


def machine_fails_once(kind: str, number: int):
    """toy_work, except that the machine fails the first task of ``kind`` (a full disk)."""
    failed = []

    def work(task: dict) -> dict:
        if task["kind"] == kind and not failed:
            failed.append(task["key"])
            raise OSError(number, os.strerror(number), "final-0.safetensors")
        return toy_work(task)

    return work


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("kind", "number"), [("search", errno.EIO), ("final", errno.ENOSPC)])
def test_a_fault_of_the_machine_stops_the_run_and_a_resume_runs_the_evaluation_again(
    uninterrupted, tmp_path, mode, kind, number
):
    """A full disk while the final weights were saved failed the winner, wrote summary.json
    and lost the search's result on every resume (issue 23, class 1)."""
    config = make_config(mode)
    with pytest.raises(RunStopped, match=f"the machine failed .*{os.strerror(number)}"):
        drive(config, tmp_path, machine_fails_once(kind, number))
    assert not (tmp_path / "summary.json").exists()
    records = RunDirectory(tmp_path).read_records()
    assert records[-1]["status"] == INTERRUPTED and "machine failed" in records[-1]["reason"]
    assert not [r for r in records if r["status"] == "failed" and "machine" in str(r["reason"])]
    drive(config, tmp_path)
    resumed, expected = outcome(tmp_path), uninterrupted[mode]["outcome"]
    # The interrupted record stays in the log, followed later by the evaluation's result.
    assert [r for r in resumed["records"] if r["status"] != INTERRUPTED] == expected["records"]
    assert (resumed["search"], resumed["summary"]) == (expected["search"], expected["summary"])


# -- what the driver tells the world: lines, callbacks, MLflow; none of it changes the search --


class Recorder:
    """A callback that keeps what it hears."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.stages: list[dict] = []

    def on_evaluation(self, record: dict) -> None:
        self.records.append(record)

    def on_stage(self, stage: dict) -> None:
        self.stages.append(stage)


class Meddler:
    """A callback that changes what it is given, then raises: neither may reach the search."""

    def __init__(self) -> None:
        self.calls = 0

    def on_evaluation(self, record: dict) -> None:
        self.calls += 1
        record["val_accuracy"], record["hparams"] = 1.0, {}
        raise RuntimeError("tracker offline")


def drive_with(config: dict, path, callbacks, work=toy_work, stop=None) -> dict:
    run_dir = RunDirectory(path)
    if not run_dir.has_run():
        run_dir.create(configuration.to_toml(config))
    evaluator = SerialEvaluator(work)
    return Driver(config, run_dir, StandInCache(), evaluator, stop, callbacks).run()


@pytest.mark.parametrize("mode", MODES)
def test_lines_callbacks_and_mlflow_hear_every_evaluation_and_change_nothing(
    uninterrupted, tmp_path, mode, caplog, monkeypatch
):
    mlflow = pytest.importorskip("mlflow", reason="report.mlflow needs the mlflow extra")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it
    uri = (tmp_path / "mlruns").as_uri()
    recorder, meddler = Recorder(), Meddler()
    config = make_config(mode, report__mlflow=f'"{uri}"')
    with caplog.at_level(logging.INFO, logger="evores"):
        summary = drive_with(config, tmp_path / "run", [meddler, recorder])
    expected = uninterrupted[mode]["outcome"]
    assert outcome(tmp_path / "run") == expected
    records = RunDirectory(tmp_path / "run").read_records()
    assert recorder.records == records and len(records) == N_EVALUATIONS + N_FINAL
    assert recorder.stages == [{"stage": i, **s} for i, s in enumerate(summary["stages"])]
    messages = [r.getMessage() for r in caplog.records]
    # The failing callback: one line, then never called again.
    assert meddler.calls == 1
    assert [m for m in messages if m.startswith("callback ")] == [
        "callback Meddler.on_evaluation raised RuntimeError: tracker offline; it is not called "
        "again, the search goes on"
    ]
    assert_one_line_per_evaluation(caplog.records, records)
    assert_in_mlflow(mlflow.tracking.MlflowClient(tracking_uri=uri), records)


def assert_one_line_per_evaluation(log_records: list, records: list[dict]) -> None:
    lines = [
        r for r in log_records if r.getMessage().startswith(("evaluation [", "final retraining ["))
    ]
    assert len(lines) == len(records)
    for line, record in zip(lines, records, strict=True):
        kind = "evaluation" if record["kind"] == "search" else "final retraining"
        text = line.getMessage()
        assert text.startswith(f"{kind} {record['key']} at {record['resolution']} px: ")
        if record["status"] != OK:
            assert line.levelno == logging.WARNING and "failed (nan)" in text
            assert text.endswith(f"genome {json.dumps(record['hparams'], sort_keys=True)}")


def assert_in_mlflow(client, records: list[dict]) -> None:
    """One MLflow run per evaluation, with its genome, status and validation accuracy."""
    experiment = client.get_experiment_by_name("run")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs) == len(records)
    by_key = {run.data.tags["evores.key"]: run for run in runs}
    for record in records:
        run = by_key["-".join(map(str, record["key"]))]
        assert run.data.tags["evores.status"] == record["status"]
        genome = {name.removeprefix("hparams."): value for name, value in run.data.params.items()
                  if name.startswith("hparams.")}  # fmt: skip
        assert genome == {name: str(value) for name, value in record["hparams"].items()}
        if record["status"] == OK and record["kind"] == "search":
            assert run.data.metrics["val_accuracy"] == pytest.approx(record["val_accuracy"])
        else:
            assert "val_accuracy" not in run.data.metrics


def test_a_resumed_runs_callbacks_hear_each_evaluation_once(uninterrupted, tmp_path):
    config, stop, recorder = make_config("async"), StopRequest(), Recorder()
    with pytest.raises(RunStopped):
        drive_with(config, tmp_path, [recorder], stop_after(13, stop), stop)
    heard_before = len(recorder.records)
    drive_with(config, tmp_path, [recorder])
    assert outcome(tmp_path) == uninterrupted["async"]["outcome"]
    finished = [r for r in RunDirectory(tmp_path).read_records() if r["status"] != INTERRUPTED]
    assert recorder.records == finished and 0 < heard_before < len(finished)
    assert [stage["stage"] for stage in recorder.stages] == [0, 1]
