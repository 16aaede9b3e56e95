"""Fitness functions for the benchmarks, plugged in with ``fitness.function`` (no training)."""

import math

import numpy as np


def _toy_accuracy(hparams: dict) -> float:
    """Peaks at learning rate 1e-2 and three conv layers, so selection has something to do."""
    lr_term = (math.log10(hparams["learning_rate"]) + 2) ** 2
    return 1.0 / (1.0 + lr_term + 0.3 * (len(hparams["conv_filters"]) - 3) ** 2)


def sleeps_20_to_200_ms(hparams, resolution, data, *, seed, **_):
    """Sleeps a seeded random 20-200 ms: evaluations of widely varying cost."""
    import time

    time.sleep(float(np.random.default_rng(seed).uniform(0.020, 0.200)))
    return _toy_accuracy(hparams)


def no_op(hparams, resolution, data, *, seed, **_):
    """Returns at once: what is left of the wall time is the driver's own cost."""
    return _toy_accuracy(hparams)
