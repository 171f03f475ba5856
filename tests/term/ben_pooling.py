"""Lab 3 — pooling (Ben). I gather all windows at once with index arrays and reduce them."""

import jax
import jax.numpy as jnp


def _two(value):
    """Window/stride as (rows, cols)."""
    if isinstance(value, int):
        return value, value
    rows, cols = value
    return int(rows), int(cols)


def _windows(image, window, stride, padding, fill):
    """All windows of `image`: (out_rows, out_cols, win_rows, win_cols, channels)."""
    win_r, win_c = _two(window)
    step_r, step_c = _two(window if stride is None else stride)
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)),
                     constant_values=fill)
    n_r = (padded.shape[0] - win_r) // step_r + 1
    n_c = (padded.shape[1] - win_c) // step_c + 1
    row_idx = (jnp.arange(n_r) * step_r)[:, None] + jnp.arange(win_r)[None, :]
    col_idx = (jnp.arange(n_c) * step_c)[:, None] + jnp.arange(win_c)[None, :]
    return padded[row_idx[:, None, :, None], col_idx[None, :, None, :]]


def max_pool(x, window=2, stride=None, padding=0):
    return _windows(x, window, stride, padding, -jnp.inf).max(axis=(2, 3))


def avg_pool(x, window=2, stride=None, padding=0):
    return _windows(x, window, stride, padding, 0.0).mean(axis=(2, 3))


def global_avg_pool(x):
    height_axis, width_axis = x.ndim - 3, x.ndim - 2
    return jnp.sum(x, axis=(height_axis, width_axis)) / (x.shape[-3] * x.shape[-2])


def flatten(x):
    size = 1
    for d in x.shape[1:]:
        size *= d
    return jnp.reshape(x, (x.shape[0], size))


def dropout(key, x, rate, *, train):
    if not train:
        return x
    if rate <= 0.0:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    survivors = jax.random.bernoulli(key, p=1.0 - rate, shape=x.shape)
    scaled = x * (1.0 / (1.0 - rate))
    return jnp.where(survivors, scaled, jnp.zeros_like(x))
