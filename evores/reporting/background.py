"""Provisional reports drawn beside the run, so that no worker waits for one.

At a stage change the driver first hands the workers their next tasks, then asks for the
provisional report here: one thread draws it while the run goes on. The report is made from a
snapshot the driver took at that moment, all plain data (the log as read then, a deep copy of
the search's progress view), never from the live search, so it says exactly what a report
drawn on the spot would have said.

One report at a time, in the order asked; a request that arrives while one is being drawn
waits, and a newer request replaces a waiting one (it would write the same files with older
data). :meth:`BackgroundReports.wait` returns once nothing is drawn or waiting: the driver
calls it before a stop's report and before the final one, which must be the last to write
the files. Every file is written atomically (evores.core.atomic), so a report cut short by the
end of the process leaves each file old or new, never half written, and the stray temporary
file is removed by the next start (``RunDirectory.remove_stale_temporaries``).

A thread, not a process: the snapshot is already in this process, and a process would import
matplotlib, Optuna and scikit-learn again for every report (seconds). The plots use their own
Agg figures (``evores.reporting.plots``), never pyplot's global state, so drawing off the main
thread is safe. The GIL makes the driver wait at most Python's switch interval (5 ms) for a
turn while the report runs, where a report on the driver's own thread made every worker wait
for all of it; see docs/studies.md for what that changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("evores")

Report = Callable[[], object]


class BackgroundReports:
    """A reporting thread: :meth:`submit` a report (a callable over a snapshot) to draw."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._waiting: Report | None = None
        self._drawing = False  # a thread is running _draw_all

    def submit(self, report: Report) -> None:
        """Draw ``report`` beside the caller; a failure is logged, never raised (reporting is
        not the run)."""
        with self._lock:
            self._waiting = report
            if not self._drawing:  # the thread has ended, or never started
                # A daemon: a process that ends (a crash) is never held up by a report.
                thread = threading.Thread(target=self._draw_all, name="evores-report", daemon=True)
                self._drawing = True
                thread.start()

    @property
    def busy(self) -> bool:
        """Whether a report is being drawn or waits to be."""
        with self._lock:
            return self._drawing or self._waiting is not None

    def wait(self) -> None:
        """Return once every report submitted so far is drawn."""
        with self._lock:
            self._lock.wait_for(lambda: not self._drawing and self._waiting is None)

    def _draw_all(self) -> None:
        while True:
            with self._lock:
                report, self._waiting = self._waiting, None
                if report is None:
                    self._drawing = False
                    self._lock.notify_all()
                    return
            try:
                report()
            except Exception as error:  # noqa: BLE001 - reporting is not the run
                log.warning("could not write the provisional summary and plots: %s", error)
