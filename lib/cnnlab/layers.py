"""Layers that train fast on a CPU: :class:`Conv`, :func:`max_pool`, :func:`avg_pool`.

:class:`Conv` is a drop-in for :class:`flax.linen.Conv` (same parameter names and shapes:
``kernel`` HWIO, ``bias`` (features,)); the pools are drop-ins for ``nn.max_pool`` /
``nn.avg_pool``. Values and gradients equal XLA's; only the way they are computed differs, and
only on CPU (decided when tracing, from ``jax.default_backend()``; GPU/TPU get plain XLA).
What was measured on this 2-core CPU (jaxlib 0.10, batch 128; ``benchmarks/train_throughput.py``):

1. XLA:CPU runs convolutions through YNNPACK on a single thread. Importing this module adds
   ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`` to ``XLA_FLAGS`` so they
   run on Eigen's multi-threaded convolution instead: 2x on every convolution, forward and
   backward (see :data:`YNN_CONV_FLAG`; ``CNNLAB_XLA_FLAGS=off`` leaves XLA_FLAGS alone).
2. The convolution's weight gradient gets slower *per image* as the batch grows (at
   14x14x64->64: 1.5x the forward pass at batch 32, 2x at 128, 6x at 256). :func:`conv2d` has a
   :func:`jax.custom_vjp` whose weight gradient is the same sum taken in a faster order,

       dW[i, j, c, o] = sum_{n, p, q} xpad[n, s*p + i, s*q + j, c] * dY[n, p, q, o],

   summed over chunks of 16 images ("chunks", 1.2-2x at batch 128, 3-6x at 256); per-tap
   shifted matmuls ("taps") and one im2col matmul ("im2col") are there too, tested, and measured
   slower here (:func:`choose_backward`).
3. A convolution with 1-4 input channels (a grayscale or RGB first layer) is computed forward as
   a sum of per-tap products that XLA fuses into one loop (:func:`conv_taps`, 5x).
4. Non-overlapping pools are a reshape and a max/mean; the max pool has its own gradient
   (first maximum of each window, as ``nn.max_pool``): XLA:CPU's ``select_and_scatter`` measured
   9x slower, and ``reduce_window`` of ``nn.avg_pool`` materialises full-size constants.

``CNNLAB_CONV_BACKWARD=xla`` turns 2 and 3 off (for comparisons).
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

# XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK by default, which runs each one on a
# single thread; without it they go to Eigen's convolution on the intra-op thread pool (all
# cores). Measured here on 2 cores: 14x14x32->64 at batch 128, forward 10.9 -> 5.4 ms, input
# gradient 11.4 -> 5.6 ms, same results. The flag must be in XLA_FLAGS before JAX compiles
# anything, so it is added when this module is imported (``import cnnlab.models`` does), unless
# XLA_FLAGS already sets it or CNNLAB_XLA_FLAGS=off. Only for the jaxlib versions it was
# verified on: an unknown XLA flag aborts the process.
YNN_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_VERIFIED_JAXLIB = ("0.10.",)


def _add_xla_cpu_flags() -> bool:
    import jaxlib

    flags = os.environ.get("XLA_FLAGS", "")
    if (os.environ.get("CNNLAB_XLA_FLAGS", "").lower() in ("off", "0", "no")
            or "xla_cpu_experimental_ynn_fusion_type" in flags
            or not jaxlib.__version__.startswith(_VERIFIED_JAXLIB)):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_CONV_FLAG}".strip()
    return True


_add_xla_cpu_flags()


def multithreaded_cpu_convolutions() -> bool:
    """Whether XLA:CPU compiles convolutions to its multi-threaded Eigen path in this process
    (False when the flag came too late: something compiled before ``cnnlab.layers`` was
    imported). Compiles one tiny convolution to find out."""
    if jax.default_backend() != "cpu":
        return False
    x = jnp.zeros((2, 8, 8, 32))  # tiny convolutions never go to YNNPACK: this one would
    hlo = jax.jit(lambda x, k: _conv_xla(x, k, (1, 1), ((1, 1), (1, 1)))).lower(
        x, jnp.zeros((3, 3, 32, 32))).compile().as_text()
    return "ynn_fusion" not in hlo


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


WGRADS = ("xla", "chunks", "taps", "im2col")
DGRADS = ("xla", "taps")
CHUNK = 16          # images per weight-gradient chunk
MAX_CHUNKS = 16     # more would only lengthen compilation


def choose_backward(x_shape: Sequence[int], kernel_shape: Sequence[int],
                    out_shape: Sequence[int], strides: Sequence[int]) -> tuple[str, str]:
    """(weight-gradient method, input-gradient method) for one convolution on CPU.

    Measured on this 2-core CPU (CPU-seconds per image): XLA's weight gradient gets slower
    *per image* as the batch grows (at 14x14x64->64 about 1.5x the forward conv at batch 32, 2x
    at 128, 6x at 256), so "chunks" sums XLA's weight gradients over chunks of :data:`CHUNK`
    images (1.2-2x faster at batch 128, 3-6x at 256). "taps" (one matmul per kernel tap) and
    "im2col" (one matmul) measured slower here except on tiny first layers. XLA's input
    gradient costs the same as the forward conv at every batch size and stays.
    ``CNNLAB_CONV_WGRAD`` / ``CNNLAB_CONV_DGRAD`` force a method (for measurements).
    """
    wgrad = "chunks" if x_shape[0] > CHUNK else "xla"
    dgrad = "xla"
    wgrad = os.environ.get("CNNLAB_CONV_WGRAD", wgrad).lower()
    dgrad = os.environ.get("CNNLAB_CONV_DGRAD", dgrad).lower()
    if wgrad not in WGRADS or dgrad not in DGRADS:
        raise ValueError(f"conv backward methods: weight {WGRADS}, input {DGRADS}; "
                         f"got {wgrad!r}, {dgrad!r}")
    return wgrad, dgrad


def conv2d(x: jax.Array, kernel: jax.Array, strides: int | Sequence[int] = (1, 1),
           padding: PaddingLike = "SAME", *, backward: str | tuple[str, str] = "auto"
           ) -> jax.Array:
    """NHWC x HWIO -> NHWC cross-correlation (what every deep-learning "conv" computes).

    ``x`` (N, H, W, C), ``kernel`` (kh, kw, C, O) -> (N, H', W', O): the value of
    ``lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC/HWIO/NHWC)``,

        y[n, p, q, o] = sum_{i, j, c} xpad[n, s*p + i, s*q + j, c] * kernel[i, j, c, o]

    and the same gradients. ``backward``: "auto" (the custom VJP with
    :func:`choose_backward`'s methods on CPU, XLA's elsewhere), "xla", or a pair
    (weight method, input method) forcing the custom VJP, e.g. ("taps", "xla").
    """
    strides = _pairs(strides, 2)
    pads = explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
    if backward == "auto":
        if conv_backward_mode() == "xla":
            return _conv_xla(x, kernel, strides, pads)
        out_hw = [(size + lo + hi - k) // s + 1 for size, (lo, hi), k, s
                  in zip(x.shape[1:3], pads, kernel.shape[:2], strides)]
        out_shape = (x.shape[0], *out_hw, kernel.shape[-1])
        backward = choose_backward(x.shape, kernel.shape, out_shape, strides)
    if backward == "xla" or tuple(backward) == ("xla", "xla"):
        return _conv_xla(x, kernel, strides, pads)
    wgrad, dgrad = backward
    if wgrad not in WGRADS or dgrad not in DGRADS:
        raise ValueError(f"backward=(weight method in {WGRADS}, input method in {DGRADS}), "
                         f"got {backward!r}")
    return _conv_custom(x, kernel, strides, pads, wgrad, dgrad)


def _conv_xla(x, kernel, strides, pads):
    return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DN)


def conv_taps(x: jax.Array, kernel: jax.Array, strides: Sequence[int], pads: Pads) -> jax.Array:
    """The convolution as a sum of kh*kw*C broadcast products, for a handful of input channels:

        y[n, p, q, :] = sum_{i, j, c} xpad[n, s*p + i, s*q + j, c] * kernel[i, j, c, :]

    Elementwise only, so XLA fuses it into one loop over the output: measured 5-8x faster here
    than its convolution for a grayscale first layer (kh*kw*C tiny). (Written as per-tap
    ``dot_general`` instead, XLA sometimes materialised each tap's product separately.)
    """
    kh, kw, c, o = kernel.shape
    # Materialise the input once: fused into the taps, its producers (e.g. uint8 -> float
    # scaling) would be recomputed for every tap and output channel.
    xp = _pad(lax.optimization_barrier(x), pads)
    n = x.shape[0]
    ho = (xp.shape[1] - kh) // strides[0] + 1
    wo = (xp.shape[2] - kw) // strides[1] + 1
    acc = None
    for i in range(kh):
        for j in range(kw):
            tap = _offset_slice(xp, i, j, (ho, wo), strides).astype(jnp.float32)
            for ci in range(c):  # accumulate in float32 whatever the input dtype
                y = tap[..., ci:ci + 1] * kernel[i, j, ci].astype(jnp.float32)  # (N, Ho, Wo, O)
                acc = y if acc is None else acc + y
    return acc.astype(x.dtype)


TAPS_FORWARD_MAX_CHANNELS = 4


def _forward(x, kernel, strides, pads):
    """The forward pass when differentiating (the ``fwd`` rule of the custom VJP)."""
    if kernel.shape[2] <= TAPS_FORWARD_MAX_CHANNELS:
        return conv_taps(x, kernel, strides, pads)
    return _conv_xla(x, kernel, strides, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_custom(x, kernel, strides, pads, wgrad, dgrad):
    # Not differentiated (inference): XLA's convolution. Measured: the per-tap form, fused by
    # XLA:CPU into its YNNPACK elementwise graphs, made inference 2-3x slower there.
    return _conv_xla(x, kernel, strides, pads)


def _conv_fwd(x, kernel, strides, pads, wgrad, dgrad):
    return _forward(x, kernel, strides, pads), (x, kernel)


def _offset_slice(xp: jax.Array, i: int, j: int, out_hw: Sequence[int],
                  strides: Sequence[int]) -> jax.Array:
    """xp[:, i::sh][:, :Ho], xp[:, :, j::sw][:, :, :Wo]: the inputs kernel tap (i, j) sees."""
    n, _, _, c = xp.shape
    (ho, wo), (sh, sw) = out_hw, strides
    return lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                     (1, sh, sw, 1))


def _pad(x: jax.Array, pads: Pads) -> jax.Array:
    return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))


def weight_grad_xla(x: jax.Array, g: jax.Array, kernel_hw: Sequence[int],
                    strides: Sequence[int], pads: Pads) -> jax.Array:
    """dL/dW (kh, kw, C, O) from the input x (N, H, W, C) and dL/dY g (N, H', W', O), by XLA
    (the transpose of the convolution in its kernel argument)."""
    kernel = jax.ShapeDtypeStruct((*kernel_hw, x.shape[-1], g.shape[-1]), x.dtype)
    (dw,) = jax.linear_transpose(lambda k: _conv_xla(x, k, strides, pads), kernel)(g)
    return dw


def weight_grad_chunks(x: jax.Array, g: jax.Array, kernel_hw: Sequence[int],
                       strides: Sequence[int], pads: Pads, chunk: int = CHUNK) -> jax.Array:
    """:func:`weight_grad_xla` summed over chunks of the batch (at most :data:`MAX_CHUNKS`):

        dW = sum_b dW(x[b*chunk:(b+1)*chunk], g[b*chunk:(b+1)*chunk])

    The same sum in another order; XLA:CPU is several times faster on small batches."""
    n = x.shape[0]
    chunk = max(chunk, -(-n // MAX_CHUNKS))
    parts = [weight_grad_xla(x[i:i + chunk], g[i:i + chunk], kernel_hw, strides, pads)
             for i in range(0, n, chunk)]
    return functools.reduce(jnp.add, parts)


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
    strided positions it came from (a pad with interior gaps) and summed; then the padding is
    cut."""
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


def _conv_bwd(strides, pads, wgrad, dgrad, res, g):
    x, kernel = res
    kernel_hw = kernel.shape[:2]
    if wgrad == "xla":
        dw = weight_grad_xla(x, g, kernel_hw, strides, pads)
    elif wgrad == "chunks":
        dw = weight_grad_chunks(x, g, kernel_hw, strides, pads)
    elif wgrad == "im2col":
        dw = weight_grad_im2col(x, g, kernel_hw, strides, pads)
    else:
        dw = weight_grad_taps(x, g, kernel_hw, strides, pads)
    # The input gradient of the first layer is dead code that XLA removes after inlining.
    if dgrad == "taps":
        dx = input_grad_taps(g, kernel, x.shape, strides, pads)
    else:
        x_struct = jax.ShapeDtypeStruct(x.shape, x.dtype)
        (dx,) = jax.linear_transpose(lambda x: _conv_xla(x, kernel, strides, pads), x_struct)(g)
    return dx.astype(x.dtype), dw.astype(kernel.dtype)


_conv_custom.defvjp(_conv_fwd, _conv_bwd)


def _whole_windows(x_hw: Sequence[int], window: tuple[int, int], strides: tuple[int, int],
                   padding):
    """``((Ho, Wo), pads)`` of a pool whose windows tile the input (``strides == window``,
    "VALID" or "SAME"), else ``None``. "VALID": Ho = H // wh, the leftover rows cropped (negative
    pads); "SAME": Ho = ceil(H / wh), padded evenly (the extra row at the end)."""
    if strides != window or not isinstance(padding, str) or padding.upper() not in ("SAME",
                                                                                    "VALID"):
        return None
    (h, w), (wh, ww) = x_hw, window
    if padding.upper() == "VALID":
        ho, wo = h // wh, w // ww
        return (ho, wo), ((0, ho * wh - h), (0, wo * ww - w))
    ho, wo = -(-h // wh), -(-w // ww)
    ph, pw = ho * wh - h, wo * ww - w
    return (ho, wo), ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))


def max_pool(x: jax.Array, window_shape: Sequence[int] = (2, 2),
             strides: Sequence[int] | None = None, padding: str = "VALID") -> jax.Array:
    """:func:`flax.linen.max_pool` for NHWC ``x``, fast on CPU when the windows do not overlap.

    With ``strides == window_shape`` (the usual 2x2/2 pool) it is a reshape and a max,
    (N, H, W, C) -> (N, H//wh, W//ww, C) for "VALID" (ceil for "SAME", padded with -inf), with a
    custom gradient: each output's gradient goes to the first maximum of its window (as
    ``nn.max_pool``'s ``select_and_scatter``, which measured 9x slower on XLA:CPU; autodiff of the
    reshaped max is 3x slower too). Other pools fall back to ``nn.max_pool``.
    """
    window = _pairs(window_shape, 2)
    strides = window if strides is None else _pairs(strides, 2)
    tiling = _whole_windows(x.shape[1:3], window, strides, padding)
    if tiling is None:
        return nn.max_pool(x, window, strides, padding)
    _, pads = tiling
    return _window_max(x, window, pads)


def avg_pool(x: jax.Array, window_shape: Sequence[int] = (2, 2),
             strides: Sequence[int] | None = None, padding: str = "VALID") -> jax.Array:
    """:func:`flax.linen.avg_pool` (``count_include_pad=True``, its default) for NHWC ``x``.

    Non-overlapping windows (``strides == window_shape``) are a sum of strided slices times
    1 / (wh * ww): XLA:CPU's
    ``reduce_window`` made ``nn.avg_pool`` materialise full-size constant tensors every step
    (about 7 ms of a 45 ms Flax-example-CNN step here). Other pools fall back to ``nn.avg_pool``.
    """
    window = _pairs(window_shape, 2)
    strides = window if strides is None else _pairs(strides, 2)
    tiling = _whole_windows(x.shape[1:3], window, strides, padding)
    if tiling is None:
        return nn.avg_pool(x, window, strides, padding)
    (ho, wo), pads = tiling
    (wh, ww) = window
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    # A sum of strided slices (elementwise), not a reduce: XLA:CPU hands reduces to YNNPACK,
    # which then materialised full-size broadcast constants for the fused ReLU every step.
    taps = [_offset_slice(xp, i, j, (ho, wo), window) for i in range(wh) for j in range(ww)]
    return functools.reduce(jnp.add, taps) * jnp.asarray(1.0 / (wh * ww), x.dtype)


def _pad_windows(x, window, pads):
    """Pad (with -inf) or crop x to whole windows: (N, Ho, wh, Wo, ww, C)."""
    n, h, w, c = x.shape
    xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype),
                 ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    (wh, ww) = window
    return xp.reshape(n, xp.shape[1] // wh, wh, xp.shape[2] // ww, ww, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _window_max(x, window, pads):
    # The max of strided slices (elementwise) rather than a reduce, for the reason in avg_pool.
    xw = _pad_windows(x, window, pads)
    (wh, ww) = window
    return functools.reduce(jnp.maximum, [xw[:, :, i, :, j, :] for i in range(wh)
                                          for j in range(ww)])


def _window_max_fwd(x, window, pads):
    y = _window_max(x, window, pads)
    return y, (x, y)


def _window_max_bwd(window, pads, res, g):
    x, y = res
    xw = _pad_windows(x, window, pads)
    (wh, ww) = window
    taken = jnp.zeros(y.shape, bool)
    rows = []
    for i in range(wh):  # row-major scan of the window: the first maximum takes the gradient
        cols = []
        for j in range(ww):
            hit = (xw[:, :, i, :, j, :] == y) & ~taken
            taken = taken | hit
            cols.append(jnp.where(hit, g, jnp.zeros((), g.dtype)))
        rows.append(jnp.stack(cols, axis=3))          # (N, Ho, Wo, ww, C)
    dxw = jnp.stack(rows, axis=2)                      # (N, Ho, wh, Wo, ww, C)
    n, ho, _, wo, _, c = dxw.shape
    dxp = dxw.reshape(n, ho * wh, wo * ww, c)
    # Undo the padding/cropping: slice off padded rows, re-add cropped ones as zeros.
    neg = ((0, 0, 0), (-pads[0][0], -pads[0][1], 0), (-pads[1][0], -pads[1][1], 0), (0, 0, 0))
    return (lax.pad(dxp, jnp.zeros((), g.dtype), neg),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


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


# --- Transposed convolution --------------------------------------------------------------------
#
# XLA computes lax.conv_transpose as a convolution of the input spread out with S - 1 zeros
# between pixels ("lhs dilation"): S*S times the work, and its gradients on XLA:CPU measured
# 5-10x slower than PyTorch's ConvTranspose2d (DCGAN generator layers 7->14 and 14->28, 128
# channels, batch 64). Every output pixel of a stride-S transposed convolution is fed by one
# phase of the kernel only: output row S*m + r only sees kernel rows i = i0(r) + S*j. So the
# layer is S*S ordinary stride-1 convolutions of the undilated input, one per output phase
# (rh, rw), each with its exact sub-kernel, whose outputs are interleaved ("sub-pixel
# convolution"). No multiplication by an inserted zero, and each sub-convolution goes through
# conv2d above (multi-threaded, chunked weight gradient).


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
