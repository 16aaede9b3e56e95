"""Benchmark: time and peak memory of building the resolution cache of imagenette224.

Usage: python experiments/cache_memory.py [DATASET_FOLDER] [--tracemalloc]

Builds the 32/64/128 px box-filter cache into a temporary directory (so nothing is reused)
and prints the wall time, the peak resident set size (getrusage ru_maxrss and a 20 ms RSS
sampler, both minus nothing: whole process) and the RSS before the build (interpreter plus
imports). ``--tracemalloc`` also reports the peak of Python/numpy allocations, at the cost
of a slower build. The target is a peak under 1 GB: the build streams one image at a time.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing evores
    sys.path.insert(0, str(REPO))

from evores.data.cache import open_cache  # noqa: E402

DEFAULT = REPO.parent / "shared" / "datasets" / "imagenette224"
RESOLUTIONS = (32, 64, 128)


def rss_bytes() -> int:
    """Current resident set size of this process, from /proc."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RSSSampler:
    """Samples the RSS every ``interval`` seconds in a thread; ``peak`` is the maximum seen."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak = interval, rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT))
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()
    mib = 1 / 2**20
    before = rss_bytes()
    if args.tracemalloc:
        tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp, RSSSampler() as sampler:
        started = time.perf_counter()
        cache = open_cache(args.folder, RESOLUTIONS, filter="box", cache_dir=tmp)
        wall = time.perf_counter() - started
        file_mib = cache.path.stat().st_size * mib
    max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"dataset        : {args.folder}")
    print(f"images         : {cache.report['n_images']} {cache.split_sizes}")
    print(f"resolutions    : {list(cache.resolutions)} px, filter box, crop centre")
    print(f"wall time      : {wall:.2f} s")
    print(f"cache file     : {file_mib:.0f} MiB")
    print(f"RSS before     : {before * mib:.0f} MiB (interpreter + imports)")
    print(f"peak RSS (20ms): {sampler.peak * mib:.0f} MiB")
    print(f"ru_maxrss      : {max_rss_kib / 1024:.0f} MiB")
    if args.tracemalloc:
        print(f"tracemalloc    : peak {tracemalloc.get_traced_memory()[1] * mib:.0f} MiB")


if __name__ == "__main__":
    main()
