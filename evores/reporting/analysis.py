"""A run directory as tidy tables: :func:`load_run` (``pip install evores[analysis]``: pandas).

``evaluations.jsonl`` is the source: it is written as evaluations finish, so a stopped or
crashed run reads as far as it got. The last record of a key is the one that counts (an
evaluation abandoned by a stop is logged again after ``--resume``). Genes are flattened into
one column each: a list gene gives its depth (``conv_layers``, ``fc_layers``), one column per
layer (``conv_filters_0``, ...) and its total (``conv_filters_total``). A failed evaluation's
``val_accuracy`` is missing, not 0.0, and its failure type ``nan`` reads ``not_finite``: most
readers (``pd.read_json``, ``pd.read_csv``) turn the string ``"nan"`` into a float NaN.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evores.core.errors import UNPARSABLE, CheckpointError
from evores.core.paths import usable_path
from evores.core.results import FAILURE_NAN, KIND_FINAL, KIND_SEARCH, OK
from evores.store.checkpoint import RunDirectory
from evores.store.names import SUMMARY_FILES

if TYPE_CHECKING:
    import pandas as pd

NOT_FINITE = "not_finite"
# The depth column of each list gene; other list genes get none.
DEPTHS = {"conv_filters": "conv_layers", "fc_units": "fc_layers"}
LOG_FIELDS = ("kind", "stage", "generation", "index", "resolution", "seed", "status",
              "failure", "reason", "val_accuracy", "test_accuracy", "epochs", "best_epoch",
              "wall_seconds", "n_parameters", "rank")  # fmt: skip

log = logging.getLogger("evores")


@dataclass(frozen=True)
class RunTables:
    """``evaluations``: one row per key, search and final; ``finals``: the final candidates
    with their test accuracy; ``stages``: one row per search stage reached; ``summary``: the
    summary (the provisional one of an unfinished run), or None."""

    evaluations: pd.DataFrame
    finals: pd.DataFrame
    stages: pd.DataFrame
    summary: dict[str, Any] | None


def load_run(run_dir: str | Path) -> RunTables:
    """The run in ``run_dir``, finished or stopped, as pandas DataFrames."""
    pd = _pandas()

    path = usable_path(run_dir, "run directory", CheckpointError)
    log = path / "evaluations.jsonl"
    if not log.is_file():
        raise CheckpointError(f"{str(path)!r} has no evaluations.jsonl; give a run directory")
    rows = [_row(record) for record in _last_records(log).values()]
    evaluations = pd.DataFrame(rows)
    if evaluations.empty:
        evaluations = pd.DataFrame(columns=["key", *LOG_FIELDS])
    evaluations["val_accuracy"] = evaluations["val_accuracy"].astype(float)
    finals = evaluations[evaluations["kind"] == KIND_FINAL].reset_index(drop=True)
    return RunTables(evaluations, finals, _stages(evaluations), _summary(path))


def _last_records(log: Path) -> dict[tuple, dict[str, Any]]:
    """The last usable record of each key, read as a resume reads the log: a torn last line
    (a crash mid-write) and records of the wrong shape (:func:`record_problems`) left out."""
    from evores.store.resume import read_log

    return {tuple(record["key"]): record for record in read_log(RunDirectory(log.parent))}


def _row(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"key": tuple(record["key"])}
    row.update({name: record.get(name) for name in LOG_FIELDS})
    if row["kind"] == KIND_SEARCH and row["stage"] is None:
        row["stage"] = record["key"][0]  # logs of earlier versions
    if row["status"] != OK:
        row["val_accuracy"] = None
        if row["kind"] == KIND_FINAL:
            row["test_accuracy"] = None
    if row["failure"] == FAILURE_NAN:
        row["failure"] = NOT_FINITE
    if row["kind"] == KIND_FINAL:
        # No validation split and no search stage (earlier logs say 0.0 and one past the last).
        row["val_accuracy"] = row["stage"] = None
    row.update(flat_genes(record.get("hparams") or {}))
    return row


def flat_genes(hparams: dict[str, Any]) -> dict[str, Any]:
    """One column per gene: a list gene as its depth, its layers and their total."""
    flat: dict[str, Any] = {}
    for name, value in hparams.items():
        if isinstance(value, list):
            if name in DEPTHS:
                flat[DEPTHS[name]] = len(value)
            flat.update({f"{name}_{i}": layer for i, layer in enumerate(value)})
            flat[f"{name}_total"] = sum(value)
        else:
            flat[name] = value
    return flat


def _stages(evaluations: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    search = evaluations[evaluations["kind"] == KIND_SEARCH]
    rows = []
    for stage, group in search.groupby("stage", sort=True):
        rows.append({
            "stage": int(stage),
            "resolution": int(group["resolution"].iloc[0]),
            "n_evaluations": len(group),
            "n_failed": int((group["status"] != OK).sum()),
            "best_val_accuracy": group["val_accuracy"].max(),
            "median_val_accuracy": group["val_accuracy"].median(),
        })  # fmt: skip
    columns = ["stage", "resolution", "n_evaluations", "n_failed", "best_val_accuracy",
               "median_val_accuracy"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _summary(path: Path) -> dict[str, Any] | None:
    for name in SUMMARY_FILES:
        if (path / name).is_file():
            try:
                return json.loads((path / name).read_text(encoding="utf-8"))
            except UNPARSABLE:
                log.warning("%s is damaged: left out of load_run's summary", path / name)
    return None


def _pandas():
    """pandas, an optional dependency of load_run alone: one line saying how to get it."""
    try:
        import pandas
    except ModuleNotFoundError:
        raise CheckpointError(
            "load_run needs pandas, which evores does not install by default: "
            "pip install 'evores[analysis]'"
        ) from None
    return pandas
