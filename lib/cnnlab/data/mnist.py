"""MNIST (LeCun, Cortes, Burges): where its four IDX files are, and where they come from.

The files are the originals, gzip-compressed IDX (read by :mod:`cnnlab.data.idx`), with the same
names as Fashion-MNIST's. They are looked up in this order:

1. ``data_dir`` when given (``--data-dir D``; ``D`` and ``D/mnist`` are tried): it must hold them;
2. otherwise the copy prepared from the original files, if one is in the TFDS data dir;
3. otherwise they are downloaded from :data:`DOWNLOADS` (the CVDF mirror of yann.lecun.com that
   TFDS's own ``mnist`` uses; the files are verified against the sha256 registered here), which
   fails at once, in one line, when the machine is offline.
"""

from __future__ import annotations

import os

from cnnlab.data.sources import Download, Sources, find_dir

CLASS_NAMES = tuple("0123456789")

# split -> (images file, labels file)
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ALL_FILES = tuple(f for pair in FILES.values() for f in pair)
SUBDIR = "mnist"

_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
#: file -> where it is downloaded from, with the size and sha256 TFDS registers for it.
DOWNLOADS = {
    "train-images-idx3-ubyte.gz": Download(
        _URL + "train-images-idx3-ubyte.gz", 9912422,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz": Download(
        _URL + "train-labels-idx1-ubyte.gz", 28881,
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz": Download(
        _URL + "t10k-images-idx3-ubyte.gz", 1648877,
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz": Download(
        _URL + "t10k-labels-idx1-ubyte.gz", 4542,
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
HOW_TO_GET = (f"download the four .gz files from {_URL} (a mirror of http://yann.lecun.com/exdb/mnist/) "
              "into it, or leave out --data-dir to let cnnlab download them")
OFFLINE_HINT = (f"copy the four files ({', '.join(ALL_FILES)}, from {_URL}) into a directory and "
                "pass it as --data-dir")


def find(data_dir: str | os.PathLike | None) -> Sources:
    """The source files (see the module docstring for the order; None: download).

    Raises:
      CnnlabError: ``data_dir`` does not hold the four files.
    """
    if data_dir is None:
        return Sources.download(DOWNLOADS)
    return Sources.local(find_dir(data_dir, ALL_FILES, SUBDIR, what="MNIST", how_to_get=HOW_TO_GET),
                         ALL_FILES)
