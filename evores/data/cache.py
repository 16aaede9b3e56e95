"""The resolution cache: a dataset downsampled once to every resolution, stored in one HDF5 file.

Fitness evaluations train on the same images at 16, 32, 64 ... px thousands of times; decoding
and resizing JPEGs each time would cost more than the training (see shared/perf/NOTES.md).
:func:`open_cache` builds, once per (dataset, filter, crop, split parameters), an HDF5 file with

- ``images/<r>``: uint8 (N, C, r, r) per resolution, rows ordered train, val, test, so every
  split (and train+val) is one contiguous slice; C is 1 where every image of the source is gray
  (or ``channels`` = 1 asks for gray), else 3;
- ``labels`` (int64), ``keys`` (sha256 of each image's content), ``names``, ``source_index``;
- ``splits/train``, ``splits/val``, ``splits/test``: row indices of the deterministic
  stratified split;
- attributes: the source fingerprint, filter, crop, split seed and fractions, the evores
  version, the class names and the build report (JSON).

Building streams: each image is opened, converted to RGB (or gray), cropped and resized to every
resolution and written in blocks, so only one full-resolution image is in memory at a time.
A pyramidal TIFF is read at its smallest stored level that keeps twice a resolution, like a
JPEG's draft below.
JPEGs are decoded with ``Image.draft`` (DCT scaling) to no less than twice the size needed
for a resolution, so the chosen filter still does the last >= 2x reduction; the draft scale
depends only on the image and that resolution, so the pixels at 32 px do not depend on which
other resolutions share the file. ``nearest`` skips draft (its aliasing is the point).
The file is written under a temporary name and renamed (evores.core.atomic), so readers never see a
partial file.
It is reused while the source fingerprint and parameters match and rebuilt (with the union
of old and new resolutions) otherwise.

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
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from evores.core.atomic import atomic_path
from evores.core.errors import ConfigError, DataError
from evores.data.images import DECODE_ERRORS
from evores.data.resample import (
    CHANNELS,
    CROPS,
    FILTERS,
    MAX_DECODE_PIXELS,
    TooLargeToDecode,
    decodable,
    process_image,
    upscaled_counts,
)
from evores.data.sources import (
    Item,
    ScanReport,
    open_source,
)
from evores.data.splits import assign_splits, check_split_classes

logger = logging.getLogger("evores.data.cache")

SPLITS = ("train", "val", "test", "train+val")
FORMAT_VERSION = 1
_BLOCK_ROWS = 256  # images buffered before a write to HDF5
_CHUNK_BYTES = 1 << 20


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

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def arrays(self, resolution: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 (N, C, r, r) C-contiguous and labels int64 (N,) of one split."""
        if resolution not in self.resolutions:
            raise ConfigError(
                f"resolution {resolution} is not in cache {self.path.name} (it holds "
                f"{list(self.resolutions)}); pass it to open_cache(resolutions=...)"
            )
        if split not in SPLITS:
            raise ConfigError(f"split {split!r} is unknown; choose one of {list(SPLITS)}")
        with h5py.File(self.path, "r") as f:
            parts = split.split("+")
            rows = np.concatenate([f[f"splits/{p}"][...] for p in parts]).astype(np.int64)
            select = _as_slice(rows)
            images = f[f"images/{resolution}"][select]
            labels = f["labels"][select]
        return np.ascontiguousarray(images), labels.astype(np.int64)

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
    progress: Callable[[str], None] | None = None,
    max_decode_pixels: int = MAX_DECODE_PIXELS,
    channels: str | int = "auto",
) -> DatasetCache:
    """Build or reuse the cache of ``source`` holding at least ``resolutions``.

    ``source``: "embedded", a folder, an .h5/.hdf5 file, or "cifar10:<root>" /
    "stl10:<root>" / "flowers102:<root>". Rebuilds when the source fingerprint or a parameter
    changed or a resolution is missing. An image that would decode to more than
    ``max_decode_pixels`` is skipped undecoded and counted (a JPEG decodes at the smallest DCT
    scale that keeps twice the largest resolution, so a huge JPEG decodes small).
    ``channels``: "auto" (one where every image is gray, else three), 1 or 3.
    """
    wanted = _check_options(resolutions, filter, crop, val_fraction, test_fraction)
    if type(channels) not in (str, int) or channels not in CHANNELS:  # True == 1: refused
        raise ConfigError(f'channels {channels!r} is unknown; choose "auto", 1 or 3')
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
    _build(src, path, wanted, params, fingerprint, progress)
    return read_cache(path)


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


# --- the split -------------------------------------------------------------------------------


# --- resizing --------------------------------------------------------------------------------


# --- building --------------------------------------------------------------------------------


def _build(source, path: Path, resolutions, params, fingerprint, progress) -> None:
    started = time.perf_counter()
    scan = ScanReport()
    items = source.scan(scan)
    where = source.identity
    items = _decodable(source, items, resolutions, params, scan)
    channels = stored_channels(params["channels"], items)
    upscaled = upscaled_counts(items, resolutions, params["crop"], where)
    splits, n_dropped = assign_splits(
        items, params["val_fraction"], params["test_fraction"], params["seed"]
    )
    check_split_classes(items, splits, source.class_names, where)
    order = [i for s in ("train", "val", "test") for i, sp in enumerate(splits) if sp == s]
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as f:
        rows = _write_images(f, source, items, order, resolutions, params, scan, progress, channels)
        kept = [(items[i], splits[i]) for i in rows]
        check_split_classes([it for it, _ in kept], [s for _, s in kept], source.class_names, where)
        _write_index(f, kept)
        report = _report(source, items, kept, scan, n_dropped, upscaled, started)
        report["channels"] = channels
        _write_attrs(f, source, params, fingerprint, resolutions, report)
        f.attrs["channels"] = channels
    logger.info("built cache %s (%d images) in %.1f s", path, len(kept), report["build_seconds"])


def _decodable(source, items: list[Item], resolutions, params: dict, scan) -> list[Item]:
    """The items that downsampling decodes within ``max_decode_pixels``; the others skipped
    (before the split, so that every split keeps what it was given)."""
    limit = params["max_decode_pixels"]
    kept = []
    for item in items:
        if decodable(source, item, resolutions, params["filter"], params["crop"], limit):
            kept.append(item)
        else:
            scan.skip(item.name, f"too large to decode (over data.max_decode_pixels = {limit:,})")
    if items and not kept:
        raise DataError(
            f"every image of {source.identity} would decode to more than data.max_decode_pixels "
            f"= {limit:,} pixels at resolutions {list(resolutions)}; raise data.max_decode_pixels "
            "or choose smaller resolutions"
        )
    return kept


def stored_channels(requested: str | int, items: list[Item]) -> int:
    """How many channels the cache stores: as requested, or with "auto" one where every image
    is gray (a 3-channel copy of gray pixels costs 3x the memory and first-layer compute)."""
    if requested == "auto":
        return 1 if items and all(item.gray for item in items) else 3
    return int(requested)


def _write_images(f, source, items, order, resolutions, params, scan, progress, channels):
    """Stream the images of ``order`` into f["images/<r>"]; the item indices written."""
    n = len(order)
    datasets, buffers = {}, {}
    for r in resolutions:
        rows = max(1, min(n, _CHUNK_BYTES // (channels * r * r)))
        shape = (channels, r, r)
        datasets[r] = f.create_dataset(
            f"images/{r}", (n, *shape), np.uint8, maxshape=(None, *shape), chunks=(rows, *shape)
        )
        buffers[r] = np.empty((min(n, _BLOCK_ROWS), *shape), np.uint8)
    written: list[int] = []
    filled = 0
    step = max(1, n // 10)
    for k, i in enumerate(order, 1):
        try:
            arrays, scale = process_image(
                source, items[i], resolutions, params["filter"], params["crop"],
                params["max_decode_pixels"], channels,
            )  # fmt: skip
        except TooLargeToDecode as exc:
            scan.skip(items[i].name, str(exc))
        except DECODE_ERRORS as exc:
            scan.skip(items[i].name, f"corrupt ({type(exc).__name__}: {exc})"[:200])
        else:
            scan.n_reduced += scale > 1
            for r in resolutions:
                buffers[r][filled] = arrays[r]
            filled += 1
            written.append(i)
            if filled == len(buffers[resolutions[0]]):
                _flush(datasets, buffers, len(written) - filled, filled)
                filled = 0
        if progress is not None and (k % step == 0 or k == n):
            progress(f"caching {source.name}: {k}/{n} images ({100 * k // n}%)")
    _flush(datasets, buffers, len(written) - filled, filled)
    for ds in datasets.values():
        ds.resize(len(written), axis=0)
    return written


def _flush(datasets, buffers, start: int, count: int) -> None:
    for r, ds in datasets.items():
        ds[start : start + count] = buffers[r][:count]


def _write_index(f, kept: list[tuple[Item, str]]) -> None:
    f["labels"] = np.array([it.label for it, _ in kept], dtype=np.int64)
    f["keys"] = np.array([it.key for it, _ in kept], dtype="S64")
    f["names"] = np.array([it.name for it, _ in kept], dtype=h5py.string_dtype())
    f["source_index"] = np.array([it.index for it, _ in kept], dtype=np.int64)
    for split in ("train", "val", "test"):
        rows = [k for k, (_, s) in enumerate(kept) if s == split]
        f[f"splits/{split}"] = np.array(rows, dtype=np.int64)


def _report(source, items, kept, scan, n_dropped, upscaled, started) -> dict:
    keys = Counter(it.key for it, _ in kept)
    n_classes = len(source.class_names)
    class_counts = {s: [0] * n_classes for s in ("train", "val", "test")}
    for it, s in kept:
        class_counts[s][it.label] += 1
    return {
        "source": source.identity,
        "layout": source.layout,
        "n_images": len(kept),
        "n_skipped": sum(scan.skipped.values()),
        "skipped": dict(scan.skipped),
        "skipped_examples": scan.examples,
        "n_ignored_files": scan.n_ignored,
        "n_duplicates_dropped": n_dropped,
        "n_duplicates_kept": sum(c - 1 for c in keys.values()),
        "n_upscaled": max(upscaled.values(), default=0),
        "n_upscaled_by_resolution": {str(r): n for r, n in upscaled.items()},
        "split_sizes": {s: sum(class_counts[s]) for s in class_counts},
        "class_counts": class_counts,
        "n_scanned": len(items),
        "n_decoded_reduced": scan.n_reduced,  # a JPEG's DCT scale or a pyramid's smaller level
        "build_seconds": round(time.perf_counter() - started, 3),
    }


def _write_attrs(f, source, params, fingerprint, resolutions, report) -> None:
    try:
        from evores import __version__ as version
    except ImportError:
        version = "0"
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["params"] = json.dumps(params, sort_keys=True)
    f.attrs["fingerprint"] = fingerprint
    f.attrs["source"] = source.identity
    f.attrs["filter"] = params["filter"]
    f.attrs["crop"] = params["crop"]
    f.attrs["split_seed"] = params["seed"]
    f.attrs["val_fraction"] = params["val_fraction"]
    f.attrs["test_fraction"] = params["test_fraction"]
    f.attrs["evores_version"] = str(version)
    f.attrs["class_names"] = json.dumps(source.class_names)
    f.attrs["resolutions"] = json.dumps(list(resolutions))
    f.attrs["report"] = json.dumps(report)
