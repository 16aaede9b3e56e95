"""Fitness of one genome at one resolution: train the Hinz CNN, score it on validation data.

The data path follows airbench: a resolution's images live on the device as one uint8 tensor,
each batch is an index gather plus a float conversion and normalisation, and shuffling uses a
seeded ``torch.Generator``. Nothing is decoded or resized per epoch.

Training failures never escape :func:`evaluate` / :func:`train_and_test`; they come back as a
:class:`evores.core.results.FitnessResult` with ``status="failed"``, a failure type and
``val_accuracy=0.0`` (the penalty). Invalid hyperparameters are a programmer error and raise
:class:`ConfigError`. How long a training may run is a :class:`TrainBudget`. An ``on_epoch``
hook sees every epoch and may stop the training (:mod:`evores.training.pruning`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from evores.core.errors import ConfigError
from evores.core.results import (
    FAILURE_BUDGET,
    FAILURE_EXCEPTION,
    FAILURE_NAN,
    FAILURE_OOM,
    FitnessResult,
    one_line,
)
from evores.core.seeding import derive_seed
from evores.training.attempt import Attempt
from evores.training.defaults import TRAIN_DEFAULTS
from evores.training.device import check_interval, for_training, resolve_device, resolve_precision
from evores.training.model import build_cnn, count_parameters, weight_tensors
from evores.training.prepared import PreparedData, prepare
from evores.training.pruning import EpochHook, EpochReport, HookFailed, Pruned, call_hook
from evores.training.resizer import with_resizer
from evores.training.resources import (
    is_out_of_memory,
    keep_heap,
    release_memory,
    reset_peak_memory,
    torch_threads,
)

__all__ = [
    "EpochReport",  # defined in evores.training.pruning, with the hook's Pruned
    "FitnessResult",  # defined in evores.core.results; imported from here by users' code
    "PreparedData",
    "Pruned",
    "TrainBudget",
    "evaluate",
    "train_and_test",
    "resolve_device",  # defined in evores.training.device; imported from here by users' code
    "keep_heap",
]

logger = logging.getLogger("evores.training.fitness")

# evaluate() and a run share one set of training defaults: the [train] section's.
_TRAIN = TRAIN_DEFAULTS


# --------------------------------------------------------------------------- data


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
    device's :func:`evores.training.device.check_interval`, every batch on the CPU) and after every
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
    on_epoch: EpochHook | None = None,
) -> FitnessResult:
    """Train the genome's CNN at ``resolution`` and return its best validation accuracy.

    ``data``: a :class:`PreparedData`, a :class:`evores.data.cache.DatasetCache`, or a source
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
    ``precision``: "auto", "fp32" or "bf16" (see :func:`evores.training.device.resolve_precision`;
    the
    result records the one used). On a GPU, see ``train.deterministic``
    (:func:`evores.training.device.configure_process`). ``on_epoch``: called with an
    :class:`EpochReport` after every epoch; raising :class:`Pruned` stops the training with
    status "pruned" (:mod:`evores.training.pruning`).
    """
    _check_counts(max_epochs=max_epochs, patience=patience)
    start = time.perf_counter()
    genome, repairs = _checked_genome(hparams, resolution, space)
    prepared = prepare(data, resolution, device, filter, final=False)
    budget = TrainBudget(max_epochs, patience, max_seconds)
    with torch_threads(threads):
        return _train(
            genome, prepared, seed, budget, final=False, repairs=repairs, start=start,
            precision=precision, on_epoch=on_epoch,
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
    on_epoch: EpochHook | None = None,
) -> FitnessResult:
    """Retrain on train+val for exactly ``epochs`` epochs and score once on the test split.

    The result carries ``test_accuracy``; ``val_accuracy`` is 0.0 because there is no
    validation split in a final run, and ``best_epoch`` equals ``epochs``. A failed final run
    has status "failed" and ``test_accuracy`` 0.0. With PreparedData, its evaluation arrays
    are scored as the test set (build it with ``from_cache(..., final=True)``).
    ``weights_to``: a path where a successful retraining's network is saved, as safetensors
    with what rebuilding it needs (:func:`evores.training.weights.save_weights`).
    ``on_epoch``: as in :func:`evaluate`, with ``val_accuracy`` None; a pruned retraining is
    not scored (``test_accuracy`` None).
    """
    _check_counts(epochs=epochs)
    start = time.perf_counter()
    genome, repairs = _checked_genome(hparams, resolution, space)
    prepared = prepare(data, resolution, device, filter, final=True)
    budget = TrainBudget(max_epochs=epochs, patience=epochs, max_seconds=max_seconds)
    with torch_threads(threads):
        return _train(
            genome, prepared, seed, budget, final=True, repairs=repairs, start=start,
            precision=precision, weights_to=weights_to, on_epoch=on_epoch,
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
    on_epoch: EpochHook | None = None,
) -> FitnessResult:
    """Train and score ``hparams`` (valid and repaired) on ``data``; never raises for a
    training failure, which becomes a failed result. An out-of-memory is retried once at half
    the batch size. ``final``: train all ``budget.max_epochs`` and score once on the
    evaluation split (the test split); else validate every epoch and stop early. ``start``:
    when the evaluation began (``wall_seconds`` counts from it). ``precision``: as asked
    ("auto", "fp32", "bf16"); the result records what it resolved to. ``weights_to``: where
    the trained network goes when training succeeds (None: nowhere). ``on_epoch``: the
    per-epoch hook; its :class:`Pruned` makes a pruned result, any other exception a failed
    one."""
    hparams, repairs = dict(hparams), list(repairs)
    precision = resolve_precision(precision, data.device)
    budget = budget.started()  # after data preparation: a first cache build is not training
    reset_peak_memory(data.device)
    for attempt in range(2):
        progress = Attempt(precision=precision)
        try:
            network = _fit(hparams, data, seed, budget, progress, final=final, on_epoch=on_epoch)
        except ConfigError:
            raise  # the genome cannot be built: a programmer error, not a training failure
        except Pruned as exc:
            measured = progress.measured(start, data.device, repairs)
            val_accuracy = 0.0 if final else progress.best_accuracy
            reason = f"pruned after {progress.epochs} epoch(s): {one_line(exc)}"
            return FitnessResult.pruned(val_accuracy, reason, **measured)
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
        release_memory(data.device)  # after the handler, so the failed attempt is freed
    raise AssertionError("unreachable")


def _failure_of(exc: Exception, budget: TrainBudget, progress: Attempt) -> tuple[str, str]:
    """The failure type and one-line reason of a training that raised ``exc``."""
    if isinstance(exc, (_NonFinite, HookFailed)):
        return (FAILURE_NAN if isinstance(exc, _NonFinite) else FAILURE_EXCEPTION), str(exc)
    if isinstance(exc, _BudgetExceeded):
        epochs = progress.epochs
        return FAILURE_BUDGET, f"exceeded max_seconds={budget.max_seconds} after {epochs} epoch(s)"
    if is_out_of_memory(exc):
        return FAILURE_OOM, one_line(exc)
    logger.debug("training raised", exc_info=exc)
    return FAILURE_EXCEPTION, one_line(exc)


def _fit(
    hparams: dict,
    data: PreparedData,
    seed: int,
    budget: TrainBudget,
    progress: Attempt,
    *,
    final: bool,
    on_epoch: EpochHook | None = None,
) -> nn.Module:
    """Train a fresh network, score it and return it; ``progress`` records what happened, also
    when training raises. A search evaluation validates after every epoch and stops after
    ``budget.patience`` epochs without a strictly better accuracy; the final retraining runs
    all ``budget.max_epochs`` and is scored once, on the test split. ``on_epoch`` sees every
    epoch (and may raise :class:`Pruned` or anything else through :func:`call_hook`)."""
    network = init_model(hparams, data, seed)
    model = for_training(network, data.device, progress.precision)
    progress.n_parameters = count_parameters(model)
    optimizer = make_optimizer(model, hparams)
    shuffle = torch.Generator().manual_seed(derive_seed(seed, "shuffle"))
    batch_size = int(hparams["batch_size"])
    for epoch in range(1, budget.max_epochs + 1):
        start, trained = time.perf_counter(), progress.train_seconds
        train_loss = _train_epoch(model, optimizer, data, hparams, shuffle, budget, progress)
        progress.epochs = epoch
        val_accuracy = None if final else accuracy(model, data, batch_size)
        if val_accuracy is not None:
            progress.validated(epoch, val_accuracy)
        progress.epoch_seconds += time.perf_counter() - start
        seconds = progress.train_seconds - trained
        call_hook(on_epoch, EpochReport(epoch, val_accuracy, train_loss, seconds))
        if not final and epoch - progress.best_epoch >= budget.patience:
            break
    if final:
        progress.best_epoch = progress.epochs
        progress.test_accuracy = accuracy(model, data, batch_size)
    return network


def _save_network(network: nn.Module, hparams: dict, data: PreparedData, path) -> None:
    """The trained network with its genome (as repaired and built), resolution and the
    normalisation of its training data: all that rebuilding and feeding it needs."""
    from evores.training.weights import save_weights  # lazy: safetensors only for a kept network

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


def _train_epoch(model, optimizer, data, hparams, shuffle, budget, progress) -> float:
    """One pass over the training split in a seeded random order; returns its mean loss.

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
    return watch.mean()


def _check_training(watch: _LossWatch, budget: TrainBudget) -> None:
    """Raise _NonFinite for a NaN/inf loss so far, _BudgetExceeded past ``max_seconds``."""
    watch.check()
    if budget.expired():
        raise _BudgetExceeded("max_seconds exceeded")


class _LossWatch:
    """The first non-finite training loss and the losses' sum, kept on the device until
    :meth:`check` or :meth:`mean` reads them.

    ``first`` stays finite until a loss is NaN/inf and then keeps that loss, so one read of
    one scalar tells whether any loss since the start went bad, and which value it was.
    """

    def __init__(self, device: torch.device) -> None:
        self.first = torch.zeros((), device=device)
        self.total = torch.zeros((), device=device)
        self.steps = 0

    def update(self, loss: torch.Tensor) -> None:
        self.first = torch.where(torch.isfinite(self.first), loss.float(), self.first)
        self.total += loss.float()
        self.steps += 1

    def mean(self) -> float:
        """The mean loss so far (one read from the device)."""
        return float(self.total) / self.steps if self.steps else float("nan")

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


def _checked_genome(hparams: dict, resolution: int, space) -> tuple[dict, list[str]]:
    """Validate with ``space`` (ConfigError when invalid) and repair for the resolution."""
    from evores.strategies.space import (  # lazy: space and fitness are independent
        SearchSpace,
        repair,
    )

    space = SearchSpace() if space is None else space
    valid = space.validate(hparams)
    repaired, notes = repair(valid, resolution)
    return repaired, list(notes)


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if int(value) < 1:
            raise ConfigError(f"{name}={value} must be a positive integer")
