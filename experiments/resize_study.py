"""Study: what the resampling filter, or a learned resizer, does to a low-resolution search.

Usage: python experiments/resize_study.py [--data FOLDER] [--out DIR] [--epochs N]
       [--seeds S] [--resolutions 16 32] [--genomes example small] [--cache-dir DIR]

For each fixed genome, resolution and resizer (the six Pillow filters of the dataset cache, and
evores's learned resizer reading the box-filter copy at twice the resolution) and each seed,
it trains with :func:`evores.training.fitness.evaluate` for exactly ``--epochs`` epochs (patience =
epochs: no early stop) and keeps the best validation accuracy; then it retrains on train+val
for that best epoch count with :func:`evores.training.fitness.train_and_test` and scores the test
split,
as a run's final retraining does. The split is evores's own (imagenette224: validation drawn
from train/, test = val/). One thread (``train.threads = 1``).

Each cell's result goes to ``DIR/cells/<name>.json`` as it finishes; a rerun skips finished
cells, so a cut-off study loses at most one cell. At the end it prints one table (mean +- std
over seeds of val accuracy, test accuracy and seconds per training epoch), writes it to
``DIR/table.md`` and draws it to ``DIR/resize_study.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing evores
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from evores.core.atomic import write_json  # noqa: E402
from evores.data.cache import open_cache  # noqa: E402
from evores.data.resample import FILTERS  # noqa: E402
from evores.data.resizing import ResizerSpec  # noqa: E402
from evores.training.fitness import PreparedData, evaluate, train_and_test  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "imagenette224"
LEARNED = "learned"
SOURCE_FILTER = "box"  # the learned resizer reads the cache's box-filter copies
GENOMES = {
    # the README's example genome (section "The fitness function as a library")
    "example": {
        "learning_rate": 0.01,
        "conv_filters": [32, 64],
        "conv_kernels": [3, 3],
        "fc_units": [128],
        "batch_size": 64,
        "l1": 0.0,
        "l2": 1e-4,
    },
    # a small one-conv network, at the low end of the default search space
    "small": {
        "learning_rate": 0.02,
        "conv_filters": [16],
        "conv_kernels": [5],
        "fc_units": [64],
        "batch_size": 64,
        "l1": 0.0,
        "l2": 1e-4,
    },
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default="resize_study")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--genomes", nargs="+", default=list(GENOMES), choices=list(GENOMES))
    parser.add_argument("--resizers", nargs="+", default=[*FILTERS, LEARNED])
    parser.add_argument("--width", type=int, default=16, help="learned resizer channels")
    parser.add_argument("--blocks", type=int, default=1, help="learned resizer blocks")
    return parser.parse_args(argv)


def cell_name(genome: str, resolution: int, resizer: str, seed: int) -> str:
    return f"{genome}-{resolution}px-{resizer}-seed{seed}"


def run_cell(genome: dict, resolution: int, resizer: str, seed: int, data: dict) -> dict:
    """One training + validation and one retraining + test, with their measured costs."""
    search, final = data["search"], data["final"]
    epochs = data["epochs"]
    started = time.perf_counter()
    val = evaluate(genome, resolution, search, seed=seed, max_epochs=epochs, patience=epochs,
                   threads=1)  # fmt: skip
    test = train_and_test(genome, resolution, final, seed=seed, epochs=max(val.best_epoch, 1),
                          threads=1)  # fmt: skip
    return {
        "resolution": resolution,
        "resizer": resizer,
        "seed": seed,
        "status": [val.status, test.status],
        "val_accuracy": val.val_accuracy,
        "best_epoch": val.best_epoch,
        "test_accuracy": test.test_accuracy,
        "seconds_per_epoch": val.seconds_per_epoch,
        "n_parameters": val.n_parameters,
        "wall_seconds": time.perf_counter() - started,
    }


def prepared(args, resolution: int, resizer: str) -> dict:
    """The train/val and train+val/test data of one resolution and resizer, in memory."""
    learned = resizer == LEARNED
    spec = ResizerSpec(width=args.width, blocks=args.blocks) if learned else None
    filter = SOURCE_FILTER if learned else resizer
    # Every resolution this filter's cache serves in the study, so it is built once.
    wanted = set(args.resolutions)
    if filter == SOURCE_FILTER and LEARNED in args.resizers:
        wanted |= {ResizerSpec().source_for(r) for r in args.resolutions}
    cache = open_cache(args.data, sorted(wanted), filter=filter, cache_dir=args.cache_dir)
    return {
        "search": PreparedData.from_cache(cache, resolution, resizer=spec),
        "final": PreparedData.from_cache(cache, resolution, final=True, resizer=spec),
        "epochs": args.epochs,
    }


def run_study(args) -> list[dict]:
    cells = Path(args.out) / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    results = []
    for resolution in args.resolutions:
        for resizer in args.resizers:
            data = None
            for name in args.genomes:
                for seed in range(args.seeds):
                    path = cells / f"{cell_name(name, resolution, resizer, seed)}.json"
                    if path.is_file():
                        results.append(json.loads(path.read_text()))
                        continue
                    data = data or prepared(args, resolution, resizer)
                    measured = run_cell(GENOMES[name], resolution, resizer, seed, data)
                    result = {"genome": name, "epochs": args.epochs, **measured}
                    write_json(path, result)
                    results.append(result)
                    report(path.stem, result)
    return results


def report(name: str, result: dict) -> None:
    print(
        f"{name}: val {result['val_accuracy']:.3f} test {result['test_accuracy']:.3f} "
        f"{result['seconds_per_epoch']:.2f} s/epoch ({result['wall_seconds']:.0f} s)",
        flush=True,
    )


def spread(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def groups(results: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in results:
        out.setdefault((r["genome"], r["resolution"], r["resizer"]), []).append(r)
    return out


def table(results: list[dict], order: list[str]) -> str:
    rows = ["| genome | px | resizer | seeds | val accuracy | test accuracy | s / epoch | params |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    keyed = groups(results)
    for key in sorted(keyed, key=lambda k: (k[0], k[1], order.index(k[2]))):
        cell = keyed[key]
        rows.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {len(cell)} "
            f"| {spread([c['val_accuracy'] for c in cell], 3)} "
            f"| {spread([c['test_accuracy'] for c in cell], 3)} "
            f"| {spread([c['seconds_per_epoch'] for c in cell], 2)} "
            f"| {cell[0]['n_parameters']} |"
        )
    return "\n".join(rows)


def plot(results: list[dict], order: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keyed = groups(results)
    genomes = sorted({k[0] for k in keyed})
    resolutions = sorted({k[1] for k in keyed})
    fig, axes = plt.subplots(1, len(resolutions), figsize=(6 * len(resolutions), 4), squeeze=False)
    width = 0.8 / max(len(genomes), 1)
    for ax, resolution in zip(axes[0], resolutions, strict=True):
        for g, genome in enumerate(genomes):
            xs, means, stds = [], [], []
            for i, resizer in enumerate(order):
                cell = keyed.get((genome, resolution, resizer))
                if cell:
                    values = [c["test_accuracy"] for c in cell]
                    xs.append(i + g * width)
                    means.append(statistics.fmean(values))
                    stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=genome)
        ax.set_xticks([i + width * (len(genomes) - 1) / 2 for i in range(len(order))], order,
                      rotation=30)  # fmt: skip
        ax.set_title(f"{resolution} px")
        ax.set_ylabel("test accuracy (mean ± std over seeds)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    results = run_study(args)
    text = table(results, args.resizers)
    out = Path(args.out)
    (out / "table.md").write_text(text + "\n")
    plot(results, args.resizers, out / "resize_study.png")
    print(text)


if __name__ == "__main__":
    main()
