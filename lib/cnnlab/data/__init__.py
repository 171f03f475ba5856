"""Data sets for cnnlab: Fashion-MNIST, its embedded subset, scikit-learn digits, TFDS catalog.

>>> ds = cnnlab.data.load("fashion_mnist")        # full data when found, else the subset
>>> ds.source                                     # says which, and from where
>>> batches = cnnlab.data.batch_indices(len(ds.train), 128, seed=0, epoch=0)
>>> x = cnnlab.data.augment(key, ds.train.images[batches[0]])   # uint8, on device
>>> x = cnnlab.data.normalize(x)                  # float32 in [0, 1]

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
