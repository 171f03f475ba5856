# Lab 3 (pooling), generated from the reference solution. Fill in every
# `raise NotImplementedError(...)`, then grade one function with `make check EX=max_pool`
# (any function's name; EX=pooling for the whole lab), here or in the folder above.
"""Lab 3 — Pooling, flatten and dropout.

Pooling summarises each window of a feature map by one number (its max or its mean), making the
map smaller and the features more tolerant to small shifts; it has no parameters. Images are single
examples (H, W, C), channels last; use ``jax.vmap`` for a batch.

The lecture's 4x4 example, 2x2 max pooling with stride 2:

    [[1, 1, 2, 4],
     [5, 6, 7, 8],        ->   [[6, 8],
     [3, 2, 1, 0],              [3, 4]]
     [1, 2, 3, 4]]

(average pooling of the same image gives [[3.25, 5.25], [2.0, 2.0]]).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _as_pair(v) -> tuple[int, int]:
    """2 -> (2, 2); (2, 3) -> (2, 3)."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def max_pool(x: jax.Array, window: int | Sequence[int] = 2, stride: int | Sequence[int] | None = None,
             padding: int = 0) -> jax.Array:
    """Max pooling of one image, from scratch.

    ``out[i, j, c] = max_{u < WH, v < WW} xp[i S + u, j S + v, c]``, where ``xp`` is ``x`` padded
    with ``padding`` rows/columns of ``-inf`` on every side (so padding never wins the max), and the
    stride S defaults to the window size (non-overlapping windows).

    Shapes: x (H, W, C) -> (OH, OW, C), OH = (H + 2P - WH) // S + 1, likewise OW.
    ``window``/``stride`` are ints or (rows, cols) pairs, plain Python values.
    From scratch: ``lax.reduce_window``, ``flax.linen.max_pool`` and friends are not allowed.
    """
    raise NotImplementedError('pad with -inf, then combine the strided slices of every window offset with jnp.maximum')


def avg_pool(x: jax.Array, window: int | Sequence[int] = 2, stride: int | Sequence[int] | None = None,
             padding: int = 0) -> jax.Array:
    """Average pooling of one image, from scratch.

    As :func:`max_pool` but with the mean over each window; padding is with zeros and the zeros
    count (every window is divided by WH * WW, as Flax's ``avg_pool`` with its defaults).

    Shapes: x (H, W, C) -> (OH, OW, C). No ``lax.reduce_window`` / ``flax.linen.avg_pool``.
    """
    raise NotImplementedError('as max_pool, adding the slices instead and dividing by the window size')


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Global average pooling: the mean of each channel over all spatial positions.

    Shapes: (..., H, W, C) -> (..., C); e.g. a batch (N, 7, 7, 512) -> (N, 512). It replaces
    flatten + a big dense layer at the top of modern CNNs (no parameters, any image size).
    """
    raise NotImplementedError('one jnp.mean over the two spatial axes')


def flatten(x: jax.Array) -> jax.Array:
    """Flatten every example of a batch into a vector, keeping the batch axis.

    Shapes: (N, d1, d2, ...) -> (N, d1 * d2 * ...), row-major (for NHWC: H, then W, then C, as
    Keras' ``Flatten``). (32, 7, 7, 64) -> (32, 3136).
    """
    raise NotImplementedError('one reshape; keep the first axis')


def dropout(key: jax.Array, x: jax.Array, rate: float, *, train: bool) -> jax.Array:
    """Inverted dropout.

    In training (``train=True``) every unit is kept with probability ``1 - rate``, exactly as
    ``keep = jax.random.bernoulli(key, 1 - rate, x.shape)``, and the kept units are scaled by
    ``1 / (1 - rate)`` so that the expected value of every unit is unchanged; dropped units are 0.
    With ``train=False`` (or ``rate == 0``) return ``x`` unchanged; ``rate == 1`` gives all zeros.

    Shapes: any -> same. ``key`` is a PRNG key (``jax.random.PRNGKey``); the same key gives the same
    mask. ``rate`` and ``train`` are plain Python values.
    """
    raise NotImplementedError('draw the keep mask with jax.random.bernoulli, then jnp.where')
