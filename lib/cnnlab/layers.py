"""Layers with a fast CPU backward pass.

:class:`Conv` is a drop-in for :class:`flax.linen.Conv` (same parameter names and shapes: ``kernel``
HWIO, ``bias`` (features,)). The forward pass is :func:`jax.lax.conv_general_dilated`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

PaddingLike = str | int | Sequence[int | tuple[int, int]]


def _pairs(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    return tuple(value)


def _explicit_padding(padding: PaddingLike, n: int) -> str | tuple[tuple[int, int], ...]:
    """Flax's padding forms -> "SAME"/"VALID" or ((lo, hi),) * n."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
        return padding.upper()
    if isinstance(padding, int):
        return ((padding, padding),) * n
    pads = []
    for p in padding:
        pads.append((p, p) if isinstance(p, int) else tuple(p))
    return tuple(pads)


def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding) -> jax.Array:
    """NHWC x HWIO -> NHWC cross-correlation (what every deep-learning "conv" computes)."""
    return lax.conv_general_dilated(
        x, kernel, window_strides=strides, padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv(nn.Module):
    """2-D convolution, NHWC, parameters like :class:`flax.linen.Conv`.

    Attributes:
      features: output channels O.
      kernel_size: (kh, kw).
      strides: (sh, sw) or an int.
      padding: "SAME", "VALID", an int, or ((lo, hi), (lo, hi)).
      use_bias: add a bias of shape (O,).

    ``x`` (N, H, W, C) -> (N, H', W', O) with ``H' = ceil(H / sh)`` for SAME and
    ``floor((H + lo + hi - kh) / sh) + 1`` otherwise.
    """

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: int | Sequence[int] = 1
    padding: PaddingLike = "SAME"
    use_bias: bool = True
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = _pairs(self.kernel_size, 2)
        strides = _pairs(self.strides, 2)
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                            jnp.float32)
        y = conv2d(x, kernel.astype(x.dtype), strides, _explicit_padding(self.padding, 2))
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
            y = y + bias.astype(y.dtype)
        return y
