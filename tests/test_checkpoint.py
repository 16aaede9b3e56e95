import json

import pytest

from evores.checkpoint import CHECKPOINT, EVALUATIONS, PREVIOUS, RunDirectory, atomic_write_text
from evores.errors import CheckpointError


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_records_append_and_a_torn_last_line_is_skipped(tmp_path):
    run = RunDirectory(tmp_path)
    run.append_record({"key": [0, 0, 0], "x": 1})
    run.append_record({"key": [0, 0, 1], "x": 2})
    with run.file(EVALUATIONS).open("a") as stream:
        stream.write('{"key": [0, 0, 2], "x"')
    assert [r["x"] for r in run.read_records()] == [1, 2]
    run.append_record({"key": [0, 0, 2], "x": 3})
    assert [r["x"] for r in run.read_records()] == [1, 2, 3]


def test_damage_before_the_last_line_is_an_error(tmp_path):
    run = RunDirectory(tmp_path)
    run.file(EVALUATIONS).write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(CheckpointError, match="line 2 is not JSON"):
        run.read_records()


def test_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    run = RunDirectory(tmp_path)
    assert run.load_checkpoint() is None
    run.save_checkpoint({"generation": 1})
    run.save_checkpoint({"generation": 2})
    assert run.load_checkpoint() == {"generation": 2}
    run.file(CHECKPOINT).write_text('{"format": 1, "sta')
    assert run.load_checkpoint() == {"generation": 1}
    assert "damaged" in caplog.text


def test_both_checkpoints_damaged_is_an_error(tmp_path):
    run = RunDirectory(tmp_path)
    run.file(CHECKPOINT).write_text("{")
    run.file(PREVIOUS).write_text("")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        run.load_checkpoint()


def test_incompatible_format_is_refused(tmp_path):
    run = RunDirectory(tmp_path)
    run.file(CHECKPOINT).write_text(json.dumps({"format": 99, "state": {}}))
    with pytest.raises(CheckpointError, match="incompatible"):
        run.load_checkpoint()
