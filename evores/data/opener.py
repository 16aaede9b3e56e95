"""The dataset a run's configuration names, opened (built or reused) with every resolution the run
will read: its stages' and, with a learned resizer, the resizer's sources."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evores.core.errors import DataError
from evores.data.cache import log_progress, open_cache
from evores.data.resizing import resizer_spec

Progress = Callable[[int, int, str], None]  # (images done, of total, the source's name)


def open_dataset(config: dict[str, Any], progress: Progress = log_progress):
    """Open (building or reusing) the resolution cache the config asks for, with the learned
    resizer's source resolutions when it has one; ``progress`` follows a build."""
    data = config["data"]
    resolutions = list(config["schedule"]["resolutions"])
    spec = resizer_spec(data)
    if spec is not None:  # the learned resizer's sources, in the same build
        resolutions = sorted(set(resolutions) | {spec.source_for(r) for r in resolutions})
    try:
        return _open_cache(config, resolutions, progress)
    except DataError as error:
        if spec is None or "upscaled" not in str(error):
            raise
        sources = sorted({spec.source_for(r) for r in config["schedule"]["resolutions"]})
        raise DataError(
            f"{error}; the learned resizer reads {sources} px copies (data.resizer_source = "
            f"{spec.source}, 0 = twice each stage): set data.resizer_source between the largest "
            "resolution and the images' size"
        ) from None


def _open_cache(config: dict[str, Any], resolutions: list[int], progress: Progress):
    data = config["data"]
    cache = open_cache(
        data["path"],
        resolutions,
        filter=data["filter"],
        crop=data["crop"],
        cache_dir=data["cache_dir"] or None,
        seed=data["split_seed"],
        val_fraction=data["val_fraction"],
        test_fraction=data["test_fraction"],
        download=data["download"],
        max_decode_pixels=data["max_decode_pixels"],
        channels=data["channels"],
        build_workers=data["build_workers"],
        progress=progress,
    )
    return cache.with_memory_budget(data["memory_budget"])
