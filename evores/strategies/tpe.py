"""The bridge between evores genomes and Optuna trials, in one place.

A genome's Optuna form is what :meth:`evores.strategies.space.SearchSpace.suggest` asks a trial
for: the
flat encoding's names, depth first and then one parameter per layer, a zero-allowed penalty as
a boolean ``<name>_zero`` asked before its value. :func:`trial_params` replays a genome through
``suggest`` to get those parameters and their distributions, so the two can never disagree;
:func:`frozen_trial` turns a finished evaluation into a ``FrozenTrial`` (a failure is
``TrialState.FAIL``), :func:`study` builds a study of them, and :func:`tpe_genomes` asks Optuna's
TPE for new genomes given the evaluations so far. The TPE search (``search.strategy = "tpe"``)
and ``evores.reporting.export`` both use it; nothing here keeps state between calls.

Optuna is imported lazily and its per-trial info lines are silenced only while these functions
run (its own logger's level is restored after; the root logger is never touched).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from evores.core.errors import ConfigError
from evores.core.results import OK
from evores.strategies.space import SearchSpace


class OutsideSpace(ValueError):
    """A genome with a value outside the space it is replayed through."""


class _Replay:
    """A trial that answers ``SearchSpace.suggest`` from a known genome's flat encoding,
    recording the parameters (Optuna's external values) and distributions it was asked for."""

    def __init__(self, flat: Mapping[str, Any]):
        self.flat = flat
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, Any] = {}

    def _take(self, name: str, distribution: Any, value: Any) -> Any:
        try:
            inside = distribution._contains(distribution.to_internal_repr(value))
        except ValueError:
            inside = False
        if not inside:
            raise OutsideSpace(f"{name} = {value!r} is outside {distribution}")
        self.params[name] = value
        self.distributions[name] = distribution
        return value

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        from optuna.distributions import CategoricalDistribution

        if name not in self.flat and name.endswith("_zero"):
            value = self.flat[name.removesuffix("_zero")] == 0.0
        else:
            value = self.flat[name]
        return self._take(name, CategoricalDistribution(list(choices)), value)

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
        from optuna.distributions import IntDistribution

        return self._take(name, IntDistribution(low, high, log=log), self.flat[name])

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        from optuna.distributions import FloatDistribution

        return self._take(name, FloatDistribution(low, high, log=log), self.flat[name])


def trial_params(space: SearchSpace, hparams: Mapping[str, Any]) -> tuple[dict, dict]:
    """The Optuna parameters and distributions of genome ``hparams`` in ``space``.

    Raises :class:`OutsideSpace` when a value lies outside ``space`` (e.g. a genome of a wider
    stage replayed through a narrowed one)."""
    try:
        flat = space.encode(hparams)  # validated against space: outside it, a ConfigError
    except ConfigError as error:
        raise OutsideSpace(str(error)) from None
    replay = _Replay(flat)
    space.suggest(replay)
    return replay.params, replay.distributions


def frozen_trial(space: SearchSpace, evaluation: Mapping[str, Any], **attrs: Any) -> Any:
    """A finished evaluation (``hparams``, ``status`` and ``fitness`` or ``val_accuracy``) as
    a ``FrozenTrial``: COMPLETE with the validation accuracy as its value, or FAIL. ``attrs``
    become user attributes."""
    import optuna

    params, distributions = trial_params(space, evaluation["hparams"])
    ok = evaluation["status"] == OK
    value = evaluation.get("fitness", evaluation.get("val_accuracy"))
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
        value=float(value) if ok else None,
        params=params,
        distributions=distributions,
        user_attrs={"status": evaluation["status"], **attrs},
    )


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's logger at WARNING for the duration (its level restored after)."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def study(
    space: SearchSpace,
    evaluations: Sequence[Mapping[str, Any]],
    *,
    running: Sequence[Mapping[str, Any]] = (),
    sampler: Any = None,
    storage: Any = None,
    study_name: str | None = None,
) -> Any:
    """A maximising study holding ``evaluations`` as finished trials, in order, then the
    genomes ``running`` (still being evaluated) as running trials; those outside ``space``
    are left out (they cannot be stated in its distributions)."""
    import optuna

    def running_trial(hparams: Mapping[str, Any]) -> Any:
        params, distributions = trial_params(space, hparams)
        return optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING, params=params, distributions=distributions
        )

    with quiet_optuna():
        made = optuna.create_study(
            direction="maximize", sampler=sampler, storage=storage, study_name=study_name
        )
        trials = []
        for evaluation in evaluations:
            with contextlib.suppress(OutsideSpace):
                trials.append(frozen_trial(space, evaluation))
        for hparams in running:
            with contextlib.suppress(OutsideSpace):
                trials.append(running_trial(hparams))
        made.add_trials(trials)
    return made


def tpe_genomes(
    space: SearchSpace,
    evaluations: Sequence[Mapping[str, Any]],
    seed: int,
    count: int,
    running: Sequence[Mapping[str, Any]] = (),
) -> list[dict]:
    """``count`` genomes from Optuna's TPE over ``space``, fitted to ``evaluations``.

    A pure function: a fresh in-memory study of ``evaluations`` and a TPE sampler seeded with
    ``seed`` (never the global RNG), so the same arguments give the same genomes. The genomes
    ``running`` and those asked earlier in the call count as running trials (TPE's constant
    liar), so genomes asked while others are evaluated spread out rather than repeat."""
    import optuna

    sampler = optuna.samplers.TPESampler(seed=seed & 0xFFFFFFFF)
    made = study(space, evaluations, running=running, sampler=sampler)
    with quiet_optuna():
        return [space.suggest(made.ask()) for _ in range(count)]
