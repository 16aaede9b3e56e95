"""What a person watching a run sees on stderr: the log's lines, and a progress bar (tqdm) while
stderr is a terminal.

The lines go to the ``evores`` logger as always; a :class:`ConsoleHandler` writes them through
tqdm, so that a bar on the same terminal stays below them instead of being torn. Where stderr
is a file (a SLURM ``.out`` file, a pipe) there is no bar and every line is kept plainly.
:func:`verbose_logging` shows the lines of ``evores.search(verbose=True)`` to a Python user who
configured no logging; :func:`cache_progress` is the dataset cache build's progress.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm

from evores.core.results import FAILED, KIND_SEARCH, OK, PRUNED
from evores.data.cache import log_progress
from evores.reporting.progress import RunCosts
from evores.reporting.summary import _duration
from evores.strategies.ladder import SEARCH, Progress

log = logging.getLogger("evores")

VERBOSE_HANDLER = "evores.verbose"  # the handler evores.search(verbose=True) adds for the call
_LINE_FORMAT = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
_BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}"


class ConsoleHandler(logging.StreamHandler):
    """Log lines on a stream, written above any progress bar on it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - as logging.StreamHandler: report, never raise
            self.handleError(record)


def console_handler(name: str, stream: TextIO | None = None) -> ConsoleHandler:
    """A handler named ``name`` writing ``HH:MM:SS line`` to ``stream`` (stderr)."""
    handler = ConsoleHandler(stream if stream is not None else sys.stderr)
    handler.set_name(name)
    handler.setFormatter(_LINE_FORMAT)
    return handler


def bar_stream(logger: logging.Logger = log) -> TextIO | None:
    """The terminal a progress bar goes to: that of ``logger``'s console handler, when it is a
    terminal and ``logger`` shows its progress lines (INFO); None for plain lines only."""
    if not logger.isEnabledFor(logging.INFO):
        return None
    for handler in logger.handlers:
        if isinstance(handler, ConsoleHandler) and _is_terminal(handler.stream):
            return handler.stream
    return None


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


@contextmanager
def verbose_logging(verbose: bool) -> Iterator[None]:
    """For the duration of a call: the ``evores`` logger's lines (INFO and up) on stderr when
    ``verbose`` and nobody configured logging (no handler on ``evores`` or the root logger);
    a caller's own logging configuration is left as it is."""
    if not verbose or log.hasHandlers():
        yield
        return
    handler, level = console_handler(VERBOSE_HANDLER), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


class RunBar:
    """One bar for a whole run: the stage, search evaluations and final retrainings done of the
    run's budget, failures, the stage's best, the elapsed time and the ETA with its range."""

    def __init__(
        self, stream: TextIO, progress: Progress, costs: RunCosts, finished: list[dict[str, Any]]
    ) -> None:
        """``finished``: the records finished before this process began (a resumed run)."""
        self.costs = costs
        # Search evaluations logged, told to the search or not.
        self.done = sum(record["kind"] == KIND_SEARCH for record in finished)
        self.best: float | None = None
        self.stage = progress.stage
        description, postfix = self._describe(progress, elapsed=0.0)
        self.bar = tqdm(
            total=progress.total_evaluations + costs.final_candidates, initial=len(finished),
            desc=description, postfix=postfix, file=stream, bar_format=_BAR_FORMAT,
            dynamic_ncols=True,
        )  # fmt: skip

    def add(self, record: dict[str, Any], progress: Progress, elapsed: float) -> None:
        """Count one logged record (``progress``: the search's view, before it is told)."""
        if record["status"] not in (OK, FAILED, PRUNED):
            return
        if record["kind"] == KIND_SEARCH:
            self.done += 1
            if record["stage"] != self.stage:
                self.stage, self.best = record["stage"], None
            if record["status"] == OK:
                self.best = max(self.best or 0.0, float(record["val_accuracy"]))
        description, postfix = self._describe(progress, elapsed)
        self.bar.set_description_str(description, refresh=False)
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.total = progress.total_evaluations + self.costs.final_candidates  # adaptive
        self.bar.update(1)

    def _describe(self, progress: Progress, elapsed: float) -> tuple[str, str]:
        """The bar's text before and after it: the stage; the best, failures, time, ETA."""
        postfix = "best " + ("-" if self.best is None else f"{self.best:.3f}")
        if self.costs.failed:
            postfix += f"  {self.costs.failed} failed"
        postfix += f"  elapsed {_duration(elapsed)}"
        if progress.phase != SEARCH:
            return "final retraining", postfix
        resolution = progress.resolutions[self.stage]
        just_done = max(0, self.done - progress.n_evaluations)
        postfix += f"  eta {self.costs.eta(progress, elapsed, just_done)}"
        return f"stage {self.stage + 1}/{progress.n_stages} {resolution} px", postfix

    def close(self) -> None:
        self.bar.close()


def cache_progress(stream: TextIO | None) -> Callable[[int, int, str], None]:
    """The progress of a cache build: one bar on ``stream`` (a terminal), else a log line at
    every tenth of the images."""
    bars: dict[str, Any] = {}

    def on_terminal(done: int, total: int, name: str) -> None:
        if name not in bars:
            bars[name] = tqdm(total=total, desc=f"caching {name}", unit="img", file=stream,
                              dynamic_ncols=True)  # fmt: skip
        bars[name].update(done - bars[name].n)
        if done >= total:
            bars.pop(name).close()

    return on_terminal if stream is not None else log_progress
