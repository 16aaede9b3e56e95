"""Fitness of one genome at one resolution: train the Hinz CNN, score it on validation data.

The data path follows airbench: a resolution's images live on the device as one uint8 tensor,
each batch is an index gather plus a float conversion and normalisation, and shuffling uses a
seeded ``torch.Generator``. Nothing is decoded or resized per epoch.

Training failures never escape :func:`evaluate` / :func:`train_and_test`; they come back as a
:class:`evores.results.FitnessResult` with ``status="failed"``, a failure type and
``val_accuracy=0.0`` (the penalty). Invalid hyperparameters are a programmer error and raise
:class:`ConfigError`. How long a training may run is a :class:`TrainBudget`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evores.config import DEFAULTS
from evores.device import check_interval, for_training, resolve_device, resolve_precision
from evores.errors import ConfigError, DataError
from evores.model import build_cnn, count_parameters, weight_tensors
from evores.resizer import ResizerSpec, with_resizer
from evores.results import (
    FAILURE_BUDGET,
    FAILURE_EXCEPTION,
    FAILURE_NAN,
    FAILURE_OOM,
    FitnessResult,
    one_line,
)
from evores.seeding import derive_seed

__all__ = [
    "FitnessResult",  # defined in evores.results; imported from here by users' code
    "PreparedData",
    "TrainBudget",
    "evaluate",
    "train_and_test",
    "resolve_device",  # defined in evores.device; imported from here by users' code
    "keep_heap",
]

logger = logging.getLogger("evores.fitness")

# evaluate() and a run share one set of training defaults: the [train] section's.
_TRAIN = DEFAULTS["train"]


# --------------------------------------------------------------------------- data


def _tensor(array: Any) -> torch.Tensor:
    if torch.is_tensor(array):
        return array
    array = np.asarray(array)
    return torch.as_tensor(array if array.flags.writeable else array.copy())


def _images(array: Any, name: str) -> torch.Tensor:
    """uint8 (N, C, H, W) images as a contiguous tensor."""
    tensor = _tensor(array)
    if tensor.dtype != torch.uint8:
        raise DataError(f"{name} has dtype {tensor.dtype}; images must be uint8 (N, C, H, W)")
    return tensor.contiguous()


def _labels(array: Any, name: str) -> torch.Tensor:
    """Integer class labels as int64."""
    tensor = _tensor(array)
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise DataError(f"{name} has dtype {tensor.dtype}; labels must be integer class indices")
    return tensor.to(torch.int64).contiguous()


def _check_split(x: torch.Tensor, y: torch.Tensor, n_classes: int, name: str) -> None:
    if x.ndim != 4 or x.shape[0] == 0:
        raise DataError(f"{name} images have shape {tuple(x.shape)}; need non-empty (N, C, H, W)")
    if y.shape != (x.shape[0],):
        raise DataError(f"{name} labels have shape {tuple(y.shape)}; need ({x.shape[0]},)")
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise DataError(
            f"{name} labels span {int(y.min())}..{int(y.max())}; need 0..{n_classes - 1}"
        )


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and std of uint8 images, from 256-bin histograms.

    Histograms avoid a float copy of the whole split (1.2 GB in float64 at 128 px) and make
    the statistics independent of summation order, hence of threads and device.
    """
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1).cpu(), minlength=256).to(torch.float64)
        n = hist.sum()
        mean = (hist * values).sum() / n
        var = (hist * (values - mean) ** 2).sum() / n
        means.append(float(mean))
        stds.append(float(var.sqrt()) or 1.0)  # a constant channel is left unscaled
    shape = (1, x.shape[1], 1, 1)
    return torch.tensor(means).reshape(shape), torch.tensor(stds).reshape(shape)


class PreparedData:
    """One resolution of a dataset held in memory on the training device.

    ``train_x`` / ``eval_x`` are uint8 ``(N, C, H, W)`` tensors, labels int64. ``eval_split``
    names what the evaluation arrays are: ``"val"`` or ``"test"`` when built from a cache,
    ``None`` when the caller supplied arrays (the caller then knows what they hold).
    With a learned ``resizer`` (:mod:`evores.resizer`) the arrays are at its source
    resolution and the network, resizer first, sees ``target`` px (``resolution``).
    """

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        eval_x: torch.Tensor,
        eval_y: torch.Tensor,
        n_classes: int,
        *,
        device: str | torch.device = "cpu",
        eval_split: str | None = None,
        resizer: ResizerSpec | None = None,
        target: int | None = None,
    ) -> None:
        if n_classes < 2:
            raise DataError(f"n_classes is {n_classes}; a classifier needs at least 2 classes")
        _check_split(train_x, train_y, n_classes, "train")
        _check_split(eval_x, eval_y, n_classes, "evaluation")
        if train_x.shape[1:] != eval_x.shape[1:]:
            raise DataError(
                f"train images are {tuple(train_x.shape[1:])} but evaluation images are "
                f"{tuple(eval_x.shape[1:])}; both splits must come from one resolution"
            )
        self.device = resolve_device(device)
        self.n_classes = int(n_classes)
        self.eval_split = eval_split
        self.resizer = resizer  # a learned resizer shrinks the images to ``target`` px
        self.target = int(target if resizer is not None and target else train_x.shape[-1])
        mean, std = _channel_stats(train_x)
        self.mean, self.std = mean.to(self.device), std.to(self.device)
        self.train_x, self.train_y = train_x.to(self.device), train_y.to(self.device)
        self.eval_x, self.eval_y = eval_x.to(self.device), eval_y.to(self.device)

    @classmethod
    def from_arrays(
        cls, train_x, train_y, val_x, val_y, n_classes: int, *, device: str | torch.device = "cpu"
    ) -> PreparedData:
        """From numpy arrays or tensors: images uint8 (N, C, H, W), integer labels (N,)."""
        return cls(
            _images(train_x, "train_x"),
            _labels(train_y, "train_y"),
            _images(val_x, "val_x"),
            _labels(val_y, "val_y"),
            n_classes,
            device=device,
        )

    @classmethod
    def from_cache(
        cls,
        cache,
        resolution: int,
        *,
        device: str | torch.device = "cpu",
        final: bool = False,
        resizer: ResizerSpec | None = None,
    ) -> PreparedData:
        """From a :class:`evores.cache.DatasetCache`.

        ``final=False``: train on "train", evaluate on "val" (the test split is never read).
        ``final=True``: train on "train+val", evaluate on "test". With a learned ``resizer``
        the images are read at its source resolution for ``resolution``.
        """
        train_split, eval_split = ("train+val", "test") if final else ("train", "val")
        stored = resolution if resizer is None else resizer.source_for(resolution)
        train_x, train_y = cache.arrays(stored, train_split)
        eval_x, eval_y = cache.arrays(stored, eval_split)
        return cls(
            _images(train_x, f"{train_split} images"),
            _labels(train_y, f"{train_split} labels"),
            _images(eval_x, f"{eval_split} images"),
            _labels(eval_y, f"{eval_split} labels"),
            cache.n_classes,
            device=device,
            eval_split=eval_split,
            resizer=resizer,
            target=resolution,
        )

    @property
    def resolution(self) -> int:
        """The side of the images the classifier sees."""
        return self.target

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    def to(self, device: str | torch.device) -> PreparedData:
        """The same data on ``device`` (self when already there)."""
        dev = resolve_device(device)
        if dev == self.device:
            return self
        moved = object.__new__(PreparedData)
        moved.__dict__.update(self.__dict__)
        for name in ("train_x", "train_y", "eval_x", "eval_y", "mean", "std"):
            setattr(moved, name, getattr(self, name).to(dev))
        moved.device = dev
        return moved

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images on the device -> normalised float32."""
        return images.float().sub_(self.mean).div_(self.std)

    def train_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather one training batch by index and normalise it on the device."""
        return self.normalise(self.train_x[indices]), self.train_y[indices]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The evaluation split in order, in chunks of ``batch_size``."""
        for start in range(0, self.eval_x.shape[0], batch_size):
            stop = start + batch_size
            yield self.normalise(self.eval_x[start:stop]), self.eval_y[start:stop]


def _prepare(data, resolution: int, device, filter: str, final: bool) -> PreparedData:
    """Turn any accepted ``data`` argument into PreparedData for ``resolution``."""
    if isinstance(data, PreparedData):
        prepared = data if device is None else data.to(device)
        if final and prepared.eval_split == "val":
            raise ConfigError(
                "train_and_test got PreparedData whose evaluation split is 'val'; "
                "build it with PreparedData.from_cache(..., final=True)"
            )
    else:
        if isinstance(data, (str, Path)):
            from evores.cache import open_cache  # lazy: fitness works from arrays alone

            data = open_cache(data, [resolution], filter=filter)
        prepared = PreparedData.from_cache(data, resolution, device=device or "auto", final=final)
    seen = prepared.train_x.shape[-2:] if prepared.resizer is None else (prepared.target,) * 2
    if tuple(seen) != (resolution, resolution):
        raise ConfigError(
            f"data holds {tuple(seen)} px images but resolution is "
            f"{resolution}; pass data prepared at that resolution"
        )
    return prepared


# --------------------------------------------------------------------------- training
#
# One evaluation, top to bottom: evaluate / train_and_test check the genome and prepare the
# data; _train turns every training failure into a result (retrying once after running out of
# memory); _fit is the epoch loop; _train_epoch the batch loop; train_step one SGD step.


@dataclass(frozen=True)
class TrainBudget:
    """How long one training may run.

    At most ``max_epochs`` epochs; when validating, it stops after ``patience`` epochs without
    a strictly better validation accuracy. ``max_seconds`` (None: no limit) bounds training
    plus validation from :meth:`started` on, checked every ``check_every`` batches (None: the
    device's :func:`evores.device.check_interval`, every batch on the CPU) and after every
    epoch; ``deadline`` is that limit on the ``time.perf_counter`` clock, None until started
    or when there is no limit.
    """

    max_epochs: int
    patience: int
    max_seconds: float | None = None
    deadline: float | None = None
    check_every: int | None = None

    def started(self) -> TrainBudget:
        """This budget with its clock running from now."""
        if self.max_seconds is None:
            return self
        return dataclasses.replace(self, deadline=time.perf_counter() + self.max_seconds)

    def expired(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline


def evaluate(
    hparams: dict,
    resolution: int,
    data,
    *,
    seed: int,
    device: str | torch.device | None = None,
    max_epochs: int = _TRAIN["max_epochs"],
    patience: int = _TRAIN["patience"],
    max_seconds: float | None = _TRAIN["max_seconds"] or None,
    space=None,
    filter: str = "box",
    threads: int | None = None,
    precision: str = "auto",
) -> FitnessResult:
    """Train the genome's CNN at ``resolution`` and return its best validation accuracy.

    ``data``: a :class:`PreparedData`, a :class:`evores.cache.DatasetCache`, or a source
    path/str (opened with ``open_cache(data, [resolution], filter=filter)``; ``filter`` is used
    only then). Only the train and val splits are read. Hyperparameters are validated with
    ``space`` (default ``SearchSpace()``; ConfigError when invalid) and then repaired for the
    resolution; the repair notes come back in ``repairs``. Training stops after ``patience``
    epochs without a strictly better validation accuracy, or at ``max_epochs``; the defaults
    are a run's (``train.max_epochs``, ``train.patience``, no time budget).
    ``max_seconds`` bounds training plus validation of this call (checked every few batches,
    every batch on the CPU;
    data loading excluded, one out-of-memory retry included). Same seed, same device and same
    thread count give a bit-identical result; another thread count may not (BLAS splits some
    gradient reductions by thread), so pass ``threads`` to make runs comparable.
    ``precision``: "auto", "fp32" or "bf16" (see :func:`evores.device.resolve_precision`; the
    result records the one used). On a GPU, see ``train.deterministic``
    (:func:`evores.device.configure_process`).
    """
    _check_counts(max_epochs=max_epochs, patience=patience)
    start = time.perf_counter()
    genome, repairs = _checked_genome(hparams, resolution, space)
    prepared = _prepare(data, resolution, device, filter, final=False)
    budget = TrainBudget(max_epochs, patience, max_seconds)
    with _threads(threads):
        return _train(
            genome, prepared, seed, budget, final=False, repairs=repairs, start=start,
            precision=precision,
        )  # fmt: skip


def train_and_test(
    hparams: dict,
    resolution: int,
    data,
    *,
    seed: int,
    epochs: int,
    device: str | torch.device | None = None,
    max_seconds: float | None = None,
    space=None,
    filter: str = "box",
    threads: int | None = None,
    precision: str = "auto",
    weights_to: str | Path | None = None,
) -> FitnessResult:
    """Retrain on train+val for exactly ``epochs`` epochs and score once on the test split.

    The result carries ``test_accuracy``; ``val_accuracy`` is 0.0 because there is no
    validation split in a final run, and ``best_epoch`` equals ``epochs``. A failed final run
    has status "failed" and ``test_accuracy`` 0.0. With PreparedData, its evaluation arrays
    are scored as the test set (build it with ``from_cache(..., final=True)``).
    ``weights_to``: a path where a successful retraining's network is saved, as safetensors
    with what rebuilding it needs (:func:`evores.winner.save_weights`).
    """
    _check_counts(epochs=epochs)
    start = time.perf_counter()
    genome, repairs = _checked_genome(hparams, resolution, space)
    prepared = _prepare(data, resolution, device, filter, final=True)
    budget = TrainBudget(max_epochs=epochs, patience=epochs, max_seconds=max_seconds)
    with _threads(threads):
        return _train(
            genome, prepared, seed, budget, final=True, repairs=repairs, start=start,
            precision=precision, weights_to=weights_to,
        )  # fmt: skip


def _train(
    hparams: dict,
    data: PreparedData,
    seed: int,
    budget: TrainBudget,
    *,
    final: bool,
    repairs: list[str],
    start: float,
    precision: str = "auto",
    weights_to: str | Path | None = None,
) -> FitnessResult:
    """Train and score ``hparams`` (valid and repaired) on ``data``; never raises for a
    training failure, which becomes a failed result. An out-of-memory is retried once at half
    the batch size. ``final``: train all ``budget.max_epochs`` and score once on the
    evaluation split (the test split); else validate every epoch and stop early. ``start``:
    when the evaluation began (``wall_seconds`` counts from it). ``precision``: as asked
    ("auto", "fp32", "bf16"); the result records what it resolved to. ``weights_to``: where
    the trained network goes when training succeeds (None: nowhere)."""
    hparams, repairs = dict(hparams), list(repairs)
    precision = resolve_precision(precision, data.device)
    budget = budget.started()  # after data preparation: a first cache build is not training
    _reset_peak_memory(data.device)
    for attempt in range(2):
        progress = _Progress(precision=precision)
        try:
            network = _fit(hparams, data, seed, budget, progress, final=final)
        except ConfigError:
            raise  # the genome cannot be built: a programmer error, not a training failure
        except Exception as exc:  # noqa: BLE001 - any training failure becomes a result
            failure, reason = _failure_of(exc, budget, progress)
        else:
            if weights_to is not None:
                _save_network(network, hparams, data, weights_to)
            measured = progress.measured(start, data.device, repairs)
            val_accuracy = 0.0 if final else progress.best_accuracy
            return FitnessResult.succeeded(val_accuracy, **measured)
        batch = int(hparams["batch_size"])
        if failure != FAILURE_OOM or attempt == 1 or batch < 2:
            logger.warning("evaluation failed (%s): %s", failure, reason)
            measured = progress.measured(start, data.device, repairs)
            measured["test_accuracy"] = 0.0 if final else None  # a failure scores nothing
            return FitnessResult.failed(reason, failure, **measured)
        repairs.append(f"batch size {batch} -> {batch // 2} after out-of-memory")
        hparams["batch_size"] = batch // 2
        _release_memory(data.device)  # after the handler, so the failed attempt is freed
    raise AssertionError("unreachable")


def _failure_of(exc: Exception, budget: TrainBudget, progress: _Progress) -> tuple[str, str]:
    """The failure type and one-line reason of a training that raised ``exc``."""
    if isinstance(exc, _NonFinite):
        return FAILURE_NAN, str(exc)
    if isinstance(exc, _BudgetExceeded):
        epochs = progress.epochs
        return FAILURE_BUDGET, f"exceeded max_seconds={budget.max_seconds} after {epochs} epoch(s)"
    if _is_oom(exc):
        return FAILURE_OOM, one_line(exc)
    logger.debug("training raised", exc_info=exc)
    return FAILURE_EXCEPTION, one_line(exc)


def _fit(
    hparams: dict,
    data: PreparedData,
    seed: int,
    budget: TrainBudget,
    progress: _Progress,
    *,
    final: bool,
) -> nn.Module:
    """Train a fresh network, score it and return it; ``progress`` records what happened, also
    when training raises. A search evaluation validates after every epoch and stops after
    ``budget.patience`` epochs without a strictly better accuracy; the final retraining runs
    all ``budget.max_epochs`` and is scored once, on the test split."""
    network = init_model(hparams, data, seed)
    model = for_training(network, data.device, progress.precision)
    progress.n_parameters = count_parameters(model)
    optimizer = make_optimizer(model, hparams)
    shuffle = torch.Generator().manual_seed(derive_seed(seed, "shuffle"))
    batch_size = int(hparams["batch_size"])
    for epoch in range(1, budget.max_epochs + 1):
        start = time.perf_counter()
        _train_epoch(model, optimizer, data, hparams, shuffle, budget, progress)
        progress.epochs = epoch
        if not final:
            progress.validated(epoch, accuracy(model, data, batch_size))
        progress.epoch_seconds += time.perf_counter() - start
        if not final and epoch - progress.best_epoch >= budget.patience:
            break
    if final:
        progress.best_epoch = progress.epochs
        progress.test_accuracy = accuracy(model, data, batch_size)
    return network


def _save_network(network: nn.Module, hparams: dict, data: PreparedData, path) -> None:
    """The trained network with its genome (as repaired and built), resolution and the
    normalisation of its training data: all that rebuilding and feeding it needs."""
    from evores.winner import save_weights  # lazy: safetensors only for a kept network

    metadata = {
        "hparams": hparams,
        "resolution": data.resolution,
        "mean": data.mean.flatten().tolist(),
        "std": data.std.flatten().tolist(),
    }
    if data.resizer is not None:
        metadata["resizer"] = data.resizer.to_dict()
        metadata["source_resolution"] = int(data.train_x.shape[-1])
    save_weights(network, path, metadata)


def _train_epoch(model, optimizer, data, hparams, shuffle, budget, progress) -> None:
    """One pass over the training split in a seeded random order.

    Nothing is read back from the device per step: the losses feed a :class:`_LossWatch` on
    the device, read with the clock every ``check_every`` steps and at the end of the epoch,
    so a NaN/inf loss or an exceeded ``max_seconds`` stops training within that many steps.
    """
    batch_size = int(hparams["batch_size"])
    l1, l2 = float(hparams["l1"]), float(hparams["l2"])
    every = budget.check_every or check_interval(data.device)
    order = torch.randperm(data.train_x.shape[0], generator=shuffle).to(data.device)
    watch = _LossWatch(data.device)
    start = time.perf_counter()
    try:
        for step, batch in enumerate(order.split(batch_size), start=1):
            x, y = data.train_batch(batch)
            watch.update(train_step(model, optimizer, x, y, l1, l2))
            progress.images += int(batch.shape[0])
            if step % every == 0:
                _check_training(watch, budget)
        _check_training(watch, budget)
    finally:  # a failed epoch's batches still count towards images_per_second
        progress.train_seconds += time.perf_counter() - start


def _check_training(watch: _LossWatch, budget: TrainBudget) -> None:
    """Raise _NonFinite for a NaN/inf loss so far, _BudgetExceeded past ``max_seconds``."""
    watch.check()
    if budget.expired():
        raise _BudgetExceeded("max_seconds exceeded")


class _LossWatch:
    """The first non-finite training loss, kept on the device until :meth:`check` reads it.

    ``first`` stays finite until a loss is NaN/inf and then keeps that loss, so one read of
    one scalar tells whether any loss since the start went bad, and which value it was.
    """

    def __init__(self, device: torch.device) -> None:
        self.first = torch.zeros((), device=device)

    def update(self, loss: torch.Tensor) -> None:
        self.first = torch.where(torch.isfinite(self.first), loss.float(), self.first)

    def check(self) -> None:
        value = float(self.first)
        if not math.isfinite(value):
            raise _NonFinite(f"loss became {value}")


def train_step(model: nn.Module, optimizer, x, y, l1: float, l2: float) -> torch.Tensor:
    """One SGD step on a batch; returns the loss (detached, on the device: reading it back is
    the caller's choice, so a step never waits for the GPU)."""
    optimizer.zero_grad(set_to_none=True)
    loss = objective(model, x, y, l1, l2)
    loss.backward()
    optimizer.step()
    return loss.detach()


def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, l1: float, l2: float):
    """Cross-entropy plus l1 * sum|w| + l2 * sum w^2 over weights (biases are not penalised)."""
    loss = F.cross_entropy(model(x), y)
    if l1 or l2:
        weights = weight_tensors(model)
        if l1:
            loss = loss + l1 * sum(w.abs().sum() for w in weights)
        if l2:
            loss = loss + l2 * sum(w.pow(2).sum() for w in weights)
    return loss


def make_optimizer(model: nn.Module, hparams: dict) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 at the genome's learning rate (regularisation is in the loss)."""
    return torch.optim.SGD(model.parameters(), lr=float(hparams["learning_rate"]), momentum=0.9)


def init_model(hparams: dict, data: PreparedData, seed: int) -> nn.Module:
    """Build and initialise the network reproducibly without touching the caller's RNG.

    Initialisation always happens on the CPU, so a seed gives the same weights on any device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(derive_seed(seed, "init"))
        model = build_cnn(hparams, data.resolution, data.n_classes, data.in_channels)
        if data.resizer is not None:  # built after the classifier: its weights stay the same
            model = with_resizer(model, data.resizer, data.resolution, data.in_channels)
    return model.to(data.device)


@torch.no_grad()
def accuracy(model: nn.Module, data: PreparedData, batch_size: int) -> float:
    """Accuracy on the evaluation split; non-finite outputs raise _NonFinite.

    Correct predictions and the finiteness of the outputs are counted on the device and read
    back once, after the last batch."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=data.device)
    finite = torch.ones((), dtype=torch.bool, device=data.device)
    for x, y in data.eval_batches(batch_size):
        logits = model(x)
        finite &= torch.isfinite(logits).all()
        correct += (logits.argmax(dim=1) == y).sum()
    model.train()
    if not bool(finite):
        raise _NonFinite("network outputs became non-finite")
    return int(correct) / int(data.eval_y.shape[0])


class _NonFinite(Exception):
    """The loss or the network's outputs became NaN or infinite."""


class _BudgetExceeded(Exception):
    """The evaluation ran out of its ``max_seconds``."""


@dataclass
class _Progress:
    """Mutable record of one training attempt, readable after it fails."""

    epochs: int = 0
    best_epoch: int = 0
    best_accuracy: float = 0.0
    train_seconds: float = 0.0
    epoch_seconds: float = 0.0
    images: int = 0
    n_parameters: int = 0
    test_accuracy: float | None = None  # the final retraining's score
    precision: str = "fp32"  # what the training ran in (evores.device.resolve_precision)

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
            "peak_memory_bytes": _peak_memory(device),
            "images_per_second": _rate(self.images, self.train_seconds),
            "precision": self.precision,
        }


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> int:
    """CUDA max allocated bytes on a GPU; on the CPU the process's peak RSS (lifetime)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource  # Unix only
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def _release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def _checked_genome(hparams: dict, resolution: int, space) -> tuple[dict, list[str]]:
    """Validate with ``space`` (ConfigError when invalid) and repair for the resolution."""
    from evores.space import SearchSpace, repair  # lazy: space and fitness are independent

    space = SearchSpace() if space is None else space
    valid = space.validate(hparams)
    repaired, notes = repair(valid, resolution)
    return repaired, list(notes)


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (untouched when ``threads`` is None)."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ConfigError(f"threads={threads} must be at least 1 (or None to leave torch alone)")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if int(value) < 1:
            raise ConfigError(f"{name}={value} must be a positive integer")


def keep_heap(trim_threshold: int = 1 << 30) -> bool:
    """Opt-in: make glibc keep freed memory instead of mapping/unmapping it every batch.

    Sets ``mallopt(M_MMAP_MAX, 0)`` and a large ``M_TRIM_THRESHOLD`` for the whole process
    (see /work/shared/perf/NOTES.md: large activation buffers otherwise page-fault on every
    batch). Affects every allocation in the process and cannot be undone cleanly, so only
    call it from an entry point you own (a worker, a benchmark), never from a library.
    Returns False where glibc's mallopt is not available.
    """
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    ok = mallopt(m_trim_threshold, int(trim_threshold)) == 1
    return bool(mallopt(m_mmap_max, 0) == 1 and ok)
