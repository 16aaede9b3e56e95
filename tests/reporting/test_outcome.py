"""Messages that were handled but wrong (issue 23): each now says what is true."""

import argparse
import errno
import os

import pytest

from evores.core.errors import CheckpointError, ConfigError, DataError
from evores.core.results import FAILED, FAILURE_NAN, KIND_SEARCH
from evores.reporting.outcome import of_run
from evores.strategies.ladder import DONE, Progress


def barren_run() -> tuple[Progress, list[dict]]:
    stage = {"best_val_accuracy": None}
    progress = Progress(DONE, 0, (8,), (4,), 4, 4, 0.0, (), (stage,), (), ())
    failed = [{"kind": KIND_SEARCH, "key": [0, 0, i], "status": FAILED, "failure": FAILURE_NAN,
               "reason": "returned nan"} for i in range(4)]  # fmt: skip
    return progress, failed


def test_a_user_function_that_returns_nan_is_not_told_to_lower_the_learning_rate():
    progress, failed = barren_run()
    assert "learning rate" in of_run(progress, None, failed)["check"]
    check = of_run(progress, None, failed, user_function=True)["check"]
    assert "fitness.function" in check and "learning" not in check


def test_a_dangling_out_symlink_is_named_as_such(tmp_path):
    from evores.store.rundir import run_directory

    (tmp_path / "out").symlink_to(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="is a symlink to .*missing.*does not exist"):
        run_directory(tmp_path / "out", resume=False)


def test_a_fifo_named_h5_is_not_a_regular_file(tmp_path):
    from evores.data.sources import open_source

    os.mkfifo(tmp_path / "data.h5")
    with pytest.raises(DataError, match="not a regular file"):
        open_source(tmp_path / "data.h5")


def test_a_resume_on_a_read_only_mount_says_what_resume_needs(tmp_path, monkeypatch):
    from evores.store.checkpoint import RunDirectory

    def read_only(self):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(RunDirectory, "lock", read_only)
    with pytest.raises(
        CheckpointError, match=r"Read-only file system.*resume=True \(--resume\) writes into it"
    ):
        RunDirectory(tmp_path).claim(fresh=False)


def test_the_plan_says_it_times_the_builtin_training_when_a_function_is_set(monkeypatch, capsys):
    from evores.engine.plan import plan

    def stop_here(config):
        raise ConfigError("stopped before timing")

    monkeypatch.setattr("evores.data.opener.open_dataset", stop_here)
    args = argparse.Namespace(config=None, overrides=["fitness.function=fitness_plugins:x"],
                              gpus=None, cpus=1, genomes=1, epochs=1)  # fmt: skip
    with pytest.raises(ConfigError, match="stopped before timing"):
        plan(args)
    assert "fitness.function = 'fitness_plugins:x' is set" in capsys.readouterr().err


@pytest.mark.parametrize(("function", "warned"), [("", True), ("fitness_plugins:x", False)])
def test_only_evores_own_training_is_missed_when_no_weights_were_saved(
    tmp_path, caplog, function, warned
):
    from evores.reporting.winner import keep_winner

    winner = {"test_accuracy": 0.5, "val_accuracy": 0.5}
    with caplog.at_level("WARNING", logger="evores"):
        keep_winner(tmp_path, {"fitness": {"function": function}}, None, [winner], winner)
    assert ("weights were not saved" in caplog.text) == warned


# -- the majority-class baseline (issue 24) ------------------------------------------------------

CLASSES = ["ants", "bees"]
# Hymenoptera's test split as issue 24 met it: the winner scored 0.503, the majority 0.54.
REPORT = {"class_counts": {"train": [124, 121], "val": [40, 36], "test": [70, 83]}}


def test_the_baseline_is_each_splits_most_frequent_class():
    from evores.reporting.outcome import baseline

    assert baseline(REPORT, CLASSES) == {
        "val_accuracy": 40 / 76, "val_class": "ants",
        "test_accuracy": 83 / 153, "test_class": "bees",
    }  # fmt: skip
    # A data report of an earlier evores has no class counts: no baseline, no guess.
    assert baseline({"n_images": 10}, CLASSES) is None
    assert baseline({"class_counts": {"val": [], "test": [1]}}, CLASSES) is None


def test_a_winner_below_the_baseline_is_warned_of_in_the_summary_and_the_log(caplog, tmp_path):
    from evores.reporting.outcome import baseline, conclude, warnings_of

    floor = baseline(REPORT, CLASSES)
    beaten = warnings_of({"val_accuracy": 0.61, "test_accuracy": 0.60}, floor)
    assert beaten == []
    below = warnings_of({"val_accuracy": 0.61, "test_accuracy": 0.503}, floor)
    (line,) = below
    assert "test accuracy 0.503 does not beat the majority-class baseline 0.542" in line
    assert "'bees'" in line and "\n" not in line
    assert len(warnings_of({"val_accuracy": 0.5, "test_accuracy": 0.5}, floor)) == 2
    assert warnings_of(None, floor) == [] and warnings_of({"test_accuracy": 0.1}, None) == []
    summary = {"outcome": {"status": "ok"}, "warnings": below, "test_accuracy": 0.503,
               "test_resolution": 64}  # fmt: skip
    with caplog.at_level("INFO", logger="evores"):
        assert conclude(summary, tmp_path) == 0
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages[0] == ("WARNING", f"warning: {line}")
    assert messages[-1][1].startswith("winner: test accuracy 0.503")  # still the last line
