"""A checkpoint: the search's typed state (:mod:`evores.strategies.state`) in its envelope.

The driver writes one after every completed step (``checkpoint.json``), and a resume reads it
back through :func:`evores.store.resume.read_back`, which checks every field first.
"""

from typing import Any, NotRequired, TypedDict

from evores.strategies.state import SearchState


class Checkpoint(TypedDict):
    search: SearchState
    elapsed: float  # seconds the run has worked, over all its allocations
    logged: int  # lines of evaluations.jsonl the state accounts for
    # The configuration the run started with, and its fingerprint (resume.fingerprinted):
    # a resume on another configuration is refused.
    config: NotRequired[dict[str, Any]]
    config_fingerprint: NotRequired[str]


def checkpoint(
    search: SearchState, elapsed: float, logged: int, config_record: dict[str, Any]
) -> Checkpoint:
    """The checkpoint of a search that has worked ``elapsed`` seconds and logged ``logged``."""
    return {"search": search, "elapsed": elapsed, "logged": logged, **config_record}
