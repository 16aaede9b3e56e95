"""Data a scan trips on: every hostile file is skipped and counted, or refused in one line.

Decompression bombs, symlink loops, dangling symlinks, FIFOs and unreadable files in an image
folder; an HDF5 file whose ``images`` is a group (an evores cache given as the dataset); a
cache folder that cannot be written. None of them may end in a traceback or a hang.
"""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from evores.core.errors import DataError
from evores.data.cache import open_cache
from evores.data.sources import ScanReport, open_source

ROOT = Path(__file__).resolve().parents[2]


def _noise(seed: int, size: int = 20) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def image_folder(root: Path, per_class: int = 4) -> Path:
    """Two classes of distinct noise images, enough for a generated three-way split."""
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            _noise(100 * c + i).save(root / name / f"{i}.png")
    return root


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's
    header without its gigabytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\x00\x00\x00")  # one row of one pixel, far too short
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_decompression_bombs_are_skipped_undecoded_and_counted(tmp_path):
    """A header claiming 100,000 x 100,000 px is refused by what it would decode (issue 21)."""
    folder = image_folder(tmp_path / "data")
    (folder / "a" / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    (folder / "b" / "bomb.jpg").write_bytes(png_declaring(60_000, 60_000))  # any format
    started = time.perf_counter()
    cache = open_cache(folder, [8], cache_dir=tmp_path / "cache")
    assert time.perf_counter() - started < 60  # nothing of 10,000 megapixels was decoded
    report = cache.report
    assert report["n_images"] == 8 and report["n_skipped"] == 2
    assert report["skipped"] == {
        "too large to decode (over data.max_decode_pixels = 250,000,000)": 2
    }  # noqa: E501


@pytest.mark.parametrize(
    ("name", "filter", "kept"),
    [("big.jpg", "box", True), ("big.jpg", "nearest", False), ("big.png", "box", False)],
)
def test_an_image_is_refused_by_what_downsampling_it_decodes_not_by_its_header(
    tmp_path, name, filter, kept
):
    """A 3000 px JPEG decodes at 1/8 for 8 px (375 x 375 px) and fits a 1 MP limit; decoded
    whole (nearest, no DCT scaling) or as a PNG it is 9 MP and does not."""
    folder = image_folder(tmp_path / "data")
    Image.linear_gradient("L").resize((3000, 3000)).convert("RGB").save(folder / "a" / name)
    cache = open_cache(folder, [8], cache_dir=tmp_path / "cache", filter=filter,
                       max_decode_pixels=1_000_000)  # fmt: skip
    report = cache.report
    assert report["n_images"] == (9 if kept else 8)
    assert report["n_decoded_reduced"] == (1 if kept else 0)
    assert report["n_skipped"] == (0 if kept else 1)


def test_symlink_loops_and_dangling_symlinks_are_skipped_and_counted(tmp_path):
    folder = image_folder(tmp_path / "data")
    (folder / "a" / "loop.png").symlink_to(folder / "a" / "loop.png")
    (folder / "a" / "gone.png").symlink_to(folder / "a" / "deleted.png")
    (folder / "b" / "ok-link.png").symlink_to(folder / "b" / "0.png")  # a good link is an image
    report = ScanReport()
    source = open_source(folder)
    source.fingerprint()  # stats every file: a loop or a dangling link must not raise here
    items = source.scan(report)
    assert len(items) == 9
    assert report.skipped == {"symlink loop": 1, "dangling symlink": 1}
    cache = open_cache(folder, [8], cache_dir=tmp_path / "cache")
    assert cache.report["skipped"] == {"symlink loop": 1, "dangling symlink": 1}


@pytest.mark.parametrize("name", ["data", "data.h5"])
def test_a_dataset_path_that_is_a_symlink_loop_is_refused_in_one_line(tmp_path, name):
    loop = tmp_path / name
    loop.symlink_to(loop)
    with pytest.raises(DataError, match="symlink loop"):
        open_source(loop)


def test_a_fifo_named_like_an_image_is_skipped_not_read_forever(tmp_path):
    folder = image_folder(tmp_path / "data")
    os.mkfifo(folder / "a" / "pipe.png")
    script = (
        "import json, sys; from evores.data.cache import open_cache; "
        "c = open_cache(sys.argv[1], [8], cache_dir=sys.argv[2]); print(json.dumps(c.report))"
    )
    command = [sys.executable, "-c", script, str(folder), str(tmp_path / "cache")]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment)
    assert done.returncode == 0, done.stderr
    assert '"not a regular file": 1' in done.stdout, done.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_file_is_skipped_and_counted(tmp_path):
    folder = image_folder(tmp_path / "data")
    locked = folder / "a" / "locked.png"
    _noise(7).save(locked)
    locked.chmod(0)
    cache = open_cache(folder, [8], cache_dir=tmp_path / "cache")
    assert cache.report["skipped"] == {"unreadable (PermissionError)": 1}


def test_an_evores_cache_given_as_the_dataset_is_refused_in_one_line(tmp_path):
    built = open_cache(image_folder(tmp_path / "data"), [8], cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="is an evores cache file") as refused:
        open_source(built.path)
    assert "\n" not in str(refused.value)


def test_an_hdf5_file_whose_images_is_a_group_is_refused_in_one_line(tmp_path):
    path = tmp_path / "grouped.h5"
    with h5py.File(path, "w") as f:
        f.create_group("images").create_dataset("0", data=np.zeros((2, 4, 4), np.uint8))
        f["labels"] = np.array([0, 1])
    with pytest.raises(DataError, match="'images' is a group"):
        open_source(path)
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 4, 4), np.uint8)
        f.create_group("labels")
    with pytest.raises(DataError, match="'labels' is a group"):
        open_source(path)
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 4, 4), np.uint8)
        f["labels"] = 1  # a scalar, not one label per image
    with pytest.raises(DataError, match="2 images and scalar labels"):
        open_source(path)


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores modes: use sysfs)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/sys")
    try:
        (folder / "evores-probe").touch()
    except OSError:
        return folder
    pytest.skip("no folder here is read-only for root")


def test_a_read_only_cache_folder_is_refused_before_the_scan(tmp_path, caplog):
    folder = image_folder(tmp_path / "data")
    (folder / "a" / "broken.png").write_bytes(b"not a png")  # the scan would warn about it
    read_only = _read_only_folder(tmp_path)
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match="not writable") as err:
        open_cache(folder, [8], cache_dir=read_only)
    assert "data.cache_dir" in str(err.value) and "\n" not in str(err.value)
    assert not any("skipping" in record.getMessage() for record in caplog.records)
