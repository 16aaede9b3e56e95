"""Which genes matter at each resolution: fANOVA importance per stage (Hinz et al., Fig. 2).

For every stage of the ladder, the importance of each gene is measured over that stage's
finished, *successful* search evaluations and written to ``importance.json``; ``importance.png``
draws it as one heat map, genes by resolution. Failed evaluations are left out: their 0.0 is
the search's penalty, not an accuracy the genes produced, and scoring it would make "fails
often" look like "matters". Evaluations are taken in key order (never completion order, which
depends on how many ranks ran them), so the same run directory always gives the same file.

The method is functional ANOVA (Hutter et al. 2014), the method Hinz et al. used for their
figure, through Optuna's ``FanovaImportanceEvaluator``: a random forest is fitted to the
accuracies, and a gene's importance is the share of the forest's variance its main effect
explains. The forest is seeded from the run seed (``evores.core.seeding``), so the result is
reproducible; Optuna's fANOVA fits scikit-learn's random forest, hence that dependency.
PED-ANOVA (no forest, no scikit-learn) was the alternative; it compares the densities of the
top quantile and of the whole, which at the tens of evaluations a stage holds rests on a
handful of genomes. ``importance`` is normalised to sum to 1 per stage (what the heat map
shows); ``explained`` keeps the raw sum of the main effects, the share of the variance the
genes explain one at a time (the rest is their interactions): a low value says the ranking
is weak.

A genome's lists vary in length, so each gene is one number per evaluation:

- ``learning_rate``, ``l1``, ``l2``: log10 of the value (they are searched on a log scale); a
  zero penalty ("none") sits one decade below the space's lowest non-zero value, so it is the
  weakest setting on the same axis and a tree can split it off;
- ``conv_layers``, ``fc_layers``: the depths, as counts;
- ``conv_filters``, ``fc_units``: the mean of log2 of the layers' widths (the log of their
  geometric mean). Not the total, which is depth times width and would count depth twice;
  not one column per layer, since a layer exists only in the deeper genomes and fANOVA needs
  every feature in every evaluation;
- ``conv_kernels``: the mean kernel size;
- ``batch_size``: log2 of the batch size (its choices are powers of two: an ordered scale).

fANOVA marginalises over the box the stage's evaluations span: a gene that did not vary in a
stage (a range narrowed to one value) has importance 0. A stage with fewer than
:data:`MIN_EVALUATIONS` successes, or whose successes all scored alike, gets no importance
but a ``reason``. A stage with more than :data:`MAX_ROWS` successes is scored on a seeded
sample of that many (``n_sampled``): fANOVA's cost grows faster than its data, and a large
stage's report would otherwise hold up a stop by a minute. :func:`stage_study` is the stage
as an Optuna study, for Optuna's own importance evaluators (docs/run-directory.md says why
they may rank differently).

fANOVA assumes independent samples; a ``ga`` stage's genomes are bred from each other, so a
gene that rides along with a good one can take some of its importance (``random`` search
samples independently).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evores.core.atomic import write_json
from evores.core.results import KIND_SEARCH, OK
from evores.core.seeding import derive_seed
from evores.store.names import IMPORTANCE, IMPORTANCE_PLOT
from evores.strategies.space import SearchSpace

__all__ = [
    "GENES",
    "IMPORTANCE",
    "IMPORTANCE_PLOT",
    "MIN_EVALUATIONS",
    "features",
    "run_importance",
    "stage_importance",
    "stage_rows",
    "stage_study",
    "write_importance",
]


# The genes, in the heat map's order, and what each one's number is.
GENES = {
    "learning_rate": "log10 learning rate",
    "conv_layers": "number of convolutional layers",
    "conv_filters": "mean log2 filters of the convolutional layers",
    "conv_kernels": "mean kernel size of the convolutional layers",
    "fc_layers": "number of fully connected layers",
    "fc_units": "mean log2 units of the fully connected layers",
    "batch_size": "log2 batch size",
    "l1": "log10 L1 penalty (0 one decade below the space's low end)",
    "l2": "log10 L2 penalty (0 one decade below the space's low end)",
}

# Fewer successful evaluations than this give a forest of noise over nine genes.
MIN_EVALUATIONS = 10
N_TREES = 64
# Above this many successful evaluations a stage's forest is fitted to a seeded sample of them.
# fANOVA's cost grows faster than the rows (one core, genomes drawn at random: 19 s at 500,
# 66 s at 1,000). Measured with experiments/importance_cap.py (docs/studies.md): a sample of 500
# kept the genes' ranking (Spearman 0.87 to 1.00 against the whole stage, on a planted function
# and on a run's stages of 1,000 and 1,500); one of 250 did not (0.53 on a run's stage of
# 1,000). Stages up to 500 are scored whole, as before.
MAX_ROWS = 500
METHOD = f"fANOVA (Optuna FanovaImportanceEvaluator, {N_TREES} trees, seeded from the run seed)"


def features(hparams: dict[str, Any], space: SearchSpace) -> dict[str, float]:
    """One number per gene of :data:`GENES` for a genome (see the module's docstring)."""

    def log_penalty(value: float, low: float) -> float:
        return math.log10(value) if value > 0 else math.log10(low) - 1.0

    filters, units = hparams["conv_filters"], hparams["fc_units"]
    return {
        "learning_rate": math.log10(hparams["learning_rate"]),
        "conv_layers": float(len(filters)),
        "conv_filters": sum(math.log2(f) for f in filters) / len(filters),
        "conv_kernels": sum(hparams["conv_kernels"]) / len(hparams["conv_kernels"]),
        "fc_layers": float(len(units)),
        "fc_units": sum(math.log2(u) for u in units) / len(units),
        "batch_size": math.log2(hparams["batch_size"]),
        "l1": log_penalty(hparams["l1"], space.l1.low),
        "l2": log_penalty(hparams["l2"], space.l2.low),
    }


def _readable(hparams: Any, space: SearchSpace) -> dict[str, float] | None:
    """:func:`features`, or None for a genome a hand-edited log left unreadable."""
    try:
        return features(hparams, space)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def stage_records(
    records: Sequence[dict[str, Any]], n_stages: int
) -> dict[int, list[dict[str, Any]]]:
    """The finished search evaluations of each stage (the last record of a key; interrupted
    ones left out), in key order."""
    from evores.reporting.summary import completed

    stages: dict[int, list[dict[str, Any]]] = {}
    for record in completed(list(records)):
        stage = int(record["key"][0])
        if record.get("kind", KIND_SEARCH) == KIND_SEARCH and stage < n_stages:
            stages.setdefault(stage, []).append(record)
    return {stage: sorted(rows, key=lambda r: r["key"]) for stage, rows in sorted(stages.items())}


def stage_rows(
    records: Sequence[dict[str, Any]], space: SearchSpace
) -> tuple[list[dict[str, float]], list[float]]:
    """What a stage's importance rests on: the :func:`features` and the validation accuracy
    of each successful, readable evaluation, in the records' order."""
    used = [(_readable(r["hparams"], space), float(r["val_accuracy"]))
            for r in records if r["status"] == OK]  # fmt: skip
    rows = [row for row, _ in used if row is not None]
    return rows, [score for row, score in used if row is not None]


def stage_importance(
    records: Sequence[dict[str, Any]], space: SearchSpace, seed: int,
    max_rows: int | None = None, n_trees: int = N_TREES,
) -> dict[str, Any]:  # fmt: skip
    """fANOVA over one stage's finished records: ``n_used`` (the successful evaluations it
    rests on), ``importance`` (normalised, per gene), ``explained`` (the share of the
    variance the genes' main effects explain) and ``reason`` (why there is none, or None).
    Above ``max_rows`` successes (None: no cap) the forest is fitted to a seeded sample of
    ``max_rows`` of them (``n_sampled``)."""
    rows, scores = stage_rows(records, space)
    result = {"n_used": len(rows), "importance": None, "explained": None, "reason": None}
    if len(rows) < MIN_EVALUATIONS:
        why = f"{len(rows)} successful evaluation(s); importance needs at least {MIN_EVALUATIONS}"
        return {**result, "reason": why}
    if max(scores) == min(scores):
        return {**result, "reason": f"all {len(rows)} successful evaluations scored {scores[0]}"}
    if max_rows is not None and len(rows) > max_rows:
        rows, scores = _sample(rows, scores, max_rows, seed)
        result["n_sampled"] = max_rows
    try:
        raw = _fanova(_study(rows, scores), seed, n_trees)
    except ImportError:  # both are dependencies of evores: an incomplete install
        why = "fANOVA needs optuna and scikit-learn: pip install optuna scikit-learn"
        return {**result, "reason": why}
    total = sum(raw.values())
    if total <= 0:
        return {**result, "reason": "the forest found no main effect of any gene"}
    normalised = {gene: round(raw[gene] / total, 6) for gene in GENES}
    return {**result, "importance": normalised, "explained": round(min(1.0, total), 6)}


def _sample(
    rows: list[dict[str, float]], scores: list[float], size: int, seed: int
) -> tuple[list[dict[str, float]], list[float]]:
    """``size`` of the rows, drawn without replacement from ``seed``, in their own order."""
    chosen = sorted(np.random.default_rng(seed).choice(len(rows), size, replace=False))
    return [rows[i] for i in chosen], [scores[i] for i in chosen]


def stage_study(records: Sequence[dict[str, Any]], space: SearchSpace) -> Any:
    """An in-memory Optuna study of one stage, as evores' fANOVA sees it: a trial per
    successful evaluation, its params the :func:`features` (one float per gene of
    :data:`GENES`, over the range the stage spans), its value the validation accuracy.
    Any of Optuna's importance evaluators runs on it (docs/run-directory.md)."""
    return _study(*stage_rows(records, space))


def _study(rows: list[dict[str, float]], scores: list[float]) -> Any:
    import optuna
    from optuna.distributions import FloatDistribution

    bounds = {g: (min(r[g] for r in rows), max(r[g] for r in rows)) for g in GENES}
    distributions = {g: FloatDistribution(low, high) for g, (low, high) in bounds.items()}
    trials = [
        optuna.trial.create_trial(params=row, distributions=distributions, value=score)
        for row, score in zip(rows, scores, strict=True)
    ]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "a new study created in memory"
    try:
        study = optuna.create_study(direction="maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(trials)
    return study


def _fanova(study: Any, seed: int, n_trees: int = N_TREES) -> dict[str, float]:
    """Each gene's raw fANOVA main-effect variance fraction (Optuna's evaluator, seeded)."""
    from optuna.importance import FanovaImportanceEvaluator

    evaluator = FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)
    raw = evaluator.evaluate(study, params=list(GENES))
    return {gene: max(0.0, float(raw[gene])) for gene in GENES}


def run_importance(config: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``importance.json``: every stage's importance (or why it has none), from the log."""
    space = SearchSpace.from_dict(config["space"])
    resolutions = config["schedule"]["resolutions"]
    stages = []
    for stage, rows in stage_records(records, len(resolutions)).items():
        ok = sum(r["status"] == OK for r in rows)
        entry = {"stage": stage + 1, "resolution": resolutions[stage],
                 "n_evaluations": len(rows), "n_failed": len(rows) - ok}  # fmt: skip
        seed = derive_seed(config["seed"], "importance", stage) % 2**32  # sklearn's range
        stages.append({**entry, **stage_importance(rows, space, seed, max_rows=MAX_ROWS)})
    return {
        "method": METHOD,
        "genes": dict(GENES),
        "failed_evaluations": "excluded",
        "min_evaluations": MIN_EVALUATIONS,
        "seed": config["seed"],
        "stages": stages,
    }


def write_importance(directory: Path, config: dict[str, Any], records: Sequence[dict]) -> dict:
    """Write ``importance.json`` and ``importance.png`` into the run directory; the record."""
    from evores.reporting.plots import plot_importance

    data = run_importance(config, records)
    write_json(Path(directory) / IMPORTANCE, data)
    plot_importance(data, Path(directory) / IMPORTANCE_PLOT)
    return data
