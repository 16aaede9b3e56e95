"""Stopping a run early, cleanly: the walltime warning, preemption, scancel, Ctrl-C.

Rank 0 installs :class:`StopRequest` as the handler of SIGUSR1 (SLURM's walltime warning, sent
``--signal`` seconds before the limit), SIGTERM (time limit reached, preemption, ``scancel``) and
SIGINT (Ctrl-C). The handler only sets a flag; the evaluators read it between messages, stop
handing out work, give the evaluations in flight ``grace`` seconds to finish and return. The
driver then records what was abandoned, writes the checkpoint and ends with
:data:`evores.hpc.environment.EXIT_CHECKPOINTED`, which tells the batch script to requeue the job.

SIGUSR1 gets the configured grace (``stop.grace_seconds``): the warning comes minutes before
the end. SIGTERM and SIGINT get none: SLURM kills the job ``KillWait`` seconds (30 by default)
after SIGTERM, and a person pressing Ctrl-C wants it to stop now. Evaluating ranks ignore all
three, so that rank 0 alone decides what happens to the work they are doing.

Where the driver trains in its own process (no MPI), an evaluation cannot be left running: it
is finished first, unless a second signal comes, which interrupts it (:class:`RunInterrupted`).
"""

from __future__ import annotations

import signal
import time

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class RunInterrupted(BaseException):
    """Raised inside a running evaluation by a second stop signal (serial runs).

    A BaseException so that no ``except Exception`` in a training loop or a user's fitness
    function turns it into a failed evaluation.
    """


class RunStopped(Exception):
    """The run stopped early after writing its checkpoint; ``--resume`` continues it."""

    def __init__(self, reason: str, abandoned: int):
        super().__init__(reason)
        self.reason = reason
        self.abandoned = abandoned


class StopRequest:
    """A flag set by a stop signal, with the deadline for the evaluations in flight."""

    def __init__(self, grace_seconds: float = 0.0):
        self.grace_seconds = grace_seconds
        self.reason: str | None = None
        self.deadline: float | None = None
        self.interrupt_running = False  # set for serial runs: a second signal interrupts

    def __bool__(self) -> bool:
        return self.reason is not None

    def request(self, reason: str, grace_seconds: float) -> None:
        """Ask the run to stop; a later request can only shorten the deadline."""
        deadline = time.monotonic() + grace_seconds
        if self.reason is None:
            self.reason = reason
        if self.deadline is None or deadline < self.deadline:
            self.deadline = deadline

    def expired(self) -> bool:
        """True once the evaluations in flight have had their grace period."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self and self.interrupt_running:
            raise RunInterrupted(f"{name} (second stop signal)")
        grace = self.grace_seconds if signum == signal.SIGUSR1 else 0.0
        self.request(name, grace)

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.handle)


def ignore_stop_signals() -> None:
    """For evaluating ranks: the driver decides when their work stops (see module docstring)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
