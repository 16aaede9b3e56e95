"""evores: evolutionary hyperparameter optimisation of CNNs scored on downsampled images.

The public API, importable from here (loaded on first use, so ``import evores`` stays cheap):

- ``search`` — a whole search from Python, as ``python -m evores.run`` runs it
- ``load_run`` — a run directory as pandas DataFrames
- ``load_model`` — the winner's trained network and a ``predict`` function

- ``evaluate``, ``train_and_test``, ``PreparedData`` — the fitness function
- ``FitnessResult`` — what an evaluation answers
- ``SearchSpace`` — the typed genes and the genome
- ``open_cache`` — the resolution cache of a dataset
- ``LadderSearch`` — the ask/tell search up the resolution ladder
- ``SteadyStateSearch`` — its asynchronous one-task-at-a-time counterpart
"""

__version__ = "0.1.0"

_EXPORTS = {
    "load_run": "evores.analysis",
    "load_model": "evores.winner",
    "evaluate": "evores.fitness",
    "train_and_test": "evores.fitness",
    "FitnessResult": "evores.results",
    "PreparedData": "evores.fitness",
    "SearchSpace": "evores.space",
    "open_cache": "evores.cache",
    "LadderSearch": "evores.generational",
    "SteadyStateSearch": "evores.steady",
}

__all__ = ["__version__", "search", *_EXPORTS]


def __getattr__(name: str):
    import importlib

    if name == "search":
        return importlib.import_module("evores.api").search
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'evores' has no attribute {name!r}")
