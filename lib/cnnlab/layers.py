"""Drop-ins for :class:`flax.linen.Conv`, :func:`flax.linen.max_pool` and
:func:`flax.linen.avg_pool` that train faster on a CPU.

Same signatures, parameters and meaning as Flax's (``max_pool(x, (2, 2))`` pools with stride 1,
as in Flax; pass ``strides=(2, 2)``), the same values and gradients under ``jax.jit``,
``jax.vmap``, ``jax.grad``, ``jax.jvp`` and sharding. Only how they are computed differs, only
on CPU (decided when tracing, from ``jax.default_backend()``), and only for the configurations
listed below; every other configuration (1-D/3-D, dilation, feature groups, masks, causal
padding, overlapping pools, other backends, ...) *is* Flax's own implementation, called with
the same arguments. ``tests/test_flax_dropin.py`` runs Flax's own Conv and pooling tests
against these. What was measured on this 2-core CPU (``benchmarks/train_throughput.py``):

1. The convolution's weight gradient gets slower *per image* as the batch grows (at
   14x14x64->64: 1.5x the forward pass at batch 32, 2x at 128, 6x at 256). :func:`conv2d`
   (2-D, NHWC/HWIO, no dilation or groups) has a :func:`jax.custom_jvp` whose tangent is linear
   in the inputs' tangents and written so that its transpose (what ``jax.grad`` runs) is the
   weight gradient summed over chunks of 16 images, 1.2-2x faster at batch 128, 3-6x at 256:

       dW[i, j, c, o] = sum_b sum_{n in chunk b, p, q} xpad[n, s*p + i, s*q + j, c] * dY[n, p, q, o]

   Per-tap shifted matmuls ("taps") and one im2col matmul ("im2col") are there too, tested, and
   measured slower here (:func:`choose_backward`).
2. A convolution with 1-4 input channels (a grayscale or RGB first layer) is computed forward,
   while differentiating, as a sum of per-tap products that XLA fuses into one loop
   (:func:`conv_taps`, 5x).
3. Non-overlapping 2-D pools (``strides == window_shape``, "VALID" or "SAME") are a max/sum of
   strided slices (XLA:CPU's ``select_and_scatter``, the gradient of ``nn.max_pool``, measured 9x
   slower; ``reduce_window`` made XLA materialise full-size constants). The max pool's gradient
   goes to the first maximum of each window, as XLA's ``select_and_scatter`` chooses it; the
   index of that maximum is found in the forward pass, together with the maximum.

``CNNLAB_CONV_BACKWARD=xla`` turns 1 and 2 off (for comparisons).

Importing this module changes no JAX or XLA setting; XLA:CPU's multi-threaded convolutions are
an explicit opt-in, :func:`cnnlab.xla_cpu.use_multithreaded_convolutions`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import linear as _flax_linear
from flax.linen import pooling as _flax_pooling
from jax import lax

# Flax's own pools, bound once: the fallbacks must reach them even when a test (or a user) has
# put cnnlab's functions in their place on ``flax.linen``.
_flax_max_pool = _flax_pooling.max_pool
_flax_avg_pool = _flax_pooling.avg_pool

# --------------------------------------------------------------------------------------------
# The convolution
# --------------------------------------------------------------------------------------------

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
    """"fast" when :func:`conv2d` uses its custom derivative here, else "xla"."""
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

    and the same derivatives in every mode. ``backward``: "auto" (the custom derivative with
    :func:`choose_backward`'s methods on CPU, XLA's elsewhere), "xla", or a pair
    (weight method, input method) forcing the custom derivative, e.g. ("taps", "xla").
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


def _offset_slice(xp: jax.Array, i: int, j: int, out_hw: Sequence[int],
                  strides: Sequence[int]) -> jax.Array:
    """xp[:, i::sh][:, :Ho], xp[:, :, j::sw][:, :, :Wo]: the inputs kernel tap (i, j) sees."""
    n, _, _, c = xp.shape
    (ho, wo), (sh, sw) = out_hw, strides
    return lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                     (1, sh, sw, 1))


def _pad(x: jax.Array, pads: Pads, value: float = 0.0) -> jax.Array:
    """Pad (or, with negative pads, crop) the two spatial axes of NHWC ``x``."""
    return lax.pad(x, jnp.array(value, x.dtype),
                   ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))


def _taps(x: jax.Array, kernel_hw: Sequence[int], strides: Sequence[int], pads: Pads):
    """The padded input and its (i, j) tap slices, each (N, Ho, Wo, C), in row-major order."""
    kh, kw = kernel_hw
    xp = _pad(x, pads)
    ho = (xp.shape[1] - kh) // strides[0] + 1
    wo = (xp.shape[2] - kw) // strides[1] + 1
    return [_offset_slice(xp, i, j, (ho, wo), strides) for i in range(kh) for j in range(kw)]


def _accumulation_dtype(x: jax.Array):
    """Sums in float32 at least (bfloat16 inputs), in float64 for float64 inputs."""
    return jnp.promote_types(x.dtype, jnp.float32)


def conv_taps(x: jax.Array, kernel: jax.Array, strides: Sequence[int], pads: Pads) -> jax.Array:
    """The convolution as a sum of kh*kw*C broadcast products, for a handful of input channels:

        y[n, p, q, :] = sum_{i, j, c} xpad[n, s*p + i, s*q + j, c] * kernel[i, j, c, :]

    Elementwise only, so XLA fuses it into one loop over the output: measured 5-8x faster here
    than its convolution for a grayscale first layer (kh*kw*C tiny). (Written as per-tap
    ``dot_general`` instead, XLA sometimes materialised each tap's product separately.)
    """
    kh, kw, c, _ = kernel.shape
    # Materialise the input once: fused into the taps, its producers (e.g. uint8 -> float
    # scaling) would be recomputed for every tap and output channel.
    taps = _taps(lax.optimization_barrier(x), (kh, kw), strides, pads)
    acc_dtype = _accumulation_dtype(x)
    acc = None
    for t, tap in enumerate(taps):
        i, j = divmod(t, kw)
        tap = tap.astype(acc_dtype)
        for ci in range(c):
            y = tap[..., ci:ci + 1] * kernel[i, j, ci].astype(acc_dtype)  # (N, Ho, Wo, O)
            acc = y if acc is None else acc + y
    return acc.astype(x.dtype)


def conv_chunks(x: jax.Array, kernel: jax.Array, strides: Sequence[int], pads: Pads,
                chunk: int = CHUNK) -> jax.Array:
    """XLA's convolution of chunks of the batch (at most :data:`MAX_CHUNKS`), concatenated.

    The same values; what matters is its transpose in ``kernel`` (the weight gradient), which
    autodiff makes a sum of per-chunk weight gradients,
    ``dW = sum_b dW(x[b*chunk:(b+1)*chunk], dY[b*chunk:(b+1)*chunk])``: several times faster on
    XLA:CPU than one weight gradient over the whole batch."""
    n = x.shape[0]
    chunk = max(chunk, -(-n // MAX_CHUNKS))
    parts = [_conv_xla(x[i:i + chunk], kernel, strides, pads) for i in range(0, n, chunk)]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)


def conv_tap_matmuls(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                     pads: Pads) -> jax.Array:
    """The convolution as one (M, C) x (C, O) matmul per kernel tap, summed (M = N*H'*W').
    Transposed in ``kernel`` it is one (C, M) x (M, O) matmul per tap; in ``x``, per-tap
    (M, O) x (O, C) products placed back at the strided positions they came from."""
    kh, kw, _, _ = kernel.shape
    acc = None
    for t, tap in enumerate(_taps(x, (kh, kw), strides, pads)):
        y = lax.dot_general(tap, kernel[divmod(t, kw)], (((3,), (0,)), ((), ())),
                            preferred_element_type=_accumulation_dtype(x))
        acc = y if acc is None else acc + y
    return acc.astype(x.dtype)


def conv_im2col(x: jax.Array, kernel: jax.Array, strides: Sequence[int], pads: Pads
                ) -> jax.Array:
    """The convolution as one (M, kh*kw*C) x (kh*kw*C, O) matmul over the stacked taps (im2col);
    transposed in ``kernel``, one (kh*kw*C, M) x (M, O) matmul."""
    kh, kw, c, o = kernel.shape
    cols = jnp.concatenate(_taps(x, (kh, kw), strides, pads), axis=-1)
    y = lax.dot_general(cols, kernel.reshape(kh * kw * c, o), (((3,), (0,)), ((), ())),
                        preferred_element_type=_accumulation_dtype(x))
    return y.astype(x.dtype)


# Each method is a way to compute the convolution, linear in both arguments; the derivative of
# conv2d applies one of them to the tangents, and autodiff transposes it into the gradient.
_CONV_FORMS = {"xla": _conv_xla, "chunks": conv_chunks, "taps": conv_tap_matmuls,
               "im2col": conv_im2col}
TAPS_FORWARD_MAX_CHANNELS = 4


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _conv_custom(x, kernel, strides, pads, wgrad, dgrad):
    # Not differentiated (inference): XLA's convolution. Measured: the per-tap form, fused by
    # XLA:CPU into its YNNPACK elementwise graphs, made inference 2-3x slower there.
    return _conv_xla(x, kernel, strides, pads)


def _conv_jvp(strides, pads, wgrad, dgrad, primals, tangents):
    """dy = conv(dx, kernel) by the input method + conv(x, dkernel) by the weight method.

    A tangent rule rather than a VJP, so that forward mode (``jax.jvp``, ``jax.jacfwd``) works
    too; ``jax.grad`` transposes the linear tangent map into the gradients (e.g. "chunks" into
    per-chunk weight gradients). Symbolic zeros skip the terms nobody asked for (the input
    gradient of the first layer)."""
    x, kernel = primals
    dx, dkernel = tangents
    if kernel.shape[2] <= TAPS_FORWARD_MAX_CHANNELS:
        y = conv_taps(x, kernel, strides, pads)
    else:
        y = _conv_xla(x, kernel, strides, pads)
    dy = None
    if not isinstance(dx, jax.custom_derivatives.SymbolicZero):
        dy = _CONV_FORMS[dgrad](dx, kernel, strides, pads)
    if not isinstance(dkernel, jax.custom_derivatives.SymbolicZero):
        term = _CONV_FORMS[wgrad](x, dkernel, strides, pads)
        dy = term if dy is None else dy + term
    return y, (jnp.zeros_like(y) if dy is None else dy)


_conv_custom.defjvp(_conv_jvp, symbolic_zeros=True)


class Conv(nn.Conv):
    """:class:`flax.linen.Conv` (same attributes, parameters and results), faster on CPU.

    A 2-D convolution over NHWC inputs (any number of batch axes, or none) with "SAME",
    "VALID", "CIRCULAR", "REFLECT", int or explicit padding, no dilation, no feature groups, no
    mask, default precision and real floating dtypes runs through :func:`conv2d` on CPU;
    everything else is ``flax.linen.Conv.__call__`` itself. ``kernel`` HWIO, ``bias`` (features,);
    ``x`` (..., H, W, C) -> (..., H', W', features), ``H' = ceil(H / sh)`` for "SAME" and
    ``floor((H + lo + hi - kh) / sh) + 1`` otherwise.
    """

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        padding = self._fast_padding(inputs)
        if padding is None:
            return super().__call__(inputs)
        kernel_size = tuple(self.kernel_size)
        strides = _pairs(1 if self.strides is None else self.strides, 2)
        batch_shape = inputs.shape[:-3]
        x = inputs.reshape((-1, *inputs.shape[-3:]))
        if padding in _PAD_MODES:  # as Flax: pad the input periodically / by reflection
            pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in kernel_size] + [(0, 0)]
            x, padding = jnp.pad(x, pads, mode=_PAD_MODES[padding]), "VALID"
        kernel = self.param("kernel", self.kernel_init,
                            (*kernel_size, inputs.shape[-1], self.features), self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = self.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, strides, padding)
        if bias is not None:
            y = y + bias
        return y.reshape((*batch_shape, *y.shape[1:]))

    def _fast_padding(self, inputs: jax.Array):
        """The padding for :func:`conv2d` when the fast path covers this call, else None."""
        if (conv_backward_mode() != "fast" or isinstance(self.kernel_size, int)
                or len(self.kernel_size) != 2 or inputs.ndim < 3 or inputs.size == 0
                or self.feature_group_count != 1 or self.mask is not None
                or self.precision is not None or self.conv_general_dilated is not None
                or self.conv_general_dilated_cls is not None
                or any(_pairs(1 if d is None else d, 2) != (1, 1)
                       for d in (self.input_dilation, self.kernel_dilation))
                or not all(jnp.issubdtype(t, jnp.floating)
                           for t in (inputs.dtype, self.param_dtype, self.dtype or jnp.float32))):
            return None
        try:
            padding = _flax_linear.canonicalize_padding(self.padding, 2)
        except ValueError:
            return None  # Flax raises its own error
        if isinstance(padding, str):
            return padding if padding in ("SAME", "VALID", *_PAD_MODES) else None
        return tuple((int(lo), int(hi)) for lo, hi in padding)


_PAD_MODES = {"CIRCULAR": "wrap", "REFLECT": "reflect"}


# --------------------------------------------------------------------------------------------
# Pools
# --------------------------------------------------------------------------------------------

def _tiling(x: jax.Array, window_shape, strides, padding):
    """``(window, pads)`` when a pool is one the fast path covers: CPU, 2-D windows that tile
    the input (``strides == window_shape``), "VALID" or "SAME", a floating input with at least
    one whole window. Else None. "VALID": Ho = H // wh, leftover rows cropped (negative pads);
    "SAME": Ho = ceil(H / wh), padded evenly (the extra row at the end), as ``lax`` pads."""
    window = tuple(window_shape)
    if (jax.default_backend() != "cpu" or len(window) != 2 or strides is None
            or tuple(strides) != window or not isinstance(padding, str)
            or padding not in ("SAME", "VALID") or x.ndim < 3 or x.size == 0
            or not jnp.issubdtype(x.dtype, jnp.floating)):
        return None
    (h, w), (wh, ww) = x.shape[-3:-1], window
    if padding == "VALID":
        pads = ((0, h // wh * wh - h), (0, w // ww * ww - w))
    else:
        ph, pw = -(-h // wh) * wh - h, -(-w // ww) * ww - w
        pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
    if h + sum(pads[0]) == 0 or w + sum(pads[1]) == 0:
        return None
    return window, pads


def _as_nhwc(x: jax.Array, fn):
    """Apply ``fn`` (N, H, W, C) -> (N, H', W', C) to ``x`` with any number of batch axes."""
    y = fn(x.reshape((-1, *x.shape[-3:])))
    return y.reshape((*x.shape[:-3], *y.shape[1:]))


def max_pool(inputs: jax.Array, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: str | Sequence[tuple[int, int]] = "VALID") -> jax.Array:
    """:func:`flax.linen.max_pool`: the maximum of each window (``strides`` default 1).

    ``inputs`` (batch..., H, W, C) (any number of batch axes, or none). Windows that tile the
    input (``strides == window_shape``, "VALID" or "SAME") on CPU:
    (N, H, W, C) -> (N, H//wh, W//ww, C) for "VALID" (ceil for "SAME", padded with -inf), as a
    max of strided slices; the gradient of each output goes to the first maximum of its window
    in row-major order (ties included), as ``nn.max_pool``'s. Everything else is
    ``nn.max_pool``.
    """
    tiling = _tiling(inputs, window_shape, strides, padding)
    if tiling is None:
        return _flax_max_pool(inputs, window_shape, strides, padding)
    window, pads = tiling
    return _as_nhwc(inputs, lambda x: _window_max(x, window, pads))


def avg_pool(inputs: jax.Array, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: str | Sequence[tuple[int, int]] = "VALID",
             count_include_pad: bool = True) -> jax.Array:
    """:func:`flax.linen.avg_pool`: the mean of each window (``strides`` default 1).

    Windows that tile the input (``strides == window_shape``, "VALID", or "SAME" with padded
    zeros counted) on CPU are a sum of strided slices times 1 / (wh * ww): XLA:CPU's
    ``reduce_window`` made ``nn.avg_pool`` materialise full-size constant tensors every step
    (about 7 ms of a 45 ms Flax-example-CNN step here). Everything else is ``nn.avg_pool``.
    """
    tiling = _tiling(inputs, window_shape, strides, padding)
    if tiling is not None and not count_include_pad and any(map(any, tiling[1])):
        tiling = None  # a mean over only the real entries of partly padded windows
    if tiling is None:
        return _flax_avg_pool(inputs, window_shape, strides, padding, count_include_pad)
    window, pads = tiling
    return _as_nhwc(inputs, lambda x: _window_mean(x, window, pads))


def _window_taps(x, window, pads, value):
    """The wh*ww strided slices (N, Ho, Wo, C) of x padded (cropped) to whole windows."""
    xp = _pad(x, pads, value)
    (wh, ww) = window
    out_hw = (xp.shape[1] // wh, xp.shape[2] // ww)
    return [_offset_slice(xp, i, j, out_hw, window) for i in range(wh) for j in range(ww)]


def _window_mean(x, window, pads):
    # A sum of strided slices (elementwise), not a reduce: XLA:CPU hands reduces to YNNPACK,
    # which then materialised full-size broadcast constants for the fused ReLU every step.
    taps = _window_taps(x, window, pads, 0.0)
    return functools.reduce(jnp.add, taps) * jnp.asarray(1.0 / len(taps), x.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _window_max(x, window, pads):
    # The max of strided slices (elementwise) rather than a reduce, for the reason above.
    return functools.reduce(jnp.maximum, _window_taps(x, window, pads, -jnp.inf))


@_window_max.defjvp
def _window_max_jvp(window, pads, primals, tangents):
    """dy = dx at the first maximum of each window.

    The index of that maximum is taken in the same pass as the maximum, by XLA's own rule
    (``select_and_scatter`` with ``>=``: keep the current pick unless it is smaller), and the
    tangent is selected by that index. Not by comparing x with the saved maximum (what this did
    before): XLA may compute x in two places (e.g. fused into both the forward max and the
    comparison), rounding differently in each, and then no entry of a window equalled its
    maximum and the window's gradient was lost; that happened with batch norm before the pool
    and the batch sharded over several devices (41-55 % off in resnet_small's first stages).
    """
    (x,), (dx,) = primals, tangents
    taps = _window_taps(x, window, pads, -jnp.inf)
    y = functools.reduce(jnp.maximum, taps)
    best, index = taps[0], jnp.zeros(y.shape, jnp.int32)
    for k, tap in enumerate(taps[1:], start=1):
        take = ~(best >= tap)
        best, index = jnp.where(take, tap, best), jnp.where(take, k, index)
    dtaps = _window_taps(dx, window, pads, 0.0)
    dy = functools.reduce(jnp.add, [jnp.where(index == k, dt, jnp.zeros((), dt.dtype))
                                    for k, dt in enumerate(dtaps)])
    return y, dy

