# attacks: relu
"""Allocates and touches up to 6 GB, 256 MB at a time. Bounded: never more than 6 GB. If no memory
limit stopped it, relu would return the right answer, so a missing limit shows up as a pass."""
import numpy as _np


def relu(x):
    hog = []
    for _ in range(24):  # 24 x 256 MB = 6 GB at most
        hog.append(_np.ones(256 << 20, dtype=_np.uint8))
    return jnp.maximum(x, 0)
