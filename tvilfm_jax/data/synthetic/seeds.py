"""Order-independent random streams: one generator per (seed, purpose, keys...).

Every image, identity table and split draws from its own stream derived from the user seed and
a tuple of keys, so the bytes of a file depend only on the seed and what the file is, not on
the order in which files are written or on how many other files exist.
"""

from __future__ import annotations

import zlib

import numpy as np


def _key_int(key: int | str) -> int:
    if isinstance(key, (int, np.integer)):
        if key < 0:
            raise ValueError(f"seed keys must be non-negative, got {key}")
        return int(key)
    # crc32 is stable across processes, unlike hash() of a str.
    return zlib.crc32(str(key).encode("utf-8"))


def rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A PCG64 generator for `seed` and the purpose spelled by `keys`."""
    return np.random.default_rng(np.random.SeedSequence([_key_int(seed), *map(_key_int, keys)]))
