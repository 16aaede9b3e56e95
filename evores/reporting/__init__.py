"""What a run shows and leaves: progress lines, summary, plots, the genes' importance,
TensorBoard, the recomputed report, the Optuna export, load_run and load_model."""

from evores.core.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "load_run": "analysis", "load_model": "winner", "recompute": "recompute",
    "export": "export", "summary": "summary",
})  # fmt: skip
