import json
import os
from pathlib import Path

import pytest

from evores.core.errors import CheckpointError
from evores.store.checkpoint import (
    CHECKPOINT,
    CONFIG,
    EVALUATIONS,
    LOCK,
    PREVIOUS,
    SUMMARY,
    RunDirectory,
)


def test_whole_files_are_replaced_without_leaving_temporary_files(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.create("seed = 1\n")
    run.save_checkpoint({"generation": 1})
    run.save_checkpoint({"generation": 2})
    run.write_summary({"best": 0.5})
    names = sorted(p.name for p in run.path.iterdir())
    assert names == sorted([CONFIG, CHECKPOINT, PREVIOUS, SUMMARY])
    assert json.loads(run.file(PREVIOUS).read_text())["state"] == {"generation": 1}
    assert json.loads(run.file(SUMMARY).read_text()) == {"best": 0.5}


def test_a_failed_checkpoint_write_keeps_the_last_good_one(tmp_path, monkeypatch):
    run = RunDirectory(tmp_path)
    run.save_checkpoint({"generation": 1})

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError):
        run.save_checkpoint({"generation": 2})
    monkeypatch.undo()
    assert run.load_checkpoint() == {"generation": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_log_is_on_disk_before_the_checkpoint_that_counts_it(tmp_path, monkeypatch):
    run = RunDirectory(tmp_path)
    run.append_record({"key": [0, 0, 0]})
    events = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(descriptor):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{descriptor}")).name))
        fsync(descriptor)

    def recording_replace(source, target):
        events.append(("replace", Path(target).name))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    run.save_checkpoint({"generation": 1})
    assert events[0] == ("fsync", EVALUATIONS)
    assert events[-1] == ("replace", CHECKPOINT)


@pytest.mark.parametrize(
    "env, job",
    [
        ({"SLURM_JOB_ID": "42"}, "42"),
        ({"SLURM_JOBID": "7"}, "7"),
        ({}, ""),
        ({"SLURM_JOB_ID": "x"}, ""),
    ],
)
def test_the_lock_names_the_slurm_job_and_a_broken_id_does_not_stop_it(
    tmp_path, monkeypatch, env, job
):
    for name in ("SLURM_JOB_ID", "SLURM_JOBID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run = RunDirectory(tmp_path)
    run.lock()
    holder = json.loads(run.file(LOCK).read_text())
    assert holder["job"] == job and holder["pid"] == os.getpid()
    run.unlock()
    assert not run.file(LOCK).exists()


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


@pytest.mark.parametrize("name", [EVALUATIONS, "evaluations.rejected.jsonl"])
def test_appends_never_follow_a_symlink_planted_in_the_run_directory(tmp_path, name):
    """A planted link would make the run append to a file outside it (issue 23, class 4)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create("seed = 1\n")
    (run_dir.path / name).symlink_to(victim)
    with pytest.raises(CheckpointError, match="is a symbolic link.*remove the link"):
        if name == EVALUATIONS:
            run_dir.append_record({"key": [0, 0, 0]})
        else:
            run_dir.rejected = [(1, '{"crafted": true}', ["wrong"])]
            run_dir.set_aside_rejected()
    assert victim.read_text() == "untouched\n"


def test_reading_a_run_never_changes_its_log_only_a_resume_repairs_it(tmp_path):
    """load_run, export, report and search.initial rewrote a torn log, and crashed on a
    read-only copy (issue 23, class 5)."""
    from evores.store.resume import read_log

    run = RunDirectory(tmp_path / "run")
    run.create("seed = 1\n")
    run.append_record({"key": [0, 0, 0], "x": 1})
    with run.file(EVALUATIONS).open("a") as stream:
        stream.write('{"key": [0, 0, 1], "x"')
    torn = run.file(EVALUATIONS).read_bytes()
    os.chmod(run.file(EVALUATIONS), 0o444)
    os.chmod(run.path, 0o555)
    try:
        read_log(RunDirectory(run.path))  # what load_run, export and report read with
        assert [r["x"] for r in RunDirectory(run.path).read_records(repair=False)] == [1]
    finally:
        os.chmod(run.path, 0o755)
        os.chmod(run.file(EVALUATIONS), 0o644)
    assert run.file(EVALUATIONS).read_bytes() == torn
    assert [r["x"] for r in run.read_records()] == [1]  # the writer's read repairs
    assert run.file(EVALUATIONS).read_bytes().endswith(b"1}\n")


HOSTILE_JSON = {
    "a 5000-digit number": b'{"key": [0, 0, 1], "x": ' + b"9" * 5000 + b"}",
    "deep nesting": b'{"key": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "invalid UTF-8": b'{"key": [0, 0, 1], "x": "\xff\xfe"}',
}


@pytest.mark.parametrize("text", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_hostile_text_in_the_log_is_a_damaged_line_not_a_traceback(tmp_path, text):
    """Read-back parsing caught decode errors only (issue 23, class 9)."""
    run = RunDirectory(tmp_path)
    run.append_record({"key": [0, 0, 0], "x": 1})
    with run.file(EVALUATIONS).open("ab") as stream:
        stream.write(text)
    assert [r["x"] for r in run.read_records(repair=False)] == [1]  # a torn last line
    with run.file(EVALUATIONS).open("ab") as stream:
        stream.write(b"\n" + json.dumps({"key": [0, 0, 2], "x": 3}).encode() + b"\n")
    with pytest.raises(CheckpointError, match="line 2 is not JSON") as caught:
        run.read_records()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_a_checkpoint_damaged_with_hostile_text_falls_back_to_the_previous(tmp_path, text):
    run = RunDirectory(tmp_path)
    run.save_checkpoint({"n": 1})
    run.save_checkpoint({"n": 2})
    run.file(CHECKPOINT).write_bytes(text)
    assert run.load_checkpoint() == {"n": 1}


@pytest.mark.parametrize("text", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_a_lock_holding_hostile_text_is_a_torn_lock(tmp_path, text):
    from evores.store.checkpoint import _read_lock

    (tmp_path / LOCK).write_bytes(text)
    assert _read_lock(tmp_path / LOCK) is None
