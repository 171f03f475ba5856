"""Data sets for cnnlab: Fashion-MNIST, its embedded subset, scikit-learn digits, TFDS catalog.

``load("fashion_mnist")`` gives the full data when found, else the embedded subset; ``source``
says which, and from where.

>>> import jax
>>> from cnnlab import data
>>> ds = data.load("fashion_mnist_subset")
>>> ds.train.images.shape, ds.train.images.dtype, ds.num_classes
((6000, 28, 28, 1), dtype('uint8'), 10)
>>> train_rows, val_rows = data.holdout(ds.train.labels, 0.1, seed=0)   # validation split
>>> len(train_rows), len(val_rows)
(5400, 600)
>>> batches = data.batch_indices(len(train_rows), 128, seed=0, epoch=0)
>>> batches.shape
(42, 128)
>>> x = data.augment(jax.random.key(0), ds.train.images[train_rows[batches[0]]])  # on device
>>> data.to_float(x).dtype                        # float32 in [0, 1]
dtype('float32')

Modules: :mod:`~cnnlab.data.loading` (``load``), :mod:`~cnnlab.data.fashion_mnist` (where the IDX
files are looked up), :mod:`~cnnlab.data.idx` (the IDX reader), :mod:`~cnnlab.data.builders`
(the TFDS builders; imported lazily because TFDS takes a second to import),
:mod:`~cnnlab.data.pipeline` (batches, the validation hold-out and augmentation),
:mod:`~cnnlab.data.feeding` (batches to the devices: sharding, prefetch).
"""

from cnnlab.data.loading import Dataset, Split, default_tfds_dir, load, load_fashion_mnist, names, read_split
from cnnlab.data.pipeline import (augment, batch_indices, batch_mask, epoch_permutation, holdout,
                                  normalize, random_crop, random_flip, to_float)
from cnnlab.data.feeding import BatchFeeder, eval_batches, prefetch

__all__ = [
    "Dataset", "Split", "names", "load", "load_fashion_mnist", "read_split", "default_tfds_dir",
    "epoch_permutation", "batch_indices", "batch_mask", "normalize", "random_flip", "random_crop",
    "augment", "holdout", "to_float", "BatchFeeder", "eval_batches", "prefetch",
]
