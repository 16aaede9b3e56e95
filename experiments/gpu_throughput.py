"""Evaluations per GPU-hour on one GPU: a naive PyTorch loop vs evores, K evaluations per GPU.

One population of genomes sampled from the default search space (seeded) is trained at each
resolution, every genome for ``--epochs`` epochs with a validation pass after each, by:

* ``naive fp32``: the textbook loop, one evaluation at a time: torchvision ``ImageFolder`` +
  ``Resize`` + ``ToTensor`` + ``Normalize`` through a ``DataLoader`` (``--naive-workers``
  processes), batches copied to the GPU, ``loss.item()`` every step, fp32;
* ``evores fp32 K=1`` / ``evores bf16 K=1``: :func:`evores.training.fitness.evaluate` on the
resolution
  cache held on the GPU, one rank; ``bf16 K=1 autotune`` the same with
  ``train.deterministic = false`` (cuDNN autotuning), for the cost of determinism;
* ``evores bf16 K=k``: k processes on the one GPU, each a rank as evores runs it
  (:func:`evores.training.device.configure_process` with ``evaluations_per_gpu=k``), splitting the
  population; under CUDA MPS when the environment has it (``CUDA_MPS_PIPE_DIRECTORY``).

Per cell it prints evaluations per GPU-hour (population / wall time of the population; data
loading and one warm-up evaluation per process excluded), training images per second,
achieved TFLOP/s (6 x forward MACs per training image + 2 x per validation image, from
:func:`evores.training.model.conv_flops`) against the GPU's bf16 matrix peak measured here (8192^3
``torch.matmul``), and the GPU busy share (``utilization.gpu`` sampled from NVML /
nvidia-smi during the cell). Figures are printed (and with ``--out`` appended as JSON lines),
never asserted. Without CUDA it says so and exits 0; ``--allow-cpu`` runs the same code on
the CPU, a check of the script itself whose figures mean nothing for a GPU.

    python experiments/gpu_throughput.py [DATASET] --resolutions 32 64 128 --population 16 \\
        --epochs 2 --per-gpu 2 4 8 --max-seconds 300 --out figures.jsonl
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

from evores.strategies.space import SearchSpace, repair  # noqa: E402
from evores.training.device import configure_process  # noqa: E402
from evores.training.fitness import PreparedData, evaluate, objective  # noqa: E402
from evores.training.model import build_cnn, conv_flops  # noqa: E402

DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "imagenette224"
SEED = 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "dataset",
        nargs="?",
        type=Path,
        default=DEFAULT_DATASET,
        help="ImageFolder dataset with train/ and val/ (default: imagenette224)",
    )
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--per-gpu",
        type=int,
        nargs="*",
        default=[2, 4, 8],
        help="the K > 1 to measure (bf16, K processes on the one GPU)",
    )
    parser.add_argument("--naive-workers", type=int, default=4)
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="start no new cell after this many seconds"
    )
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="without CUDA, run on the CPU (checks the script, not a figure)",
    )
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- the population


def population(size: int) -> list[dict]:
    """``size`` genomes of the default search space, the same for every cell."""
    rng = np.random.default_rng(SEED)
    space = SearchSpace()
    return [space.sample(rng) for _ in range(size)]


def work_flops(genomes: list[dict], resolution: int, n_classes: int, images: dict) -> float:
    """FLOPs of training and validating ``genomes`` as measured: 6 x MACs per training image
    (forward plus two backward products), 2 x MACs per validation image, per epoch."""
    total = 0.0
    for hparams in genomes:
        macs = conv_flops(repair(hparams, resolution)[0], resolution, n_classes=n_classes)
        total += macs * (6 * images["train"] + 2 * images["val"])
    return total


# --------------------------------------------------------------------------- evores cells


def _rank(
    rank,
    k,
    cache_path,
    resolution,
    genomes,
    epochs,
    precision,
    deterministic,
    device_name,
    ready,
    go,
    results,
) -> None:
    """One evaluating process: load the data onto the device, warm up, wait, evaluate its
    share of the population (every k-th genome from ``rank``), report its results."""
    from evores.data.cache import read_cache

    device = torch.device(device_name)
    configure_process(device, deterministic=deterministic, evaluations_per_gpu=k)
    data = PreparedData.from_cache(read_cache(cache_path), resolution, device=device)
    mine = range(rank, len(genomes), k)  # seeded by the genome's index: the same for any k
    evaluate(
        genomes[rank % len(genomes)],
        resolution,
        data,
        seed=SEED,
        max_epochs=1,
        patience=1,
        precision=precision,
    )
    ready.put(rank)
    go.wait()
    out = []
    for i in mine:
        result = evaluate(
            genomes[i],
            resolution,
            data,
            seed=SEED + i,
            max_epochs=epochs,
            patience=epochs,
            precision=precision,
        )
        out.append(result.to_dict())
    results.put((rank, time.perf_counter(), out))


def evores_cell(args, cache_path, resolution, genomes, k, precision, deterministic, device):
    """Wall seconds and results of the population trained by k evores processes."""
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(
            target=_rank,
            args=(
                rank,
                k,
                cache_path,
                resolution,
                genomes,
                args.epochs,
                precision,
                deterministic,
                str(device),
                ready,
                go,
                results,
            ),
        )
        for rank in range(k)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=900)
    start = time.perf_counter()
    go.set()
    finished = [results.get(timeout=3600) for _ in processes]
    for process in processes:
        process.join()
    wall = max(end for _, end, _ in finished) - start
    return wall, [r for _, _, rs in finished for r in rs]


# --------------------------------------------------------------------------- the naive loop


def naive_loaders(dataset: Path, resolution: int, limits: dict, workers: int, batch: int):
    """ImageFolder train/val loaders decoding and resizing every JPEG in every epoch."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize((resolution, resolution)),
            transforms.ToTensor(),
            transforms.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]),
        ]
    )
    loaders = {}
    for split in ("train", "val"):
        folder = datasets.ImageFolder(str(dataset / split), transform=transform)
        keep = np.random.default_rng(SEED).permutation(len(folder))[: limits[split]]
        loaders[split] = DataLoader(
            Subset(folder, sorted(keep.tolist())),
            batch_size=batch,
            shuffle=split == "train",
            num_workers=workers,
        )
    return loaders


def naive_evaluation(hparams, resolution, n_classes, dataset, limits, workers, device, epochs):
    """One evaluation the textbook way; returns the best validation accuracy."""
    hparams = repair(hparams, resolution)[0]
    torch.manual_seed(SEED)
    loaders = naive_loaders(dataset, resolution, limits, workers, int(hparams["batch_size"]))
    model = build_cnn(hparams, resolution, n_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=hparams["learning_rate"], momentum=0.9)
    best, l1, l2 = 0.0, float(hparams["l1"]), float(hparams["l2"])
    for _ in range(epochs):
        model.train()
        running = 0.0
        for x, y in loaders["train"]:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = objective(model, x, y, l1, l2)
            loss.backward()
            optimizer.step()
            running += loss.item()
        model.eval()
        correct = seen = 0
        with torch.no_grad():
            for x, y in loaders["val"]:
                x, y = x.to(device), y.to(device)
                correct += (model(x).argmax(1) == y).sum().item()
                seen += len(y)
        best = max(best, correct / seen)
    return best


def naive_cell(args, resolution, genomes, n_classes, limits, device):
    naive_evaluation(
        genomes[0], resolution, n_classes, args.dataset, limits, args.naive_workers, device, 1
    )  # warm-up
    start = time.perf_counter()
    for hparams in genomes:
        naive_evaluation(
            hparams,
            resolution,
            n_classes,
            args.dataset,
            limits,
            args.naive_workers,
            device,
            args.epochs,
        )
    return time.perf_counter() - start, []


# --------------------------------------------------------------------------- measuring


class BusySampler:
    """The GPU's ``utilization.gpu`` (share of time a kernel ran) sampled every 0.2 s."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples, self.source = device, [], self._source(device)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _source(device):
        if device.type != "cuda":
            return None
        try:
            torch.cuda.utilization(device)  # needs NVML (the nvidia-ml-py package)
            return lambda: torch.cuda.utilization(device)
        except Exception:  # noqa: BLE001 - no NVML: fall back to nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        index = str(device.index or 0)

        def smi() -> int:
            command = [
                "nvidia-smi",
                "-i",
                index,
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
            ]
            return int(subprocess.run(command, capture_output=True, text=True).stdout.strip())

        return smi

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.samples.append(self.source())
            except Exception:  # noqa: BLE001 - a failed sample is a missing sample
                pass

    def __enter__(self) -> BusySampler:
        if self.source is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def share(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else None


def bf16_peak_tflops(device: torch.device) -> float | None:
    """Measured bf16 matrix-multiply TFLOP/s of the GPU (None on the CPU)."""
    if device.type != "cuda":
        return None
    n, repeats = 8192, 20
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1000) / 1e12


def cells(per_gpu: list[int]) -> list[tuple[str, int, str, bool]]:
    """(name, K, precision, deterministic) of every cell, in the order they run."""
    rows = [
        ("naive fp32", 1, "fp32", False),
        ("evores fp32 K=1", 1, "fp32", True),
        ("evores bf16 K=1", 1, "bf16", True),
        ("evores bf16 K=1 autotune", 1, "bf16", False),
    ]
    return rows + [(f"evores bf16 K={k}", k, "bf16", True) for k in per_gpu]


def report(row: dict, out: Path | None) -> None:
    def fmt(value, spec):
        return "n/a".rjust(int(spec.split(".")[0])) if value is None else format(value, spec)

    print(
        f"{row['resolution']:>4} {row['cell']:<26} {row['evals_per_gpu_hour']:>10.0f} "
        f"{row['images_per_second']:>10.0f} {fmt(row['tflops'], '8.2f')} "
        f"{fmt(row['share_of_peak'], '7.1%')} {fmt(row['gpu_busy'], '6.0%')} "
        f"{row['failed']:>3}",
        flush=True,
    )
    if out is not None:
        with out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def ratios(rows: list[dict]) -> list[str]:
    """The two throughput targets, against what was measured."""

    def rate(resolution, cell):
        for row in rows:
            if (row["resolution"], row["cell"]) == (resolution, cell):
                return row["evals_per_gpu_hour"]
        return None

    lines = []
    resolutions = sorted({row["resolution"] for row in rows})
    if 32 in resolutions and rate(32, "naive fp32"):
        best = max(
            (r["evals_per_gpu_hour"], r["cell"])
            for r in rows
            if r["resolution"] == 32 and r["cell"].startswith("evores")
        )
        gain = best[0] / rate(32, "naive fp32")
        lines.append(
            f"32 px: best evores ({best[1]}) / naive = {gain:.1f}x evaluations per "
            "GPU-hour (target >= 10x)"
        )
    top = max(resolutions, default=None)
    if top is not None and rate(top, "evores fp32 K=1") and rate(top, "evores bf16 K=1"):
        lines.append(
            f"{top} px: bf16 / fp32 (K=1) = "
            f"{rate(top, 'evores bf16 K=1') / rate(top, 'evores fp32 K=1'):.2f}x"
            " (target >= 2x at 128 px)"
        )
    return lines


def run_cell(args, name, k, precision, deterministic, setup, resolution) -> dict:
    device, cache_path, genomes, n_classes, images = setup
    with BusySampler(device) as busy:
        if name.startswith("naive"):
            wall, results = naive_cell(args, resolution, genomes, n_classes, images, device)
        else:
            wall, results = evores_cell(
                args, cache_path, resolution, genomes, k, precision, deterministic, device
            )
    flops = work_flops(genomes, resolution, n_classes, images) * args.epochs
    tflops = flops / wall / 1e12
    peak = setup_peak(device)
    return {
        "resolution": resolution,
        "cell": name,
        "k": k,
        "precision": precision,
        "deterministic": deterministic,
        "population": len(genomes),
        "epochs": args.epochs,
        "wall_seconds": wall,
        "evals_per_gpu_hour": len(genomes) / wall * 3600,
        "images_per_second": len(genomes) * args.epochs * images["train"] / wall,
        "tflops": tflops if device.type == "cuda" else None,
        "share_of_peak": tflops / peak if peak else None,
        "gpu_busy": busy.share(),
        "failed": sum(r["status"] != "ok" for r in results),
        "mps": bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY")),
    }


_PEAK: dict[str, float | None] = {}


def setup_peak(device: torch.device) -> float | None:
    if str(device) not in _PEAK:
        _PEAK[str(device)] = bf16_peak_tflops(device)
    return _PEAK[str(device)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print(
            "gpu_throughput: CUDA is not available (torch.cuda.is_available() is False), so "
            "there is no GPU to measure; nothing done"
        )
        return 0
    if not (args.dataset / "train").is_dir():
        print(f"gpu_throughput: no train/ folder in {args.dataset}", file=sys.stderr)
        return 2
    from evores.data.cache import open_cache

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="evores-throughput-"))
    cache = open_cache(args.dataset, args.resolutions, cache_dir=cache_dir)
    genomes = population(args.population)
    images = {s: len(cache.arrays(args.resolutions[0], s)[1]) for s in ("train", "val")}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (not a figure)"
    peak = setup_peak(device)
    print(
        f"device: {name}; bf16 matmul peak: {peak and round(peak, 1)} TFLOP/s; torch "
        f"{torch.__version__}; MPS: {bool(os.environ.get('CUDA_MPS_PIPE_DIRECTORY'))}; "
        f"population {len(genomes)} x {args.epochs} epochs; {images['train']} train / "
        f"{images['val']} val images",
        flush=True,
    )
    print(
        f"{'px':>4} {'cell':<26} {'evals/GPUh':>10} {'images/s':>10} {'TFLOP/s':>8} "
        f"{'%peak':>7} {'busy':>6} {'bad':>3}",
        flush=True,
    )
    started, rows = time.perf_counter(), []
    setup = (device, cache.path, genomes, cache.n_classes, images)
    for resolution in args.resolutions:
        for cell_name, k, precision, deterministic in cells(args.per_gpu):
            if args.max_seconds is not None and time.perf_counter() - started > args.max_seconds:
                print(f"{resolution:>4} {cell_name:<26} skipped: --max-seconds reached")
                continue
            row = run_cell(args, cell_name, k, precision, deterministic, setup, resolution)
            rows.append(row)
            report(row, args.out)
    for line in ratios(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
