"""Variation and selection operators on canonical hparams dicts.

Small pure functions in the DEAP style, but each takes an explicit ``numpy.random.Generator``
(DEAP's built-ins draw from the global ``random`` module, which would make results depend on
call order across the program) and none touches ``deap.creator``. Inputs are validated and
outputs always validate against the given space.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evores.core.errors import ConfigError
from evores.strategies.genes import Categorical, Integer, LogFloat
from evores.strategies.space import SearchSpace

# When a zero-allowed gene (L1, L2) is chosen for mutation it flips between 0 and a log-uniform
# value with this probability; otherwise a nonzero value takes a gaussian step and 0 stays 0.
ZERO_TOGGLE_PROBABILITY = 0.1
# An added layer copies a random existing layer with this probability (a known-good block),
# otherwise it is sampled fresh from the space (exploration).
COPY_LAYER_PROBABILITY = 0.5

_SCALAR_GENES = ("learning_rate", "batch_size", "l1", "l2")


# ---- crossover ------------------------------------------------------------------------------


def crossover(a: dict, b: dict, space: SearchSpace, rng: np.random.Generator) -> tuple[dict, dict]:
    """Two children of ``a`` and ``b``, mixing by gene and by layer.

    Each scalar gene is swapped between the children with p=0.5. For conv and FC layers each
    child takes its depth from one parent (p=0.5), then every layer index both parents have
    is swapped with p=0.5 as a block (a conv layer's filters and kernel travel together, since
    they were tuned together). Children therefore always lie in the space.
    """
    a, b = space.validate(a), space.validate(b)
    c1, c2 = dict(a), dict(b)
    for key in _SCALAR_GENES:
        if rng.random() < 0.5:
            c1[key], c2[key] = c2[key], c1[key]
    conv1, conv2 = _cross_layers(_conv_blocks(a), _conv_blocks(b), rng)
    c1["conv_filters"], c1["conv_kernels"] = _split_blocks(conv1)
    c2["conv_filters"], c2["conv_kernels"] = _split_blocks(conv2)
    c1["fc_units"], c2["fc_units"] = _cross_layers(a["fc_units"], b["fc_units"], rng)
    return space.validate(c1), space.validate(c2)


def _conv_blocks(h: dict) -> list[tuple[int, int]]:
    return list(zip(h["conv_filters"], h["conv_kernels"], strict=True))


def _split_blocks(blocks: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    return [f for f, _ in blocks], [k for _, k in blocks]


def _cross_layers(x: list, y: list, rng: np.random.Generator) -> tuple[list, list]:
    """Children with the parents' depths (in random order), shared layer slots swapped p=0.5."""
    first, second = (list(y), list(x)) if rng.random() < 0.5 else (list(x), list(y))
    for i in range(min(len(first), len(second))):
        if rng.random() < 0.5:
            first[i], second[i] = second[i], first[i]
    return first, second


# ---- mutation -------------------------------------------------------------------------------


def mutate(
    h: dict,
    space: SearchSpace,
    rng: np.random.Generator,
    *,
    gene_prob: float = 0.3,
    sigma: float = 0.5,
) -> dict:
    """A mutated copy of ``h``; each gene (each layer's filters, kernel, units, each depth,
    each scalar) mutates independently with probability ``gene_prob``.

    ``sigma`` is the gaussian step's standard deviation as a fraction of the gene's log10
    range, so one setting suits genes spanning 1.5 decades (filters) or 5 (L1), and steps
    shrink as ``SearchSpace.narrow`` shrinks the ranges. Log floats step in log space and are
    clipped into bounds; log ints likewise, rounded, and move by at least 1 whenever their
    range allows; depths add a layer (a copy of an existing one or a fresh sample) or remove
    a random one; categoricals move to a different choice.
    """
    _check_rate("gene_prob", gene_prob, upper=1.0)
    _check_rate("sigma", sigma, upper=math.inf)
    h = space.validate(h)
    out = dict(h)

    def hit() -> bool:
        return bool(rng.random() < gene_prob)

    if hit():
        out["learning_rate"] = _mutate_log_float(
            h["learning_rate"], space.learning_rate, sigma, rng
        )
    out["conv_filters"], out["conv_kernels"] = _mutate_conv(h, space, sigma, rng, hit)
    units = [_mutate_log_int(v, space.fc_units, sigma, rng) if hit() else v for v in h["fc_units"]]
    out["fc_units"] = _mutate_depth(
        units, space.fc_layers, hit(), rng, lambda: space.fc_units.sample(rng)
    )
    if hit():
        out["batch_size"] = _mutate_choice(h["batch_size"], space.batch_size, rng)
    for key in ("l1", "l2"):
        if hit():
            out[key] = _mutate_log_float(h[key], getattr(space, key), sigma, rng)
    return space.validate(out)


def _mutate_conv(
    h: dict,
    space: SearchSpace,
    sigma: float,
    rng: np.random.Generator,
    hit: Callable[[], bool],
) -> tuple[list[int], list[int]]:
    """Each layer's filters and kernel, then the conv depth."""
    filters = [
        _mutate_log_int(v, space.conv_filters, sigma, rng) if hit() else v
        for v in h["conv_filters"]
    ]
    kernels = [
        _mutate_choice(v, space.conv_kernels, rng) if hit() else v for v in h["conv_kernels"]
    ]
    blocks = _mutate_depth(
        list(zip(filters, kernels, strict=True)),
        space.conv_layers,
        hit(),
        rng,
        lambda: (space.conv_filters.sample(rng), space.conv_kernels.sample(rng)),
    )
    return _split_blocks(blocks)


def _check_rate(name: str, value: float, *, upper: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 <= value <= upper:
        raise ConfigError(f"mutation {name}={value!r} must be a finite number in [0, {upper}]")


def _log_step(x: float, low: float, high: float, sigma: float, rng: np.random.Generator) -> float:
    """log10(x) plus a gaussian step of sigma x the log10 range, clipped to the range."""
    lo, hi = math.log10(low), math.log10(high)
    step = float(rng.normal(0.0, sigma * (hi - lo))) if sigma > 0 else 0.0
    return min(max(math.log10(x) + step, lo), hi)


def _mutate_log_float(x: float, gene: LogFloat, sigma: float, rng: np.random.Generator) -> float:
    if gene.allow_zero and rng.random() < ZERO_TOGGLE_PROBABILITY:
        return gene.sample_nonzero(rng) if x == 0.0 else 0.0
    if x == 0.0:
        return 0.0
    return min(max(10.0 ** _log_step(x, gene.low, gene.high, sigma, rng), gene.low), gene.high)


def _mutate_log_int(x: int, gene: Integer, sigma: float, rng: np.random.Generator) -> int:
    if gene.low == gene.high:
        return x
    exponent = _log_step(x, gene.low, gene.high, sigma, rng)
    new = min(max(round(10.0**exponent), gene.low), gene.high)
    if new == x:
        # A mutation that changes nothing wastes an evaluation: step one unit, away from a bound.
        direction = 1 if exponent >= math.log10(x) else -1
        new = x + direction if gene.contains(x + direction) else x - direction
    return new


def _mutate_choice(x: Any, gene: Categorical, rng: np.random.Generator) -> Any:
    others = [c for c in gene.choices if c != x]
    return others[int(rng.integers(len(others)))] if others else x


def _mutate_depth(
    layers: list, gene: Integer, hit: bool, rng: np.random.Generator, new_layer: Callable[[], Any]
) -> list:
    """``layers`` with one layer added or removed (when ``hit`` and the depth range allows)."""
    layers = list(layers)
    if not hit or gene.low == gene.high:
        return layers
    grow = len(layers) < gene.high and (len(layers) == gene.low or rng.random() < 0.5)
    if not grow:
        del layers[int(rng.integers(len(layers)))]
        return layers
    if rng.random() < COPY_LAYER_PROBABILITY:
        layer = layers[int(rng.integers(len(layers)))]
    else:
        layer = new_layer()
    layers.insert(int(rng.integers(len(layers) + 1)), layer)
    return layers


# ---- selection ------------------------------------------------------------------------------


def _clean(fitnesses: Sequence[float]) -> list[float]:
    """Fitnesses as floats with NaN (a failed or diverged evaluation) ranked below everything."""
    values = [float(f) for f in fitnesses]
    return [-math.inf if math.isnan(v) else v for v in values]


def tournament(
    fitnesses: Sequence[float], n: int, size: int, rng: np.random.Generator
) -> list[int]:
    """``n`` indices, each the fittest of ``size`` distinct individuals drawn at random.

    ``size`` is capped at the population; ties go to the lower index and NaN ranks lowest,
    so the choice depends only on the fitnesses and the generator.
    """
    values = _clean(fitnesses)
    if n < 0 or size < 1:
        raise ConfigError(f"tournament needs n >= 0 and size >= 1, got n={n}, size={size}")
    if n and not values:
        raise ConfigError("tournament needs a non-empty population; evaluate individuals first")
    size = min(size, len(values))
    winners = []
    for _ in range(n):
        aspirants = sorted(int(i) for i in rng.choice(len(values), size=size, replace=False))
        winners.append(max(aspirants, key=lambda i: values[i]))  # max keeps the first (lowest)
    return winners
