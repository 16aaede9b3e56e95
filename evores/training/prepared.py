"""A dataset split at one resolution, ready to train on: uint8 images on the device, labels, and
the channel statistics that normalise them (the airbench layout: batches are index gathers).

A rung whose train and evaluation images exceed the rank's memory budget
(``data.memory_budget``; 0: half the memory available on the node, shared among the ranks
SLURM or the MPI launcher put there) is read through a memory map of the cache file instead:
the images stay in the page cache, one physical copy for every rank of the node, and each
batch is gathered from the map and moved to the device. The batches are the same bytes, so
the results are the same as in memory for the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evores.core.errors import ConfigError, DataError
from evores.data.resizing import ResizerSpec
from evores.hpc.environment import SlurmEnvironment
from evores.training.device import resolve_device

# Of the memory available on a node, the share its ranks' in-memory rungs may take together
# by default: the rest is for torch, the networks' activations and the batches (the planner's
# peak memory), and for the page cache that the mapped rungs are read through.
AUTO_BUDGET_SHARE = 0.5
# Rows of images counted at a time for the channel statistics: bounds the copy a mapped
# split's channel would otherwise make whole.
_STATS_ROWS = 4096
# Outside SLURM: how many ranks the MPI launchers (MPICH/Hydra, Open MPI) put on this node.
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")


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
        counts = torch.zeros(256, dtype=torch.int64)
        for start in range(0, x.shape[0], _STATS_ROWS):
            rows = x[start : start + _STATS_ROWS, c].reshape(-1).cpu()
            counts += torch.bincount(rows, minlength=256)
        hist = counts.to(torch.float64)
        n = hist.sum()
        mean = (hist * values).sum() / n
        var = (hist * (values - mean) ** 2).sum() / n
        means.append(float(mean))
        stds.append(float(var.sqrt()) or 1.0)  # a constant channel is left unscaled
    shape = (1, x.shape[1], 1, 1)
    return torch.tensor(means).reshape(shape), torch.tensor(stds).reshape(shape)


class PreparedData:
    """One resolution of a dataset held in memory on the training device, or (``mapped``) its
    images read through a memory map on the host and each batch moved to the device.

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
        mapped: bool = False,
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
        self.mapped = mapped  # the images stay in the (shared) map; batches travel
        images_on = torch.device("cpu") if mapped else self.device
        self.train_x, self.train_y = train_x.to(images_on), train_y.to(self.device)
        self.eval_x, self.eval_y = eval_x.to(images_on), eval_y.to(self.device)

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
        the images are read at its source resolution for ``resolution``. Mapped when the two
        splits' images exceed the cache's ``memory_budget`` (see :func:`memory_budget`).
        """
        train_split, eval_split = ("train+val", "test") if final else ("train", "val")
        stored = resolution if resizer is None else resizer.source_for(resolution)
        read = cache.mapped if maps(cache, stored, (train_split, eval_split)) else cache.arrays
        train_x, train_y = read(stored, train_split)
        eval_x, eval_y = read(stored, eval_split)
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
            mapped=isinstance(train_x, np.memmap) and isinstance(eval_x, np.memmap),
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
        names = ("train_y", "eval_y", "mean", "std")
        for name in names if self.mapped else ("train_x", "eval_x", *names):
            setattr(moved, name, getattr(self, name).to(dev))
        moved.device = dev
        return moved

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images on the device -> normalised float32."""
        return images.float().sub_(self.mean).div_(self.std)

    def train_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather one training batch by index and normalise it on the device (mapped: gather
        from the map on the host, then move the batch)."""
        if self.mapped:
            images = self.train_x[indices.cpu()].to(self.device)
            return self.normalise(images), self.train_y[indices]
        return self.normalise(self.train_x[indices]), self.train_y[indices]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The evaluation split in order, in chunks of ``batch_size``."""
        for start in range(0, self.eval_x.shape[0], batch_size):
            stop = start + batch_size
            images = self.eval_x[start:stop].to(self.device)  # a no-op unless mapped
            yield self.normalise(images), self.eval_y[start:stop]


def maps(cache, resolution: int, splits: tuple[str, ...]) -> bool:
    """Whether a rung reading ``splits`` of ``cache`` at ``resolution`` is read through a
    memory map: its images exceed the rank's budget and the cache can be mapped."""
    if not hasattr(cache, "mapped") or not hasattr(cache, "split_bytes"):
        return False  # an object that only offers arrays(), e.g. a user's own
    needed = sum(cache.split_bytes(resolution, split) for split in splits)
    return needed > memory_budget(getattr(cache, "memory_budget", 0))


def memory_budget(setting: int) -> int:
    """The bytes of a rung's images one rank may hold in memory: ``setting`` when positive,
    else :data:`AUTO_BUDGET_SHARE` of the memory available now, divided among the node's
    ranks."""
    if setting > 0:
        return int(setting)
    return int(AUTO_BUDGET_SHARE * available_memory() / ranks_on_node())


def available_memory() -> int:
    """Bytes this process could still take: the kernel's MemAvailable, or the headroom of
    its cgroup's limit when that is lower (a SLURM job's --mem)."""
    available = _meminfo_available()
    headroom = _cgroup_headroom()
    return min(available, headroom) if headroom is not None else available


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    pages, size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return int(pages * size)


# The memory controller's files: cgroup v2 (one hierarchy) and v1 (its own "memory" one).
# v1 writes "no limit" as a huge number; anything over 2**60 bytes is taken as none.
_CGROUP_MEMORY = {"v2": ("", "memory.max", "memory.current"),
                  "v1": ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes")}  # fmt: skip


def _cgroup_headroom(
    table: str = "/proc/self/cgroup", root: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """The least limit-minus-usage over this process's memory cgroup and the groups above it
    (SLURM limits the job's group, not the task's), v2 or v1; None where nothing is limited."""
    try:
        with open(table, encoding="ascii") as cgroups:
            lines = cgroups.read().splitlines()
    except OSError:
        return None
    headrooms = []
    for line in lines:
        _, controllers, group = line.split(":", 2)
        version = "v2" if controllers == "" else "v1" if "memory" in controllers.split(",") else ""
        if not version:
            continue
        mount, limit_name, usage_name = _CGROUP_MEMORY[version]
        top = root / mount if mount else root
        folder = top / group.lstrip("/")
        while folder == top or top in folder.parents:
            headrooms += _headroom(folder, limit_name, usage_name)
            if folder == top:
                break
            folder = folder.parent
    return min(headrooms, default=None)


def _headroom(folder: Path, limit_name: str, usage_name: str) -> list[int]:
    try:
        limit = (folder / limit_name).read_text().strip()
        if limit == "max" or int(limit) > 1 << 60:
            return []
        return [max(0, int(limit) - int((folder / usage_name).read_text()))]
    except (OSError, ValueError):
        return []


def ranks_on_node() -> int:
    """The ranks sharing this node: SLURM's tasks on it, else the MPI launcher's count, else 1."""
    slurm = SlurmEnvironment.from_env()
    if slurm.in_job:
        return max(1, slurm.local_tasks)
    for var in _LOCAL_SIZE_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


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
