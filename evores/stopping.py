"""A run's early stop, at the path users import it from; it lives in :mod:`evores.execution`."""

from evores.execution.stopping import RunInterrupted, RunStopped, StopRequest

__all__ = ["RunInterrupted", "RunStopped", "StopRequest"]
