"""The data side: image sources (folders, HDF5, torchvision, the embedded set), decoding,
downsampling, splits and the resolution cache a run trains from."""

from evores.core.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "open_cache": "cache", "DatasetCache": "cache", "open_dataset": "opener",
    "open_source": "sources", "downsample": "resample",
})  # fmt: skip
