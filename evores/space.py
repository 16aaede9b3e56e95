"""The search space at the path users import it from; it lives in :mod:`evores.strategies`."""

from evores.strategies.genes import Categorical, Integer, LogFloat
from evores.strategies.space import SearchSpace, repair

__all__ = ["Categorical", "Integer", "LogFloat", "SearchSpace", "repair"]
