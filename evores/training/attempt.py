"""What one training attempt measured, kept as it goes so that it is readable after a failure.

:mod:`evores.training.fitness` updates an :class:`Attempt` epoch by epoch and turns it into
the fields of a :class:`evores.core.results.FitnessResult`, whether the training succeeded,
failed or was pruned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from evores.training.resources import peak_memory


@dataclass
class Attempt:
    """Mutable record of one training attempt, readable after it fails."""

    epochs: int = 0
    best_epoch: int = 0
    best_accuracy: float = 0.0
    train_seconds: float = 0.0
    epoch_seconds: float = 0.0
    images: int = 0
    n_parameters: int = 0
    test_accuracy: float | None = None  # the final retraining's score
    precision: str = "fp32"  # what the training ran in (evores.training.device.resolve_precision)

    def validated(self, epoch: int, accuracy: float) -> None:
        """Note epoch ``epoch``'s validation accuracy; the best counts (the first on ties)."""
        if accuracy > self.best_accuracy or self.best_epoch == 0:
            self.best_accuracy, self.best_epoch = accuracy, epoch

    def measured(self, start: float, device: torch.device, repairs: list[str]) -> dict[str, Any]:
        """What the attempt measured, as FitnessResult fields (with the genome's ``repairs``);
        ``start``: when the evaluation began."""
        return {
            "repairs": tuple(repairs),
            "test_accuracy": self.test_accuracy,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "wall_seconds": time.perf_counter() - start,
            "seconds_per_epoch": self.epoch_seconds / self.epochs if self.epochs else 0.0,
            "n_parameters": self.n_parameters,
            "peak_memory_bytes": peak_memory(device),
            "images_per_second": _rate(self.images, self.train_seconds),
            "precision": self.precision,
        }


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0
