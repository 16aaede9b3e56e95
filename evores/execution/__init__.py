"""Running evaluations: the evaluators (serial, MPI), the worker that turns a task into a
training, and stopping a run cleanly on a signal."""

from evores.core.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "make_evaluator": "evaluators", "serve": "evaluators", "mpi_world": "evaluators",
    "make_work": "worker", "StopRequest": "stopping", "RunStopped": "stopping",
})  # fmt: skip
