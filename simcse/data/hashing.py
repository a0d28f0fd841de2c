"""The one hash of the data path: SplitMix64's finalizer (Steele, Lea and Flood 2014, "Fast splittable
pseudorandom number generators"), elementwise on uint64 arrays with wrapping arithmetic. The sampler
hashes token sequences with it (duplicate detection) and the collator keys its MLM masks with it."""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, SplitMix64's increment
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finalizer on a uint64 array (a new array; wrapping multiplication)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))
