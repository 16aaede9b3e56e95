"""The run configuration: TOML in, a validated plain dict out, the resolved TOML written back.

Every key is declared with its type and default (:mod:`evores.config.schema`); unknown keys are
rejected with the valid ones listed, so a typo never silently falls back to a default. The
resolved configuration (with the schedule chosen for the dataset filled in) is what a run
directory records and what a resumed run reads back. Loading reads nothing but the file itself:
a ``search.initial`` run directory is read when the run starts (:mod:`evores.store.warmstart`).
"""

from evores.config.checks import resolve
from evores.config.load import load, parse_override, read_toml
from evores.config.schema import (
    DEFAULT_SCHEDULE,
    DEFAULTS,
    EMBEDDED,
    EMBEDDED_SCHEDULE,
    EMBEDDED_SPACE,
    STRATEGIES,
    defaults,
)
from evores.core.typed import to_toml, to_toml_value
from evores.hpc.sbatch import SLURM_DEFAULTS, slurm_settings, walltime_seconds

__all__ = [
    "DEFAULTS", "DEFAULT_SCHEDULE", "EMBEDDED", "EMBEDDED_SCHEDULE", "EMBEDDED_SPACE",
    "SLURM_DEFAULTS", "STRATEGIES", "defaults", "load", "parse_override", "read_toml", "resolve",
    "slurm_settings", "to_toml", "to_toml_value", "walltime_seconds",
]  # fmt: skip
