"""evores against its peers: the same job at the same CPU budget, per method and seed.

Every method searches the same ``SearchSpace`` (the study's cut ranges) with the same training
function (evores' ``evaluate`` at a given resolution and epoch budget) on the same splits, then
takes the same final step: the chosen genome retrained at the top resolution on train+val for
the epochs that were best in its evaluation, and scored once on the test split. Methods:

- ``evores-ga``, ``evores-tpe``, ``evores-random``: ``evores.search`` up the resolution
  ladder, with its defaults except seed, rungs, evaluations and the training budget;
- ``optuna-tpe``: Optuna's default TPE, every trial at the top resolution;
- ``optuna-hyperband``: Optuna TPE with its default ``HyperbandPruner`` over the rungs (each
  rung trained from scratch at the next resolution) and then over epochs at the top resolution
  (through the fitness API's ``on_epoch`` hook, :func:`evores.fitness.optuna_pruning`);
- ``dehb``: DEHB with the resolution as its fidelity (eta = the rungs' ratio, so its fidelities
  are the rungs);
- ``random``: random genomes, every one at the top resolution;
- ``one-epoch-top-k``: random genomes trained one epoch at the top resolution, then the best k
  trained fully.

Cost is process CPU seconds, training included, one thread for every method (the study pins
torch to one thread and runs the cells one after another in this process). evores' budget is
its evaluation counts (``--evaluations``, split 3:2:1 over the rungs); a cell's *search* CPU is
what it spent before its final step. A peer searches until its cell has spent ``--budget`` CPU
seconds, then takes the final step. By default that budget is the mean search CPU of the evores
cells already in ``--out`` (the evores methods run first), so every peer searches for as long as
evores did; evores' final step (3 finalists retrained) costs more than a peer's (1), which counts
against evores, not the peers. Each evaluation is stamped with the cell's CPU seconds when it
returns, for the best-so-far curves.

Output in ``--out``: ``cells/<method>-seed<k>.json`` (one per finished cell, written atomically:
a killed study re-runs only the missing cells), ``peer_study.json`` (every cell), ``peer_study.md``
(the table) and ``peer_study.png`` (best-so-far validation accuracy at the top resolution
against CPU seconds, mean over seeds, one line per method).

    python experiments/peer_study.py --out runs/peer-study            # imagenette224
    python experiments/peer_study.py --quick --data DIR --out /tmp/q  # every method, tiny budget

DEHB is an experiment-only requirement, not one of evores' dependencies: DEHB 0.1.2 pins
numpy<2 and pulls dask, distributed and pyarrow. The study ran it from a separate folder,
installed without touching the environment's numpy::

    pip install --target /tmp/dehb_site --no-deps DEHB==0.1.2 ConfigSpace==1.2.2 dask \\
        distributed locket loguru more-itertools msgpack partd psutil tblib toolz tornado zict
    PYTHONPATH=/tmp/dehb_site python experiments/peer_study.py ...

Without it the ``dehb`` cells are skipped with the reason printed and recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

import torch  # noqa: E402

from evores.config import EMBEDDED_SPACE  # noqa: E402
from evores.core.atomic import write_json  # noqa: E402
from evores.core.errors import EvoresError  # noqa: E402
from evores.core.results import OK, PRUNED  # noqa: E402
from evores.core.seeding import derive_seed  # noqa: E402
from evores.data.cache import open_cache  # noqa: E402
from evores.fitness import optuna_pruning  # noqa: E402
from evores.strategies.space import SearchSpace  # noqa: E402
from evores.training.fitness import PreparedData, evaluate, train_and_test  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "imagenette224"
EVORES_METHODS = ("evores-ga", "evores-tpe", "evores-random")
PEER_METHODS = ("optuna-tpe", "optuna-hyperband", "dehb", "random", "one-epoch-top-k")
METHODS = EVORES_METHODS + PEER_METHODS

# SIZING: see docs/studies.md ("evores against its peers") for what was measured and chosen.
DEFAULTS = {
    "resolutions": [8, 16, 32],
    # evores' total, split 3:2:1 over the rungs (48, 32, 16): the 24 cells took 95 minutes in
    # two processes on 2 cores (docs/studies.md), the hour and a half the study was sized for
    "evaluations": 96,
    "budget": None,  # a peer's search CPU: None = the evores cells' mean search CPU
    "seeds": 3,
    "epochs": 4,
    "patience": 2,
    "top_k": 3,
}
QUICK = {
    "resolutions": [8, 16],
    "evaluations": 11,  # 8 + 3: one population, then the elites (evores' defaults)
    "budget": 1.0,
    "seeds": 2,
    "epochs": 1,
    "patience": 1,
    "top_k": 2,
}
# The ranges of the embedded run (evores.config.EMBEDDED_SPACE), as the iis study uses them:
# networks that train in seconds on a CPU.
STUDY_SPACE = EMBEDDED_SPACE


def study_space() -> SearchSpace:
    return SearchSpace.from_dict({**SearchSpace().to_dict(), **STUDY_SPACE})


@dataclass
class Cell:
    """One (method, seed): its clock, what it evaluated, and the settings it ran with."""

    method: str
    seed: int
    settings: dict[str, Any]
    started: float = field(default_factory=time.process_time)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    search_cpu: float | None = None  # the CPU seconds spent before the final step

    def search_ends(self) -> None:
        """The final step begins: what was spent until now is the search's."""
        if self.search_cpu is None:
            self.search_cpu = self.cpu()

    def cpu(self) -> float:
        return time.process_time() - self.started

    def stamp(self, resolution: int, result, hparams: dict, own_cpu: float) -> None:
        """Note an evaluation's outcome with the CPU seconds spent so far and its own."""
        self.evaluations.append(
            {
                "cpu_seconds": round(self.cpu(), 3),
                "own_cpu_seconds": round(own_cpu, 3),
                "resolution": resolution,
                "status": result.status,
                "val_accuracy": result.val_accuracy,
                "epochs": result.epochs,
                "best_epoch": result.best_epoch,
                "hparams": hparams,
            }
        )


@dataclass(frozen=True)
class Setup:
    """What every cell shares: data, rungs, training budget, search budget."""

    data: str
    cache_dir: Path
    resolutions: list[int]
    evaluations: int
    budget: float | None  # None: the evores cells' mean search CPU (see evores_budget)
    epochs: int
    patience: int
    top_k: int
    space: SearchSpace
    work: Path
    budget_from: str = "--budget"

    @property
    def top(self) -> int:
        return self.resolutions[-1]

    def prepared(self, resolution: int, final: bool = False) -> PreparedData:
        cache = open_cache(self.data, self.resolutions, cache_dir=self.cache_dir)
        return PreparedData.from_cache(cache, resolution, final=final)


class Evaluator:
    """The one training function of every peer: ``evaluate`` on resident data, stamped."""

    def __init__(self, setup: Setup, cell: Cell):
        self.setup, self.cell, self.resident = setup, cell, {}

    def __call__(self, hparams: dict, resolution: int, max_epochs: int | None = None, **kw):
        if resolution not in self.resident:
            self.resident = {resolution: self.setup.prepared(resolution)}
        index, started = len(self.cell.evaluations), time.process_time()
        result = evaluate(
            hparams,
            resolution,
            self.resident[resolution],
            space=self.setup.space,
            threads=1,
            seed=derive_seed(self.cell.seed, self.cell.method, index),
            max_epochs=max_epochs or self.setup.epochs,
            patience=self.setup.patience,
            **kw,
        )
        self.cell.stamp(resolution, result, hparams, time.process_time() - started)
        return result

    def spent(self) -> bool:
        return self.cell.cpu() >= self.setup.budget


# --------------------------------------------------------------------------- the methods


def run_evores(setup: Setup, cell: Cell) -> dict:
    """``evores.search`` with the study's rungs, evaluations and training budget, its defaults
    otherwise; each of its evaluations stamped as it returns."""
    from evores.engine.session import search
    from evores.execution import worker

    strategy = cell.method.removeprefix("evores-")
    run_dir = setup.work / f"{cell.method}-seed{cell.seed}"
    _remove_tree(run_dir)  # a cut-off cell starts again
    overrides = {
        "seed": cell.seed,
        "data": {"path": setup.data, "cache_dir": str(setup.cache_dir)},
        "schedule": {
            "resolutions": setup.resolutions,
            "evaluations": ladder_split(setup.evaluations, len(setup.resolutions)),
        },
        "search": {"strategy": strategy},
        "train": {"max_epochs": setup.epochs, "patience": setup.patience, "threads": 1},
        "space": STUDY_SPACE,
    }
    cell.settings.update(overrides, defaults="evores' for every other key")
    real = worker.evaluate

    def stamped(hparams, resolution, data, **kw):
        started = time.process_time()
        result = real(hparams, resolution, data, **kw)
        cell.stamp(resolution, result, hparams, time.process_time() - started)
        return result

    real_final = worker.train_and_test

    def final(*args, **kw):
        cell.search_ends()
        return real_final(*args, **kw)

    with _patched(worker, "evaluate", stamped), _patched(worker, "train_and_test", final):
        summary = search(overrides, out=run_dir)
    return {"test_accuracy": summary.get("test_accuracy"), "hparams": summary.get("best_hparams")}


def run_optuna_tpe(setup: Setup, cell: Cell) -> dict:
    import optuna

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=cell.seed)
    )
    cell.settings.update(sampler=f"TPESampler(seed={cell.seed}), defaults otherwise")
    run = Evaluator(setup, cell)
    study.optimize(
        lambda trial: run(setup.space.suggest(trial), setup.top).objective,
        callbacks=[_stop_when(run)],
    )
    return final_step(setup, cell)


def run_optuna_hyperband(setup: Setup, cell: Cell) -> dict:
    import optuna

    lower = setup.resolutions[:-1]
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=len(lower) + setup.epochs)
    study = optuna.create_study(
        direction="maximize", pruner=pruner, sampler=optuna.samplers.TPESampler(seed=cell.seed)
    )
    cell.settings.update(
        sampler=f"TPESampler(seed={cell.seed}), defaults otherwise",
        pruner=f"HyperbandPruner(min_resource=1, max_resource={len(lower) + setup.epochs}),"
        " reduction_factor default (3)",
        steps=f"1..{len(lower)}: the rungs {lower} px (best val accuracy of a full training"
        f" there); {len(lower) + 1}..{len(lower) + setup.epochs}: epochs at {setup.top} px",
    )
    run = Evaluator(setup, cell)

    def objective(trial):
        hparams = setup.space.suggest(trial)
        for step, resolution in enumerate(lower, start=1):
            result = run(hparams, resolution)
            trial.report(result.val_accuracy, step)
            if result.status != OK:
                return float("nan")  # a failed trial, as Optuna records NaN
            if trial.should_prune():
                raise optuna.TrialPruned(f"at {resolution} px")
        result = run(hparams, setup.top, on_epoch=optuna_pruning(trial, first_step=len(lower)))
        if result.status == PRUNED:
            raise optuna.TrialPruned(result.reason)
        return result.objective

    study.optimize(objective, callbacks=[_stop_when(run)])
    return final_step(setup, cell)


def run_dehb(setup: Setup, cell: Cell) -> dict:
    from dehb import DEHB  # an experiment-only requirement: see the module's docstring
    from loguru import logger

    logger.disable("dehb")
    names = vector_names(setup.space)
    ratio = setup.resolutions[1] / setup.resolutions[0] if len(setup.resolutions) > 1 else 3
    dehb = DEHB(
        f=None,
        dimensions=len(names),
        min_fidelity=setup.resolutions[0],
        max_fidelity=setup.top,
        eta=ratio,
        n_workers=1,
        seed=cell.seed,
        output_path=str(setup.work / f"dehb-seed{cell.seed}"),
        save_freq="end",
    )
    cell.settings.update(
        dimensions=len(names),
        min_fidelity=setup.resolutions[0],
        max_fidelity=setup.top,
        eta=ratio,
        seed=cell.seed,
        encoding="one [0, 1] coordinate per flat gene, as SearchSpace.suggest asks them",
        defaults="DEHB's for every other setting",
    )
    run = Evaluator(setup, cell)
    while not run.spent():
        job = dehb.ask()
        resolution = nearest_rung(float(job["fidelity"]), setup.resolutions)
        hparams = setup.space.suggest(VectorTrial(job["config"], names))
        result = run(hparams, resolution)
        dehb.tell(job, {"fitness": 1.0 - result.val_accuracy, "cost": cell.cpu()})
    return final_step(setup, cell)


def run_random(setup: Setup, cell: Cell) -> dict:
    rng = np.random.default_rng(derive_seed(cell.seed, "random"))
    run = Evaluator(setup, cell)
    while not run.spent():
        run(setup.space.sample(rng), setup.top)
    return final_step(setup, cell)


def run_one_epoch_top_k(setup: Setup, cell: Cell) -> dict:
    """Screen random genomes with one epoch each (at least k) while the CPU left still covers
    k full trainings at the screens' mean CPU per epoch; then train the best k fully."""
    rng = np.random.default_rng(derive_seed(cell.seed, "one-epoch"))
    cell.settings.update(k=setup.top_k, screen_epochs=1)
    run = Evaluator(setup, cell)
    screened, spent = [], []
    while len(screened) < setup.top_k or (
        cell.cpu() + setup.top_k * setup.epochs * statistics.fmean(spent) < setup.budget
    ):
        hparams = setup.space.sample(rng)
        screened.append((run(hparams, setup.top, max_epochs=1).val_accuracy, hparams))
        spent.append(cell.evaluations[-1]["own_cpu_seconds"])
    screened.sort(key=lambda pair: -pair[0])
    first_full = len(cell.evaluations)
    for _, hparams in screened[: setup.top_k]:
        run(hparams, setup.top)
    return final_step(setup, cell, candidates=cell.evaluations[first_full:])


RUNNERS: dict[str, Callable[[Setup, Cell], dict]] = {
    **dict.fromkeys(EVORES_METHODS, run_evores),
    "optuna-tpe": run_optuna_tpe,
    "optuna-hyperband": run_optuna_hyperband,
    "dehb": run_dehb,
    "random": run_random,
    "one-epoch-top-k": run_one_epoch_top_k,
}


def final_step(setup: Setup, cell: Cell, candidates: list[dict] | None = None) -> dict:
    """The best genome at the top resolution (of ``candidates``, default every evaluation
    there), retrained on train+val for its best epochs and scored once on test."""
    cell.search_ends()
    if candidates is None:
        candidates = top_evaluations(cell, setup.top)
    candidates = [e for e in candidates if e["resolution"] == setup.top and e["status"] == OK]
    if not candidates:
        return {"test_accuracy": None, "hparams": None}
    best = max(candidates, key=lambda e: e["val_accuracy"])
    data = setup.prepared(setup.top, final=True)
    result = train_and_test(
        best["hparams"],
        setup.top,
        data,
        space=setup.space,
        threads=1,
        seed=derive_seed(cell.seed, cell.method, "final"),
        epochs=max(1, best["best_epoch"]),
    )
    return {
        "test_accuracy": result.test_accuracy if result.status == OK else None,
        "hparams": best["hparams"],
    }


# --------------------------------------------------------------------------- helpers


class VectorTrial:
    """Answers ``SearchSpace.suggest``'s questions from a point of [0, 1]^d, one coordinate
    per flat gene name: how a vector optimiser such as DEHB searches the genome."""

    def __init__(self, vector, names: list[str]):
        self.values = dict(zip(names, np.clip(np.asarray(vector, float), 0.0, 1.0), strict=True))

    def suggest_float(self, name, low, high, log=False):
        u = self.values[name]
        if log:
            value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            value = low + u * (high - low)
        return float(min(high, max(low, value)))  # exp(log(x)) may round just outside

    def suggest_int(self, name, low, high, log=False):
        value = (
            self.suggest_float(name, low - 0.5 + 1e-9, high + 0.5 - 1e-9)
            if not log
            else (self.suggest_float(name, low, high + 1 - 1e-9, log=True) - 0.5)
        )
        return int(min(high, max(low, round(value))))

    def suggest_categorical(self, name, choices):
        return choices[min(int(self.values[name] * len(choices)), len(choices) - 1)]


def vector_names(space: SearchSpace) -> list[str]:
    """Every flat name ``space.suggest`` may ask, at the space's deepest network."""
    names = ["learning_rate", "conv_layers", "fc_layers", "batch_size"]
    names += [f"conv_filters_{i}" for i in range(space.conv_layers.high)]
    names += [f"conv_kernels_{i}" for i in range(space.conv_layers.high)]
    names += [f"fc_units_{i}" for i in range(space.fc_layers.high)]
    return names + ["l1_zero", "l1", "l2_zero", "l2"]


def nearest_rung(fidelity: float, rungs: list[int]) -> int:
    return min(rungs, key=lambda r: abs(math.log(r) - math.log(fidelity)))


def ladder_split(total: int, stages: int) -> list[int]:
    """Hinz's 3:2:1 generalised to weights n..1, rounded so the parts sum to ``total``."""
    weights = list(range(stages, 0, -1))
    parts = [total * w // sum(weights) for w in weights]
    parts[0] += total - sum(parts)
    return parts


def top_evaluations(cell: Cell, top: int) -> list[dict]:
    return [e for e in cell.evaluations if e["resolution"] == top]


def _stop_when(run: Evaluator):
    def callback(study, trial):
        if run.spent():
            study.stop()

    return callback


@contextlib.contextmanager
def _patched(module, name: str, value) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def _remove_tree(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path)


# --------------------------------------------------------------------------- cells


def run_cell(setup: Setup, method: str, seed: int) -> dict:
    """Run one (method, seed) from scratch; its record for ``peer_study.json``."""
    cell = Cell(method, seed, settings={})
    final = RUNNERS[method](setup, cell)
    top = [
        e["val_accuracy"] for e in top_evaluations(cell, setup.top) if e["status"] in (OK, PRUNED)
    ]
    per_resolution = {
        str(r): sum(e["resolution"] == r for e in cell.evaluations) for r in setup.resolutions
    }
    return {
        "method": method,
        "seed": seed,
        "cpu_seconds": round(cell.cpu(), 3),
        "search_cpu_seconds": round(cell.cpu() if cell.search_cpu is None else cell.search_cpu, 3),
        "evaluations": len(cell.evaluations),
        "evaluations_per_resolution": per_resolution,
        "best_val_accuracy": max(top) if top else None,
        "test_accuracy": final["test_accuracy"],
        "winner": final["hparams"],
        "settings": {**shared_settings(setup, method), **cell.settings},
        "curve": best_so_far(cell, setup.top),
    }


def shared_settings(setup: Setup, method: str) -> dict:
    own = method in EVORES_METHODS  # evores' budget is its evaluation counts
    return {
        "data": setup.data,
        "resolutions": setup.resolutions,
        "top_resolution": setup.top,
        "cpu_budget_seconds": None if own else setup.budget,
        "cpu_budget_from": "none: the evaluation counts are evores' budget"
        if own
        else setup.budget_from,
        "max_epochs": setup.epochs,
        "patience": setup.patience,
        "threads": 1,
        "space": setup.space.to_dict(),
        "final_step": "best at the top resolution retrained on train+val for its best epochs,"
        " scored once on test",
    }


def best_so_far(cell: Cell, top: int) -> list[list[float]]:
    """[CPU seconds, best validation accuracy at the top resolution so far] at each rise."""
    curve, best = [], -1.0
    for e in cell.evaluations:
        if e["resolution"] == top and e["status"] in (OK, PRUNED) and e["val_accuracy"] > best:
            best = e["val_accuracy"]
            curve.append([e["cpu_seconds"], best])
    return curve


def cell_path(out: Path, method: str, seed: int) -> Path:
    return out / "cells" / f"{method}-seed{seed}.json"


def missing_requirement(method: str) -> str | None:
    """Why ``method`` cannot run here (None: it can)."""
    if method != "dehb":
        return None
    try:
        import dehb  # noqa: F401
    except ImportError as exc:
        return f"the dehb package is not installed ({exc}); see the study's docstring"
    return None


def evores_budget(out: Path) -> tuple[float, str]:
    """The peers' default budget: the mean search CPU of the evores cells in ``out``, and
    where it came from; a usage error when there are none."""
    cells = [
        json.loads(path.read_text())
        for method in EVORES_METHODS
        for path in sorted((out / "cells").glob(f"{method}-seed*.json"))
    ]
    spent = [c["search_cpu_seconds"] for c in cells if c.get("search_cpu_seconds") is not None]
    if not spent:
        usage_error(
            f"no evores cell in {out / 'cells'} to take the peers' CPU budget from: run the"
            " evores methods first (the default order does), or give --budget SECONDS"
        )
    return round(statistics.fmean(spent), 1), f"mean search CPU of {len(spent)} evores cells"


def run_study(
    setup: Setup, methods: list[str], seeds: list[int], out: Path, run: bool = True
) -> list[dict]:
    """Every missing (method, seed) cell (none when not ``run``), each written atomically as
    it finishes, evores' methods first (the peers' default budget is what they spent); then
    every cell there is."""
    (out / "cells").mkdir(parents=True, exist_ok=True)
    ordered = [m for m in methods if m in EVORES_METHODS] + [
        m for m in methods if m not in EVORES_METHODS
    ]
    todo = [(m, s) for m in ordered for s in seeds if not cell_path(out, m, s).exists()]
    for method, seed in todo if run else []:
        path = cell_path(out, method, seed)
        if path.exists():  # (another process sharing --out wrote it meanwhile)
            continue
        reason = missing_requirement(method)
        if reason:
            print(f"  {method} seed {seed}: skipped: {reason}", flush=True)
            continue
        if method not in EVORES_METHODS and setup.budget is None:
            budget, source = evores_budget(out)
            setup = dataclasses.replace(setup, budget=budget, budget_from=source)
            print(f"  peers' budget: {budget:g} CPU s ({source})", flush=True)
        record = run_cell(setup, method, seed)
        write_json(path, record)
        print(
            f"  {method} seed {seed}: {record['cpu_seconds']:.0f} CPU s,"
            f" {record['evaluations']} evaluations, best val"
            f" {fmt(record['best_val_accuracy'], '.3f')}, test"
            f" {fmt(record['test_accuracy'], '.3f')}",
            flush=True,
        )
    cells = []
    for method in methods:
        for seed in seeds:
            path = cell_path(out, method, seed)
            if path.exists():
                cells.append(json.loads(path.read_text()))
            elif missing_requirement(method):
                cells.append(
                    {"method": method, "seed": seed, "skipped": missing_requirement(method)}
                )
    return cells


# --------------------------------------------------------------------------- report


def fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def cpu_to_reach(curve: list[list[float]], target: float) -> float | None:
    return next((cpu for cpu, best in curve if best >= target), None)


def cpu_ratio(cells: list[dict], reference: list[dict]) -> float | None:
    """Mean over seeds of: the CPU a method needed to reach the best validation accuracy both
    it and the reference reached, over the CPU the reference needed for it."""
    ratios = []
    for cell in cells:
        ref = next((r for r in reference if r["seed"] == cell["seed"]), None)
        if not ref or cell["best_val_accuracy"] is None or ref["best_val_accuracy"] is None:
            continue
        target = min(cell["best_val_accuracy"], ref["best_val_accuracy"])
        mine, theirs = cpu_to_reach(cell["curve"], target), cpu_to_reach(ref["curve"], target)
        if mine is not None and theirs:
            ratios.append(mine / theirs)
    return mean(ratios)


def table(cells: list[dict], methods: list[str], seeds: list[int]) -> str:
    done = {m: [c for c in cells if c["method"] == m and "skipped" not in c] for m in methods}
    evores_best = max(
        (m for m in EVORES_METHODS if done.get(m)),
        default=None,
        key=lambda m: mean([c["best_val_accuracy"] or 0 for c in done[m]]),
    )
    head = (
        "| method | cells | search CPU s | CPU s | evaluations per resolution | best val (top px) |"
        f" test accuracy | CPU ratio to {evores_best or 'evores'} |"
    )
    lines = [head, "|---|---|---:|---:|---|---:|---:|---:|"]
    for method in methods:
        mine = done[method]
        skipped = next(
            (c["skipped"] for c in cells if c["method"] == method and "skipped" in c), None
        )
        if not mine:
            lines.append(
                f"| {method} | 0/{len(seeds)} | {'skipped: ' + skipped if skipped else ''}"
                " | | | | | |"
            )
            continue
        rungs = mine[0]["evaluations_per_resolution"]
        per_res = ", ".join(
            f"{r} px: {mean([c['evaluations_per_resolution'][r] for c in mine]):.0f}" for r in rungs
        )
        tests = [c["test_accuracy"] for c in mine if c["test_accuracy"] is not None]
        sd = statistics.stdev(tests) if len(tests) > 1 else None
        ratio = cpu_ratio(mine, done[evores_best]) if evores_best else None
        search = [c.get("search_cpu_seconds") for c in mine]
        search_cpu = fmt(mean(search) if None not in search else None, ".0f")
        lines.append(
            f"| {method} | {len(mine)}/{len(seeds)} | {search_cpu}"
            f" | {mean([c['cpu_seconds'] for c in mine]):.0f}"
            f" | {per_res} | {fmt(mean([c['best_val_accuracy'] or 0 for c in mine]), '.3f')}"
            f" | {fmt(mean(tests), '.3f')} ± {fmt(sd, '.3f')} | {fmt(ratio, '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def plot(cells: list[dict], methods: list[str], path: Path) -> None:
    """Best-so-far validation accuracy at the top resolution against CPU seconds, the mean
    over the seeds that have reached the top resolution by then."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in methods:
        curves = [c["curve"] for c in cells if c["method"] == method and c.get("curve")]
        if not curves:
            continue
        end = max(c["cpu_seconds"] for c in cells if c["method"] == method and "curve" in c)
        grid = np.linspace(0, end, 200)
        values = np.array(
            [
                [max((b for t, b in curve if t <= x), default=np.nan) for x in grid]
                for curve in curves
            ]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no seed at the top yet: NaN
            line = np.nanmean(values, axis=0)
        style = "-" if method.startswith("evores") else "--"
        ax.plot(grid, line, style, label=f"{method} ({len(curves)} seeds)")
    ax.set_xlabel("CPU seconds of the cell (one thread)")
    ax.set_ylabel("best validation accuracy at the top resolution")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="dataset folder (or 'embedded')")
    p.add_argument("--out", default="runs/peer-study")
    p.add_argument("--quick", action="store_true", help="every method on a tiny budget")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", help="a count N (seeds 0..N-1) or a comma list, e.g. 0,2")
    p.add_argument("--budget", type=float, help="CPU seconds of a peer's search")
    p.add_argument("--evaluations", type=int, help="evores' evaluations over all rungs")
    p.add_argument("--resolutions", help="the rungs, e.g. 8,16,32")
    p.add_argument("--epochs", type=int, help="train.max_epochs of every evaluation")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: the table and plot of the cells already in --out",
    )
    return p.parse_args(argv)


def usage_error(message: str) -> None:
    print(f"peer_study: {message}", file=sys.stderr)
    raise SystemExit(2)


def setup_of(args: argparse.Namespace) -> tuple[Setup, list[str], list[int]]:
    chosen = dict(QUICK if args.quick else DEFAULTS)
    for key in ("budget", "evaluations", "epochs"):
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    seeds = list(range(chosen["seeds"]))
    if args.seeds:
        try:
            seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
        except ValueError:
            usage_error(f"--seeds {args.seeds!r} is not a count or a comma list, e.g. 3 or 0,2")
        seeds = list(range(seeds[0])) if len(seeds) == 1 and "," not in args.seeds else seeds
    if args.resolutions:
        chosen["resolutions"] = [int(r) for r in args.resolutions.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        usage_error(f"unknown method {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    out = Path(args.out).resolve()
    setup = Setup(
        data=str(Path(args.data).resolve()) if args.data != "embedded" else "embedded",
        cache_dir=out / "cache",
        resolutions=chosen["resolutions"],
        evaluations=chosen["evaluations"],
        budget=chosen["budget"],
        epochs=chosen["epochs"],
        patience=min(chosen["patience"], chosen["epochs"]),
        top_k=chosen["top_k"],
        space=study_space(),
        work=out / "runs",
    )
    return setup, methods, seeds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup, methods, seeds = setup_of(args)
    try:
        return study_all(args, setup, methods, seeds)
    except EvoresError as exc:  # bad data or settings: one line, nothing else
        usage_error(str(exc))
    return 2


def study_all(args, setup: Setup, methods: list[str], seeds: list[int]) -> int:
    import logging

    import optuna

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # every method on one thread, evores' runs too (train.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("evores").setLevel(logging.WARNING)
    if not args.report_only:  # built before any cell, so that no cell pays for it
        open_cache(setup.data, setup.resolutions, cache_dir=setup.cache_dir)
    budget = "evores' mean search CPU" if setup.budget is None else f"{setup.budget:g} CPU s"
    print(
        f"peer study: {len(methods)} methods x {len(seeds)} seeds, rungs {setup.resolutions},"
        f" peers' budget {budget}, evores {setup.evaluations} evaluations",
        flush=True,
    )
    cells = run_study(setup, methods, seeds, out, run=not args.report_only)
    write_json(out / "peer_study.json", cells)
    text = table(cells, methods, seeds)
    (out / "peer_study.md").write_text(text)
    plot(cells, methods, out / "peer_study.png")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
