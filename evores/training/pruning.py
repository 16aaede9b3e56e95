"""Stopping a training between epochs: the fitness API's per-epoch hook and an Optuna adapter.

``evaluate(..., on_epoch=fn)`` and ``train_and_test(..., on_epoch=fn)`` call ``fn`` with an
:class:`EpochReport` after every epoch. A hook that raises :class:`Pruned` stops the training:
the result has status "pruned" (not "failed"), the epochs trained and the best validation
accuracy so far. Any other exception from the hook is a bug in the caller's code and becomes a
failed evaluation, never the end of a run.

:func:`optuna_pruning` turns an Optuna trial into such a hook, so an Optuna pruner (median,
Hyperband, ...) can stop an evores training the way it stops any other::

    def objective(trial):
        hparams = ...  # sampled from the trial
        result = evaluate(hparams, 32, data, seed=0, on_epoch=optuna_pruning(trial))
        if result.status == "pruned":
            raise optuna.TrialPruned(result.reason)
        return result.val_accuracy
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evores.core.results import one_line

__all__ = ["EpochReport", "Pruned", "optuna_pruning"]


@dataclass(frozen=True)
class EpochReport:
    """What one epoch of a training measured (plain data).

    ``epoch`` counts from 1; ``val_accuracy`` is None in a final retraining (it has no
    validation split); ``train_loss`` is the mean of the epoch's batch losses; ``seconds``
    the epoch's training time (validation excluded).
    """

    epoch: int
    val_accuracy: float | None
    train_loss: float
    seconds: float


EpochHook = Callable[[EpochReport], Any]


class Pruned(Exception):
    """Raised by a per-epoch hook to stop the training; its message becomes the reason."""


class HookFailed(Exception):
    """The per-epoch hook raised something other than :class:`Pruned`."""


def call_hook(on_epoch: EpochHook | None, report: EpochReport) -> None:
    """Give ``report`` to the hook (if any): :class:`Pruned` passes through, any other
    exception becomes :class:`HookFailed` so that it fails the evaluation whatever it was."""
    if on_epoch is None:
        return
    try:
        on_epoch(report)
    except Pruned:
        raise
    except Exception as exc:  # noqa: BLE001 - the caller's bug fails this evaluation only
        raise HookFailed(f"the on_epoch hook raised {one_line(exc)}") from exc


def optuna_pruning(trial: Any, first_step: int = 0) -> EpochHook:
    """A hook that reports each epoch's validation accuracy to the Optuna ``trial`` (at step
    ``first_step + epoch``) and raises :class:`Pruned` when ``trial.should_prune()``.

    ``first_step`` lets one trial go on over several trainings (e.g. after rungs of other
    resolutions) without reporting a step twice. The study must maximise. A final retraining
    has no validation accuracy: its epochs are not reported and never pruned.
    """

    def report(epoch: EpochReport) -> None:
        if epoch.val_accuracy is None:
            return
        step = first_step + epoch.epoch
        trial.report(epoch.val_accuracy, step)
        if trial.should_prune():
            raise Pruned(f"the Optuna pruner stopped trial {trial.number} at step {step}")

    return report
