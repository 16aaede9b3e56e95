"""What capping fANOVA's cost does to the ranking of the genes, and to the time.

    python experiments/importance_cap.py                       # a planted function
    python experiments/importance_cap.py --run-dir RUN_DIR     # and a run's own stages

For each stage size ``n`` and each cap (at most ``rows`` evaluations, drawn without replacement
with a seed, and ``trees`` trees), the importance of evores.reporting.importance against the
uncapped one (every evaluation, :data:`importance.N_TREES` trees) on the same data: Spearman's
rank correlation of the nine genes' importances, the largest absolute difference of a gene's
normalised importance, whether the two most important genes keep their order, and the CPU
seconds (fANOVA runs on one core; CPU time is steadier than wall time on a shared machine).

The planted function: accuracy rises and falls with log10 learning rate (strong), rises a
little with log2 batch size (weak), plus noise; the other seven genes do nothing. Genomes are
drawn from the default search space. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evores import config as configuration  # noqa: E402
from evores.core.stats import spearman  # noqa: E402
from evores.reporting import importance  # noqa: E402
from evores.strategies.space import SearchSpace  # noqa: E402

CAPS = [(None, importance.N_TREES), (500, 64), (500, 32), (250, 64), (250, 32)]


def planted(n: int, seed: int) -> tuple[list[dict], SearchSpace]:
    space = SearchSpace.from_dict(configuration.load()["space"])
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        hparams = space.sample(rng)
        lr = math.log10(hparams["learning_rate"])
        accuracy = 0.9 - 0.08 * (lr + 2.5) ** 2 + 0.01 * math.log2(hparams["batch_size"])
        accuracy += float(rng.normal(0.0, 0.01))
        records.append({"key": [0, i, 0], "hparams": hparams, "status": "ok",
                        "val_accuracy": accuracy})  # fmt: skip
    return records, space


def run_stages(run_dir: Path) -> tuple[dict[int, list[dict]], SearchSpace]:
    config = configuration.load(run_dir / "config.toml")
    lines = (run_dir / "evaluations.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    stages = importance.stage_records(records, len(config["schedule"]["resolutions"]))
    return stages, SearchSpace.from_dict(config["space"])


def compare(records: list[dict], space: SearchSpace, label: str, seed: int) -> None:
    reference = None
    for rows, trees in CAPS:
        clock = time.process_time()  # CPU seconds: fANOVA runs on one core; the machine is shared
        result = importance.stage_importance(records, space, seed, max_rows=rows, n_trees=trees)
        seconds = time.process_time() - clock
        scores = result["importance"]
        if scores is None:
            print(f"{label:22} no importance: {result['reason']}")
            return
        values = [scores[gene] for gene in importance.GENES]
        if reference is None:
            reference = values
        top = sorted(importance.GENES, key=lambda g: -scores[g])[:2]
        rho = spearman(reference, values)
        worst = max(abs(a - b) for a, b in zip(reference, values, strict=True))
        cap = f"{rows or 'all'} rows, {trees} trees"
        print(f"{label:22} {cap:22} {seconds:7.2f} CPU s  rho {rho:5.2f}  max diff {worst:5.3f}  "
              f"top 2: {', '.join(top)}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250,500,1000", help="planted stage sizes")
    parser.add_argument("--seeds", type=int, default=2, help="planted data sets per size")
    parser.add_argument("--run-dir", type=Path, help="also the stages of this run directory")
    args = parser.parse_args()
    import optuna.importance  # noqa: F401 - imported before any timing (seconds, once)

    for n in [int(size) for size in args.sizes.split(",")]:
        for seed in range(args.seeds):
            records, space = planted(n, seed)
            compare(records, space, f"planted n={n} seed={seed}", seed)
    if args.run_dir:
        stages, space = run_stages(args.run_dir)
        for stage, records in stages.items():
            compare(records, space, f"run stage {stage + 1} n={len(records)}", stage)


if __name__ == "__main__":
    main()
