"""Atomic whole-file writes: all or nothing, and as readable as the umask allows."""

from __future__ import annotations

import os
import stat

import pytest

from evores.core.atomic import atomic_path, current_umask, write_json, write_text


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_have_the_mode_the_umask_gives(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    write_json(tmp_path / "summary.json", {"a": 1})
    write_text(tmp_path / "config.toml", "seed = 0\n")
    for name in ("summary.json", "config.toml"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "checkpoint.json"
    write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as temporary:
        temporary.write_text("half")
        raise RuntimeError("crash")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_a_file_its_writer_made_anew_still_follows_the_umask(tmp_path):
    """safetensors recreates the file it writes: winner.safetensors was always 0600 (issue 23,
    class 14)."""
    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "weights.bin") as temporary:
            temporary.unlink()
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(descriptor)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "weights.bin").stat().st_mode) == 0o644


def test_saved_weights_follow_the_umask(tmp_path):
    torch = pytest.importorskip("torch")
    from evores.training.weights import save_weights

    previous = os.umask(0o027)
    try:
        save_weights(torch.nn.Linear(2, 1), tmp_path / "w.safetensors", {"note": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o640
