# Lab 2 (convolution), generated from the reference solution. Fill in every
# `raise NotImplementedError(...)`, then grade one function with `make check EX=conv_output_size`
# (any function's name; EX=convolution for the whole lab), here or in the folder above.
"""Lab 2 — Convolution arithmetic, by hand.

A convolutional layer slides a small kernel over the image and, at every position, takes the sum of
the elementwise product of the kernel and the patch under it (deep-learning "convolution" is a
cross-correlation: the kernel is not flipped). Images here are single examples, channels last:
(H, W) for one channel, (H, W, C) otherwise; use ``jax.vmap`` for a batch.

The lecture's worked example: the 5x5 image

    [[3, 0, 6, 7, 5],
     [7, 3, 5, 0, 8],
     [2, 9, 4, 1, 9],
     [7, 1, 6, 7, 6],
     [4, 8, 4, 6, 4]]

with the vertical-edge kernel ``[[1, 0, -1], [1, 0, -1], [1, 0, -1]]`` (no padding, stride 1) gives
a 3x3 output (5 - 3 + 1 = 3):

    [[-3, 4, -7],
     [ 1, 5, -8],
     [-1, 4, -5]]

e.g. the top-left value is (3 + 7 + 2) - (6 + 5 + 4) = -3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _as_pair(v) -> tuple[int, int]:
    """2 -> (2, 2); (2, 3) -> (2, 3)."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_output_size(input_size: int | Sequence[int], kernel_size: int | Sequence[int],
                     stride: int | Sequence[int] = 1,
                     padding: int | Sequence[int] = 0) -> int | tuple[int, ...]:
    """The output length of a convolution along one axis: ``(W - K + 2P) / S + 1``.

    W input size, K kernel size, S stride, P zero padding on *each* side. Returns an ``int``.
    Examples: W=5, K=3, P=0, S=1 -> 3 (the 5x5 example); W=28, K=4, P=1, S=2 -> 14;
    W=227, K=11, P=0, S=4 -> 55 (AlexNet's first layer).

    Raises ``ValueError`` with a clear message when ``(W - K + 2P)`` is not divisible by S (the
    kernel would not fit an integer number of times) or when the result would be < 1. (A layer
    such as :func:`conv2d` rounds down instead, dropping what the last window cannot cover; this
    function is for designing a network, where a size that does not divide is usually a mistake.)

    Per axis: if any argument is a sequence (e.g. ``(28, 32)``), apply the formula per axis
    (ints broadcast) and return a tuple.
    """
    args = (input_size, kernel_size, stride, padding)
    if any(not isinstance(a, int) for a in args):
        n = max(len(a) for a in args if not isinstance(a, int))
        per_axis = [[a] * n if isinstance(a, int) else list(a) for a in args]
        return tuple(conv_output_size(*axis) for axis in zip(*per_axis))
    raise NotImplementedError('compute W - K + 2P first; check it is >= 0 and divisible by S, else raise ValueError')


def padding_amounts(input_size: int, kernel_size: int, stride: int = 1,
                    mode: str = "same") -> tuple[int, int]:
    """The zero padding ``(before, after)`` along one axis for padding mode "valid" or "same".

    - "valid": no padding, ``(0, 0)``.
    - "same" (as TensorFlow/XLA): the output has ``ceil(W / S)`` positions; the total padding is
      ``max((out - 1) S + K - W, 0)``, split with the smaller half *before*:
      ``before = total // 2``, ``after = total - before``.

    Examples: W=5, K=3, S=1, "same" -> (1, 1); K=4 -> (1, 2); W=28, K=3, S=2 -> (0, 1).
    Raises ``ValueError`` for any other mode.
    """
    raise NotImplementedError('ceil(W / S) is -(-W // S) in integers; split the total with the smaller half first')


def zero_pad(image: jax.Array, padding: int | Sequence[Sequence[int]]) -> jax.Array:
    """Pad an image (H, W, C) with zeros around its two spatial axes.

    ``padding`` is an int P (P rows on top *and* bottom, P columns left *and* right) or
    ``((top, bottom), (left, right))``. (H, W, C) -> (H + top + bottom, W + left + right, C);
    the channels are not padded. A 2x2 image with P = 1 becomes 4x4 with the image in the middle.
    """
    raise NotImplementedError('jnp.pad takes one (before, after) pair per axis')


def conv2d_single(image: jax.Array, kernel: jax.Array) -> jax.Array:
    """2-D convolution (cross-correlation) of one channel, from scratch, "valid", stride 1.

    ``out[i, j] = sum_{u, v} image[i + u, j + v] * kernel[u, v]``.

    Shapes: image (H, W), kernel (KH, KW) -> (H - KH + 1, W - KW + 1). The module docstring's
    5x5 example gives [[-3, 4, -7], [1, 5, -8], [-1, 4, -5]].
    From scratch: ``lax.conv*``, ``jnp.convolve`` and ``jax.scipy.signal`` are not allowed.
    Loop over the KH*KW kernel offsets (small), not over the output pixels (many).
    """
    raise NotImplementedError('start from zeros of the output shape and add one shifted slice of the image per kernel offset')


def conv2d(x: jax.Array, w: jax.Array, b: jax.Array, *, stride: int = 1,
           padding: int | str = 0) -> jax.Array:
    """A convolutional layer on one image, from scratch: several input channels, several filters.

    ``out[i, j, o] = b[o] + sum_{u, v, c} xp[i S + u, j S + v, c] * w[u, v, c, o]`` where ``xp`` is
    ``x`` zero-padded by ``padding`` (an int P for every side, or "valid" / "same" as in
    :func:`padding_amounts`).

    Shapes: x (H, W, C_in), w (KH, KW, C_in, C_out) (HWIO, as Flax), b (C_out,) ->
    (OH, OW, C_out) with OH = (H - KH + 2P) // S + 1: the lecture's formula rounded down, the
    rows the last window cannot cover being dropped (as ``lax.conv`` and Keras do). So compute it
    with ``//`` here: :func:`conv_output_size` raises when S does not divide ``H - KH + 2P``.
    Equals ``lax.conv_general_dilated`` — which is not allowed here; nor is ``jnp.convolve``.
    ``stride`` and ``padding`` are plain Python values (static under ``jax.jit``).
    """
    raise NotImplementedError('as conv2d_single, with strided slices (start:stop:S) and a matmul over the input channels')


def classic_kernel(name: str) -> jax.Array:
    """The classic 3x3 image kernels of the lecture, float32 (3, 3):

    ================  ==========================================
    name              kernel
    ================  ==========================================
    vertical_edge     [[1, 0, -1], [1, 0, -1], [1, 0, -1]]
    horizontal_edge   [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]
    vertical_line     [[-1, 2, -1], [-1, 2, -1], [-1, 2, -1]]
    horizontal_line   [[-1, -1, -1], [2, 2, 2], [-1, -1, -1]]
    edge              [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]
    sharpen           [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
    box_blur          all 1/9
    gaussian_blur     [[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16
    ================  ==========================================

    Raises ``ValueError`` naming the valid names for any other name.
    """
    raise NotImplementedError('a dict from names to nested lists, converted with jnp.asarray(..., jnp.float32)')


def filter_image(image: jax.Array, kernel: jax.Array) -> jax.Array:
    """Apply a kernel to a grayscale image, keeping its size ("same" zero padding, stride 1).

    Shapes: image (H, W), kernel (KH, KW) with odd KH, KW -> (H, W). The border is padded with
    ``KH // 2`` rows and ``KW // 2`` columns of zeros on each side, then the kernel is
    cross-correlated as in :func:`conv2d_single`. A blur keeps a constant image constant away
    from the border; an edge kernel gives 0 there.
    """
    raise NotImplementedError("zero-pad so that the output keeps the input's size, then as conv2d_single")


def dense_param_count(input_shape: Sequence[int], units: int) -> int:
    """Parameters of a dense layer on a flattened input: weights ``prod(input_shape) * units`` plus
    ``units`` biases.

    The lecture's point: a 64x64x3 image into 128 units needs 64*64*3*128 + 128 = 1,572,992
    ≈ 1.5 M parameters, while a 3x3 conv with 128 filters needs 3,584 (:func:`conv_param_count`).
    """
    raise NotImplementedError('math.prod multiplies the input dimensions')


def conv_param_count(kernel_size: int | Sequence[int], in_channels: int, filters: int) -> int:
    """Parameters of a conv layer: ``KH * KW * C_in * filters`` weights plus ``filters`` biases.

    Independent of the image size. 3x3, 3 -> 128: 3*3*3*128 + 128 = 3,584.
    ``kernel_size`` is an int K (K x K) or (KH, KW).
    """
    raise NotImplementedError('every filter has one weight per kernel position and input channel, plus a bias')
