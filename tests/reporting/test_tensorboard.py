"""Tests for evores.reporting.tensorboard: the HParams table read back with TensorBoard's own
reader. The scalars of a whole run are tested in tests/engine/test_driver.py."""

from __future__ import annotations

import pytest

from evores.reporting.tensorboard import RunScalars


def record(key, status="ok", kind="search", **fields) -> dict:
    return {"key": key, "kind": kind, "stage": key[0], "resolution": 8 * min(key[0] + 1, 2),
            "status": status, "wall_seconds": 1.0, "val_accuracy": 0.0,
            "hparams": {"learning_rate": 0.01, "conv_filters": [8, 16]}, **fields}  # fmt: skip


def test_the_hparams_table_has_a_row_per_successful_evaluation(tmp_path):
    pytest.importorskip("tensorboard", reason="report.tensorboard needs the tensorboard extra")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    scalars = RunScalars(tmp_path)
    scalars.add(record([0, 0, 0], val_accuracy=0.25))
    scalars.add(record([0, 0, 1], status="failed", failure="nan"))  # no row
    scalars.add(record([1, 0, 0], val_accuracy=0.75))
    scalars.add(record([2, 0, 0], kind="final", val_accuracy=None, test_accuracy=0.5))
    scalars.close()
    runs = EventMultiplexer().AddRunsFromDirectory(str(tmp_path))
    runs.Reload()
    rows = {}
    for run, content in runs.PluginRunToTagToContent("hparams").items():
        for data in content.values():
            plugin = plugin_data_pb2.HParamsPluginData.FromString(data)
            if plugin.HasField("session_start_info"):
                info = plugin.session_start_info.hparams
                tags = runs.GetAccumulator(run).Tags()["scalars"]
                metric = next(tag for tag in tags if tag.startswith("hparam/"))
                value = runs.Scalars(run, metric)[0].value
                rows[run] = ({name: info[name].WhichOneof("kind") and _plain(info[name])
                              for name in info}, metric, value)  # fmt: skip
    assert rows == {
        "hparams/0-0-0": (
            {"learning_rate": 0.01, "conv_filters": "[8, 16]", "resolution": 8, "kind": "search"},
            "hparam/val_accuracy", 0.25,
        ),
        "hparams/1-0-0": (
            {"learning_rate": 0.01, "conv_filters": "[8, 16]", "resolution": 16, "kind": "search"},
            "hparam/val_accuracy", 0.75,
        ),
        "hparams/2-0-0": (
            {"learning_rate": 0.01, "conv_filters": "[8, 16]", "resolution": 16, "kind": "final"},
            "hparam/test_accuracy", 0.5,
        ),
    }  # fmt: skip


def _plain(value):
    kind = value.WhichOneof("kind")
    return {"number_value": value.number_value, "string_value": value.string_value,
            "bool_value": value.bool_value}[kind]  # fmt: skip
