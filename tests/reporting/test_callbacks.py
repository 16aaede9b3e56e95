"""Tests for evores.reporting.callbacks: what a callback must have, and what happens when one
raises. The callbacks of a whole run are tested in tests/engine/test_driver.py."""

from __future__ import annotations

import logging

import pytest

import evores
from evores.core.errors import ConfigError
from evores.reporting.callbacks import Callbacks, check_callbacks


def test_a_callback_needs_one_of_the_two_methods():

    class Both(evores.Callback):
        pass

    assert len(check_callbacks([Both(), Both()])) == 2
    assert check_callbacks(None) == []
    with pytest.raises(ConfigError, match=r"callback print has neither an on_evaluation"):
        check_callbacks([print])
    with pytest.raises(ConfigError, match="is not a list"):
        check_callbacks(Both())


def test_search_refuses_a_bad_callback_before_writing_anything(tmp_path):
    with pytest.raises(ConfigError, match="callback object has neither"):
        evores.search(out=tmp_path / "run", callbacks=[object()])
    assert not (tmp_path / "run").exists()


def test_a_callback_that_raises_is_reported_once_and_dropped_and_the_others_go_on(caplog):
    heard = []

    class Broken:
        def on_stage(self, stage):
            raise KeyError("stage")

    class Keeper:
        def on_evaluation(self, record):
            heard.append(record)
            record["key"].append("changed")  # a copy: the next callback sees the original

        def on_stage(self, stage):
            heard.append(stage)

    callbacks = Callbacks([Keeper(), Broken(), Keeper()])
    record = {"key": [0, 0, 1]}
    with caplog.at_level(logging.WARNING, logger="evores"):
        callbacks.stage({"stage": 0})
        callbacks.stage({"stage": 1})
        callbacks.evaluation(record)
    assert heard == [{"stage": 0}] * 2 + [{"stage": 1}] * 2 + [{"key": [0, 0, 1, "changed"]}] * 2
    assert record == {"key": [0, 0, 1]}
    assert [r.getMessage() for r in caplog.records] == [
        "callback Broken.on_stage raised KeyError: 'stage'; it is not called again, the search "
        "goes on"
    ]
