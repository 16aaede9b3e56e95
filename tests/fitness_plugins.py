"""User fitness functions the tests plug in through ``fitness.function``."""

import math
import os
import signal

from evores.execution.worker import FinalSplits
from evores.training.fitness import evaluate, train_and_test


def builtin(hparams, resolution, data, *, seed, device, max_epochs, patience, max_seconds,
            space, filter):  # fmt: skip
    """What evores does without a fitness.function: evaluate, or for the final retraining
    (data is a FinalSplits view) train_and_test, so plugin runs compare with built-in ones."""
    if isinstance(data, FinalSplits):
        return train_and_test(
            hparams, resolution, data.cache, seed=seed, epochs=max_epochs, device=device,
            space=space, filter=filter,
        )  # fmt: skip
    return evaluate(
        hparams, resolution, data, seed=seed, device=device, max_epochs=max_epochs,
        patience=patience, max_seconds=max_seconds, space=space, filter=filter,
    )  # fmt: skip


_calls = 0


def dies_hard_once(hparams, resolution, data, **options):
    """The built-in fitness, but the process exits at once at the Nth call of this process
    when EVORES_TEST_DIE_AT=N is set: a stand-in for kill -9 in the middle of a generation."""
    global _calls
    _calls += 1
    if _calls == int(os.environ.get("EVORES_TEST_DIE_AT", "0")):
        os._exit(137)
    return builtin(hparams, resolution, data, **options)


def accuracy_from_seed(hparams, resolution, data, *, seed, device, max_epochs, patience,
                       max_seconds, space, filter):  # fmt: skip
    """No training: a float derived from the genome, for fast tests of the search loop."""
    return (seed % 1000) / 1000 * 0.5 + len(hparams["conv_filters"]) / 20 + resolution / 1000


def slow_evaluate(hparams, resolution, data, **options):
    """The built-in fitness after a pause of EVORES_TEST_SLEEP seconds: a run that lasts long
    enough to be caught by a signal or a time limit, with the results of the built-in one."""
    import time

    time.sleep(float(os.environ.get("EVORES_TEST_SLEEP", "0")))
    return builtin(hparams, resolution, data, **options)


def sometimes_raises(hparams, resolution, data, **options):
    """Raises for about a third of the seeds, as a user's buggy model would; no training."""
    if options["seed"] % 3 == 0:
        raise ValueError(f"user model broke on seed {options['seed']}")
    return accuracy_from_seed(hparams, resolution, data, **options)


def accuracy_from_seed_dies_once(hparams, resolution, data, **options):
    """``accuracy_from_seed``, but the process exits at once at the Nth call of this process
    when EVORES_TEST_DIE_AT=N is set: a kill -9 mid-stage of a run that trains nothing."""
    global _calls
    _calls += 1
    if _calls == int(os.environ.get("EVORES_TEST_DIE_AT", "0")):
        os._exit(137)
    return accuracy_from_seed(hparams, resolution, data, **options)


def _quality(hparams):
    """The genome's planted quality in [0, 1]: where its learning rate lies in the default
    range 1e-4..1 (log scale)."""
    import math

    return min(1.0, max(0.0, (math.log10(hparams["learning_rate"]) + 4) / 4))


def _noise(hparams):
    """A number in [0, 1) fixed by the genome and unrelated to its quality."""
    import json
    import zlib

    return zlib.crc32(json.dumps(hparams, sort_keys=True).encode()) / 2**32


# Planted fidelity: below 16 px a genome scores by a planted low-resolution rule, from 16 px
# up by its quality. No training; the final retraining scores as the high resolution.


def fidelity_agrees(hparams, resolution, data, **options):
    """Low and high resolution rank genomes alike, the low one with a little noise."""
    noise = 0.05 * _noise(hparams) if resolution < 16 else 0.0
    return 0.2 + 0.6 * _quality(hparams) + noise


def fidelity_unrelated(hparams, resolution, data, **options):
    """The low-resolution score is unrelated to the high-resolution one."""
    score = _noise(hparams) if resolution < 16 else _quality(hparams)
    return 0.2 + 0.6 * score


def fidelity_disagrees(hparams, resolution, data, **options):
    """The low resolution ranks genomes in reverse of the high one."""
    score = 1.0 - _quality(hparams) if resolution < 16 else _quality(hparams)
    return 0.2 + 0.6 * score


def accuracy_from_learning_rate(hparams, resolution, data, **options):
    """No training: only the learning rate matters (the accuracy peaks at 1e-2 and falls with
    the distance in decades), so an importance analysis must rank it first. For the
    importance tests."""
    return max(0.05, 0.9 - 0.2 * abs(math.log10(hparams["learning_rate"]) + 2.0))


_stop_calls = 0


def accuracy_from_learning_rate_stops(hparams, resolution, data, **options):
    """``accuracy_from_learning_rate``, but at the Nth call of this process with
    EVORES_TEST_STOP_AT=N set, the process signals itself SIGUSR1 (a walltime warning): the
    run finishes this evaluation, checkpoints and stops mid-stage. Reset ``_stop_calls``."""
    global _stop_calls
    _stop_calls += 1
    if _stop_calls == int(os.environ.get("EVORES_TEST_STOP_AT", "0")):
        os.kill(os.getpid(), signal.SIGUSR1)
    return accuracy_from_learning_rate(hparams, resolution, data, **options)
