"""The defaults of a training: what :func:`evores.training.fitness.evaluate` uses when not told
otherwise, and the ``[train]`` section of a run's configuration (which reads them from here)."""

from __future__ import annotations

from typing import Any

# The default budget is counted in epochs, so a result never depends on how loaded the
# machine is; max_seconds is an explicit wall-clock safety net (0 = none). One thread per
# rank gives the same evaluations whatever the number of ranks (BLAS splits reductions by
# thread); 0 = the node's cores shared by its ranks, faster but rank-count dependent.
TRAIN_DEFAULTS: dict[str, Any] = {
    "max_epochs": 10,
    "patience": 5,
    "max_seconds": 0.0,
    "device": "auto",
    "threads": 1,
    "precision": "auto",  # auto = bf16 autocast on a CUDA GPU with bf16, else fp32
    "deterministic": True,  # on CUDA: deterministic algorithms, not cuDNN autotuning
    "evaluations_per_gpu": 1,  # evaluating ranks that share one GPU
}
