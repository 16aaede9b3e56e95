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
