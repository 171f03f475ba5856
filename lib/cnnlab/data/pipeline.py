"""Index arithmetic for epochs and batches (numpy, on the host) and augmentation (jax, on device).

Batches are index arrays into an in-memory :class:`~cnnlab.data.Split`: ``images[batch]`` gives a
fixed-shape ``(batch_size, H, W, C)`` batch, so a jitted train step compiles once. The shuffle of
epoch ``e`` depends only on ``(seed, e)``, so resuming at epoch ``e`` reproduces the same order.

Augmentations take an explicit PRNG key, draw independently per image, never mutate their input
and keep its dtype, so they work on uint8 batches (then :func:`normalize`) or on float batches.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.errors import CnnlabError


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``.

    Drawn from ``np.random.default_rng([seed, epoch])``: independent of every other epoch and
    reproducible without replaying earlier epochs.

    Args:
      num_examples: N.
      seed, epoch: what the order depends on (both >= 0).

    Returns:
      A permutation of ``range(N)``, int32 (N,).
    """
    if seed < 0 or epoch < 0:
        raise CnnlabError(f"seed and epoch must be >= 0 (got seed={seed}, epoch={epoch})")
    return np.random.default_rng([seed, epoch]).permutation(num_examples).astype(np.int32)


def batch_indices(num_examples: int, batch_size: int, *, seed: int, epoch: int,
                  shuffle: bool = True, drop_remainder: bool = True) -> np.ndarray:
    """Example indices of every batch of one epoch, int32 ``(num_batches, batch_size)``.

    Args:
      num_examples: N.
      batch_size: examples per batch.
      seed, epoch: the shuffle (:func:`epoch_permutation`).
      shuffle: False keeps the order ``0..N-1``.
      drop_remainder: True (training): ``num_batches = N // batch_size`` and the last
        ``N % batch_size`` examples of the (shuffled) order are skipped this epoch. False
        (evaluation): ``num_batches = ceil(N / batch_size)`` and the last batch is filled up with
        indices from the start of the order, so every batch has the same shape; the first ``N``
        entries of ``result.ravel()`` are each example exactly once (see :func:`batch_mask`).

    Returns:
      int32 (num_batches, batch_size).

    Raises:
      CnnlabError: ``batch_size`` is not positive or larger than ``num_examples``.
    """
    if batch_size <= 0:
        raise CnnlabError(f"batch size must be positive, got {batch_size}")
    if batch_size > num_examples:
        raise CnnlabError(f"batch size {batch_size} is larger than the data set ({num_examples:,} "
                          f"examples); use a batch size of at most {num_examples:,}")
    order = (epoch_permutation(num_examples, seed=seed, epoch=epoch) if shuffle
             else np.arange(num_examples, dtype=np.int32))
    num_batches = num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)
    order = np.resize(order, num_batches * batch_size)  # np.resize repeats from the start
    return order.reshape(num_batches, batch_size)


def batch_mask(num_examples: int, batch_size: int) -> np.ndarray:
    """Which entries of ``batch_indices(..., drop_remainder=False)`` are real examples.

    Args:
      num_examples: N.
      batch_size: examples per batch.

    Returns:
      bool (num_batches, batch_size), False for the filler entries; weight per-example metrics
      with it.

    >>> batch_mask(5, 2).tolist()
    [[True, True], [True, True], [True, False]]
    """
    num_batches = -(-num_examples // batch_size)
    return (np.arange(num_batches * batch_size) < num_examples).reshape(num_batches, batch_size)


def holdout(labels: np.ndarray, fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split example indices into (kept, held out), stratified by class and seeded.

    Of each class with ``n`` examples, ``round(fraction * n)`` (but never all of them) are held
    out, drawn from ``np.random.default_rng(seed)``; both index arrays are in ascending order, so
    the same ``(labels, fraction, seed)`` always gives the same split.

    Args:
      labels: int (N,) class labels.
      fraction: share held out, in [0, 1); 0 holds out nothing.
      seed: the draw's seed.

    Returns:
      ``(kept, held_out)``: int64 index arrays that together cover ``range(N)`` once.

    Example:

    >>> labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    >>> kept, val = holdout(labels, 0.5, seed=0)
    >>> len(kept), len(val), np.bincount(labels[val]).tolist()
    (5, 5, [2, 3])
    """
    if not 0 <= fraction < 1:
        raise CnnlabError(f"the held-out fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = min(int(round(fraction * len(idx))), len(idx) - 1)
        held[rng.permutation(idx)[:n]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def normalize(images) -> jax.Array:
    """Scale images to [0, 1]: ``x / 255``.

    Args:
      images: uint8 (N, H, W, C) in 0..255.

    Returns:
      float32 (N, H, W, C) in [0, 1].
    """
    return jnp.asarray(images, jnp.float32) / 255.0


def to_float(images) -> jax.Array:
    """What a model is fed.

    Args:
      images: uint8 images, or floats (already scaled images, cached features).

    Returns:
      float32: ``x / 255`` for uint8 (:func:`normalize`), the input unchanged otherwise.
    """
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
        return normalize(images)
    return images.astype(jnp.float32)


def resize(images, height: int, width: int, *, chunk: int = 4096) -> np.ndarray:
    """Images resized bilinearly (``jax.image.resize``, antialiased when shrinking), e.g. the
    8x8 digits to the 28x28 the workshop's networks are made for.

    Args:
      images: (N, H, W, C), uint8 in 0..255 or float.
      height, width: the new size.
      chunk: images resized at once (bounds the float32 copy).

    Returns:
      (N, height, width, C) on the host: uint8 rounded and clipped to 0..255 for uint8 input,
      float32 otherwise.

    >>> resize(np.full((1, 8, 8, 1), 200, np.uint8), 28, 28)[0, :2, :2, 0].tolist()
    [[200, 200], [200, 200]]
    """
    images = np.asarray(images)
    out = []
    for start in range(0, max(len(images), 1), chunk):
        part = images[start:start + chunk]
        shape = (len(part), height, width, *part.shape[3:])
        out.append(np.asarray(_resize(part.astype(np.float32), shape,
                                      images.dtype == np.uint8)))
    return np.concatenate(out)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _resize(x: jax.Array, shape: tuple[int, ...], to_uint8: bool) -> jax.Array:
    y = jax.image.resize(x, shape, "linear")
    return jnp.round(y).clip(0, 255).astype(jnp.uint8) if to_uint8 else y


@jax.jit
def random_flip(key: jax.Array, images) -> jax.Array:
    """Mirror each image left-right with probability 0.5, independently per image.

    ``images`` ``(N, H, W, C)`` -> same shape and dtype; image ``i`` is ``images[i]`` or
    ``images[i, :, ::-1]``.
    """
    images = jnp.asarray(images)
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


@functools.partial(jax.jit, static_argnames="pad")
def random_crop(key: jax.Array, images, *, pad: int) -> jax.Array:
    """Pad-and-crop: zero-pad ``pad`` pixels on every side, then cut an ``H x W`` window back out.

    The window offset ``(dy, dx)`` is uniform in ``{0..2*pad}^2``, drawn per image, so each image is
    shifted by up to ``pad`` pixels in each direction. ``(N, H, W, C)`` -> same shape and dtype.
    """
    images = jnp.asarray(images)
    if pad == 0:
        return images
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * pad + 1)
    crop = lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c))  # noqa: E731
    return jax.vmap(crop)(padded, offsets)


@functools.partial(jax.jit, static_argnames=("prob", "scale", "ratio"))
def random_erase(key: jax.Array, images, *, prob: float, scale: tuple[float, float] = (0.02, 0.4),
                 ratio: tuple[float, float] = (0.3, 3.3)) -> jax.Array:
    """Random erasing (Zhong et al. 2017; "cutout" with a random rectangle): with probability
    ``prob``, set one axis-aligned rectangle of each image to 0 (the background of
    Fashion-MNIST), independently per image.

    The rectangle's area is ``a * H * W`` with ``a ~ U(scale)``, its aspect ratio ``h / w = r``
    with ``log r ~ U(log ratio)``; so ``h = round(sqrt(a H W r))``, ``w = round(sqrt(a H W / r))``,
    clipped to ``1..H`` and ``1..W``, and its top-left corner is uniform over the positions where
    it fits. ``(N, H, W, C)`` -> same shape and dtype (all channels of the rectangle are erased).
    """
    images = jnp.asarray(images)
    if prob == 0:
        return images
    n, h, w, _ = images.shape
    k_on, k_area, k_ratio, k_y, k_x = jax.random.split(key, 5)
    on = jax.random.bernoulli(k_on, prob, (n,))
    area = jax.random.uniform(k_area, (n,), minval=scale[0], maxval=scale[1]) * h * w
    r = jnp.exp(jax.random.uniform(k_ratio, (n,), minval=np.log(ratio[0]),
                                   maxval=np.log(ratio[1])))
    eh = jnp.clip(jnp.round(jnp.sqrt(area * r)), 1, h).astype(jnp.int32)
    ew = jnp.clip(jnp.round(jnp.sqrt(area / r)), 1, w).astype(jnp.int32)
    y0 = jnp.floor(jax.random.uniform(k_y, (n,)) * (h - eh + 1)).astype(jnp.int32)
    x0 = jnp.floor(jax.random.uniform(k_x, (n,)) * (w - ew + 1)).astype(jnp.int32)
    rows = jnp.arange(h)[None, :]
    cols = jnp.arange(w)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + eh)[:, None])  # (N, H)
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + ew)[:, None])  # (N, W)
    erase = on[:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]  # (N, H, W)
    return jnp.where(erase[..., None], jnp.zeros((), images.dtype), images)


@functools.partial(jax.jit, static_argnames=("flip", "pad", "erase"))
def augment(key: jax.Array, images, *, flip: bool = True, pad: int = 2,
            erase: float = 0.0) -> jax.Array:
    """The standard light augmentation for small images: :func:`random_crop`, :func:`random_flip`,
    then :func:`random_erase` with probability ``erase`` (0 = off).

    ``(N, H, W, C)`` -> same shape and dtype; ``flip=False`` for data where left and right matter
    (digits), ``pad=0`` for no shift.
    """
    crop_key, flip_key = jax.random.split(key)
    images = random_crop(crop_key, images, pad=pad)
    images = random_flip(flip_key, images) if flip else images
    if erase:
        # A key of its own (folded in) keeps crops and flips as they were without erasing.
        images = random_erase(jax.random.fold_in(key, 1), images, prob=erase)
    return images
