"""What an evaluating rank does with a task: run the configured fitness function on it.

The work function is built on each rank from the resolved config, so only the task (plain
data) crosses processes. It holds one resolution's data in memory at a time: a search stage
needs one resolution, and keeping the previous one would only double the footprint.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from evores.core.errors import ConfigError
from evores.core.results import (
    FAILURE_BUDGET,
    FAILURE_EXCEPTION,
    FAILURE_NAN,
    KIND_FINAL,
    OK,
    FitnessResult,
    one_line,
)
from evores.data.cache import DatasetCache
from evores.data.resizing import ResizerSpec, resizer_spec
from evores.store.rundir import candidate_path
from evores.strategies.space import SearchSpace
from evores.training.device import configure_process, resolve_device
from evores.training.fitness import PreparedData, evaluate, train_and_test

Work = Callable[[dict[str, Any]], dict[str, Any]]
# A task -> a context manager giving its training's on_epoch hook (or None).
EpochHooks = Callable[[dict[str, Any]], AbstractContextManager]

logger = logging.getLogger("evores")


def load_function(spec: str) -> Callable[..., Any]:
    """The user's fitness function named ``package.module:function``.

    Whatever importing the module does wrong (it is missing, has a syntax error, raises or
    calls ``sys.exit`` at import time), and a function that cannot take the arguments evores
    passes, is a ConfigError: refused at start-up, before the run writes anything.
    """
    module_name, _, name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ConfigError(
            f"fitness.function {spec!r}: cannot import module {module_name!r} ({error}); "
            "make it importable (installed, or on PYTHONPATH)"
        ) from None
    except (Exception, SystemExit, KeyboardInterrupt) as error:
        raise ConfigError(
            f"fitness.function {spec!r}: importing module {module_name!r} failed "
            f"({_what_user_code_raised(error)}); fix the module"
        ) from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(
            f"fitness.function {spec!r}: module {module_name!r} has no function {name!r}"
        )
    _check_signature(spec, function)
    return function


# How evores calls a fitness function: evaluate's signature (see _user_work).
_POSITIONAL = ("hparams", "resolution", "data")
_KEYWORDS = ("seed", "device", "max_epochs", "patience", "max_seconds", "space", "filter")


def _check_signature(spec: str, function: Callable[..., Any]) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # e.g. a builtin without a signature: find out when called
        return
    try:
        signature.bind(*_POSITIONAL, **dict.fromkeys(_KEYWORDS))
    except TypeError as error:
        raise ConfigError(
            f"fitness.function {spec!r} cannot be called as {_name_of(function)}"
            f"({', '.join(_POSITIONAL)}, *, {', '.join(_KEYWORDS)}) ({error}); give it "
            "evores.training.fitness.evaluate's signature, or "
            "(hparams, resolution, data, **options)"
        ) from None


def _name_of(function: Callable[..., Any]) -> str:
    return getattr(function, "__name__", type(function).__name__)


def _what_user_code_raised(error: BaseException) -> str:
    """One line for an exception of user code; ``sys.exit(code)`` said as such."""
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r})"
    return one_line(error)


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
    number, not a bool). A NaN or infinite accuracy is a failed evaluation (type nan), and so
    is one outside [0, 1] (type exception): it is not an accuracy, and as a fitness it would
    outrank every real one."""
    if isinstance(value, FitnessResult):
        return _checked_accuracies(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(
            f"the fitness function returned {type(value).__name__}; return a FitnessResult "
            "or a float (the validation accuracy)"
        )
    accuracy = float(value)
    if not math.isfinite(accuracy):
        reason = f"the fitness function returned {accuracy}"
        return FitnessResult.failed(reason, FAILURE_NAN, wall_seconds=wall_seconds)
    if not 0.0 <= accuracy <= 1.0:
        return FitnessResult.failed(
            _not_an_accuracy("returned", accuracy), FAILURE_EXCEPTION, wall_seconds=wall_seconds
        )
    return FitnessResult.succeeded(accuracy, wall_seconds=wall_seconds)


def _not_an_accuracy(what: str, value: float) -> str:
    return (
        f"the fitness function {what} {value}, not an accuracy in [0, 1]; return the fraction "
        "of images classified correctly"
    )


def _checked_accuracies(result: FitnessResult) -> FitnessResult:
    """``result``, or a failed one if it claims success with an impossible accuracy."""
    if result.status != OK:
        return result
    for field in ("val_accuracy", "test_accuracy"):
        value = getattr(result, field)
        if value is None and field == "test_accuracy":
            continue
        if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
            raise TypeError(
                f"the fitness function's FitnessResult has {field} = {value!r}; give a float"
            )
        measured = result.measured()
        if not math.isfinite(value):
            reason = f"the fitness function reported {field} = {value}"
            return FitnessResult.failed(reason, FAILURE_NAN, **measured)
        if not 0.0 <= value <= 1.0:
            reason = _not_an_accuracy(f"reported {field} =", value)
            return FitnessResult.failed(reason, FAILURE_EXCEPTION, **measured)
    return result


def make_work(
    config: dict[str, Any],
    cache: DatasetCache,
    run_dir: str | Path | None = None,
    epoch_hooks: EpochHooks | None = None,
) -> Work:
    """The task -> result function of one rank: the configured ``fitness.function``, or else
    the built-in :func:`evores.training.fitness.evaluate` /
    :func:`evores.training.fitness.train_and_test`.
    Makes this rank's process-wide device settings
    (:func:`evores.training.device.configure_process`).
    With ``run_dir``, the built-in final retraining saves each candidate's network there
    (:func:`evores.store.rundir.candidate_path`), before its result is returned and logged.
    ``epoch_hooks(task)``: a context manager giving the built-in training's ``on_epoch`` hook
    for ``task`` (or None), closed when the training ends (TensorBoard's per-epoch curves)."""
    space = SearchSpace.from_dict(config["space"])
    train = config["train"]
    per_gpu = train["evaluations_per_gpu"]
    device = resolve_device(train["device"], evaluations_per_gpu=per_gpu)
    configure_process(device, deterministic=train["deterministic"], evaluations_per_gpu=per_gpu)
    spec = config["fitness"]["function"]
    if spec:
        return _user_work(load_function(spec), config, cache, space, device)
    resizer = resizer_spec(config["data"])
    hooks = epoch_hooks or (lambda task: nullcontext(None))
    return _builtin_work(config["train"], cache, space, device, run_dir, resizer, hooks)


def _builtin_work(
    train: dict[str, Any],
    cache: DatasetCache,
    space: SearchSpace,
    device,
    run_dir=None,
    resizer: ResizerSpec | None = None,
    epoch_hooks: EpochHooks = lambda task: nullcontext(None),
) -> Work:
    """Tasks run by evores's own training, on data kept resident between tasks (with a
    learned ``resizer``, at its source resolutions)."""
    max_seconds = train["max_seconds"] or None
    resident: dict[tuple[int, bool], PreparedData] = {}

    def prepared(resolution: int, final: bool) -> PreparedData:
        if (resolution, final) not in resident:
            resident.clear()
            resident[resolution, final] = PreparedData.from_cache(
                cache, resolution, device=device, final=final, resizer=resizer
            )
        return resident[resolution, final]

    def work(task: dict[str, Any]) -> dict[str, Any]:
        hparams, resolution, seed = task["hparams"], task["resolution"], task["seed"]
        if task["kind"] == KIND_FINAL:
            # The final retraining has no time budget: it is the answer the whole run is for.
            data = prepared(resolution, final=True)
            with epoch_hooks(task) as on_epoch:
                result = train_and_test(
                    hparams,
                    resolution,
                    data,
                    seed=seed,
                    epochs=task["epochs"],
                    device=device,
                    space=space,
                    precision=train["precision"],
                    weights_to=None if run_dir is None else candidate_path(run_dir, task["key"][2]),
                    on_epoch=on_epoch,
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
        try:
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
        except (SystemExit, KeyboardInterrupt) as error:
            return _ended_by_user_code(error, time.perf_counter() - started).to_dict()
        wall_seconds = time.perf_counter() - started
        result = result_from_user(value, wall_seconds)
        if not final:
            result = _within_budget(result, wall_seconds, max_seconds)
        result = result.to_dict()
        if final and result.get("test_accuracy") is None:
            # What the function measured on its "val" split was the test split.
            result["test_accuracy"], result["val_accuracy"] = result["val_accuracy"], 0.0
        return result

    return work


def _ended_by_user_code(error: BaseException, wall_seconds: float) -> FitnessResult:
    """A fitness function's ``sys.exit`` or KeyboardInterrupt, as a failed evaluation.

    Ending the process from inside one evaluation would end a serial run without a word and
    hang an MPI job (rank 0 waits for the result). A KeyboardInterrupt is the user's code
    only where Python's own SIGINT handler is not installed: a run replaces it (see
    evores.execution.stopping) and evaluating ranks ignore SIGINT; where it is installed (evores
    used
    as a library) it may be a real Ctrl-C, and goes on up.
    """
    real_ctrl_c = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if isinstance(error, KeyboardInterrupt) and real_ctrl_c:
        raise error
    what = _what_user_code_raised(error) if isinstance(error, SystemExit) else "KeyboardInterrupt"
    reason = f"the fitness function ended the process ({what}); return a result instead"
    logger.error("%s", reason)
    return FitnessResult.failed(reason, FAILURE_EXCEPTION, wall_seconds=wall_seconds)


def _within_budget(
    result: FitnessResult, wall_seconds: float, max_seconds: float | None
) -> FitnessResult:
    """``result``, or a budget failure when the function returned after ``max_seconds``.

    A running function cannot be stopped from outside (in the driver's process or on a
    worker rank alike); it is handed ``max_seconds`` to keep to, and is held to it on return,
    as the built-in training is.
    """
    if max_seconds is None or wall_seconds <= max_seconds or result.status != OK:
        return result
    reason = (
        f"the fitness function took {wall_seconds:.1f} s, over train.max_seconds = {max_seconds:g}"
    )
    measured = {**result.measured(), "wall_seconds": wall_seconds}
    return FitnessResult.failed(reason, FAILURE_BUDGET, **measured)
