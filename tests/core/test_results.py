"""evores.core.results: the one-line reason, building results, and tasks and log records that stay
byte-compatible with the run directories earlier versions wrote."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evores.core.results import (
    FAILED,
    FAILURE_BUDGET,
    FAILURE_OOM,
    INTERRUPTED,
    KIND_FINAL,
    KIND_SEARCH,
    MAX_REASON_CHARS,
    OK,
    RESULT_FIELDS,
    FitnessResult,
    failed_result,
    make_record,
    make_task,
    one_line,
    record_problems,
)

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "tests" / "data" / "legacy-runs"
GENOME = {"learning_rate": 0.1, "conv_filters": [8], "conv_kernels": [3], "fc_units": [16]}


def log_line(record: dict) -> str:
    """A record as evores.store.checkpoint.RunDirectory.append_record writes it."""
    return json.dumps(record, allow_nan=False, separators=(",", ":"))


# ----------------------------------------------------------------------------- one_line


def test_one_line_names_the_type_and_joins_the_lines():
    assert one_line(ValueError("first\nsecond\r\n\tthird  ")) == "ValueError: first second third"
    assert one_line(RuntimeError()) == "RuntimeError:"


def test_one_line_keeps_a_reason_at_the_limit_and_shortens_a_longer_one():
    exact = one_line(ValueError("x" * (MAX_REASON_CHARS - len("ValueError: "))))
    assert len(exact) == MAX_REASON_CHARS and not exact.endswith("...")
    long = one_line(ValueError("y" * 5000))
    assert len(long) == MAX_REASON_CHARS and long.endswith("y...")


# ----------------------------------------------------------------------------- results


def test_a_failed_result_is_zero_except_what_was_measured():
    result = FitnessResult.failed("out of time", FAILURE_BUDGET, epochs=2, wall_seconds=3.5)
    assert (result.status, result.failure, result.reason) == (FAILED, FAILURE_BUDGET, "out of time")
    assert (result.val_accuracy, result.epochs, result.wall_seconds) == (0.0, 2, 3.5)
    assert result.best_epoch == result.n_parameters == result.peak_memory_bytes == 0
    assert result.repairs == () and result.test_accuracy is None


def test_a_failed_result_round_trips_through_json():
    measured = {"repairs": ["batch size 64 -> 32"], "test_accuracy": 0.0, "n_parameters": 1234}
    result = FitnessResult.failed("RuntimeError: out of memory", FAILURE_OOM, **measured)
    assert result.repairs == ("batch size 64 -> 32",)  # a list given becomes a tuple
    as_dict = result.to_dict()
    assert tuple(as_dict) == RESULT_FIELDS
    restored = FitnessResult.from_dict(json.loads(json.dumps(as_dict)))
    assert restored == result
    assert FitnessResult.from_dict({**as_dict, "rank": 2}) == result


def test_failed_result_is_the_dict_of_a_failed_fitness_result():
    assert failed_result("boom", "exception", wall_seconds=1.5) == (
        FitnessResult.failed("boom", "exception", wall_seconds=1.5).to_dict()
    )


def test_a_successful_result_has_no_reason_and_keeps_what_was_measured():
    result = FitnessResult.succeeded(0.75, epochs=3, best_epoch=2, test_accuracy=0.5)
    assert (result.status, result.reason, result.failure) == (OK, None, None)
    assert (result.val_accuracy, result.epochs, result.best_epoch) == (0.75, 3, 2)
    assert result.test_accuracy == 0.5 and result.images_per_second == 0.0


def test_a_result_dict_without_a_required_field_is_refused():
    as_dict = FitnessResult.succeeded(0.5).to_dict()
    del as_dict["n_parameters"]
    with pytest.raises(ValueError, match="n_parameters"):
        FitnessResult.from_dict(as_dict)


# ----------------------------------------------------------------------------- tasks


def test_a_task_has_the_field_order_the_search_writes():
    # The order LadderSearch._tasks, _final_tasks and SteadyStateSearch._search_task write
    # tasks in (pending tasks reach the checkpoint, so it is part of the file format).
    task = make_task([1, 2, 3], KIND_SEARCH, GENOME, 16, 7, elite_of=[0, 0.5])
    assert list(task) == ["key", "kind", "hparams", "resolution", "seed", "epochs", "elite_of"]
    assert task["epochs"] is None
    final = make_task([2, 0, 1], KIND_FINAL, GENOME, 32, 9, epochs=4, val_accuracy=0.6)
    assert list(final) == ["key", "kind", "hparams", "resolution", "seed", "epochs", "val_accuracy"]
    assert (final["epochs"], final["val_accuracy"]) == (4, 0.6)
    plain = make_task((0, 0, 0), KIND_SEARCH, GENOME, 8, 1)
    assert plain["key"] == [0, 0, 0] and "elite_of" not in plain and "val_accuracy" not in plain


# ----------------------------------------------------------------------------- records


def legacy_lines() -> list[str]:
    return [
        line
        for path in sorted(LEGACY.glob("*/evaluations.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def test_records_are_byte_identical_to_the_logs_earlier_versions_wrote():
    lines = legacy_lines()
    assert len(lines) > 50 and any('"elite_of"' in line for line in lines)
    assert any('"kind":"final"' in line for line in lines)
    for line in lines:
        logged = json.loads(line)
        extra = {"elite_of": logged["elite_of"]} if "elite_of" in logged else {}
        fields = [logged[name] for name in ("key", "kind", "hparams", "resolution", "seed")]
        task = make_task(*fields, **extra)
        result = {**FitnessResult.from_dict(logged).to_dict(), "rank": logged["rank"]}
        if logged["kind"] == "final":
            # A change since: a final retraining has no stage and no validation score.
            logged.update(stage=None, val_accuracy=None)
            line = log_line(logged)
        # The fields added since: the precision, fp32 for every record written before it, and
        # the time of day it was logged.
        record = make_record(task, result, logged["elapsed"])
        assert isinstance(record.pop("logged_at"), float)
        rewritten = log_line(record)
        rank = f',"rank":{logged["rank"]}}}'
        assert rewritten == line.removesuffix(rank) + ',"precision":"fp32"' + rank


def test_an_interrupted_record_is_the_one_the_driver_wrote():
    # What Driver._record wrote for an evaluation a stop abandoned, before results.py existed.
    task = make_task([1, 2, 3], KIND_SEARCH, {"learning_rate": 0.1}, 16, 7, elite_of=[0, 0.5])
    before = time.time()
    record = make_record(task, {"status": INTERRUPTED, "reason": "stopped: SIGTERM"}, 12.34567)
    assert before - 0.001 <= record.pop("logged_at") <= time.time() + 0.001  # added since
    assert log_line(record) == (
        '{"key":[1,2,3],"kind":"search","stage":1,"generation":2,"index":3,'
        '"hparams":{"learning_rate":0.1},"resolution":16,"seed":7,"elapsed":12.346,'
        '"elite_of":[0,0.5],"status":"interrupted","reason":"stopped: SIGTERM"}'
    )


def test_a_final_record_takes_epochs_and_accuracy_from_the_result_not_the_task():
    task = make_task([2, 0, 0], KIND_FINAL, GENOME, 16, 5, epochs=3, val_accuracy=0.7)
    record = make_record(task, FitnessResult.succeeded(0.0, test_accuracy=0.6).to_dict(), 1.0)
    assert record["epochs"] == 0
    assert record["val_accuracy"] is None and record["test_accuracy"] == 0.6
    # A two-stage run has stages 0 and 1: the key's 2 only keeps final keys apart.
    assert (record["stage"], record["generation"], record["index"]) == (None, 0, 0)
    assert record["key"] == [2, 0, 0]


def test_importing_results_loads_neither_torch_nor_mpi():
    code = "import sys, evores.core.results; print('torch' in sys.modules, 'mpi4py' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


def test_a_failed_evaluation_reaches_optuna_as_a_failed_trial(quiet_optuna):
    optuna = quiet_optuna
    results = iter([FitnessResult.succeeded(0.4), FitnessResult.failed("loss became nan", "nan")])
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda trial: next(results).objective, n_trials=2)
    states = [trial.state for trial in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert study.best_value == 0.4


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"val_accuracy": None}, "val_accuracy = None is not an accuracy"),
        ({"val_accuracy": 1.5}, "val_accuracy = 1.5 is not an accuracy"),
        ({"hparams": {"learning_rate": 0.01, "conv_filters": ["16", 32]}}, "hparams.conv_filters"),
        ({"hparams": {"learning_rate": True}}, "hparams.learning_rate"),
    ],
)
def test_records_every_reader_would_trip_on_are_refused_by_the_schema(change, named):
    """An ok record with val_accuracy null, or non-numbers in the genome's lists, crashed
    resume, report, export, search.initial and load_run (issue 23, class 8)."""
    task = make_task([0, 0, 0], KIND_SEARCH, {"learning_rate": 0.01}, 8, 1)
    record = {**make_record(task, FitnessResult.failed("x", "nan").to_dict(), 1.0), **change}
    record["status"] = OK
    assert any(named in problem for problem in record_problems(record)), record_problems(record)


def test_a_final_record_that_succeeded_needs_its_test_accuracy():
    task = make_task([1, 0, 0], KIND_FINAL, {"learning_rate": 0.01}, 8, 1)
    record = make_record(task, {"status": OK, "val_accuracy": None, "test_accuracy": None}, 1.0)
    assert any("test_accuracy = None" in problem for problem in record_problems(record))
