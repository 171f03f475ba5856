"""Feeding batches to the devices: host to device, sharded along the mesh's ``data`` axis.

One path for every caller (training, evaluation, ``cnnlab evaluate``, fine-tuning): a
:class:`BatchFeeder` turns index batches (:func:`cnnlab.data.batch_indices`,
:func:`eval_batches`) of an in-memory :class:`~cnnlab.data.Split` into global ``jax.Array``
batches split along ``data``, each process supplying only the rows that live on its own devices
(:func:`cnnlab.distributed.local_rows`, :func:`cnnlab.distributed.global_batch`).
:func:`prefetch` keeps the next batches in flight so the host work (indexing, copying) overlaps
the device's step.

Example (one device):

>>> import numpy as np
>>> from cnnlab import distributed
>>> from cnnlab.data import Split
>>> split = Split(np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1), np.arange(10) % 3)
>>> feeder = BatchFeeder(split, distributed.make_mesh())
>>> images, labels = feeder.batch(np.array([4, 0, 9]))
>>> images.shape, labels.tolist()
((3, 1, 1, 1), [1, 0, 0])
>>> [mask.tolist() for _, mask in eval_batches(5, 2)]
[[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]]
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from cnnlab import distributed
from cnnlab.compilation import TRACE_COUNTS

T = TypeVar("T")

#: Splits up to this size are placed whole on every device (``on_device=None``).
ON_DEVICE_MAX_BYTES = 1 << 30


def label_array(labels) -> np.ndarray:
    """The labels as the steps get them.

    Args:
      labels: (N,) class indices (any integer dtype) or (N, ...) float regression targets.

    Returns:
      int32 class indices, or float32 targets (:func:`cnnlab.train.is_regression` tells them
      apart in a step by this dtype).

    >>> label_array(np.array([1, 2], np.uint8)).dtype, label_array(np.array([[0.5]])).dtype
    (dtype('int32'), dtype('float32'))
    """
    labels = np.asarray(labels)
    return labels.astype(np.float32 if np.issubdtype(labels.dtype, np.floating) else np.int32)


def _gather(images, labels, idx):
    TRACE_COUNTS["gather"] += 1
    return jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0)


class BatchFeeder:
    """Global batches of one split by index: ``feeder.batch(indices) -> (images, labels)``.

    Args:
      split: images (N, H, W, C) (uint8, or float features) and labels (N,) (class indices)
        or (N, ...) float targets (a regression's), in host memory, the same on every process
        (labels are fed as :func:`label_array` makes them).
      mesh: the device mesh (:func:`cnnlab.distributed.make_mesh`); batches are split along
        its ``data`` axis.
      on_device: True: the whole split is placed once on every device and batches are gathered
        there by index (only B indices cross from the host per step). False: each process
        gathers the rows of the batch that belong on its devices from host memory, for data
        sets too large for device memory. None: True when the images take at most
        :data:`ON_DEVICE_MAX_BYTES`. Both give the same global arrays.
    """

    def __init__(self, split, mesh, *, on_device: bool | None = None):
        self.mesh = mesh
        self.sharding = distributed.batch_sharding(mesh)
        self.num_examples = len(split.labels)
        if on_device is None:
            on_device = split.images.nbytes <= ON_DEVICE_MAX_BYTES
        self.on_device = on_device
        self._rows: dict[int, np.ndarray] = {}
        if on_device:
            self.images = distributed.replicate_from_host(mesh, split.images)
            self.labels = distributed.replicate_from_host(mesh, label_array(split.labels))
            self._take = jax.jit(_gather, out_shardings=(self.sharding, self.sharding))
        else:
            self.images = np.asarray(split.images)
            self.labels = label_array(split.labels)

    def rows(self, batch_size: int) -> np.ndarray:
        """The rows of a global batch of ``batch_size`` that this process supplies."""
        if batch_size not in self._rows:
            self._rows[batch_size] = distributed.local_rows(self.sharding, batch_size)
        return self._rows[batch_size]

    def put(self, values: np.ndarray) -> jax.Array:
        """A per-row host array every process knows in full (B, ...) -> the global array split
        along ``data`` (e.g. an evaluation mask)."""
        b = len(values)
        return distributed.global_batch(self.sharding, values[self.rows(b)], b)

    def batch(self, indices: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """``(images[indices], labels[indices])`` as global arrays split along ``data``.

        Args:
          indices: int (B,), rows of the split, the same on every process; B must be a
            multiple of the ``data`` axis size.

        Returns:
          images (B, H, W, C) in the split's dtype and labels (B, ...): int32 class indices or
          float32 targets (:func:`label_array`).
        """
        indices = np.asarray(indices)
        if self.on_device:
            return self._take(self.images, self.labels, self.put(indices.astype(np.int32)))
        local = indices[self.rows(len(indices))]
        b = len(indices)
        return (distributed.global_batch(self.sharding, self.images[local], b),
                distributed.global_batch(self.sharding, self.labels[local], b))


def eval_batches(num_examples: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Fixed-size batches covering ``range(num_examples)`` exactly once, for evaluation.

    Args:
      num_examples: N.
      batch_size: examples per batch.

    Yields:
      ``(indices int (batch_size,), mask float32 (batch_size,))``; the last batch is padded
      with index 0 and mask 0 (so every batch has one shape and compiles once).
    """
    for start in range(0, num_examples, batch_size):
        idx = np.arange(start, start + batch_size)
        mask = (idx < num_examples).astype(np.float32)
        yield np.where(idx < num_examples, idx, 0), mask


def prefetch(batches: Iterable[T], size: int = 2) -> Iterator[T]:
    """Keep ``size`` batches in flight ahead of the one being used (like Flax's
    ``prefetch_to_device``): creating a batch starts its host-to-device copy asynchronously, so
    the copies of the next batches overlap the current step.

    Args:
      batches: an iterable that makes batches lazily (e.g. a generator of
        :meth:`BatchFeeder.batch` calls).
      size: how many batches are made ahead.

    Yields:
      The batches, in order.
    """
    queue: collections.deque = collections.deque()
    for batch in batches:
        queue.append(batch)
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
