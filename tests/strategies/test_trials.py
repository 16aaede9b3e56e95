"""Tests for evores.strategies.tpe, the bridge between genomes and Optuna trials."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from evores.strategies.space import SearchSpace
from evores.strategies.tpe import OutsideSpace, frozen_trial, study, tpe_genomes, trial_params

optuna = pytest.importorskip("optuna")


def genomes(space: SearchSpace, n: int) -> list[dict]:
    rng = np.random.default_rng(7)
    return [space.sample(rng) for _ in range(n)]


def test_a_genome_replayed_as_params_comes_back_through_suggest():
    space = SearchSpace()
    zeros = 0
    for hparams in genomes(space, 60):
        params, distributions = trial_params(space, hparams)
        assert set(params) == set(distributions)
        assert space.suggest(optuna.trial.FixedTrial(params)) == hparams
        for name in ("l1", "l2"):
            assert params[f"{name}_zero"] == (hparams[name] == 0.0)
            assert (name in params) == (hparams[name] != 0.0)
        zeros += hparams["l1"] == 0.0
        assert len([k for k in params if k.startswith("conv_filters_")]) == len(
            hparams["conv_filters"]
        )
    assert zeros > 0  # the zero branch was exercised


def test_a_genome_outside_a_narrowed_space_is_named():
    space = SearchSpace()
    [wide] = genomes(space, 1)
    narrow = SearchSpace.from_dict({**space.to_dict(), "learning_rate": [0.5, 0.6]})
    wide["learning_rate"] = 0.01
    with pytest.raises(OutsideSpace, match="learning_rate = 0.01"):
        trial_params(narrow, wide)


def test_an_evaluation_is_a_complete_or_a_failed_trial():
    space = SearchSpace()
    a, b = genomes(space, 2)
    done = frozen_trial(space, {"hparams": a, "status": "ok", "fitness": 0.7}, key=[0, 0, 0])
    failed = frozen_trial(space, {"hparams": b, "status": "failed", "val_accuracy": None})
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == 0.7
    assert done.user_attrs == {"status": "ok", "key": [0, 0, 0]}
    assert failed.state == optuna.trial.TrialState.FAIL and failed.value is None
    made = study(space, [{"hparams": a, "status": "ok", "fitness": 0.7}], running=[b])
    states = [t.state for t in made.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]


def test_tpe_genomes_are_a_pure_function_of_their_arguments_and_quiet():
    space = SearchSpace()
    told = [
        {"hparams": h, "status": "ok", "fitness": float(i) / 20}
        for i, h in enumerate(genomes(space, 15))
    ]
    heard: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = heard.append
    logging.getLogger("optuna").addHandler(listener)
    verbosity_before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)  # other tests may have quietened it
    level = logging.getLogger("optuna").level
    root = logging.getLogger()
    root_before = (root.level, list(root.handlers))
    np.random.seed(0)
    first = tpe_genomes(space, told, seed=5, count=4)
    np.random.seed(1)  # the global RNG plays no part
    assert tpe_genomes(space, told, seed=5, count=4) == first
    assert tpe_genomes(space, told, seed=6, count=4) != first
    assert len({repr(g) for g in first}) == 4
    assert all(space.validate(g) == g for g in first)
    assert logging.getLogger("optuna").level == level  # restored
    assert (root.level, list(root.handlers)) == root_before  # the root logger untouched
    assert [r for r in heard if r.levelno < logging.WARNING] == []  # Optuna's info silenced
    optuna.create_study()  # (which it says when not silenced)
    logging.getLogger("optuna").removeHandler(listener)
    optuna.logging.set_verbosity(verbosity_before)
    assert any("study created" in r.getMessage() for r in heard)
