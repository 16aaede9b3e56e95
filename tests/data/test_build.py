"""Building the cache: the same file from any number of decoding processes, contiguous
(memory-mappable) images, skipped images leaving no rows, a dead worker as one clear line."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from test_cache import make_folder

from evores.config import load
from evores.core.errors import ConfigError, DataError
from evores.data import build
from evores.data.cache import open_cache, read_cache

RESOLUTIONS = (8, 16)
TIMING = ("build_seconds", "build_workers")  # what may differ between the two builds


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """63 images of three classes, with a corrupt file the build skips."""
    return make_folder(tmp_path_factory.mktemp("build") / "data", per_class=20)


@pytest.fixture(scope="module")
def pooled(folder, tmp_path_factory):
    """The folder's cache built in this process and by two worker processes."""
    root = tmp_path_factory.mktemp("pooled")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "_MIN_ITEMS_PER_WORKER", 1)  # a pool even for 63 images
        return {
            workers: open_cache(
                folder, RESOLUTIONS, cache_dir=root / str(workers), build_workers=workers
            )  # fmt: skip
            for workers in (1, 2)
        }


def _contents(path) -> dict:
    """Every dataset's values and every attribute of an HDF5 file, the report's timing aside."""
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: found.__setitem__(name, obj[...].tolist())
            if isinstance(obj, h5py.Dataset) else None
        )  # fmt: skip
        for name, value in f.attrs.items():
            found[f"@{name}"] = value.item() if isinstance(value, np.generic) else value
    report = json.loads(found["@report"])
    found["@report"] = {k: v for k, v in report.items() if k not in TIMING}
    return found


def test_two_workers_write_the_same_cache_as_one(pooled):
    one, two = pooled[1], pooled[2]
    assert (one.report["build_workers"], two.report["build_workers"]) == (1, 2)
    assert one.report["n_skipped"] == two.report["n_skipped"] == 1  # the corrupt file
    assert _contents(one.path) == _contents(two.path)


def test_images_are_contiguous_uncompressed_and_mapped_as_read(pooled):
    cache = pooled[2]
    with h5py.File(cache.path, "r") as f:
        for r in RESOLUTIONS:
            images = f[f"images/{r}"]
            assert images.chunks is None and images.compression is None
            # A skipped image leaves no row: the arrays were rewritten to their size.
            assert images.shape[0] == f["labels"].shape[0] == cache.report["n_images"]
    for split in ("train", "val", "test", "train+val"):
        mapped_x, mapped_y = cache.mapped(16, split)
        x, y = cache.arrays(16, split)
        assert isinstance(mapped_x, np.memmap)
        assert np.array_equal(mapped_x, x) and np.array_equal(mapped_y, y)


def test_a_chunked_dataset_is_read_into_memory_instead_of_mapped(pooled, tmp_path):
    """A cache whose images are not one plain block (chunked, as format 1 wrote them) is read
    whole, not mapped at a wrong offset."""
    copy = tmp_path / pooled[1].path.name
    copy.write_bytes(pooled[1].path.read_bytes())
    with h5py.File(copy, "a") as f:
        images = f["images/16"][...]
        del f["images/16"]
        f.create_dataset("images/16", data=images, chunks=(4, 3, 16, 16), compression="gzip")
    cache = read_cache(copy)
    mapped_x, _ = cache.mapped(16, "train")
    assert not isinstance(mapped_x, np.memmap)
    assert np.array_equal(mapped_x, pooled[1].arrays(16, "train")[0])
    assert isinstance(cache.mapped(8, "train")[0], np.memmap)  # still one plain block


def _die(*args):
    os._exit(3)  # what the kernel's out-of-memory killer leaves behind, or a crashing decoder


def test_a_worker_that_dies_is_one_clear_line_and_writes_nothing(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "_MIN_ITEMS_PER_WORKER", 1)
    monkeypatch.setattr(build, "_decode_in_worker", _die)
    with pytest.raises(DataError, match="worker process died .* data.build_workers = 1"):
        open_cache(folder, RESOLUTIONS, cache_dir=tmp_path, build_workers=2)
    assert list(tmp_path.iterdir()) == []


def test_the_pool_is_only_as_large_as_the_build_needs(monkeypatch):
    monkeypatch.setattr(build, "available_cpus", lambda: 8)
    assert build.pool_size(0, 100) == 1  # too few images to pay for a worker's start
    assert build.pool_size(0, 1100) == 2
    assert build.pool_size(0, 100_000) == 8
    assert build.pool_size(3, 100_000) == 3


@pytest.mark.parametrize("key", ["build_workers", "memory_budget"])
def test_negative_workers_or_budget_are_refused(key):
    with pytest.raises(ConfigError, match=f"data.{key} must be >= 0"):
        load(None, [f"data.{key}=-1"])
    with pytest.raises(ConfigError, match="build_workers must be a whole number"):
        open_cache("embedded", [8], build_workers=-2)
