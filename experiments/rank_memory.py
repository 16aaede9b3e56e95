"""Benchmark: memory per rank of a rung in memory vs memory-mapped, and the cache build's speedup
with several decoding processes. Every figure is measured in the run that prints it.

    python experiments/rank_memory.py make DIR [--images 20000]
    mpiexec -n 3 python experiments/rank_memory.py ranks DIR
    python experiments/rank_memory.py build FOLDER [--workers 2] [--resolutions 32,64,128]

``make`` writes DIR/synthetic.h5, ``--images`` images of evores.data.synthetic at 64 px (eight
classes), and builds its 64 px cache in DIR/cache. ``ranks``: every rank prepares the 64 px
rung (train + val) twice, memory-mapped (``data.memory_budget = 1``) and in memory (a budget
no rung exceeds), in that order and then once more, each time training one epoch of one small
genome and reading its own /proc/self/smaps_rollup while the three ranks hold the rung
together: private memory (Private_Clean + Private_Dirty), anonymous memory (what no other
process can share) and the proportional set size; the epoch times of the two ways are compared
within the run (medians of the two rounds). ``build``: builds FOLDER's (any data.path's) cache into
fresh folders with 1 and with ``--workers`` decoding processes, one after the other in this
run, and prints wall time and CPU time (this process and its workers) side by side.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing evores
    sys.path.insert(0, str(REPO))

from evores.data.cache import open_cache  # noqa: E402

PX = 64
GENOME = {  # a small network: the epoch is data-bound rather than compute-bound
    "learning_rate": 0.01,
    "conv_filters": [8],
    "conv_kernels": [3],
    "fc_units": [16],
    "batch_size": 64,
    "l1": 0.0,
    "l2": 0.0,
}
MIB = 1 / 2**20
NEVER = 1 << 62  # a memory budget no rung exceeds: in memory


def make(folder: Path, images: int) -> None:
    import h5py

    from evores.data import synthetic

    folder.mkdir(parents=True, exist_ok=True)
    per_class = images // len(synthetic.CLASS_NAMES)
    n = per_class * len(synthetic.CLASS_NAMES)
    with h5py.File(folder / "synthetic.h5", "w") as f:
        pixels = f.create_dataset("images", (n, PX, PX, 3), np.uint8)
        labels = np.empty(n, np.int64)
        for k, (label, image) in enumerate(synthetic.generate(per_class, 0, PX)):
            pixels[k], labels[k] = np.asarray(image), label
        f["labels"] = labels
    started = time.perf_counter()
    cache = open_cache(folder / "synthetic.h5", [PX], cache_dir=folder / "cache")
    print(f"{n} images, 64 px cache {cache.path} built in {time.perf_counter() - started:.1f} s")


def smaps() -> dict[str, int]:
    """This process's /proc/self/smaps_rollup, in bytes."""
    values = {}
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                values[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return values


def ranks(folder: Path) -> None:
    from mpi4py import MPI

    from evores.training.fitness import PreparedData, evaluate
    from evores.training.resources import torch_threads

    comm = MPI.COMM_WORLD
    cache = open_cache(folder / "synthetic.h5", [PX], cache_dir=folder / "cache")
    with torch_threads(1):
        warm_x = np.random.default_rng(0).integers(0, 256, (128, 3, PX, PX), dtype=np.uint8)
        warm = PreparedData.from_arrays(warm_x, np.arange(128) % 2, warm_x, np.arange(128) % 2, 2)
        evaluate(GENOME, PX, warm, seed=0, max_epochs=1, patience=1)  # torch's first-run costs
        del warm, warm_x
        gc.collect()
        comm.Barrier()
        baseline = smaps()
        rows = []
        for budget in (1, NEVER, 1, NEVER):
            data = PreparedData.from_cache(cache.with_memory_budget(budget), PX, device="cpu")
            result = evaluate(GENOME, PX, data, seed=0, max_epochs=1, patience=1)
            comm.Barrier()  # every rank holds its rung now
            held = smaps()
            comm.Barrier()
            rows.append((data.mapped, result.seconds_per_epoch, held))
            del data
            gc.collect()
    rung_bytes = cache.split_bytes(PX, "train") + cache.split_bytes(PX, "val")
    gathered = comm.gather((baseline, rows, rung_bytes), root=0)
    if comm.Get_rank() == 0:
        report(gathered, cache)


def report(gathered, cache) -> None:
    size = gathered[0][2]
    print(f"{cache.report['n_images']} images, 64 px rung: train + val images {size * MIB:.0f} MiB")
    print("rank  way       private MiB  anonymous MiB  PSS MiB  epoch s")
    ratios = []
    for rank, (baseline, rows, _) in enumerate(gathered):
        print(
            f"{rank:>4}  baseline  {_private(baseline) * MIB:>11.0f}  "
            f"{baseline['Anonymous'] * MIB:>13.0f}  {baseline['Pss'] * MIB:>7.0f}"
        )
        for mapped, seconds, held in rows[:2]:
            print(
                f"{rank:>4}  {'mapped' if mapped else 'memory':<8}  {_private(held) * MIB:>11.0f}"
                f"  {held['Anonymous'] * MIB:>13.0f}  {held['Pss'] * MIB:>7.0f}  {seconds:>7.2f}"
            )
        mapped_s = statistics.median(s for m, s, _ in rows if m)
        memory_s = statistics.median(s for m, s, _ in rows if not m)
        ratios.append(mapped_s / memory_s)
        print(f"      epoch time mapped / in memory (median of 2 each): {ratios[-1]:.3f}")
    print(f"ratio over the ranks: {statistics.median(ratios):.3f} (median)")


def _private(values: dict[str, int]) -> int:
    return values["Private_Clean"] + values["Private_Dirty"]


def build(folder: str, workers: int, resolutions: list[int]) -> None:
    timings = {}
    for n in (1, workers):
        with tempfile.TemporaryDirectory() as tmp:
            cpu = _cpu_seconds()
            started = time.perf_counter()
            cache = open_cache(folder, resolutions, cache_dir=tmp, build_workers=n)
            wall = time.perf_counter() - started
            timings[n] = (wall, _cpu_seconds() - cpu, cache.report["build_workers"])
    print(f"{folder}: {cache.report['n_images']} images, {resolutions} px")
    for n, (wall, cpu, used) in timings.items():
        print(f"  build_workers={n} ({used} used): wall {wall:.1f} s, CPU {cpu:.1f} s")
    print(f"  speedup {timings[1][0] / timings[workers][0]:.2f}x wall")


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # workers, once they have exited
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("make", "ranks", "build"))
    parser.add_argument("folder", help='a folder; for build also "embedded" or any data.path')
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--resolutions", default="32,64,128", help="for build")
    args = parser.parse_args()
    if args.mode == "make":
        make(Path(args.folder), args.images)
    elif args.mode == "ranks":
        ranks(Path(args.folder))
    else:
        build(args.folder, args.workers, [int(r) for r in args.resolutions.split(",")])


if __name__ == "__main__":
    main()
