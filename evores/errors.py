"""The errors users catch, at the path they import them from; they live in :mod:`evores.core`."""

from evores.core.errors import CheckpointError, ConfigError, DataError, EvoresError, ExportError

__all__ = ["CheckpointError", "ConfigError", "DataError", "EvoresError", "ExportError"]
