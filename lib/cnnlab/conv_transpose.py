"""A transposed convolution that trains fast on a CPU: :class:`ConvTranspose`, a drop-in for
:class:`flax.linen.ConvTranspose` (its default ``transpose_kernel=False``; 2-D, NHWC/HWIO).

XLA computes lax.conv_transpose as a convolution of the input spread out with S - 1 zeros
between pixels ("lhs dilation"): S*S times the work, and its gradients on XLA:CPU measured
5-10x slower than PyTorch's ConvTranspose2d (DCGAN generator layers 7->14 and 14->28, 128
channels, batch 64). Every output pixel of a stride-S transposed convolution is fed by one
phase of the kernel only: output row S*m + r only sees kernel rows i = i0(r) + S*j. So the
layer is S*S ordinary stride-1 convolutions of the undilated input, one per output phase
(rh, rw), each with its exact sub-kernel, whose outputs are interleaved ("sub-pixel
convolution"). No multiplication by an inserted zero, and each sub-convolution goes through
:func:`cnnlab.layers.conv2d` (its chunked weight gradient).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cnnlab.layers import _DN, PaddingLike, Pads, _pairs, conv2d, conv_backward_mode


def conv_transpose_padding(padding: PaddingLike, kernel_hw: Sequence[int],
                           strides: Sequence[int]) -> Pads:
    """Flax/lax ``conv_transpose`` padding -> ((lo, hi), (lo, hi)) of the zero-dilated input.

    "SAME" (output = H * S): total ``K + S - 2``, ``lo = K - 1`` if ``S > K - 1`` else
    ``ceil(total / 2)``; "VALID" (output = (H - 1) S + K, or H * S when K < S): total
    ``K + S - 2 + max(K - S, 0)``, ``lo = K - 1``; ints and pairs are used as they are (lax's
    rules, ``jax.lax.conv_transpose``)."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
        pads = []
        for k, s in zip(kernel_hw, strides):
            total = k + s - 2 + (max(k - s, 0) if mode == "VALID" else 0)
            lo = k - 1 if (mode == "VALID" or s > k - 1) else -(-total // 2)
            pads.append((lo, total - lo))
        return tuple(pads)
    if isinstance(padding, int):
        return ((padding, padding),) * 2
    return tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding)


def _transpose_phases(size: int, k: int, s: int, pads: tuple[int, int]):
    """One axis of a transposed convolution as S phases.

    The output has ``L = (size - 1) S + 1 + lo + hi - K + 1`` pixels; output ``S m + r`` is
    ``sum_j x[m + off_r + j] * kernel[i0_r + S j]`` for ``j < taps_r``. Returns ``(L, M,
    [(i0_r, taps_r, off_r) for r < S])`` with M = ceil(L / S) outputs per phase (the last
    phases may have one too many: cropped after interleaving)."""
    lo, hi = pads
    length = (size - 1) * s + 1 + lo + hi - k + 1
    phases = []
    for r in range(s):
        i0 = (lo - r) % s
        taps = max(0, -(-(k - i0) // s))
        phases.append((i0, taps, (r + i0 - lo) // s))
    return length, -(-length // s), phases


def conv_transpose2d(x: jax.Array, kernel: jax.Array, strides: int | Sequence[int] = (1, 1),
                     padding: PaddingLike = "SAME") -> jax.Array:
    """``jax.lax.conv_transpose(x, kernel, strides, padding, dimension_numbers=NHWC/HWIO/NHWC)``
    (what ``flax.linen.ConvTranspose`` computes: no kernel flip), fast on CPU.

    ``x`` (N, H, W, C), ``kernel`` (kh, kw, C, O) -> (N, H', W', O), the correlation of the
    zero-dilated, padded input with the kernel,

        y[n, p, q, o] = sum_{i, j, c} xdil[n, p + i, q + j, c] * kernel[i, j, c, o],
        xdil[S a + lo, S b + lo'] = x[a, b] (zeros elsewhere),

    with H' = H * S for "SAME" and (H - 1) S + kh for "VALID" (when kh >= S). On CPU it is
    computed as S*S stride-1 convolutions (see the comment above); elsewhere, or with
    ``CNNLAB_CONV_BACKWARD=xla``, by XLA. Same values and gradients.
    """
    strides = _pairs(strides, 2)
    pads = conv_transpose_padding(padding, kernel.shape[:2], strides)
    if conv_backward_mode() == "xla" or strides == (1, 1):
        return lax.conv_transpose(x, kernel, strides, pads, dimension_numbers=_DN)
    n, h, w, _ = x.shape
    (sh, sw), o = strides, kernel.shape[-1]
    len_h, m_h, rows = _transpose_phases(h, kernel.shape[0], sh, pads[0])
    len_w, m_w, cols = _transpose_phases(w, kernel.shape[1], sw, pads[1])
    if len_h <= 0 or len_w <= 0:  # nothing to compute: lax's (empty) answer
        return lax.conv_transpose(x, kernel, strides, pads, dimension_numbers=_DN)
    out_rows = []
    for i0_h, taps_h, off_h in rows:
        out_cols = []
        for i0_w, taps_w, off_w in cols:
            if taps_h == 0 or taps_w == 0:  # kernel smaller than the stride: a phase of zeros
                out_cols.append(jnp.zeros((n, m_h, m_w, o), x.dtype))
                continue
            sub = kernel[i0_h::sh][:taps_h, i0_w::sw][:, :taps_w]
            # rows off .. off + M - 1 + taps - 1 of x (zeros outside; negative pads crop)
            xp = lax.pad(x, jnp.zeros((), x.dtype),
                         ((0, 0, 0), (-off_h, m_h + off_h + taps_h - 1 - h, 0),
                          (-off_w, m_w + off_w + taps_w - 1 - w, 0), (0, 0, 0)))
            out_cols.append(conv2d(xp, sub, (1, 1), "VALID"))
        out_rows.append(jnp.stack(out_cols, axis=3))          # (N, Mh, Mw, sw, O)
    y = jnp.stack(out_rows, axis=2)                            # (N, Mh, sh, Mw, sw, O)
    return y.reshape(n, m_h * sh, m_w * sw, o)[:, :len_h, :len_w]


class ConvTranspose(nn.Module):
    """2-D transposed convolution, NHWC, a drop-in for :class:`flax.linen.ConvTranspose` (its
    default ``transpose_kernel=False``): the same ``kernel`` (kh, kw, C, O) and ``bias`` (O,)
    parameters and the same values, computed by :func:`conv_transpose2d`.

    Attributes:
      features: output channels O.
      kernel_size: (kh, kw).
      strides: (sh, sw) or an int; ``strides=2`` with "SAME" doubles H and W.
      padding: "SAME", "VALID", an int, or ((lo, hi), (lo, hi)) of the dilated input.
      use_bias: add a bias of shape (O,).
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
        y = conv_transpose2d(x, kernel.astype(x.dtype), self.strides, self.padding)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
            y = y + bias.astype(y.dtype)
        return y
