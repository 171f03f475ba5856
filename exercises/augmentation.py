# Lab 7 (augmentation), generated from the reference solution. Fill in every
# `raise NotImplementedError(...)`, then grade one function with `make check EX=random_flip`
# (any function's name; EX=augmentation for the whole lab), here or in the folder above.
"""Lab 7 — Data augmentation and evaluation.

Augmentation makes new training images from old ones (mirror, shift) so the network learns what
does not matter; it runs on the device, inside ``jax.jit``, driven by an explicit PRNG key so that
the same key gives the same batch. Images are batches (N, H, W, C), channels last.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Mirror each image left-right with probability 1/2, independently per image.

    The decisions are exactly ``flip = jax.random.bernoulli(key, 0.5, (N,))``; image n is
    ``images[n, :, ::-1, :]`` where ``flip[n]``, else unchanged. (N, H, W, C) -> same.
    """
    raise NotImplementedError('one bernoulli draw per image, then jnp.where with the mirrored batch (width is axis 2)')


def random_crop(key: jax.Array, images: jax.Array, *, pad: int) -> jax.Array:
    """Random translation: zero-pad every image by ``pad`` pixels on each side, then crop a window
    of the original size at a random offset, independently per image.

    The offsets are exactly ``off = jax.random.randint(key, (N, 2), 0, 2 * pad + 1)`` (row,
    column); image n is ``padded[n, off[n, 0]:off[n, 0] + H, off[n, 1]:off[n, 1] + W, :]``.
    (N, H, W, C) -> (N, H, W, C). ``pad`` is a plain Python int; offset (pad, pad) is the
    identity. Hint: ``jax.lax.dynamic_slice`` under ``jax.vmap``.
    """
    raise NotImplementedError('jnp.pad the H and W axes, draw the offsets with jax.random.randint, cut with lax.dynamic_slice under vmap')


def tta_predict(apply_fn: Callable[[jax.Array], jax.Array], images: jax.Array) -> jax.Array:
    """Test-time augmentation: average the class *probabilities* over the images and their
    left-right mirrors.

    ``probs = (softmax(apply_fn(images)) + softmax(apply_fn(images[:, :, ::-1, :]))) / 2``
    (softmax over the last axis). ``apply_fn`` maps (N, H, W, C) to logits (N, K).
    Returns (N, K), rows summing to 1.
    """
    raise NotImplementedError('two forward passes (plain and mirrored), softmax each, average')


def top_k_accuracy(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """The fraction of examples whose label is among the k highest logits.

    Shapes: logits (N, C), labels int (N,) -> float32 scalar; k = 1 is the accuracy, k = C gives 1.
    ``k`` is a plain Python int. (ImageNet results quote top-1 and top-5.)
    """
    raise NotImplementedError('jax.lax.top_k gives the indices of the k largest logits')
