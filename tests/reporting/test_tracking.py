"""Tests for evores.reporting.tracking: MLflow that cannot be reached is reported and never ends
the search. A whole run logged to a local file store is tested in tests/engine/test_driver.py."""

from __future__ import annotations

import logging
import socket

import pytest

from evores.reporting.tracking import MlflowLogger, open_tracking

RECORD = {"key": [0, 0, 1], "kind": "search", "stage": 0, "resolution": 8, "seed": 3,
          "hparams": {"learning_rate": 0.01}, "status": "ok", "val_accuracy": 0.5,
          "elapsed": 1.0, "wall_seconds": 1.0, "epochs": 2}  # fmt: skip


def closed_port() -> int:
    """A local port nothing listens on: a connection there is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_tracking_server_is_reported_once_and_the_search_goes_on(
    tmp_path, caplog, monkeypatch
):
    pytest.importorskip("mlflow", reason="report.mlflow needs the mlflow extra")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{closed_port()}"
    with caplog.at_level(logging.WARNING, logger="evores"):
        logger = MlflowLogger(uri, tmp_path / "run")
        logger.on_evaluation(RECORD)  # nothing raised, nothing tried again
        logger.on_evaluation(RECORD)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith(f"MLflow logging to {uri} failed (")
    assert messages[0].endswith("nothing more is logged there, the search goes on")


def test_no_uri_no_logger(tmp_path):
    assert open_tracking({"report": {"mlflow": ""}}, tmp_path) == []
