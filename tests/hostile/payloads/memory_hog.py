# attacks: relu
"""Asks for 6 GB at once (numpy zeros: the address space is reserved at once, pages are touched
lazily, so the payload stays cheap and bounded even when no limit stops it). If no memory limit
stopped it, relu would return the right answer, so a missing limit shows up as a pass."""
import jax.numpy as jnp
import numpy as _np


def relu(x):
    hog = _np.zeros(6 << 30, dtype=_np.uint8)  # 6 GB of address space
    hog[-1] = 1  # touches one page
    return jnp.maximum(x, 0)
