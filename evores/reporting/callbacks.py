"""A user's hooks into a run: ``evores.search(callbacks=[...])``.

A callback is any object with an ``on_evaluation(record)`` method, an ``on_stage(stage)``
method, or both (:class:`Callback` has both, doing nothing, to subclass). On rank 0, after every
evaluation is logged, ``on_evaluation`` gets its record (the line of ``evaluations.jsonl``, a
dict of builtins); after every stage of the search closes, ``on_stage`` gets the stage's
summary (the summary's ``stages`` entry with the 0-based ``stage``). Each gets its own copy:
nothing a callback does changes the search, so a resumed run still equals an uninterrupted one.
Evaluations finished before a restart were shown to the callbacks of the run that logged them
and are not shown again.

A callback that raises is reported in one warning line (the callback, the method, the error)
and not called again in this run; the search goes on as if it had never been there.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

from evores.core.errors import ConfigError
from evores.core.results import one_line

log = logging.getLogger("evores")

METHODS = ("on_evaluation", "on_stage")


class Callback:
    """A callback that does nothing: subclass it and override what you need."""

    def on_evaluation(self, record: dict[str, Any]) -> None:
        """After every evaluation: its log record."""

    def on_stage(self, stage: dict[str, Any]) -> None:
        """After every stage of the search: its summary."""


def check_callbacks(callbacks: Iterable[Any] | None) -> list[Any]:
    """``callbacks`` as a list, each checked to have one of the :data:`METHODS`."""
    if callbacks is None:
        return []
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Iterable):
        raise ConfigError(f"callbacks={callbacks!r} is not a list; pass callbacks=[MyCallback()]")
    checked = list(callbacks)
    for callback in checked:
        if not any(callable(getattr(callback, method, None)) for method in METHODS):
            raise ConfigError(
                f"callback {name_of(callback)} has neither an on_evaluation(record) nor an "
                "on_stage(stage) method; give it one (or subclass evores.Callback)"
            )
    return checked


def name_of(callback: Any) -> str:
    """A callback's name for a log line: its class's, or a function's own."""
    return getattr(callback, "__name__", None) or type(callback).__name__


class Callbacks:
    """The run's callbacks; each is called until it raises."""

    def __init__(self, callbacks: Iterable[Any] = ()) -> None:
        self.active = list(callbacks)

    def evaluation(self, record: dict[str, Any]) -> None:
        self._call("on_evaluation", record)

    def stage(self, stage: dict[str, Any]) -> None:
        self._call("on_stage", stage)

    def _call(self, method: str, data: dict[str, Any]) -> None:
        for callback in list(self.active):
            function = getattr(callback, method, None)
            if not callable(function):
                continue
            try:
                function(copy.deepcopy(data))
            except Exception as error:  # noqa: BLE001 - a user's callback is not the run
                self.active.remove(callback)
                log.warning(
                    "callback %s.%s raised %s; it is not called again, the search goes on",
                    name_of(callback), method, one_line(error),
                )  # fmt: skip
