"""Data sets for cnnlab: Fashion-MNIST (and its embedded subset), MNIST, CIFAR-10, scikit-learn
digits, image folders, the TFDS catalog.

>>> ds = cnnlab.data.load("fashion_mnist")        # full data when found, else the subset
>>> ds.source                                     # says which, and from where
>>> batches = cnnlab.data.batch_indices(len(ds.train), 128, seed=0, epoch=0)
>>> x = cnnlab.data.augment(key, ds.train.images[batches[0]])   # uint8, on device
>>> x = cnnlab.data.normalize(x)                  # float32 in [0, 1]

Modules, each importing only those listed before it:
:mod:`~cnnlab.data.dataset` (``Split``, ``Dataset``, ``read_split``: the core),
:mod:`~cnnlab.data.sources` (source files and the checksum fingerprint that keys a prepared copy),
:mod:`~cnnlab.data.idx` and :mod:`~cnnlab.data.cifar10` (the file formats),
:mod:`~cnnlab.data.fashion_mnist`, :mod:`~cnnlab.data.mnist`, :mod:`~cnnlab.data.cifar10` (where
the files are looked up or downloaded from), :mod:`~cnnlab.data.builders` (the TFDS builders),
:mod:`~cnnlab.data.preparation` (prepare once, never over a good copy),
:mod:`~cnnlab.data.image_folder` (your own images), :mod:`~cnnlab.data.loading` (``load``),
:mod:`~cnnlab.data.pipeline` (batches and augmentation). The modules that import TFDS
(``builders``, ``preparation``, ``image_folder``) are imported lazily by ``loading``, because TFDS
takes a second to import.
"""

from cnnlab.data.dataset import Dataset, Split, default_tfds_dir, read_split
from cnnlab.data.loading import load, load_fashion_mnist, names
from cnnlab.data.pipeline import (augment, batch_indices, batch_mask, epoch_permutation, normalize,
                                  random_crop, random_flip)

__all__ = [
    "Dataset", "Split", "names", "load", "load_fashion_mnist", "read_split", "default_tfds_dir",
    "epoch_permutation", "batch_indices", "batch_mask", "normalize", "random_flip", "random_crop",
    "augment",
]
