"""A path a user gave, checked before anything uses it: one line naming it and the problem,
never a traceback from deep inside a read (a NUL byte, a name too long for the file system, a
folder this user may not enter, a symlink loop)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from evores.core.errors import ConfigError, EvoresError

NAME_MAX = 255  # bytes in one name of a path: ext4, XFS, Btrfs, NFS and Lustre alike


def usable_path(
    value: str | os.PathLike, what: str, error: type[EvoresError] = ConfigError
) -> Path:
    """``value`` as a :class:`~pathlib.Path` the OS can use (it need not exist yet); else
    ``error`` in one line naming ``what`` it is, the path, and the problem."""
    text = os.fspath(value)
    shown = repr(text if len(text) <= 80 else f"{text[:60]}...{text[-12:]}")
    if "\0" in text:
        raise error(f"{what} {shown} holds a NUL byte, which no path can; give the path without it")
    path = Path(text).expanduser()
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    if longest > NAME_MAX:
        raise error(
            f"{what} {shown} cannot be used (File name too long: a name of {longest} bytes, "
            f"where file systems allow {NAME_MAX}); give shorter names"
        )
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass  # not there (yet), or under a file: whoever needs it to exist says so
    except OSError as problem:
        reason = "a symlink loop" if problem.errno == errno.ELOOP else problem.strerror
        raise error(
            f"{what} {shown} cannot be used ({reason}); give a path this user may read, with "
            "names the file system allows"
        ) from None
    return path
