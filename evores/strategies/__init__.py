"""How the search proposes genomes: the typed search space, DEAP's operators, the resolution
ladder with its fidelity probe, the generational and steady-state searches, TPE, warm starts."""

from evores.core.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "SearchSpace": "space", "LadderSearch": "generational", "SteadyStateSearch": "steady",
})  # fmt: skip
