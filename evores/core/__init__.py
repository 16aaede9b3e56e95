"""The leaves every other part stands on: errors, exit codes, result records, seeding,
statistics, atomic writes and typed plain values. They import nothing of evores."""

from evores.core.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "EvoresError": "errors", "ConfigError": "errors", "DataError": "errors",
    "CheckpointError": "errors", "ExportError": "errors", "FitnessResult": "results",
})  # fmt: skip
