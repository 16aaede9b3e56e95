"""The genomes a run starts from (``search.initial``): a warm start, as Optuna's
``enqueue_trial``.

``search.initial`` is a list of genomes (the canonical hparams dicts the log's records carry)
or the path of an earlier run directory. A run directory gives its genomes best first: its
successful final candidates in the order the run ranked them (by validation accuracy), then
its successful search evaluations of the highest stage reached, best validation accuracy
first, then those of the stage below, and so on; each genome once, up to ``search.population``.
A stopped run (no final candidates) gives its search evaluations.

A list is checked when the config is loaded; a run directory is read once, when the run starts
(:mod:`evores.store.warmstart`, after the config is loaded), and the run's config holds them
as a list: ``config.toml`` in the run directory, and so the checkpoint's fingerprint, records
the genomes themselves, never the path. A resume reads them back from there, so an earlier run
that changes (or disappears) after the start cannot change this run.

Every genome must lie in the run's search space (``[space]``): one outside is refused with the
gene named (ConfigError), never clipped. More genomes than ``search.population`` are refused
too, since they would not all be in the first population. The first population is the given
genomes, in order, then as many random samples as it takes to fill it, as without them.
"""

from __future__ import annotations

import os
from typing import Any

from evores.core.errors import ConfigError
from evores.core.typed import short
from evores.strategies.space import SearchSpace

KEY = "search.initial"


def checked_value(value: Any) -> str | list[dict[str, Any]]:
    """``value`` as given for ``search.initial``: a path (str) or a list of genome dicts."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(g, dict) for g in value):
        return [dict(genome) for genome in value]
    raise ConfigError(
        f"{KEY} must be a list of genome tables or the path of an earlier run directory, got "
        f'{short(value)}; e.g. {KEY} = "runs/earlier" or {KEY} = [{{learning_rate = 0.01, '
        "conv_filters = [16], conv_kernels = [3], fc_units = [64], batch_size = 64, l1 = 0.0, "
        "l2 = 0.0}]"
    )


def check_genomes(
    genomes: list[dict[str, Any]],
    space: SearchSpace,
    population: int,
    where: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The validated ``genomes`` (see the module docstring), at most ``population``; ``where``
    names each in the messages (by default its place in the list)."""
    where = where or [f"{KEY}[{i}]" for i in range(len(genomes))]
    if len(genomes) > population:
        raise ConfigError(
            f"{KEY} gives {len(genomes)} genomes, more than search.population = {population}: "
            "they would not all be in the first population; give at most that many or raise "
            "search.population"
        )
    resolved = []
    for genome, name in zip(genomes, where, strict=True):
        try:
            resolved.append(space.validate(genome))
        except ConfigError as error:
            raise ConfigError(f"{name}: {error}") from None
    return resolved
