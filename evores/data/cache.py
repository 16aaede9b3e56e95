"""The resolution cache: a dataset downsampled once to every resolution, stored in one HDF5 file.

Fitness evaluations train on the same images at 16, 32, 64 ... px thousands of times; decoding
and resizing JPEGs each time would cost more than the training (see shared/perf/NOTES.md).
:func:`open_cache` builds (:mod:`evores.data.build`), once per (dataset, filter, crop, split
parameters), an HDF5 file with

- ``images/<r>``: uint8 (N, C, r, r) per resolution, contiguous and uncompressed, rows ordered
  train, val, test, so every split (and train+val) is one contiguous slice of the file, which
  :meth:`DatasetCache.mapped` reads through a memory map; C is 1 where every image of the source
  is gray (or ``channels`` = 1 asks for gray), else 3;
- ``labels`` (int64), ``keys`` (sha256 of each image's content), ``names``, ``source_index``;
- ``splits/train``, ``splits/val``, ``splits/test``: row indices of the deterministic
  stratified split;
- attributes: the source fingerprint, filter, crop, split seed and fractions, the evores
  version, the class names and the build report (JSON).

Building streams: each image is opened, converted to RGB (or gray), cropped and resized to
every resolution and written in blocks, so only one full-resolution image per decoding process
is in memory at a time. A pyramidal TIFF is read at its smallest stored level that keeps twice
a resolution, like a JPEG's draft: JPEGs are decoded with ``Image.draft`` (DCT scaling) to no
less than twice the size needed for a resolution, so the chosen filter still does the last
>= 2x reduction; the draft scale depends only on the image and that resolution, so the pixels
at 32 px do not depend on which other resolutions share the file. ``nearest`` skips draft (its
aliasing is the point). The file is written under a temporary name and renamed
(evores.core.atomic), so readers never see a partial file.
It is reused while the source fingerprint and parameters match and rebuilt (with the union
of old and new resolutions) otherwise. A cache of an earlier format (chunked images) is not
reused: the format version is one of the parameters, so the new file is built beside it once.

Upscaling: a resolution above the short side of EVERY image (long side for ``pad``) is
refused with a DataError, since such a run would only measure interpolation. When only some
images are smaller, they are upscaled, counted in the report and a warning is logged: real
collections (hymenoptera) mix sizes and dropping the small images would bias the classes.

Duplicates (same content hash) never straddle splits: a generated split assigns each group
of identical images to one split; with given folders, val/test images identical to a training
(or validation) image are dropped and counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from evores.core.errors import ConfigError, DataError
from evores.data.build import FORMAT_VERSION, build_cache
from evores.data.resample import CHANNELS, CROPS, FILTERS, MAX_DECODE_PIXELS
from evores.data.sources import open_source

logger = logging.getLogger("evores.data.cache")

SPLITS = ("train", "val", "test", "train+val")


@dataclass(frozen=True)
class DatasetCache:
    """A read handle on one built cache file; holds no open file, so it is cheap to pass on."""

    path: Path
    class_names: list[str]
    resolutions: tuple[int, ...]
    filter: str
    crop: str
    report: dict
    split_sizes: dict
    channels: int = 3
    # Bytes of a rung's arrays one rank may hold in its own memory before reading them
    # through a memory map instead (evores.training.prepared); 0: decided from the node.
    memory_budget: int = 0

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def arrays(self, resolution: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 (N, C, r, r) C-contiguous and labels int64 (N,) of one split."""
        self._check(resolution, split)
        with h5py.File(self.path, "r") as f:
            select = _as_slice(_rows(f, split))
            images = f[f"images/{resolution}"][select]
            labels = f["labels"][select]
        return np.ascontiguousarray(images), labels.astype(np.int64)

    def mapped(self, resolution: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`arrays`, but the images are a read-only view of the file through a
        memory map: pages are read when touched and held by the page cache, which every
        process mapping the file shares. Falls back to :meth:`arrays` where the layout does
        not allow a map (a compressed, chunked or unwritten dataset)."""
        self._check(resolution, split)
        with h5py.File(self.path, "r") as f:
            rows = _rows(f, split)
            select = _as_slice(rows)
            offset = _raw_offset(f[f"images/{resolution}"])
            labels = f["labels"][select].astype(np.int64)
        if offset is None or not isinstance(select, slice):
            return self.arrays(resolution, split)
        shape = (rows.size, self.channels, resolution, resolution)
        row_bytes = self.channels * resolution * resolution
        # mode "c": writable for torch.from_numpy without a copy, yet never written back; a
        # page becomes private only if written, which training never does.
        images = np.memmap(
            self.path, np.uint8, "c", offset + select.start * row_bytes, shape
        )  # fmt: skip
        return images, labels

    def split_bytes(self, resolution: int, split: str) -> int:
        """The bytes of one split's images at ``resolution`` (what a rank holds in memory)."""
        rows = sum(self.split_sizes[part] for part in split.split("+"))
        return rows * self.channels * resolution * resolution

    def with_memory_budget(self, budget: int) -> DatasetCache:
        return replace(self, memory_budget=int(budget))

    def _check(self, resolution: int, split: str) -> None:
        if resolution not in self.resolutions:
            raise ConfigError(
                f"resolution {resolution} is not in cache {self.path.name} (it holds "
                f"{list(self.resolutions)}); pass it to open_cache(resolutions=...)"
            )
        if split not in SPLITS:
            raise ConfigError(f"split {split!r} is unknown; choose one of {list(SPLITS)}")

    def pin(self) -> dict[str, str]:
        """What a run pins of its data: the source's fingerprint, and a digest of which
        images (by content) are in which split. A resume on other data is refused by it."""
        digest = hashlib.sha256()
        with h5py.File(self.path, "r") as f:
            source = str(f.attrs["fingerprint"])
            keys = f["keys"][...]
            for split in ("train", "val", "test"):
                rows = f[f"splits/{split}"][...]
                digest.update(split.encode() + b"\0" + b"\0".join(bytes(k) for k in keys[rows]))
        return {"source_fingerprint": source, "split_digest": digest.hexdigest()}


def _rows(f, split: str) -> np.ndarray:
    return np.concatenate([f[f"splits/{p}"][...] for p in split.split("+")]).astype(np.int64)


def _raw_offset(dataset) -> int | None:
    """The byte offset of ``dataset``'s raw data in its file when it is stored as one plain
    block (contiguous, unfiltered, written), else None."""
    if dataset.chunks is not None or dataset.compression is not None or dataset.dtype != np.uint8:
        return None
    return dataset.id.get_offset()


def _as_slice(rows: np.ndarray) -> slice | np.ndarray:
    """A slice when ``rows`` is a contiguous range (always, by construction), else the rows."""
    if rows.size and np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size)):
        return slice(int(rows[0]), int(rows[0]) + rows.size)
    return np.sort(rows)


def read_cache(path: str | Path) -> DatasetCache:
    """Open an already built cache file (e.g. on a worker that did not build it)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            sizes = {s: int(f[f"splits/{s}"].shape[0]) for s in ("train", "val", "test")}
    except (OSError, KeyError) as exc:
        raise DataError(f"cannot read cache file {path} ({exc}); delete it to rebuild") from None
    if attrs.get("format_version") != FORMAT_VERSION:
        raise DataError(f"cache file {path} has an old format; delete it to rebuild")
    return DatasetCache(
        path=path,
        class_names=json.loads(attrs["class_names"]),
        resolutions=tuple(json.loads(attrs["resolutions"])),
        filter=str(attrs["filter"]),
        crop=str(attrs["crop"]),
        report=json.loads(attrs["report"]),
        split_sizes=sizes,
        channels=int(attrs.get("channels", 3)),
    )


def open_cache(
    source: str | Path,
    resolutions: Sequence[int],
    *,
    filter: str = "box",
    crop: str = "centre",
    cache_dir: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    download: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    max_decode_pixels: int = MAX_DECODE_PIXELS,
    channels: str | int = "auto",
    build_workers: int = 0,
) -> DatasetCache:
    """Build or reuse the cache of ``source`` holding at least ``resolutions``.

    ``source``: "embedded", a folder, an .h5/.hdf5 file, or "cifar10:<root>" /
    "stl10:<root>" / "flowers102:<root>". Rebuilds when the source fingerprint or a parameter
    changed or a resolution is missing. An image that would decode to more than
    ``max_decode_pixels`` is skipped undecoded and counted (a JPEG decodes at the smallest DCT
    scale that keeps twice the largest resolution, so a huge JPEG decodes small).
    ``channels``: "auto" (one where every image is gray, else three), 1 or 3.
    ``build_workers`` processes decode the images (0: every CPU available to this process);
    the file is the same whatever their number.
    ``progress(done, total, name)`` follows a build image by image (:func:`log_progress`, say).
    """
    wanted = _check_options(resolutions, filter, crop, val_fraction, test_fraction)
    if type(channels) not in (str, int) or channels not in CHANNELS:  # True == 1: refused
        raise ConfigError(f'channels {channels!r} is unknown; choose "auto", 1 or 3')
    _check_workers(build_workers)  # refused whether or not a cache is already there
    src = open_source(source, download=download)
    params = {
        "source": src.identity,
        "filter": filter,
        "crop": crop,
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "format_version": FORMAT_VERSION,
        "max_decode_pixels": int(max_decode_pixels),
        "channels": channels,  # requested: a 3-channel cache is never reused for 1
    }
    path = _cache_path(cache_dir, src.name, params)
    fingerprint = src.fingerprint()
    existing = _existing_resolutions(path, params)
    if existing is not None:
        stored_resolutions, stored_fingerprint = existing
        if stored_fingerprint == fingerprint and set(wanted) <= set(stored_resolutions):
            return read_cache(path)
        wanted = tuple(sorted(set(wanted) | set(stored_resolutions)))
        logger.info("rebuilding cache %s (source changed or resolutions missing)", path)
    _check_writable(path.parent)  # before the scan, which can take long on a large folder
    build_cache(src, source, path, wanted, params, fingerprint, progress, build_workers)
    return read_cache(path)


def log_progress(done: int, total: int, name: str) -> None:
    """A build's progress as a log line at every tenth of its images."""
    step = max(1, total // 10)
    if done % step == 0 or done == total:
        logger.info("caching %s: %d/%d images (%d%%)", name, done, total, 100 * done // total)


def _check_options(resolutions, filter, crop, val_fraction, test_fraction) -> tuple[int, ...]:
    if filter not in FILTERS:
        raise ConfigError(f"filter {filter!r} is unknown; choose one of {', '.join(FILTERS)}")
    if crop not in CROPS:
        raise ConfigError(f"crop {crop!r} is unknown; choose one of {', '.join(CROPS)}")
    res = list(resolutions)
    if not res or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in res):
        raise ConfigError(f"resolutions must be positive integers, got {res!r}")
    fractions = (val_fraction, test_fraction)
    if not all(0 < f < 1 for f in fractions) or sum(fractions) >= 1:
        raise ConfigError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} must each be in "
            "(0, 1) and sum to less than 1"
        )
    return tuple(sorted(set(res)))


def _check_workers(workers) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(
            f"build_workers must be a whole number >= 0 (0: every available CPU), got {workers!r}"
        )


def _cache_path(cache_dir, name: str, params: dict) -> Path:
    if cache_dir is None:
        cache_dir = os.environ.get("EVORES_CACHE_DIR") or Path.home() / ".cache" / "evores"
    folder = Path(cache_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create the dataset cache folder {str(folder)!r} ({error.strerror}); set "
            "data.cache_dir or EVORES_CACHE_DIR to a writable folder"
        ) from None
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "dataset"
    return folder / f"{safe}-{params['filter']}-{params['crop']}-{digest}.h5"


def _check_writable(folder: Path) -> None:
    """Refuse a cache folder that a build could not write its file into (a reused cache file
    in a read-only folder is fine: only building needs this)."""
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".evores-probe.", suffix=".tmp")
    except OSError as error:
        raise DataError(
            f"the dataset cache folder {str(folder)!r} is not writable ({error.strerror}) and "
            "the cache must be built; set data.cache_dir or EVORES_CACHE_DIR to a writable folder"
        ) from None
    os.close(handle)
    os.unlink(probe)


def _existing_resolutions(path: Path, params: dict) -> tuple[list[int], str] | None:
    """(resolutions, fingerprint) of a readable cache file with the same parameters."""
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            if json.loads(f.attrs["params"]) != params:
                return None
            return json.loads(f.attrs["resolutions"]), str(f.attrs["fingerprint"])
    except (OSError, KeyError, ValueError) as exc:
        logger.warning("cache file %s is unreadable (%s); rebuilding it", path, exc)
        return None
