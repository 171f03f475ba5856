"""Lab 3 — pooling. Ana's work: every window offset as one strided view, stacked."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _hw(v):
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _offsets(x, window, stride, padding, pad_value):
    # one view per offset (i, j) inside the window, all of shape (rows, cols, C)
    kh, kw = _hw(window)
    sh, sw = _hw(stride) if stride is not None else (kh, kw)
    h, w, c = x.shape
    big = jnp.full((h + 2 * padding, w + 2 * padding, c), pad_value, x.dtype)
    big = big.at[padding:padding + h, padding:padding + w].set(x)
    rows = (big.shape[0] - kh) // sh + 1
    cols = (big.shape[1] - kw) // sw + 1
    views = []
    for i in range(kh):
        for j in range(kw):
            views.append(big[i:i + sh * rows:sh, j:j + sw * cols:sw])
    return jnp.stack(views)


def max_pool(x, window=2, stride=None, padding=0):
    return jnp.max(_offsets(x, window, stride, padding, -jnp.inf), axis=0)


def avg_pool(x, window=2, stride=None, padding=0):
    return jnp.mean(_offsets(x, window, stride, padding, 0.0), axis=0)


def global_avg_pool(x):
    return x.mean(axis=(-3, -2))


def flatten(x):
    return x.reshape((x.shape[0], -1))


def dropout(key, x, rate, *, train):
    if not train or rate == 0:
        return x
    if rate == 1:
        return jnp.zeros_like(x)
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, x.shape)
    return jnp.where(mask, x / keep, 0.0)
