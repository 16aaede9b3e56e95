"""Whole files replaced atomically: readers see the old file or the new one, never half.

The one way evores writes a file whole (config, checkpoint, summary, plots, the dataset
cache): write a temporary file in the same directory, fsync it, rename it over the target.
A crash at any point leaves the old file and at most a stray temporary file, which a failure
in this process removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block
    ends normally (after an fsync), removed when it raises."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp creates 0600 files; the result should be as readable as any file this process
    # creates (a team sharing a project directory sets its umask for that).
    mode = 0o666 & ~current_umask()
    os.fchmod(handle, mode)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, mode)  # again: a writer may have made the file anew (safetensors does)
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as indented JSON (no NaN or infinity), atomically."""
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (briefly process-wide)
    os.umask(mask)
    return mask


def _fsync(path: str | Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
