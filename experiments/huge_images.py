"""Cache builds of huge images: build time and peak memory, and how fast a bomb is refused.

Makes, in --work, two class folders of 12,000 x 12,000 px JPEGs, two of 10,000 x 10,000 px
PNGs, and a folder holding one PNG whose header claims 100,000 x 100,000 px. Each cache is
built in a fresh process (so its peak resident memory is the build's own) at the given
resolutions, and the figures are printed side by side:

    python experiments/huge_images.py --work /tmp/huge --per-class 6
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


def make_sets(work: Path, per_class: int) -> dict[str, Path]:
    sets = {"jpeg-12000": (12_000, "jpg"), "png-10000": (10_000, "png")}
    folders = {}
    for name, (side, suffix) in sets.items():
        folder = work / name
        folders[name] = folder
        if folder.is_dir():
            continue
        for c, label in enumerate(("a", "b")):
            (folder / label).mkdir(parents=True)
            for i in range(per_class):
                picture(side, 100 * c + i).save(folder / label / f"{i}.{suffix}", quality=90)
    bomb = work / "bomb"
    if not bomb.is_dir():
        for c, label in enumerate(("a", "b")):
            (bomb / label).mkdir(parents=True)
            for i in range(4):
                picture(256, 1000 + 10 * c + i).save(bomb / label / f"{i}.png")
        (bomb / "a" / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    folders["bomb"] = bomb
    return folders


def build(folder: Path, resolutions: list[int], cache_dir: Path) -> dict:
    command = [sys.executable, "-c", BUILD, str(folder), json.dumps(resolutions), str(cache_dir)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="where the sets are made")
    parser.add_argument("--per-class", type=int, default=6, help="images per class (6)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[16, 32, 64])
    args = parser.parse_args()
    folders = make_sets(args.work, args.per_class)
    print(f"{'set':<12} {'images':>6} {'skipped':>8} {'reduced':>8} {'build s':>8} {'peak MB':>8}")
    for name, folder in folders.items():
        cache_dir = args.work / f"cache-{name}-{time.time_ns()}"
        got = build(folder, args.resolutions, cache_dir)
        skipped = sum(got["skipped"].values())
        print(f"{name:<12} {got['images']:>6} {skipped:>8} {got['decoded_reduced']:>8} "
              f"{got['seconds']:>8.1f} {got['peak_rss_mb']:>8.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
