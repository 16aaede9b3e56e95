"""Tests for evores.reporting.console: lines for a Python user who configured no logging, the bar
only on a terminal, the cache build's progress. The bar itself is tested under a
pseudo-terminal in tests/engine/test_live.py."""

from __future__ import annotations

import io
import logging
import os
import re

from evores.data.cache import log_progress
from evores.reporting.console import bar_stream, cache_progress, console_handler, verbose_logging

log = logging.getLogger("evores")


def unconfigure(monkeypatch) -> None:
    """Logging as a fresh Python process has it: no handler on the root or evores logger (in
    the test's body: pytest adds its own to the root logger after the fixtures)."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "level", logging.NOTSET)
    monkeypatch.setattr(log, "propagate", True)  # the CLI, run in-process before, turns it off


def test_verbose_shows_the_lines_for_the_call_only(monkeypatch, capsys):
    unconfigure(monkeypatch)
    with verbose_logging(True):
        log.info("evaluation [0, 0, 0] at 8 px: val 0.500 in 1s")
    log.info("after the call")
    with verbose_logging(False):
        log.info("not asked for")
    err = capsys.readouterr().err
    assert err.endswith(" evaluation [0, 0, 0] at 8 px: val 0.500 in 1s\n")
    assert err.count("\n") == 1 and log.handlers == [] and log.level == logging.NOTSET


def test_verbose_leaves_a_callers_logging_as_it_is(monkeypatch, capsys):
    unconfigure(monkeypatch)
    mine = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(mine)
    with verbose_logging(True):
        assert log.handlers == [] and log.level == logging.NOTSET
    assert capsys.readouterr().err == ""


def test_a_bar_only_on_a_terminal_that_shows_the_progress_lines(monkeypatch):
    unconfigure(monkeypatch)
    main, side = os.openpty()
    with open(side, "w") as terminal, open(main, "rb", buffering=0):
        log.addHandler(console_handler("test", terminal))
        log.setLevel(logging.INFO)
        assert bar_stream() is terminal
        log.setLevel(logging.WARNING)  # --quiet: no bar
        assert bar_stream() is None
    log.handlers = [console_handler("test", io.StringIO())]
    log.setLevel(logging.INFO)
    assert bar_stream() is None  # a file, a pipe: plain lines


def test_without_a_terminal_the_cache_build_logs_a_line_per_tenth(caplog):
    assert cache_progress(None) is log_progress
    with caplog.at_level(logging.INFO, logger="evores"):
        for done in range(1, 24):
            log_progress(done, 23, "embedded")
    assert [r.getMessage() for r in caplog.records][-2:] == [
        "caching embedded: 22/23 images (95%)",
        "caching embedded: 23/23 images (100%)",
    ]
    assert len(caplog.records) == 12  # every second of 23 images (a tenth, rounded), the last


def test_the_run_bar_counts_the_runs_evaluations_and_shows_the_stage_failures_and_eta():
    from test_progress import view

    from evores.reporting.console import RunBar
    from evores.reporting.progress import RunCosts

    def logged(key, status="ok", accuracy=0.5, kind="search"):
        return {"key": key, "kind": kind, "stage": key[0], "resolution": 16, "status": status,
                "val_accuracy": accuracy, "wall_seconds": 2.0}  # fmt: skip

    before = [logged([0, 0, 0], accuracy=0.25)]  # finished before a restart
    costs = RunCosts(2, before)
    stream = io.StringIO()
    bar = RunBar(stream, view(n_evaluations=1, stage_used=1), costs, before)
    for record in (logged([0, 1, 0], accuracy=0.75), logged([0, 1, 1], "failed", 0.0)):
        costs.add(record)
        bar.add(record, view(n_evaluations=1, stage_used=1), elapsed=6.0)
    bar.close()
    last = stream.getvalue().split("\r")[-1].strip()
    # 3 of 20 search evaluations and 2 final retrainings done; one worker busy (6 s in 6 s):
    # 7 more at 16 px (2 s), 10 at 32 px and 2 final retrainings (8 s, 4 s at the range's low
    # end, 32 px being unmeasured).
    bar_text, text = re.fullmatch(r"stage 1/2 16 px  14%\|(.*)\| (.*)", last).groups()
    assert bar_text.startswith("#") and text == (
        "3/22, best 0.750  1 failed  elapsed 6s  eta 1m50s [1m02s-1m50s]"
    )
