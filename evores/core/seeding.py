"""Seeds derived from the run seed and a position in the run, never from an MPI rank.

Every stochastic step asks for its own generator keyed by what it is (stage, generation,
individual, purpose), so a run gives the same numbers however many ranks evaluate it and a
resumed run needs no saved RNG state.
"""

from __future__ import annotations

import zlib

import numpy as np


def _key_to_int(part: int | str) -> int:
    if isinstance(part, str):
        return zlib.crc32(part.encode("utf-8"))
    if part < 0:
        raise ValueError(f"seed key parts must be non-negative, got {part}")
    return int(part)


def derive_seed(run_seed: int, *key: int | str) -> int:
    """A 63-bit seed for the position ``key`` in the run seeded with ``run_seed``."""
    entropy = [_key_to_int(run_seed), *(_key_to_int(p) for p in key)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def derive_rng(run_seed: int, *key: int | str) -> np.random.Generator:
    """A numpy Generator for the position ``key`` in the run seeded with ``run_seed``."""
    return np.random.default_rng(derive_seed(run_seed, *key))
