"""A dataset split at one resolution, ready to train on: uint8 images on the device, labels, and
the channel statistics that normalise them (the airbench layout: batches are index gathers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evores.core.errors import ConfigError, DataError
from evores.data.resizing import ResizerSpec
from evores.training.device import resolve_device


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
    With a learned ``resizer`` (:mod:`evores.training.resizer`) the arrays are at its source
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
        """From a :class:`evores.data.cache.DatasetCache`.

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


def prepare(data, resolution: int, device, filter: str, final: bool) -> PreparedData:
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
            from evores.data.cache import open_cache  # lazy: fitness works from arrays alone

            data = open_cache(data, [resolution], filter=filter)
        prepared = PreparedData.from_cache(data, resolution, device=device or "auto", final=final)
    seen = prepared.train_x.shape[-2:] if prepared.resizer is None else (prepared.target,) * 2
    if tuple(seen) != (resolution, resolution):
        raise ConfigError(
            f"data holds {tuple(seen)} px images but resolution is "
            f"{resolution}; pass data prepared at that resolution"
        )
    return prepared
