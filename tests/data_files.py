"""Write MNIST and CIFAR-10 files in their original formats, for tests that must not download.

* MNIST: four gzip IDX files (:func:`cnnlab.data.idx.write_idx`, the format's layout).
* CIFAR-10 "python version": seven pickles as Python 2's ``cPickle.dump(d, f, 2)`` wrote them:
  protocol 2, every string a Python 2 ``str`` (``SHORT_BINSTRING``/``BINSTRING`` opcodes, read
  back as ``bytes``), arrays through ``numpy.core.multiarray._reconstruct`` (the module name the
  original files carry, not numpy 2's ``numpy._core``). :class:`Py2Pickler` produces exactly those
  opcodes from the objects, using numpy's own ``__reduce__`` for the arrays.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from cnnlab.data import cifar10, mnist
from cnnlab.data.idx import write_idx

_RECONSTRUCT = np.ndarray((0,), np.uint8).__reduce__()[0]


class Py2Pickler(pickle._Pickler):
    """The pure-Python pickler, writing ``str`` and ``bytes`` as Python 2 ``str`` and numpy's
    array reconstructor under its numpy 1 module name (see the module docstring)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + len(data).to_bytes(4, "little") + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def random_images(rng, n: int, shape) -> np.ndarray:
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


def write_mnist(directory: Path, *, train: int = 120, test: int = 30, seed: int = 0,
                compresslevel: int = 9):
    """Four MNIST IDX files of random digits; returns ``{split: (images (N,28,28,1), labels)}``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", train), ("test", test)):
        images, labels = random_images(rng, n, (28, 28)), rng.integers(0, 10, n).astype(np.uint8)
        images_file, labels_file = mnist.FILES[split]
        write_idx(directory / images_file, images, compresslevel=compresslevel)
        write_idx(directory / labels_file, labels, compresslevel=compresslevel)
        arrays[split] = (images[..., None], labels.astype(np.int32))
    return arrays


def cifar_batch(images: np.ndarray, labels: np.ndarray, name: str) -> dict:
    """A batch dict as in the original files: data rows are the R, G, B planes of an image."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32)
    return {b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
            b"data": np.ascontiguousarray(data),
            b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(images))]}


def write_cifar10(directory: Path, *, per_batch: int = 12, seed: int = 0):
    """The seven CIFAR-10 python files with random images; returns ``{split: (images HWC, labels)}``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    parts = {"train": [], "test": []}
    for split, names in cifar10.FILES.items():
        for i, name in enumerate(names, 1):
            images = random_images(rng, per_batch, (32, 32, 3))
            labels = rng.integers(0, 10, per_batch)
            batch_label = f"training batch {i} of 5" if split == "train" else "testing batch 1 of 1"
            (directory / name).write_bytes(py2_pickle(cifar_batch(images, labels, batch_label)))
            parts[split].append((images, labels.astype(np.int32)))
    meta = {b"num_cases_per_batch": per_batch, b"num_vis": 3072,
            b"label_names": [n.encode() for n in cifar10.CLASS_NAMES]}
    (directory / cifar10.META).write_bytes(py2_pickle(meta))
    return {split: (np.concatenate([p[0] for p in ps]), np.concatenate([p[1] for p in ps]))
            for split, ps in parts.items()}


def cifar10_archive(batches_dir: Path, archive: Path) -> Path:
    """``cifar-10-python.tar.gz`` as distributed: the files under ``cifar-10-batches-py/``."""
    with tarfile.open(archive, "w:gz") as tar:
        for name in cifar10.ALL_FILES:
            tar.add(batches_dir / name, arcname=f"{cifar10.SUBDIR}/{name}")
    return archive
