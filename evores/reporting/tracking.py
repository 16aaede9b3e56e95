"""MLflow tracking of a run (``report.mlflow = "URI"``), through the ``mlflow`` package
(``pip install 'evores[mlflow]'``, the small ``mlflow-skinny``).

Every evaluation becomes one MLflow run in the experiment named after the run directory: named
by its key, with the genome, resolution, stage, kind and seed as parameters, its accuracies,
seconds and epochs as metrics and its status (and failure type) as tags. It is a callback
(:mod:`evores.reporting.callbacks`) on rank 0. A tracking server that cannot be reached, or
any other failure of MLflow, is reported in one line and ends the logging, never the search;
unless set, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` is lowered to 2 so that an unreachable server
costs seconds, not minutes. MLflow 3 refuses a ``file:`` store unless
``MLFLOW_ALLOW_FILE_STORE=true``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from evores.core.results import KIND_SEARCH, OK, one_line

log = logging.getLogger("evores")

METRICS = ("val_accuracy", "test_accuracy", "wall_seconds", "epochs", "best_epoch")
TASK_PARAMETERS = ("resolution", "stage", "kind", "seed")


class MlflowLogger:
    """Logs each evaluation of one evores run as an MLflow run."""

    def __init__(self, uri: str, run_dir: Path) -> None:
        self.uri = uri
        self.run_dir = Path(run_dir).resolve()
        self.client: Any = None
        self.experiment_id: str | None = None
        try:
            self._open()
        except Exception as error:  # noqa: BLE001 - tracking is not the run
            self._give_up(error)

    def _open(self) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.uri)
        name = self.run_dir.name
        experiment = client.get_experiment_by_name(name)
        self.experiment_id = (
            experiment.experiment_id if experiment is not None else client.create_experiment(name)
        )
        self.client = client

    def _give_up(self, error: BaseException) -> None:
        self.client = None
        log.warning(
            "MLflow logging to %s failed (%s); nothing more is logged there, the search goes on",
            self.uri, one_line(error),
        )  # fmt: skip

    def on_evaluation(self, record: dict[str, Any]) -> None:
        if self.client is None:
            return
        try:
            self._log(record)
        except Exception as error:  # noqa: BLE001 - tracking is not the run
            self._give_up(error)

    def _log(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        tags = {"evores.run_dir": str(self.run_dir), "evores.status": record["status"]}
        if record.get("failure"):
            tags["evores.failure"] = record["failure"]
        key = "-".join(str(part) for part in record["key"])
        run = self.client.create_run(self.experiment_id, run_name=key, tags=tags)
        params = {name: record.get(name) for name in TASK_PARAMETERS}
        params.update({f"hparams.{name}": value for name, value in record["hparams"].items()})
        timestamp = int(1000 * float(record.get("elapsed") or 0.0))
        metrics = [
            Metric(name, float(record[name]), timestamp, 0)
            for name in METRICS
            if record.get(name) is not None and _counts(record, name)
        ]
        self.client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(name, str(value)) for name, value in params.items()],
            tags=[RunTag("evores.key", key)],
        )
        self.client.set_terminated(
            run.info.run_id, "FINISHED" if record["status"] == OK else "FAILED"
        )


def _counts(record: dict[str, Any], name: str) -> bool:
    """A failed evaluation's validation accuracy is the penalty, not a score: left out."""
    return name != "val_accuracy" or (record["status"] == OK and record["kind"] == KIND_SEARCH)


def open_tracking(config: dict[str, Any], run_dir: Path) -> list[MlflowLogger]:
    """The run's MLflow logger when ``report.mlflow`` names a tracking URI, else none."""
    uri = config.get("report", {}).get("mlflow", "")
    return [MlflowLogger(uri, run_dir)] if uri else []
