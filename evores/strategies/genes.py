"""The gene types of the search space, declared explicitly (log-uniform floats, integers,
categoricals) and never inferred from values: each samples, validates, narrows around elites and
answers an Optuna trial."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from evores.core.errors import ConfigError

# A zero-allowed float (L1, L2) is sampled as exactly 0.0 with this probability, so "no
# regularisation" stays as likely as any one decade of its log range and is not lost.
ZERO_PROBABILITY = 0.2


def is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_order(kind: str, low: float, high: float) -> None:
    if low > high:
        raise ConfigError(
            f"{kind} range [{low!r}, {high!r}] is inverted; give [low, high] with low <= high"
        )


@dataclass(frozen=True)
class LogFloat:
    """A float sampled uniformly in log10 space; ``allow_zero`` also admits exactly 0.0.

    Zero matters for penalties: "no L1" is a real choice that a log scale cannot reach.
    """

    low: float
    high: float
    allow_zero: bool = False

    def __post_init__(self) -> None:
        for attr in ("low", "high"):
            value = getattr(self, attr)
            if not is_real(value) or not math.isfinite(value):
                raise ConfigError(
                    f"LogFloat {attr}={value!r} is not a finite number; give a positive float"
                )
            object.__setattr__(self, attr, float(value))
        if self.low <= 0:
            raise ConfigError(
                f"LogFloat low={self.low!r} must be > 0 on a log scale; use a small positive "
                "bound such as 1e-7 (and allow_zero to admit 0)"
            )
        _check_order("LogFloat", self.low, self.high)
        if not isinstance(self.allow_zero, bool):
            raise ConfigError(f"LogFloat allow_zero={self.allow_zero!r} must be true or false")

    def contains(self, value: float) -> bool:
        return (self.allow_zero and value == 0.0) or self.low <= value <= self.high

    def describe(self) -> str:
        return f"{'0 or ' if self.allow_zero else ''}[{self.low!r}, {self.high!r}]"

    def sample(self, rng: np.random.Generator) -> float:
        """0.0 with probability ZERO_PROBABILITY when zero is allowed, else log-uniform."""
        if self.allow_zero and rng.random() < ZERO_PROBABILITY:
            return 0.0
        return self.sample_nonzero(rng)

    def sample_nonzero(self, rng: np.random.Generator) -> float:
        exponent = rng.uniform(math.log10(self.low), math.log10(self.high))
        # 10**log10(x) can round past a bound; clip so the sample always validates.
        return min(max(float(10.0**exponent), self.low), self.high)


@dataclass(frozen=True)
class Integer:
    """An integer in [low, high]; ``log`` samples and mutates it on a log scale (filters, units)."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        for attr in ("low", "high"):
            value = getattr(self, attr)
            if not is_int(value):
                raise ConfigError(
                    f"Integer {attr}={value!r} is not an integer; give a whole number"
                )
            object.__setattr__(self, attr, int(value))
        _check_order("Integer", self.low, self.high)
        if not isinstance(self.log, bool):
            raise ConfigError(f"Integer log={self.log!r} must be true or false")
        if self.log and self.low < 1:
            raise ConfigError(
                f"Integer low={self.low} must be >= 1 on a log scale; use a positive lower bound"
            )

    def contains(self, value: int) -> bool:
        return self.low <= value <= self.high

    def describe(self) -> str:
        return f"[{self.low}, {self.high}]"

    def sample(self, rng: np.random.Generator) -> int:
        if not self.log:
            return int(rng.integers(self.low, self.high + 1))
        # Optuna's scheme: widen by half a step each side so both bounds get a fair share.
        exponent = rng.uniform(math.log(self.low - 0.5), math.log(self.high + 0.5))
        return min(max(round(math.exp(exponent)), self.low), self.high)


@dataclass(frozen=True)
class Categorical:
    """One of a fixed tuple of plain choices (ints, floats or strings)."""

    choices: tuple

    def __post_init__(self) -> None:
        if isinstance(self.choices, (str, bytes)) or not isinstance(self.choices, Iterable):
            raise ConfigError(f"Categorical choices={self.choices!r} must be a list of values")
        choices = tuple(_plain_choice(c) for c in self.choices)
        if not choices:
            raise ConfigError("Categorical choices are empty; give at least one choice")
        if len(set(choices)) != len(choices):
            raise ConfigError(
                f"Categorical choices {list(choices)!r} contain duplicates; list each choice once"
            )
        object.__setattr__(self, "choices", choices)

    def contains(self, value: Any) -> bool:
        return self.match(value) is not None

    def match(self, value: Any) -> Any:
        """The choice equal to ``value`` and of the same kind (3.0 does not match 3), or None."""
        for choice in self.choices:
            if _same_kind(choice, value) and choice == value:
                return choice
        return None

    def describe(self) -> str:
        return f"one of {list(self.choices)!r}"

    def sample(self, rng: np.random.Generator) -> Any:
        return self.choices[int(rng.integers(len(self.choices)))]


def _same_kind(choice: Any, value: Any) -> bool:
    if isinstance(choice, int):
        return is_int(value)
    if isinstance(choice, float):
        return is_real(value)
    return isinstance(value, str)


def _plain_choice(choice: Any) -> Any:
    if is_int(choice):
        return int(choice)
    if is_real(choice) and math.isfinite(choice):
        return float(choice)
    if isinstance(choice, str):
        return choice
    raise ConfigError(
        f"Categorical choice {choice!r} is not an int, finite float or string; use one of those"
    )


Gene = LogFloat | Integer | Categorical


def suggest_gene(trial: Any, name: str, gene: Gene) -> Any:
    """One gene's value from an Optuna trial."""
    if isinstance(gene, Categorical):
        return trial.suggest_categorical(name, list(gene.choices))
    if isinstance(gene, Integer):
        return trial.suggest_int(name, gene.low, gene.high, log=gene.log)
    if gene.allow_zero and trial.suggest_categorical(f"{name}_zero", [False, True]):
        return 0.0
    return trial.suggest_float(name, gene.low, gene.high, log=True)


def narrow_float(gene: LogFloat, values: list[float], margin: float) -> LogFloat:
    nonzero = [v for v in values if v != 0.0]
    if not nonzero:
        return gene
    factor = (gene.high / gene.low) ** margin  # >= 1, so min/factor <= min and max*factor >= max
    low = max(gene.low, min(nonzero) / factor)
    high = min(gene.high, max(nonzero) * factor)
    return LogFloat(low, high, gene.allow_zero)


def narrow_int(gene: Integer, values: list[int], margin: float) -> Integer:
    if gene.log:
        factor = (gene.high / gene.low) ** margin
        low, high = math.floor(min(values) / factor), math.ceil(max(values) * factor)
    else:
        step = math.ceil(margin * (gene.high - gene.low))
        low, high = min(values) - step, max(values) + step
    return Integer(max(gene.low, low), min(gene.high, high), gene.log)
