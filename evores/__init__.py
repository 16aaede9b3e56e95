"""evores: evolutionary hyperparameter optimisation of CNNs scored on downsampled images.

The public API, importable from here (loaded on first use, so ``import evores`` stays cheap):

- ``search`` — a whole search from Python, as ``python -m evores.run`` runs it
- ``load_run`` — a run directory as pandas DataFrames
- ``load_model`` — the winner's trained network and a ``predict`` function
- ``Callback`` — a base class for ``search(callbacks=[...])``

- ``evaluate``, ``train_and_test``, ``PreparedData`` — the fitness function
- ``FitnessResult`` — what an evaluation answers
- ``SearchSpace`` — the typed genes and the genome
- ``open_cache`` — the resolution cache of a dataset
- ``LadderSearch`` — the ask/tell search up the resolution ladder
- ``SteadyStateSearch`` — its asynchronous one-task-at-a-time counterpart
"""

__version__ = "0.1.0"

_EXPORTS = {
    "load_run": "evores.reporting.analysis",
    "load_model": "evores.reporting.winner",
    "Callback": "evores.reporting.callbacks",
    "evaluate": "evores.training.fitness",
    "train_and_test": "evores.training.fitness",
    "FitnessResult": "evores.core.results",
    "PreparedData": "evores.training.fitness",
    "SearchSpace": "evores.strategies.space",
    "open_cache": "evores.data.cache",
    "LadderSearch": "evores.strategies.generational",
    "SteadyStateSearch": "evores.strategies.steady",
}

__all__ = ["__version__", "search", *_EXPORTS]


def __getattr__(name: str):
    import importlib

    if name == "search":
        return importlib.import_module("evores.engine.session").search
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'evores' has no attribute {name!r}")
