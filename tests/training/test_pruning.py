"""The per-epoch hook of the fitness API: what it sees, how it prunes, how its bugs fail."""

import math

import optuna
import pytest
from test_fitness import PX, genome, make_split, without_timing

from evores.core.errors import ConfigError
from evores.core.results import FitnessResult, make_record, make_task, record_problems
from evores.fitness import EpochReport, Pruned, optuna_pruning
from evores.training.fitness import PreparedData, evaluate, train_and_test


@pytest.fixture(scope="module")
def data():
    return PreparedData.from_arrays(*make_split(96, 0), *make_split(48, 1), n_classes=3)


class Recorder:
    """A hook that keeps every report and raises ``error`` at epoch ``at``."""

    def __init__(self, at: int | None = None, error: Exception | None = None):
        self.reports: list[EpochReport] = []
        self.at, self.error = at, error

    def __call__(self, report: EpochReport) -> None:
        self.reports.append(report)
        if report.epoch == self.at:
            raise self.error


def test_pruned_stops_at_that_epoch_with_the_best_accuracy_so_far(data):
    hook = Recorder(at=2, error=Pruned("not promising"))
    result = evaluate(genome(), PX, data, seed=0, max_epochs=6, patience=6, on_epoch=hook)
    assert (result.status, result.failure, result.epochs) == ("pruned", None, 2)
    assert [r.epoch for r in hook.reports] == [1, 2]
    assert result.val_accuracy == max(r.val_accuracy for r in hook.reports)
    assert result.reason == "pruned after 2 epoch(s): Pruned: not promising"


def test_hook_sees_every_epoch_and_changes_nothing(data):
    hook = Recorder()
    watched = evaluate(genome(), PX, data, seed=0, max_epochs=3, patience=3, on_epoch=hook)
    plain = evaluate(genome(), PX, data, seed=0, max_epochs=3, patience=3)
    assert without_timing(watched) == without_timing(plain)
    assert [r.epoch for r in hook.reports] == [1, 2, 3]
    assert max(r.val_accuracy for r in hook.reports) == plain.val_accuracy
    assert all(r.train_loss > 0 and r.seconds > 0 for r in hook.reports)


@pytest.mark.parametrize("error", [ValueError("typo\nin the hook"), ConfigError("bad")])
def test_a_hook_raising_anything_else_fails_the_evaluation(data, error):
    hook = Recorder(at=1, error=error)
    result = evaluate(genome(), PX, data, seed=0, max_epochs=3, on_epoch=hook)
    assert (result.status, result.failure, result.val_accuracy) == ("failed", "exception", 0.0)
    assert result.reason.startswith(f"the on_epoch hook raised {type(error).__name__}: ")
    assert "\n" not in result.reason and result.epochs == 1


def test_final_retraining_reports_its_training_loss(data):
    hook = Recorder()
    result = train_and_test(genome(), PX, data, seed=0, epochs=3, on_epoch=hook)
    assert result.status == "ok" and result.test_accuracy is not None
    assert [(r.epoch, r.val_accuracy) for r in hook.reports] == [(1, None), (2, None), (3, None)]
    losses = [r.train_loss for r in hook.reports]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses)
    assert losses[-1] < losses[0]  # the pattern is learnable: the loss falls


def test_a_pruned_final_retraining_is_not_scored(data):
    hook = Recorder(at=1, error=Pruned("enough"))
    result = train_and_test(genome(), PX, data, seed=0, epochs=3, on_epoch=hook)
    assert (result.status, result.epochs, result.test_accuracy) == ("pruned", 1, None)


def test_optuna_adapter_reports_each_epoch_and_prunes_when_told(data):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    result = evaluate(genome(), PX, data, seed=0, max_epochs=2, patience=2,
                      on_epoch=optuna_pruning(trial, first_step=10))  # fmt: skip
    assert result.status == "ok"
    assert sorted(study.trials[0].intermediate_values) == [11, 12]
    always = optuna.create_study(direction="maximize",
                                 pruner=optuna.pruners.ThresholdPruner(lower=1.5))  # fmt: skip
    trial = always.ask()
    result = evaluate(genome(), PX, data, seed=0, max_epochs=4, on_epoch=optuna_pruning(trial))
    assert (result.status, result.epochs) == ("pruned", 1)
    assert f"trial {trial.number} at step 1" in result.reason


def test_a_pruned_result_is_a_valid_log_record(data):
    hook = Recorder(at=1, error=Pruned("enough"))
    result = evaluate(genome(), PX, data, seed=0, max_epochs=3, on_epoch=hook)
    task = make_task([0, 0, 0], "search", genome(), PX, seed=0)
    record = make_record(task, result.to_dict(), elapsed=1.0)
    assert record_problems(record) == []
    assert FitnessResult.from_dict(record) == result
