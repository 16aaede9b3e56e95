"""Seconds per training epoch: evores' cached uint8 pipeline vs a naive torchvision pipeline.

For each resolution, one fixed genome (3 conv 32/64/64 3x3, FC 128, batch 64, lr 0.01) trains
for --epochs epochs on the same images twice, side by side:

* cached: the train split of evores' HDF5 cache (evores.data.cache.open_cache), one uint8 tensor
  per resolution (evores.training.fitness.PreparedData); a batch is an index gather + float
  conversion
  + normalisation;
* naive:  torchvision ImageFolder + Resize + ToTensor + Normalize through a DataLoader
  (num_workers=0), decoding and resizing every JPEG every epoch.

The data part of each batch (producing the normalised float batch) is timed apart from the
compute part (forward, backward, step), so the table shows the share of an epoch spent on data.
The last columns compare how the compute cost per image grows with resolution against the
MAC ratio from evores.training.model.conv_flops. Figures are printed, never asserted.

    python experiments/pipeline_speed.py [DATASET] --resolutions 32 64 --epochs 2 [--limit N]
    python experiments/pipeline_speed.py --keep-heap   # glibc keeps its heap (NOTES.md)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

from evores.training.fitness import (  # noqa: E402
    PreparedData,
    init_model,
    keep_heap,
    make_optimizer,
    train_step,
)
from evores.training.model import conv_flops  # noqa: E402

GENOME = {
    "learning_rate": 0.01,
    "conv_filters": [32, 64, 64],
    "conv_kernels": [3, 3, 3],
    "fc_units": [128],
    "batch_size": 64,
    "l1": 0.0,
    "l2": 0.0,
}
SEED = 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "dataset",
        nargs="?",
        type=Path,
        default=REPO.parent / "shared" / "datasets" / "imagenette224",
        help="ImageFolder-layout dataset with a train/ folder (default: ../shared/datasets/"
        "imagenette224 beside the checkout)",
    )
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per pipeline")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--limit", type=int, default=None, help="use only N training images")
    parser.add_argument("--keep-heap", action="store_true", help="call keep_heap()")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "evores",
        help="where evores keeps its dataset caches",
    )  # fmt: skip
    return parser.parse_args(argv)


def subset(n: int, limit: int | None) -> np.ndarray:
    """The same deterministic image subset for both pipelines."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(SEED).permutation(n)[:limit])


def load_cached(dataset: Path, resolutions: list[int], limit: int | None, cache_dir: Path):
    """The train split of evores' HDF5 cache of ``dataset`` at every resolution (built on the
    first call, reused after), as uint8 (N, 3, r, r) arrays, first ``limit`` images only."""
    from evores.data.cache import open_cache

    start = time.perf_counter()
    cache = open_cache(dataset, resolutions, cache_dir=cache_dir)
    arrays = {}
    for r in resolutions:
        x, y = cache.arrays(r, "train")
        keep = subset(len(y), limit)
        arrays[r] = (np.ascontiguousarray(x[keep]), np.asarray(y[keep], dtype=np.int64))
    return arrays, cache.n_classes, time.perf_counter() - start


def cached_epochs(data: PreparedData) -> Iterator[tuple[float, float]]:
    """(data seconds, compute seconds) of each next epoch of the cached pipeline."""
    model, generator = init_model(GENOME, data, SEED), torch.Generator().manual_seed(SEED)
    optimizer = make_optimizer(model, GENOME)
    n = data.train_x.shape[0]
    warm_up(model, optimizer, *data.train_batch(torch.arange(min(n, 64))))
    while True:
        t_data = t_compute = 0.0
        t0 = time.perf_counter()
        batches = torch.randperm(n, generator=generator).split(GENOME["batch_size"])
        t_data += time.perf_counter() - t0
        for batch in batches:
            t0 = time.perf_counter()
            x, y = data.train_batch(batch)
            t1 = time.perf_counter()
            train_step(model, optimizer, x, y, 0.0, 0.0)
            t_data, t_compute = t_data + t1 - t0, t_compute + time.perf_counter() - t1
        yield t_data, t_compute


def train_folder(dataset: Path, transform=None):
    from torchvision import datasets

    return datasets.ImageFolder(str(dataset / "train"), transform=transform)


def naive_loader(dataset: Path, resolution: int, keep: np.ndarray, mean, std):
    """The textbook pipeline: decode, resize and convert every image in every epoch."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Resize((resolution, resolution)),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    return DataLoader(
        Subset(train_folder(dataset, transform), keep.tolist()),
        batch_size=GENOME["batch_size"],
        shuffle=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(SEED),
    )


def naive_epochs(loader, data: PreparedData) -> Iterator[tuple[float, float]]:
    """(data seconds, compute seconds) of each next naive epoch; same model, init and step."""
    model = init_model(GENOME, data, SEED)
    optimizer = make_optimizer(model, GENOME)
    warm_up(model, optimizer, *data.train_batch(torch.arange(min(data.train_x.shape[0], 64))))
    while True:
        t_data = t_compute = 0.0
        t0 = time.perf_counter()
        for x, y in loader:
            t1 = time.perf_counter()
            train_step(model, optimizer, x, y, 0.0, 0.0)
            t2 = time.perf_counter()
            t_data, t_compute = t_data + t1 - t0, t_compute + t2 - t1
            t0 = time.perf_counter()
        yield t_data, t_compute


def warm_up(model, optimizer, x, y) -> None:
    """A few untimed steps so allocator and kernel set-up do not land in the first epoch."""
    for _ in range(3):
        train_step(model, optimizer, x, y, 0.0, 0.0)


def interleaved(first: Iterator, second: Iterator, epochs: int) -> tuple[tuple, tuple]:
    """Alternate the two pipelines epoch by epoch so that both see the same machine load."""
    a, b = [], []
    for _ in range(epochs):
        a.append(next(first))
        b.append(next(second))
    return summary(a), summary(b)


def summary(timings: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Median epoch seconds, median data seconds, median compute seconds."""
    return (
        statistics.median(d + c for d, c in timings),
        statistics.median(d for d, _ in timings),
        statistics.median(c for _, c in timings),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.dataset / "train").is_dir():
        print(f"no train/ folder in {args.dataset}; pass an ImageFolder dataset", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    heap = keep_heap() if args.keep_heap else False
    arrays, n_classes, build_seconds = load_cached(
        args.dataset, args.resolutions, args.limit, args.cache_dir
    )
    # The naive pipeline reads as many images of train/ as the cached train split holds.
    n_train = len(arrays[args.resolutions[0]][1])
    keep = subset(len(train_folder(args.dataset).targets), n_train)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, heap kept: {heap}, "
        f"epochs timed: {args.epochs}, cache ready in {build_seconds:.1f} s, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    header = (
        f"{'px':>4} {'images':>6} | {'cached s/ep':>11} {'data %':>6} | {'naive s/ep':>10} "
        f"{'data %':>6} | {'naive/cached':>12} | {'compute ms/img':>14} {'growth':>6} "
        f"{'MAC ratio':>9}"
    )
    print(header)
    print("-" * len(header))
    base = None
    for r in args.resolutions:
        x, y = arrays[r]
        data = PreparedData.from_arrays(x, y, x[:64], y[:64], n_classes)
        mean, std = data.mean.flatten() / 255, data.std.flatten() / 255
        loader = naive_loader(args.dataset, r, keep, mean.tolist(), std.tolist())
        cached, naive = interleaved(cached_epochs(data), naive_epochs(loader, data), args.epochs)
        per_image = cached[2] / len(y) * 1e3
        macs = conv_flops(GENOME, r, n_classes=n_classes)
        base = base or (per_image, macs)
        print(
            f"{r:>4} {len(y):>6} | {cached[0]:>11.2f} {100 * cached[1] / cached[0]:>5.1f}% | "
            f"{naive[0]:>10.2f} {100 * naive[1] / naive[0]:>5.1f}% | {naive[0] / cached[0]:>11.2f}x"
            f" | {per_image:>14.3f} {per_image / base[0]:>5.1f}x {macs / base[1]:>8.1f}x"
        )
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    print(
        f"MACs/image (fwd) at {args.resolutions[0]} px: {base[1] / 1e6:.1f} M; growth = compute "
        "time per image relative to the first resolution; data % = share of the epoch spent "
        "producing normalised batches"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
