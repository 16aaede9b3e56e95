"""What a training takes from its process and device: memory (peak, release, out-of-memory
errors, glibc's heap) and torch's thread count."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator

import torch

from evores.core.errors import ConfigError


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int:
    """CUDA max allocated bytes on a GPU; on the CPU the process's peak RSS (lifetime)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource  # Unix only
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (untouched when ``threads`` is None)."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ConfigError(f"threads={threads} must be at least 1 (or None to leave torch alone)")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def keep_heap(trim_threshold: int = 1 << 30) -> bool:
    """Opt-in: make glibc keep freed memory instead of mapping/unmapping it every batch.

    Sets ``mallopt(M_MMAP_MAX, 0)`` and a large ``M_TRIM_THRESHOLD`` for the whole process
    (see /work/shared/perf/NOTES.md: large activation buffers otherwise page-fault on every
    batch). Affects every allocation in the process and cannot be undone cleanly, so only
    call it from an entry point you own (a worker, a benchmark), never from a library.
    Returns False where glibc's mallopt is not available.
    """
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    ok = mallopt(m_trim_threshold, int(trim_threshold)) == 1
    return bool(mallopt(m_mmap_max, 0) == 1 and ok)
