"""The errors evores reports to users.

Every message states what was wrong, the offending value, and how to fix it; the CLI turns
these into one line and exit code 2.
"""


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
