"""CIFAR-10 (Krizhevsky 2009), "python version": where its files are, and how they are read.

``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/`` with seven files, each a pickle
written by Python 2 (so its strings are read as ``bytes``)::

    data_batch_1 .. data_batch_5, test_batch
        {b"data": uint8 (N, 3072), b"labels": [int] * N, b"batch_label": ..., b"filenames": [...]}
        row i of data is image i: 1024 red, then 1024 green, then 1024 blue values, each a
        32x32 plane in row-major order; N = 10,000 in the original files
    batches.meta
        {b"label_names": [b"airplane", ..., b"truck"], b"num_cases_per_batch": 10000, b"num_vis": 3072}

**Reading a pickle can run code.** Unpickling calls whatever functions the file names, so a
crafted file can do anything the user can. These files are read with :class:`BatchUnpickler`, a
``pickle.Unpickler`` that resolves only the three globals the format uses (numpy's array
reconstructor, ``numpy.ndarray`` and ``numpy.dtype``) and refuses every other one: a file that
names anything else (``os.system``, ``builtins.eval``, ...) fails with one line before anything of
it runs. Lists, dicts, numbers and strings need no globals.

Where the files are looked up:

1. ``data_dir`` when given (``--data-dir D``): the seven files in ``D`` or
   ``D/cifar-10-batches-py``, else the archive ``D/cifar-10-python.tar.gz``; one of them must be
   there;
2. otherwise the copy prepared from the original archive, if one is in the TFDS data dir;
3. otherwise the archive is downloaded from its original location (:data:`DOWNLOADS`, verified
   against its registered sha256) by TFDS's download manager, which fails at once, in one line,
   when the machine is offline. The archive is read as it is (:func:`read_archive`), never
   unpacked to disk.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from cnnlab.data.sources import Download, Sources, complete_dir, find_dir
from cnnlab.errors import CnnlabError

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
META = "batches.meta"
ALL_FILES = (*FILES["train"], *FILES["test"], META)
SUBDIR = "cifar-10-batches-py"
IMAGE_SHAPE = (32, 32, 3)

ARCHIVE = "cifar-10-python.tar.gz"
#: The original archive, with the size and sha256 it is verified against.
DOWNLOADS = {
    ARCHIVE: Download("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", 170498071,
                      "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
}
HOW_TO_GET = (f"download {ARCHIVE} from https://www.cs.toronto.edu/~kriz/cifar.html into it, or "
              "leave out --data-dir to let cnnlab download it")
OFFLINE_HINT = (f"copy {ARCHIVE} (from https://www.cs.toronto.edu/~kriz/cifar.html) into a "
                "directory and pass it as --data-dir")

# numpy's array reconstructor: numpy.core.multiarray._reconstruct in the original files (numpy 1),
# numpy._core.multiarray._reconstruct when numpy 2 writes them; one function either way.
_RECONSTRUCT = np.ndarray((0,), np.uint8).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


def find(data_dir: str | os.PathLike | None) -> Sources:
    """The source files (see the module docstring for the order; None: download).

    Raises:
      CnnlabError: ``data_dir`` holds neither the seven files nor the archive.
    """
    if data_dir is None:
        return Sources.download(DOWNLOADS)
    d = Path(data_dir).expanduser()
    if complete_dir(d, ALL_FILES, SUBDIR) is None and (d / ARCHIVE).is_file():
        return Sources.local(d, [ARCHIVE])
    return Sources.local(find_dir(d, ALL_FILES, SUBDIR, what="CIFAR-10", how_to_get=HOW_TO_GET),
                         ALL_FILES)


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global that the CIFAR-10 format does not use."""


class BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 python batches and nothing that needs any other global.

    ``find_class`` is the only way a pickle reaches a function or class; it answers from an
    allow-list of numpy's array reconstructor, ``ndarray`` and ``dtype``, and raises
    :class:`RefusedGlobal` for everything else. Persistent ids are refused by ``pickle`` itself.
    """

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"refused to unpickle {module}.{name} (a CIFAR-10 batch uses only "
                                "numpy arrays, lists, numbers and strings)") from None


def _unpickle(path: Path, opened=None):
    """The object pickled in ``path`` (or in the file object ``opened``, named ``path``)."""
    try:
        with opened or open(path, "rb") as f:
            return BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise CnnlabError(f"{path}: file not found") from None
    except RefusedGlobal as e:
        raise CnnlabError(f"{path}: {e}") from None
    except EOFError:
        raise CnnlabError(f"{path}: truncated (the pickle ends early; the file was probably cut "
                          "short)") from None
    except OSError as e:
        raise CnnlabError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # any other fault of a broken pickle: bad opcode, bad array state, ...
        raise CnnlabError(f"{path}: not a CIFAR-10 python batch (corrupt pickle: "
                          f"{type(e).__name__}: {str(e)[:100]})") from None


def read_batch(path: str | os.PathLike, opened=None) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images uint8 ``(N, 32, 32, 3)`` (HWC), labels int32 ``(N,)`` in 0..9.

    ``images[i, y, x, c] = data[i, c * 1024 + y * 32 + x]``. ``opened``: read this binary file
    object instead of opening ``path`` (a member of the archive).

    Raises:
      CnnlabError: one line naming the file: missing, truncated, corrupt, a refused global, or
        contents that are not a CIFAR-10 batch (wrong keys, shape, dtype, label count or range).
    """
    path = Path(path)
    batch = _unpickle(path, opened)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise CnnlabError(f"{path}: not a CIFAR-10 python batch (expected a dict with data and labels)")
    data, labels = batch[b"data"], batch[b"labels"]
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != np.prod(IMAGE_SHAPE)):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CnnlabError(f"{path}: data must be a uint8 (N, 3072) array, found {found}")
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise CnnlabError(f"{path}: labels must be a list of integers")
    if len(labels) != len(data):
        raise CnnlabError(f"{path}: {len(data):,} images but {len(labels):,} labels")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise CnnlabError(f"{path}: label {bad} out of range 0..{len(CLASS_NAMES) - 1}")
    images = data.reshape(len(data), 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def read_label_names(path: str | os.PathLike, opened=None) -> tuple[str, ...]:
    """The class names of ``batches.meta``.

    Raises:
      CnnlabError: the file is broken (see :func:`read_batch`) or has no list of names.
    """
    path = Path(path)
    meta = _unpickle(path, opened)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, bytes) for n in names):
        raise CnnlabError(f"{path}: not a CIFAR-10 batches.meta (expected a list of label_names)")
    return tuple(n.decode("latin-1") for n in names)


def _check_label_names(names: tuple[str, ...], path: Path) -> None:
    if names != CLASS_NAMES:
        raise CnnlabError(f"{path}: the classes are {', '.join(names) or 'none'}, not CIFAR-10's "
                          f"({', '.join(CLASS_NAMES)}); is this another data set?")


def _splits(read) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images, labels)}`` from ``read(name) -> (images, labels)`` of each batch file."""
    splits = {}
    for split, names in FILES.items():
        parts = [read(name) for name in names]
        splits[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return splits


def read_directory(directory: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The unpacked files: ``{"train": (images, labels), "test": (images, labels)}``.

    Train is ``data_batch_1`` .. ``data_batch_5`` in that order, test is ``test_batch``; images
    uint8 ``(N, 32, 32, 3)``, labels int32 ``(N,)``.

    Raises:
      CnnlabError: a file is missing or broken (see :func:`read_batch`), or ``batches.meta`` does
        not name CIFAR-10's ten classes in order.
    """
    directory = Path(directory)
    _check_label_names(read_label_names(directory / META), directory / META)
    return _splits(lambda name: read_batch(directory / name))


def read_archive(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The same as :func:`read_directory`, straight from ``cifar-10-python.tar.gz`` (nothing is
    unpacked to disk).

    Raises:
      CnnlabError: the archive is broken or lacks a file, or a file is broken.
    """
    path = Path(path)
    try:
        with tarfile.open(path, "r:gz") as tar:
            def member(name):
                try:
                    return tar.extractfile(f"{SUBDIR}/{name}")
                except KeyError:
                    raise CnnlabError(f"{path}: {SUBDIR}/{name} is not in the archive") from None

            _check_label_names(read_label_names(path / META, member(META)), path / META)
            return _splits(lambda name: read_batch(path / name, member(name)))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise CnnlabError(f"{path}: not a readable .tar.gz archive ({type(e).__name__}: {e})") from None
