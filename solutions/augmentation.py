"""Lab 7 — Data augmentation and evaluation.

Augmentation makes new training images from old ones (mirror, shift) so the network learns what
does not matter; it runs on the device, inside ``jax.jit``, driven by an explicit PRNG key so that
the same key gives the same batch. Images are batches (N, H, W, C), channels last.
Lecture: 001_8ff93c9bfb889e45.txt, "Other ways to tune/improve your model": "Use data
augmentation"; 004_9604be48adb20edc.txt, "Dogs vs. Cats": fast.ai's "Test time augmentation (TTA)
error" (0.30% against 0.50% without, for resnet34).
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
    # BEGIN SOLUTION
    # HINT: one bernoulli draw per image, then jnp.where with the mirrored batch (width is axis 2)
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)
    # END SOLUTION


def random_crop(key: jax.Array, images: jax.Array, *, pad: int) -> jax.Array:
    """Random translation: zero-pad every image by ``pad`` pixels on each side, then crop a window
    of the original size at a random offset, independently per image.

    The offsets are exactly ``off = jax.random.randint(key, (N, 2), 0, 2 * pad + 1)`` (row,
    column); image n is ``padded[n, off[n, 0]:off[n, 0] + H, off[n, 1]:off[n, 1] + W, :]``.
    (N, H, W, C) -> (N, H, W, C). ``pad`` is a plain Python int; offset (pad, pad) is the
    identity. Hint: ``jax.lax.dynamic_slice`` under ``jax.vmap``.
    """
    # BEGIN SOLUTION
    # HINT: jnp.pad the H and W axes, draw the offsets with jax.random.randint, cut with lax.dynamic_slice under vmap
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    off = jax.random.randint(key, (n, 2), 0, 2 * pad + 1)
    return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(padded, off)
    # END SOLUTION


def tta_predict(apply_fn: Callable[[jax.Array], jax.Array], images: jax.Array) -> jax.Array:
    """Test-time augmentation: average the class *probabilities* over the images and their
    left-right mirrors.

    ``probs = (softmax(apply_fn(images)) + softmax(apply_fn(images[:, :, ::-1, :]))) / 2``
    (softmax over the last axis). ``apply_fn`` maps (N, H, W, C) to logits (N, K).
    Returns (N, K), rows summing to 1. Lecture: 004_9604be48adb20edc.txt, "Dogs vs. Cats" (TTA).
    """
    # BEGIN SOLUTION
    # HINT: two forward passes (plain and mirrored), softmax each, average
    p = jax.nn.softmax(apply_fn(images), axis=-1)
    p_flip = jax.nn.softmax(apply_fn(images[:, :, ::-1, :]), axis=-1)
    return (p + p_flip) / 2
    # END SOLUTION


def top_k_accuracy(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """The fraction of examples whose label is among the k highest logits.

    Shapes: logits (N, C), labels int (N,) -> float32 scalar; k = 1 is the accuracy, k = C gives 1.
    ``k`` is a plain Python int. (ImageNet results quote top-1 and top-5: AlexNet's "Top 5 error
    rate of 15.4%", 002_7bece5f3dd1db8ed.txt, "Examples of CNN – AlexNet", is 1 - top-5 accuracy.)
    """
    # BEGIN SOLUTION
    # HINT: jax.lax.top_k gives the indices of the k largest logits
    topk = jax.lax.top_k(logits, k)[1]
    return jnp.mean(jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32))
    # END SOLUTION
