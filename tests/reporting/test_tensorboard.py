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


def test_a_final_retraining_writes_its_per_epoch_curves_and_a_search_task_none(tmp_path, cache_dir):
    pytest.importorskip("tensorboard", reason="report.tensorboard needs the tensorboard extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_worker import PX, final_task, make_config, search_task

    from evores.data.cache import open_cache
    from evores.execution.worker import make_work
    from evores.reporting.tensorboard import epoch_curves

    config = make_config()
    assert epoch_curves(config, tmp_path) is None  # report.tensorboard off
    config["report"]["tensorboard"] = True
    hooks = epoch_curves(config, tmp_path)
    with hooks(search_task()) as on_epoch:
        assert on_epoch is None
    work = make_work(config, open_cache("embedded", [PX], cache_dir=cache_dir), tmp_path, hooks)
    result = work(final_task(epochs=3))
    assert result["status"] == "ok" and result["epochs"] == 3
    events = EventAccumulator(str(tmp_path / "tensorboard" / "final-0"))
    events.Reload()
    assert {"final/train_loss", "final/epoch_seconds"} <= set(events.Tags()["scalars"])
    losses = events.Scalars("final/train_loss")
    assert [event.step for event in losses] == [1, 2, 3]
    assert all(event.value > 0 for event in losses)
    assert [e.step for e in events.Scalars("final/epoch_seconds")] == [1, 2, 3]
