"""The dataset cache at the path users import it from; it lives in :mod:`evores.data`."""

from evores.data.cache import DatasetCache, open_cache, read_cache
from evores.data.resample import downsample

__all__ = ["DatasetCache", "downsample", "open_cache", "read_cache"]
