# Lab 2 (convolution), generated from the reference solution. Fill in every
# `raise NotImplementedError(...)`, then grade one function with `make check EX=conv_output_size`
# (any function's name; EX=convolution for the whole lab), here or in the folder above.
"""Lab 2 — Convolution arithmetic, by hand.

A convolutional layer slides a small kernel over the image and, at every position, takes the sum of
the elementwise product of the kernel and the patch under it (deep-learning "convolution" is a
cross-correlation: the kernel is not flipped). "Filters act as feature detectors from the original
input image." Images here are single examples, channels last: (H, W) for one channel, (H, W, C)
otherwise; use ``jax.vmap`` for a batch.

The lecture's worked example (001_8ff93c9bfb889e45.txt, the slides after "Convolutional Neural
Networks: why?"): the 5x5 image

    [[3, 2, 3, 1, 8],
     [1, 9, 1, 3, 2],
     [2, 3, 5, 6, 6],
     [3, 2, 3, 5, 9],
     [1, 1, 2, 4, 5]]

with the vertical-edge kernel ``[[1, 0, -1], [1, 0, -1], [1, 0, -1]]`` (no padding, stride 1)
gives a 3x3 output (5 - 3 + 1 = 3):

    [[-3,  4,  -7],
     [-3,  0,  -8],
     [-4, -9, -10]]

The slides work out the first two values: 3*1 + 1*1 + 2*1 + 0*2 + 0*9 + 0*3 + 3*(-1) + 1*(-1) +
5*(-1) = -3, and 2*1 + 9*1 + 3*1 + 0*3 + 0*1 + 0*5 + 1*(-1) + 3*(-1) + 6*(-1) = 4.

"What if there is an edge?" (same deck): a 6x6 image whose rows are all ``[8, 8, 8, 0, 0, 0]``,
with the same kernel, gives a 4x4 output whose rows are all ``[0, 24, 24, 0]``: the edge lights up
in the middle, where bright meets dark.
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
    Lecture: 002_7bece5f3dd1db8ed.txt, "Image Convolution: Settings – Output":
    W_out = (W_in - K + 2P) / S + 1 ("Same calculation for height").
    Examples: W=5, K=3, P=0, S=1 -> 3 (the 5x5 example); the same with P=1 -> 5 (the padded
    example of that deck keeps the size); W=28, K=4, P=1, S=2 -> 14;
    W=227, K=11, P=0, S=4 -> 55 (AlexNet's first layer).

    Raises ``ValueError`` with a clear message when ``(W - K + 2P)`` is not divisible by S (the
    kernel would not fit an integer number of times) or when the result would be < 1. (A layer
    such as :func:`conv2d` rounds down instead, dropping what the last window cannot cover; this
    function is for designing a network, where a size that does not divide is usually a mistake.)

    Per axis: if any argument is a sequence (e.g. ``(28, 32)``), apply the formula per axis
    (ints broadcast) and return a tuple. (The stride "can be different for vertical and
    horizontal steps (but usually is the same value)", same deck, "Settings – Stride".)
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

    Lecture: 001_8ff93c9bfb889e45.txt, "Problems with convolutions": "Deep networks: images shrink
    considerably; more central pixels are used much more in output. Solution: padding! Valid,
    Same".

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

    Lecture: 002_7bece5f3dd1db8ed.txt, "Image Convolution: Settings – Padding" ("Added pixels are
    typically of value zero (zero-padding)"): the 5x5 input
    ``[[1, 2, 0, 3, 1], [1, 0, 0, 2, 2], [2, 1, 2, 1, 1], [0, 0, 1, 0, 0], [1, 2, 1, 1, 1]]`` padded
    with P = 1 is the 7x7 input "With Padding": a border of zeros around those rows.
    """
    raise NotImplementedError('jnp.pad takes one (before, after) pair per axis')


def conv2d_single(image: jax.Array, kernel: jax.Array) -> jax.Array:
    """2-D convolution (cross-correlation) of one channel, from scratch, "valid", stride 1.

    ``out[i, j] = sum_{u, v} image[i + u, j + v] * kernel[u, v]``.

    Shapes: image (H, W), kernel (KH, KW) -> (H - KH + 1, W - KW + 1). The kernel "does not need
    to be square" (002_7bece5f3dd1db8ed.txt, "Settings – Grid Size": 3x3, 1x3, 3x1).
    Lecture examples: the module docstring's 5x5 image (001_8ff93c9bfb889e45.txt) gives
    [[-3, 4, -7], [-3, 0, -8], [-4, -9, -10]]; its 6x6 edge gives rows [0, 24, 24, 0]; and
    002_7bece5f3dd1db8ed.txt, "Settings – Padding", "Without Padding": the 5x5 input of
    :func:`zero_pad` with the kernel ``[[-1, 1, 2], [1, 1, 0], [-1, -2, 0]]`` gives the output
    whose first value is -2 (the whole output: [[-2, -1, 3], [2, 5, 8], [-2, 0, -1]]).
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

    The kernel "will have a 'depth' the same size as the number of input channels" and "the output
    from the layer will also have a depth" (002_7bece5f3dd1db8ed.txt, "Settings – Depth"). Lecture
    example (same deck, "Settings – Padding", "With Padding"): the padding example of
    :func:`conv2d_single` with ``padding=1`` gives a 5x5 output whose first value is -1 (the
    whole output: [[-1, 2, 2, -1, -2], [2, -2, -1, 3, -1], [3, 2, 5, 8, 2], [2, -2, 0, -1, -3],
    [1, 5, 4, 1, 2]]).
    """
    raise NotImplementedError('as conv2d_single, with strided slices (start:stop:S) and a matmul over the input channels')


def classic_kernel(name: str) -> jax.Array:
    """The classic 3x3 image kernels of the lectures, float32 (3, 3).

    001_8ff93c9bfb889e45.txt, "Other filters" (operation, filter):

    ================  ==========================================
    identity          [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    vertical_edge     [[1, 0, -1], [1, 0, -1], [1, 0, -1]]  (the worked example's kernel)
    horizontal_edge   [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]  ("Horizontal edges": its transpose)
    diagonal_edge     [[1, 0, -1], [0, 0, 0], [-1, 0, 1]]   (edge detection)
    laplacian         [[0, 1, 0], [1, -4, 1], [0, 1, 0]]    (edge detection)
    edge              [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]  (edge detection)
    sharpen           [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
    box_blur          all 1/9 ("Box blur (normalized)")
    gaussian_blur     [[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16  ("Gaussian blur (approximation)")
    ================  ==========================================

    002_7bece5f3dd1db8ed.txt, "Image Convolution: Kernels – Local feature detectors":

    ================  ==========================================
    vertical_line     [[-1, 1, -1], [-1, 1, -1], [-1, 1, -1]]
    horizontal_line   [[-1, -1, -1], [1, 1, 1], [-1, -1, -1]]
    corner            [[-1, -1, -1], [-1, 1, 1], [-1, 1, 1]]
    ================  ==========================================

    (its "Edge Detector" is ``edge`` above). Raises ``ValueError`` naming the valid names for any
    other name.
    """
    raise NotImplementedError('a dict from names to nested lists, converted with jnp.asarray(..., jnp.float32)')


def filter_image(image: jax.Array, kernel: jax.Array) -> jax.Array:
    """Apply a kernel to a grayscale image, keeping its size ("same" zero padding, stride 1).

    Shapes: image (H, W), kernel (KH, KW) with odd KH, KW -> (H, W). The border is padded with
    ``KH // 2`` rows and ``KW // 2`` columns of zeros on each side, then the kernel is
    cross-correlated as in :func:`conv2d_single`. A blur keeps a constant image constant away
    from the border; an edge kernel gives 0 there. This is the "Convolved Image" column of the
    lecture's "Other filters" table (001_8ff93c9bfb889e45.txt): try every :func:`classic_kernel`.
    """
    raise NotImplementedError("zero-pad so that the output keeps the input's size, then as conv2d_single")




def pixel_use_counts(height: int, width: int, kernel_size: int | Sequence[int],
                     padding: int = 0) -> jax.Array:
    """How many output values each input pixel takes part in, for a stride-1 convolution.

    Lecture: 001_8ff93c9bfb889e45.txt, "Problems with convolutions": "More central pixels are used
    much more in output" — and padding is the solution. With ``padding`` P zeros on each side,
    output position (i, j) reads the input window of rows ``i - P .. i - P + KH - 1`` (likewise
    columns); ``count[r, c]`` is the number of windows that contain input pixel (r, c).

    Returns int32 (height, width). The lecture's 5x5 image with a 3x3 kernel, no padding:
    ``[[1, 2, 3, 2, 1], [2, 4, 6, 4, 2], [3, 6, 9, 6, 3], [2, 4, 6, 4, 2], [1, 2, 3, 2, 1]]``: the
    corners are used once, the centre 9 times. With P = 1 the corners are used 4 times.
    ``kernel_size`` is an int K or (KH, KW); all arguments are plain Python ints.
    """
    raise NotImplementedError('per axis, count the windows covering each position; the 2-D count is an outer product')


def dense_param_count(input_shape: Sequence[int], units: int) -> int:
    """Parameters of a dense layer on a flattened input: weights ``prod(input_shape) * units`` plus
    ``units`` biases.

    Lecture: 001_8ff93c9bfb889e45.txt, "Convolutional Neural Networks: why?": "Santa example:
    n = 64*64*3 = 12288; 128 nodes in the first hidden layer; Weight matrix: ~ 1.5 M weights!!"
    (64*64*3*128 = 1,572,864 weights, + 128 biases = 1,572,992), and "1000*1000*3; 1000 nodes in
    the first hidden layer; Weight matrix: 3 Billion parameters. And this is just 1 layer!"
    (3,000,000,000 weights + 1000 biases). The MNIST network of that deck, 784-16-10: 784*16 + 16
    = 12,560, then 16*10 + 10 = 170. A 3x3 conv with 128 filters needs 3,584
    (:func:`conv_param_count`), whatever the image size.
    """
    raise NotImplementedError('math.prod multiplies the input dimensions')


def conv_param_count(kernel_size: int | Sequence[int], in_channels: int, filters: int) -> int:
    """Parameters of a conv layer: ``KH * KW * C_in * filters`` weights plus ``filters`` biases.

    Independent of the image size. 3x3, 3 -> 128: 3*3*3*128 + 128 = 3,584.
    ``kernel_size`` is an int K (K x K) or (KH, KW). Lecture: 004_9604be48adb20edc.txt, "Fully
    Connected vs Convolutional": one filter on "a small 5x5x3 chunk of the image (i.e. 5*5*3 = 75-
    dimensional dot product + bias)": 5x5, 3 -> 1 has 76 parameters.
    """
    raise NotImplementedError('every filter has one weight per kernel position and input channel, plus a bias')
