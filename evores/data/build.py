"""Writing the resolution cache: decode every image once (in worker processes), write each
resolution as one contiguous, uncompressed array, then the index and the provenance.

The images are decoded by ``data.build_workers`` processes, each given plain data only (the
source as the user named it, the items to decode, the resolution parameters) and returning
arrays; the parent writes them in the order of the split, in the same blocks whatever the
number of workers, so the file's datasets and attributes do not depend on it (only the build
report's timing does). A pool pays for itself only on a large build (each worker imports
numpy, Pillow and h5py afresh), so small sources are decoded in this process.

``images/<r>`` is contiguous and uncompressed so that :meth:`DatasetCache.mapped` can read it
through a memory map: the page cache then holds one copy for every rank of a node.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

import h5py
import numpy as np

from evores.core.atomic import atomic_path
from evores.core.errors import DataError
from evores.data.images import DECODE_ERRORS
from evores.data.resample import TooLargeToDecode, decodable, process_image, upscaled_counts
from evores.data.sources import Item, ScanReport, Source, open_source
from evores.data.splits import assign_splits, check_split_classes

logger = logging.getLogger("evores.data.cache")

# 2: images/<r> contiguous and uncompressed (memory-mappable); 1 was chunked.
FORMAT_VERSION = 2
_BLOCK_ROWS = 256  # images buffered before a write to HDF5
_CHUNK_ITEMS = 16  # images one worker decodes per task
# Fewer images than this per worker and the pool costs more than it saves: starting a worker
# imports numpy, Pillow and h5py (about 0.3 s), the time of a few hundred small decodes.
_MIN_ITEMS_PER_WORKER = 512


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, as SLURM and taskset set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pool_size(requested: int, n_items: int) -> int:
    """Worker processes for decoding ``n_items`` images: ``requested`` (0: every available
    CPU), but never more than the images give work for. 1 means: decode in this process."""
    wanted = requested or available_cpus()
    return max(1, min(wanted, n_items // _MIN_ITEMS_PER_WORKER))


def build_cache(source, spec, path: Path, resolutions, params, fingerprint, progress, workers):
    """Build the cache file ``path`` of ``source`` (opened from ``spec``, which the workers
    open again) atomically."""
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
    n_workers = pool_size(workers, len(order))
    decoder = _Decoder(source, spec, resolutions, params, n_workers, channels)
    with atomic_path(path) as temporary:
        with h5py.File(temporary, "w") as f:
            rows = _write_images(f, decoder, items, order, resolutions, scan, progress, channels)
        if len(rows) < len(order):  # skipped while decoding: rewrite the arrays to size
            _compact(temporary, resolutions, len(rows), channels)
        kept = [(items[i], splits[i]) for i in rows]
        check_split_classes([it for it, _ in kept], [s for _, s in kept], source.class_names, where)
        with h5py.File(temporary, "a") as f:
            _write_index(f, kept)
            report = _report(source, items, kept, scan, n_dropped, upscaled, started)
            report["build_workers"] = n_workers
            report["channels"] = channels
            _write_attrs(f, source, params, fingerprint, resolutions, report)
            f.attrs["channels"] = channels
    logger.info(
        "built cache %s (%d images, %d decoding process(es)) in %.1f s",
        path, len(kept), n_workers, report["build_seconds"],
    )  # fmt: skip


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


# --- decoding, here or in worker processes ---------------------------------------------------

# What a worker process decodes from: opened once per process by _open_worker_source.
_worker_source: Source | None = None


def _open_worker_source(spec: str) -> None:
    global _worker_source
    _worker_source = open_source(spec)  # already fetched by the parent: no download here


def _decode_in_worker(items: list[Item], *options) -> list[tuple]:
    return decode_items(_worker_source, items, *options)


def decode_items(source, items: Sequence[Item], resolutions, filter, crop, max_pixels, channels):
    """Each item as ("ok", {r: uint8 (channels, r, r)}, reduction) or ("skip", reason)."""
    outcomes: list[tuple] = []
    for item in items:
        try:
            arrays, scale = process_image(
                source, item, resolutions, filter, crop, max_pixels, channels
            )
        except TooLargeToDecode as exc:
            outcomes.append(("skip", str(exc)))
        except DECODE_ERRORS as exc:
            outcomes.append(("skip", f"corrupt ({type(exc).__name__}: {exc})"[:200]))
        else:
            outcomes.append(("ok", arrays, scale))
    return outcomes


class _Decoder:
    """Decodes items in order: in this process (one worker) or in a pool of processes."""

    def __init__(self, source, spec, resolutions, params: dict, workers: int, channels: int):
        self.source, self.spec, self.workers = source, spec, workers
        self.options = (tuple(resolutions), params["filter"], params["crop"])
        self.options += (params["max_decode_pixels"], channels)

    def outcomes(self, items: list[Item]) -> Iterator[tuple[Item, tuple]]:
        """(item, outcome) for every item, in the order given."""
        chunks = [items[k : k + _CHUNK_ITEMS] for k in range(0, len(items), _CHUNK_ITEMS)]
        if self.workers == 1:
            for chunk in chunks:
                yield from zip(chunk, decode_items(self.source, chunk, *self.options), strict=True)
            return
        # spawn, not fork: the parent may hold MPI, threads or an open HDF5 file.
        pool = ProcessPoolExecutor(
            self.workers, get_context("spawn"), _open_worker_source, (str(self.spec),)
        )
        try:
            yield from self._pooled(pool, chunks)
        finally:  # on an error, the tasks not yet started are dropped, not decoded in vain
            pool.shutdown(wait=True, cancel_futures=True)

    def _pooled(self, pool, chunks: list[list[Item]]) -> Iterator[tuple[Item, tuple]]:
        window = 4 * self.workers  # tasks in flight: bounds the decoded arrays held at once
        pending: deque[Future] = deque()
        for k in range(len(chunks) + window):
            if k < len(chunks):
                pending.append(pool.submit(_decode_in_worker, chunks[k], *self.options))
            if k >= window:  # the oldest task, in submission order
                chunk = chunks[k - window]
                yield from zip(chunk, self._result(pending.popleft(), chunk), strict=True)

    def _result(self, future: Future, chunk: list[Item]) -> list[tuple]:
        try:
            return future.result()
        except BrokenProcessPool:
            raise DataError(
                f"a cache-build worker process died (killed, out of memory or crashed) while "
                f"decoding {chunk[0].name} .. {chunk[-1].name} of {self.source.identity}; the "
                "cache was not written: set data.build_workers = 1 to decode in one process, "
                "give the job more memory, or (a script of your own that calls evores) put its "
                "top level under if __name__ == '__main__': so that workers can start"
            ) from None


# --- writing ---------------------------------------------------------------------------------


def _write_images(f, decoder, items, order, resolutions, scan, progress, channels) -> list[int]:
    """Stream the images of ``order`` into contiguous f["images/<r>"]; the item indices
    written (rows past them stay unwritten when images were skipped)."""
    n = len(order)
    shapes = {r: (channels, r, r) for r in resolutions}
    datasets = {r: f.create_dataset(f"images/{r}", (n, *shapes[r]), np.uint8) for r in shapes}
    buffers = {r: np.empty((min(n, _BLOCK_ROWS), *shapes[r]), np.uint8) for r in shapes}
    written: list[int] = []
    filled = 0
    outcomes = decoder.outcomes([items[i] for i in order])
    for k, (i, (item, outcome)) in enumerate(zip(order, outcomes, strict=True), 1):
        if outcome[0] == "skip":
            scan.skip(item.name, outcome[1])
        else:
            arrays, scale = outcome[1], outcome[2]
            scan.n_reduced += scale > 1
            for r in resolutions:
                buffers[r][filled] = arrays[r]
            filled += 1
            written.append(i)
            if filled == len(buffers[resolutions[0]]):
                _flush(datasets, buffers, len(written) - filled, filled)
                filled = 0
        if progress is not None:
            progress(k, n, decoder.source.name)
    _flush(datasets, buffers, len(written) - filled, filled)
    return written


def _flush(datasets, buffers, start: int, count: int) -> None:
    for r, ds in datasets.items():
        ds[start : start + count] = buffers[r][:count]


def _compact(path: Path, resolutions, rows: int, channels: int) -> None:
    """Rewrite ``path``'s images to their first ``rows`` rows: a contiguous HDF5 dataset
    cannot shrink, and one deleted in place would leave its bytes in the file."""
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        with h5py.File(path, "r") as old, h5py.File(staging, "w") as new:
            for r in resolutions:
                target = new.create_dataset(f"images/{r}", (rows, channels, r, r), np.uint8)
                for start in range(0, rows, _BLOCK_ROWS):
                    stop = min(rows, start + _BLOCK_ROWS)
                    target[start:stop] = old[f"images/{r}"][start:stop]
        os.replace(staging, path)
    finally:
        Path(staging).unlink(missing_ok=True)


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
