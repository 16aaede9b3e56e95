"""The errors evores reports to users.

Every message states what was wrong, the offending value, and how to fix it; the CLI turns
these into one line and exit code 2.
"""

from __future__ import annotations

import errno


class EvoresError(Exception):
    """Base class of the errors a user can fix."""


class ConfigError(EvoresError, ValueError):
    """A configuration value, hyperparameter set or search-space bound is invalid."""


class DataError(EvoresError):
    """A dataset is missing, empty, unreadable or unsuitable."""


class CheckpointError(EvoresError):
    """A run directory or checkpoint cannot be used."""


class ExportError(EvoresError):
    """An export target (an Optuna storage) cannot take the run."""


# What parsing hostile text can raise besides a decode error: invalid UTF-8 and numbers past
# Python's digit limit are ValueErrors (as JSON's and TOML's decode errors are), deep nesting
# a RecursionError. Whatever reads a file back catches these, never a decode error alone.
UNPARSABLE = (ValueError, RecursionError)


# A full disk or quota, an I/O error, a file system gone read-only: faults of the machine.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def is_machine_fault(error: BaseException) -> bool:
    """True for a fault of the machine, which says nothing about the genome being trained:
    an OS error of :data:`MACHINE_ERRNOS`, or an error reading the dataset cache (h5py's
    carry no errno: they are told apart by where they were raised)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in MACHINE_ERRNOS:
            return True
        if isinstance(error, OSError) and error.errno is None and _raised_in_h5py(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _raised_in_h5py(error: BaseException) -> bool:
    trace = error.__traceback__
    while trace is not None:
        if str(trace.tb_frame.f_globals.get("__name__", "")).startswith("h5py"):
            return True
        trace = trace.tb_next
    return False
