"""What an evaluating rank does with a task: run the configured fitness function on it.

The work function is built on each rank from the resolved config, so only the task (plain
data) crosses processes. It holds one resolution's data in memory at a time: a search stage
needs one resolution, and keeping the previous one would only double the footprint.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from evores.cache import DatasetCache
from evores.device import configure_process, resolve_device
from evores.errors import ConfigError
from evores.fitness import PreparedData, evaluate, train_and_test
from evores.results import FAILURE_NAN, KIND_FINAL, FitnessResult
from evores.space import SearchSpace

Work = Callable[[dict[str, Any]], dict[str, Any]]


def load_function(spec: str) -> Callable[..., Any]:
    """The user's fitness function named ``package.module:function``."""
    module_name, _, name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"fitness.function {spec!r}: cannot import module {module_name!r} ({error}); "
            "make it importable (installed, or on PYTHONPATH)"
        ) from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(
            f"fitness.function {spec!r}: module {module_name!r} has no function {name!r}"
        )
    return function


class FinalSplits:
    """A cache seen the way the final retraining needs it: train + val to train, test to score.

    A user's fitness function trains on ``arrays(r, "train")`` and reports accuracy on
    ``arrays(r, "val")``; handing it this view retrains it for the final answer unchanged. It
    is called with ``max_epochs`` and ``patience`` both set to the epochs that were best in
    the candidate's evaluation, so it trains that long, as the built-in retraining does.
    """

    def __init__(self, cache: DatasetCache):
        self.cache = cache
        self.class_names = cache.class_names
        self.n_classes = cache.n_classes
        self.resolutions = cache.resolutions

    def arrays(self, resolution: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        mapped = {"train": "train+val", "val": "test"}.get(split)
        if mapped is None:
            raise ConfigError(
                f"the final retraining offers the splits train and val, not {split!r}"
            )
        return self.cache.arrays(resolution, mapped)


def result_from_user(value: Any, wall_seconds: float) -> FitnessResult:
    """A user function may return a FitnessResult or a bare validation accuracy (a real
    number, not a bool); a NaN or infinite accuracy is a failed evaluation."""
    if isinstance(value, FitnessResult):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(
            f"the fitness function returned {type(value).__name__}; return a FitnessResult "
            "or a float (the validation accuracy)"
        )
    accuracy = float(value)
    if not math.isfinite(accuracy):
        reason = f"the fitness function returned {accuracy}"
        return FitnessResult.failed(reason, FAILURE_NAN, wall_seconds=wall_seconds)
    return FitnessResult.succeeded(accuracy, wall_seconds=wall_seconds)


def make_work(config: dict[str, Any], cache: DatasetCache) -> Work:
    """The task -> result function of one rank: the configured ``fitness.function``, or else
    the built-in :func:`evores.fitness.evaluate` / :func:`evores.fitness.train_and_test`.
    Makes this rank's process-wide device settings (:func:`evores.device.configure_process`)."""
    space = SearchSpace.from_dict(config["space"])
    train = config["train"]
    per_gpu = train["evaluations_per_gpu"]
    device = resolve_device(train["device"], evaluations_per_gpu=per_gpu)
    configure_process(device, deterministic=train["deterministic"], evaluations_per_gpu=per_gpu)
    spec = config["fitness"]["function"]
    if spec:
        return _user_work(load_function(spec), config, cache, space, device)
    return _builtin_work(config["train"], cache, space, device)


def _builtin_work(train: dict[str, Any], cache: DatasetCache, space: SearchSpace, device) -> Work:
    """Tasks run by evores's own training, on data kept resident between tasks."""
    max_seconds = train["max_seconds"] or None
    resident: dict[tuple[int, bool], PreparedData] = {}

    def prepared(resolution: int, final: bool) -> PreparedData:
        if (resolution, final) not in resident:
            resident.clear()
            resident[resolution, final] = PreparedData.from_cache(
                cache, resolution, device=device, final=final
            )
        return resident[resolution, final]

    def work(task: dict[str, Any]) -> dict[str, Any]:
        hparams, resolution, seed = task["hparams"], task["resolution"], task["seed"]
        if task["kind"] == KIND_FINAL:
            # The final retraining has no time budget: it is the answer the whole run is for.
            data = prepared(resolution, final=True)
            result = train_and_test(
                hparams,
                resolution,
                data,
                seed=seed,
                epochs=task["epochs"],
                device=device,
                space=space,
                precision=train["precision"],
            )
        else:
            result = evaluate(
                hparams,
                resolution,
                prepared(resolution, final=False),
                seed=seed,
                device=device,
                max_epochs=train["max_epochs"],
                patience=train["patience"],
                max_seconds=max_seconds,
                space=space,
                precision=train["precision"],
            )
        return result.to_dict()

    return work


def _user_work(
    function: Callable[..., Any],
    config: dict[str, Any],
    cache: DatasetCache,
    space: SearchSpace,
    device,
) -> Work:
    """Tasks run by the user's fitness function; the final retraining hands it FinalSplits."""
    train = config["train"]
    max_seconds = train["max_seconds"] or None

    def work(task: dict[str, Any]) -> dict[str, Any]:
        final = task["kind"] == KIND_FINAL
        epochs = task["epochs"] if final else train["max_epochs"]
        started = time.perf_counter()
        value = function(
            task["hparams"],
            task["resolution"],
            FinalSplits(cache) if final else cache,
            seed=task["seed"],
            device=device,
            max_epochs=epochs,
            patience=epochs if final else train["patience"],
            max_seconds=None if final else max_seconds,
            space=space,
            filter=config["data"]["filter"],
        )
        result = result_from_user(value, time.perf_counter() - started).to_dict()
        if final and result.get("test_accuracy") is None:
            # What the function measured on its "val" split was the test split.
            result["test_accuracy"], result["val_accuracy"] = result["val_accuracy"], 0.0
        return result

    return work
