"""A whole search: the ``evores.search`` session, the driver loop, the plan of a cluster job,
and the command line."""

from evores.core.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "search": "session", "load_config": "session", "Driver": "driver", "main": "cli",
})  # fmt: skip
