"""The fitness API at the path users import it from; it lives in :mod:`evores.training`."""

from evores.core.results import FitnessResult
from evores.training.fitness import TrainBudget, evaluate, keep_heap, train_and_test
from evores.training.prepared import PreparedData
from evores.training.pruning import EpochReport, Pruned, optuna_pruning

__all__ = [
    "EpochReport", "FitnessResult", "PreparedData", "Pruned", "TrainBudget", "evaluate",
    "keep_heap", "optuna_pruning", "train_and_test",
]  # fmt: skip
