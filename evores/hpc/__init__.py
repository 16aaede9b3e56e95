"""Everything SLURM: the job's environment (job id, ranks, GPU binding) and the batch scripts,
rendered from a run's ``[slurm]`` section."""

from evores.core.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "SlurmEnvironment": "environment", "render_sbatch": "sbatch", "script_body": "sbatch",
})  # fmt: skip
