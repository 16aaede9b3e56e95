"""The run directory: every file name in it, the lock, the append-only evaluation log, the
checkpoint and its checks on resume, and the genomes an earlier run offers a warm start."""

from evores.core.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "RunDirectory": "checkpoint", "read_log": "resume", "run_directory": "rundir",
})  # fmt: skip
