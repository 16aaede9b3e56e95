"""The fitness API at the path users import it from; it lives in :mod:`evores.training`."""

from evores.core.results import FitnessResult
from evores.training.fitness import TrainBudget, evaluate, keep_heap, train_and_test
from evores.training.prepared import PreparedData

__all__ = [
    "FitnessResult", "PreparedData", "TrainBudget", "evaluate", "keep_heap", "train_and_test",
]  # fmt: skip
