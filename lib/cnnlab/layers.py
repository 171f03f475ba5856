"""Layers with a fast CPU backward pass.

:class:`Conv` is a drop-in for :class:`flax.linen.Conv` (same parameter names and shapes: ``kernel``
HWIO, ``bias`` (features,)). The forward pass is :func:`jax.lax.conv_general_dilated`.

Why a custom backward: on XLA:CPU the convolution *weight* gradient is the bottleneck of training
(5-10x slower than the forward convolution on small images). :func:`conv2d` therefore has a
:func:`jax.custom_vjp` on CPU that computes it as a sum over kernel offsets of plain matmuls:

    dW[i, j] = sum_{n, p, q} xpad[n, s*p + i, s*q + j, :]^T  dY[n, p, q, :]      (C_in, C_out)

The choice is made when tracing (``jax.default_backend()``); elsewhere (GPU/TPU) it is plain XLA.
``CNNLAB_CONV_BACKWARD=xla`` in the environment turns the custom backward off (for comparisons).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

PaddingLike = str | int | Sequence[int | tuple[int, int]]
Pads = tuple[tuple[int, int], tuple[int, int]]
_DN = ("NHWC", "HWIO", "NHWC")


def _pairs(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    return tuple(int(v) for v in value)


def explicit_padding(padding: PaddingLike, x_hw: Sequence[int], kernel_hw: Sequence[int],
                     strides: Sequence[int]) -> Pads:
    """Flax's padding forms ("SAME", "VALID", int, pairs) -> ((lo, hi), (lo, hi))."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
        pads = lax.padtype_to_pads(tuple(x_hw), tuple(kernel_hw), tuple(strides), padding.upper())
        return tuple((int(lo), int(hi)) for lo, hi in pads)
    if isinstance(padding, int):
        return ((padding, padding),) * 2
    return tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding)


def conv_backward_mode() -> str:
    """"fast" when :func:`conv2d` uses the custom CPU backward pass here, else "xla"."""
    if os.environ.get("CNNLAB_CONV_BACKWARD", "auto").lower() == "xla":
        return "xla"
    return "fast" if jax.default_backend() == "cpu" else "xla"


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
           padding: PaddingLike = "SAME") -> jax.Array:
    """NHWC x HWIO -> NHWC cross-correlation (what every deep-learning "conv" computes).

    ``x`` (N, H, W, C), ``kernel`` (kh, kw, C, O) -> (N, H', W', O), equal to
    ``lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC/HWIO/NHWC)``
    in value and gradient; on CPU the gradient comes from :func:`_conv_bwd`.
    """
    strides = _pairs(strides, 2)
    pads = explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
    if conv_backward_mode() == "fast":
        return _conv_fast(x, kernel, strides, pads)
    return _conv_xla(x, kernel, strides, pads)


def _conv_xla(x, kernel, strides, pads):
    return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_fast(x, kernel, strides, pads):
    return _conv_xla(x, kernel, strides, pads)


def _conv_fwd(x, kernel, strides, pads):
    return _conv_xla(x, kernel, strides, pads), (x, kernel)


def _offset_slice(xp: jax.Array, i: int, j: int, out_hw: Sequence[int],
                  strides: Sequence[int]) -> jax.Array:
    """xp[:, i::sh][:, :Ho], xp[:, :, j::sw][:, :, :Wo]: the inputs kernel tap (i, j) sees."""
    n, _, _, c = xp.shape
    (ho, wo), (sh, sw) = out_hw, strides
    return lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                     (1, sh, sw, 1))


def _pad(x: jax.Array, pads: Pads) -> jax.Array:
    return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))


def weight_grad_taps(x: jax.Array, g: jax.Array, kernel_hw: Sequence[int],
                     strides: Sequence[int], pads: Pads) -> jax.Array:
    """dL/dW (kh, kw, C, O) from the input x (N, H, W, C) and dL/dY g (N, H', W', O):
    one (C, M) x (M, O) matmul per kernel tap, M = N*H'*W'."""
    kh, kw = kernel_hw
    xp = _pad(x, pads)
    n, ho, wo, o = g.shape
    g2 = g.reshape(n * ho * wo, o)
    taps = [lax.dot_general(_offset_slice(xp, i, j, (ho, wo), strides).reshape(n * ho * wo, -1),
                            g2, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
            for i in range(kh) for j in range(kw)]
    return jnp.stack(taps).reshape(kh, kw, x.shape[-1], o).astype(x.dtype)


def weight_grad_im2col(x: jax.Array, g: jax.Array, kernel_hw: Sequence[int],
                       strides: Sequence[int], pads: Pads) -> jax.Array:
    """The same as :func:`weight_grad_taps` as one (kh*kw*C, M) x (M, O) matmul over the
    stacked taps (im2col): better when C is small."""
    kh, kw = kernel_hw
    xp = _pad(x, pads)
    n, ho, wo, o = g.shape
    cols = jnp.concatenate([_offset_slice(xp, i, j, (ho, wo), strides)
                            for i in range(kh) for j in range(kw)], axis=-1)
    dw = lax.dot_general(cols.reshape(n * ho * wo, -1), g.reshape(n * ho * wo, o),
                         (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    return dw.reshape(kh, kw, x.shape[-1], o).astype(x.dtype)


def input_grad_taps(g: jax.Array, kernel: jax.Array, x_shape: Sequence[int],
                    strides: Sequence[int], pads: Pads) -> jax.Array:
    """dL/dx (N, H, W, C) from g (N, H', W', O): per tap, (M, O) x (O, C), placed back at the
    strided positions it came from (a pad with interior gaps) and summed; then the padding is cut."""
    kh, kw, c, o = kernel.shape
    n, h, w, _ = x_shape
    _, ho, wo, _ = g.shape
    (sh, sw) = strides
    hp, wp = h + sum(pads[0]), w + sum(pads[1])
    g2 = g.reshape(n * ho * wo, o)
    acc = None
    for i in range(kh):
        for j in range(kw):
            y = lax.dot_general(g2, kernel[i, j], (((1,), (1,)), ((), ())),
                                preferred_element_type=jnp.float32).reshape(n, ho, wo, c)
            y = lax.pad(y, jnp.zeros((), y.dtype),
                        ((0, 0, 0), (i, hp - i - (ho - 1) * sh - 1, sh - 1),
                         (j, wp - j - (wo - 1) * sw - 1, sw - 1), (0, 0, 0)))
            acc = y if acc is None else acc + y
    lo_h, lo_w = pads[0][0], pads[1][0]
    return lax.slice(acc, (0, lo_h, lo_w, 0), (n, lo_h + h, lo_w + w, c)).astype(g.dtype)


def _choose(kind: str, x_shape, kernel_shape, out_shape) -> str:
    forced = os.environ.get(f"CNNLAB_CONV_{kind.upper()}", "auto").lower()
    if forced != "auto":
        return forced
    n, ho, wo, _ = out_shape
    kh, kw, c, o = kernel_shape
    if kind == "wgrad":
        if kh * kw * c <= 32:
            return "im2col"
        return "taps" if ho * wo <= 64 else "xla"
    return "xla"


def _conv_bwd(strides, pads, res, g):
    x, kernel = res
    kernel_hw = kernel.shape[:2]
    how = _choose("wgrad", x.shape, kernel.shape, g.shape)
    if how == "xla":
        _, vjp_w = jax.vjp(lambda k: _conv_xla(x, k, strides, pads), kernel)
        (dw,) = vjp_w(g)
    elif how == "im2col":
        dw = weight_grad_im2col(x, g, kernel_hw, strides, pads)
    else:
        dw = weight_grad_taps(x, g, kernel_hw, strides, pads)
    how = _choose("dgrad", x.shape, kernel.shape, g.shape)
    if how == "taps":
        dx = input_grad_taps(g, kernel, x.shape, strides, pads)
    else:
        _, vjp_x = jax.vjp(lambda x: _conv_xla(x, kernel, strides, pads), x)
        (dx,) = vjp_x(g)
    return dx, dw.astype(kernel.dtype)


_conv_fast.defvjp(_conv_fwd, _conv_bwd)


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
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                            jnp.float32)
        y = conv2d(x, kernel.astype(x.dtype), self.strides, self.padding)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
            y = y + bias.astype(y.dtype)
        return y
