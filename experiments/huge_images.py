"""Cache builds of huge images: build time and peak memory, and how fast a bomb is refused.

Makes, in --work, two class folders of 12,000 x 12,000 px JPEGs, two of 10,000 x 10,000 px
PNGs, a folder holding one PNG whose header claims 100,000 x 100,000 px, and two class folders
of 40,000 x 40,000 px pyramidal BigTIFFs (levels of 10,000, 2,500 and 625 px; the two largest
levels are compressed blank tiles, so the files are cheap to write and small on disk, yet
decoding level 0 would take 4.8 GB). Each cache is built in a fresh process (so its peak
resident memory is the build's own) at the given resolutions, and the figures are printed
side by side:

    python experiments/huge_images.py --work /tmp/huge --per-class 6
    python experiments/huge_images.py --work /tmp/huge --sets tiff-pyramid-40000
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

# Peak memory is VmHWM, which a new program starts afresh: ru_maxrss would carry over the
# parent's peak (Linux keeps it across exec), and the parent made the images.
BUILD = """
import json, sys, time
from evores.data.cache import open_cache
started = time.perf_counter()
cache = open_cache(sys.argv[1], json.loads(sys.argv[2]), cache_dir=sys.argv[3])
report = cache.report
print(json.dumps({
    "seconds": time.perf_counter() - started,
    "peak_rss_mb": next(int(line.split()[1]) for line in open("/proc/self/status")
                        if line.startswith("VmHWM:")) / 1024,
    "images": report["n_images"], "skipped": report["skipped"],
    "decoded_reduced": report["n_decoded_reduced"],
}))
"""


def picture(side: int, seed: int) -> Image.Image:
    """A smooth picture with some texture: gradients and noise at 1/16 scale, upsampled."""
    rng = np.random.default_rng(seed)
    small = side // 16
    y, x = np.mgrid[0:small, 0:small] / small
    channels = [np.sin(6 * x * (c + 1) + seed) * np.cos(5 * y + c) for c in range(3)]
    base = np.stack(channels, -1) * 90 + 128 + rng.normal(0, 12, (small, small, 3))
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    return image.resize((side, side), Image.Resampling.BILINEAR)


def png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00"))
        + chunk(b"IEND", b"")
    )


PYRAMID_SIDE = 40_000
PYRAMID_TILE = 512


def write_pyramid(path: Path, seed: int) -> None:
    """A tiled RGB BigTIFF pyramid, each level a quarter of the one before; only the levels
    of 2,500 px and below hold the picture (blank tiles compress to almost nothing)."""
    sides = [PYRAMID_SIDE // 4**k for k in range(4)]  # 40,000, 10,000, 2,500, 625
    # One blank tile compressed once, written as is for every tile of the large levels.
    blank = zlib.compress(bytes(PYRAMID_TILE * PYRAMID_TILE * 3))

    def level(side: int):
        if side > 4_000:
            n_tiles = (-(-side // PYRAMID_TILE)) ** 2
            return (blank for _ in range(n_tiles)), {"shape": (side, side, 3), "dtype": np.uint8}
        return np.asarray(picture(side, seed)), {}

    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        for k, side in enumerate(sides):
            data, shape = level(side)
            tiff.write(
                data, **shape, tile=(PYRAMID_TILE, PYRAMID_TILE), photometric="rgb",
                compression="zlib", subifds=len(sides) - 1 if k == 0 else None,
                subfiletype=1 if k else 0,
            )  # fmt: skip


def make_sets(work: Path, per_class: int, names: list[str]) -> dict[str, Path]:
    sets = {"jpeg-12000": (12_000, "jpg"), "png-10000": (10_000, "png")}
    folders = {}
    for name, (side, suffix) in sets.items():
        if name not in names:
            continue
        folder = work / name
        folders[name] = folder
        if folder.is_dir():
            continue
        for c, label in enumerate(("a", "b")):
            (folder / label).mkdir(parents=True)
            for i in range(per_class):
                picture(side, 100 * c + i).save(folder / label / f"{i}.{suffix}", quality=90)
    if "tiff-pyramid-40000" in names:
        folders["tiff-pyramid-40000"] = pyramids = work / "tiff-pyramid-40000"
        for c, label in enumerate(("a", "b")):
            if not (pyramids / label).is_dir():
                (pyramids / label).mkdir(parents=True)
                for i in range(per_class):
                    write_pyramid(pyramids / label / f"{i}.tif", 100 * c + i)
    if "bomb" not in names:
        return folders
    bomb = work / "bomb"
    if not bomb.is_dir():
        for c, label in enumerate(("a", "b")):
            (bomb / label).mkdir(parents=True)
            for i in range(4):
                picture(256, 1000 + 10 * c + i).save(bomb / label / f"{i}.png")
        (bomb / "a" / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    folders["bomb"] = bomb
    return folders


SETS = ("jpeg-12000", "png-10000", "bomb", "tiff-pyramid-40000")


def build(folder: Path, resolutions: list[int], cache_dir: Path) -> dict:
    command = [sys.executable, "-c", BUILD, str(folder), json.dumps(resolutions), str(cache_dir)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="where the sets are made")
    parser.add_argument("--per-class", type=int, default=6, help="images per class (6)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS,
                        help="which sets to make and build (all)")  # fmt: skip
    args = parser.parse_args()
    folders = make_sets(args.work, args.per_class, args.sets)
    print(f"{'set':<18} {'images':>6} {'skipped':>8} {'reduced':>8} {'build s':>8} {'peak MB':>8}")
    for name, folder in folders.items():
        cache_dir = args.work / f"cache-{name}-{time.time_ns()}"
        got = build(folder, args.resolutions, cache_dir)
        skipped = sum(got["skipped"].values())
        print(f"{name:<18} {got['images']:>6} {skipped:>8} {got['decoded_reduced']:>8} "
              f"{got['seconds']:>8.1f} {got['peak_rss_mb']:>8.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
