"""Data sets for cnnlab: Fashion-MNIST (and its embedded subset), MNIST, CIFAR-10, scikit-learn
digits, image folders, the TFDS catalog.

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

Modules, each importing only those listed before it:
:mod:`~cnnlab.data.dataset` (``Split``, ``Dataset``, ``read_split``: the core),
:mod:`~cnnlab.data.sources` (source files and the checksum fingerprint that keys a prepared copy),
:mod:`~cnnlab.data.idx` and :mod:`~cnnlab.data.cifar10` (the file formats),
:mod:`~cnnlab.data.fashion_mnist`, :mod:`~cnnlab.data.mnist`, :mod:`~cnnlab.data.cifar10` (where
the files are looked up or downloaded from), :mod:`~cnnlab.data.builders` (the TFDS builders),
:mod:`~cnnlab.data.preparation` (prepare once, never over a good copy),
:mod:`~cnnlab.data.image_folder` (your own images), :mod:`~cnnlab.data.loading` (``load``),
:mod:`~cnnlab.data.pipeline` (batches, the validation hold-out and augmentation),
:mod:`~cnnlab.data.feeding` (batches to the devices: sharding, prefetch). The modules that import
TFDS (``builders``, ``preparation``, ``image_folder``) are imported lazily by ``loading``, because
TFDS takes a second to import.
"""

from cnnlab.data.dataset import Dataset, Split, default_tfds_dir, read_split
from cnnlab.data.loading import load, load_fashion_mnist, names
from cnnlab.data.pipeline import (augment, batch_indices, batch_mask, epoch_permutation, holdout,
                                  normalize, random_crop, random_erase, random_flip, resize,
                                  to_float)
from cnnlab.data.feeding import BatchFeeder, eval_batches, prefetch

__all__ = [
    "Dataset", "Split", "names", "load", "load_fashion_mnist", "read_split", "default_tfds_dir",
    "epoch_permutation", "batch_indices", "batch_mask", "normalize", "random_flip", "random_crop",
    "random_erase",
    "augment", "holdout", "to_float", "resize", "BatchFeeder", "eval_batches", "prefetch",
]
