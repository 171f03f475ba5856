"""Where the Fashion-MNIST IDX files are, and what they are called.

Lookup order for the four ``.gz`` files (each directory ``D`` is tried as ``D`` and ``D/fashion-mnist``):

1. ``data_dir`` when given (``--data-dir``): it must hold the files, otherwise :class:`CnnlabError`;
2. ``$CNNLAB_DATA_DIR`` when set;
3. ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu package ``dataset-fashion-mnist``);
4. otherwise the embedded subset in ``cnnlab/data/subset`` (600 train + 100 test images per class),
   and the result says which directories were searched.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cnnlab.data import sources

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# split -> (images file, labels file); the names used by Zalando, Debian and Kaggle mirrors.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ALL_FILES = tuple(f for pair in FILES.values() for f in pair)

ENV_VAR = "CNNLAB_DATA_DIR"
SYSTEM_DIRS = ("/usr/share/datasets/fashion-mnist",)
SUBSET_DIR = Path(__file__).resolve().parent / "subset"
HOW_TO_GET = ("install the Debian/Ubuntu package dataset-fashion-mnist (files land in "
              "/usr/share/datasets/fashion-mnist) or download the four .gz files from "
              "https://github.com/zalandoresearch/fashion-mnist")


@dataclasses.dataclass(frozen=True)
class IdxSource:
    """A directory holding the four Fashion-MNIST IDX ``.gz`` files.

    ``kind`` is "full" or "subset"; ``searched`` lists the directories tried before falling back to
    the subset (empty when the full data was found).
    """

    kind: str
    directory: Path
    searched: tuple[str, ...] = ()


def find(data_dir: str | os.PathLike | None = None, *,
         system_dirs: Sequence[str | os.PathLike] = SYSTEM_DIRS,
         env: Mapping[str, str] = os.environ) -> IdxSource:
    """Find the Fashion-MNIST IDX files (see the module docstring for the order).

    ``system_dirs`` and ``env`` are parameters so tests can pretend the Debian package is absent.

    Raises:
      CnnlabError: ``data_dir`` was given but does not hold the four files.
    """
    if data_dir is not None:
        return IdxSource("full", sources.find_dir(
            data_dir, ALL_FILES, "fashion-mnist", what="Fashion-MNIST",
            how_to_get=f"{HOW_TO_GET}, or leave out --data-dir to use the embedded subset"))
    candidates = ([env[ENV_VAR]] if env.get(ENV_VAR) else []) + [os.fspath(s) for s in system_dirs]
    for c in candidates:
        found = sources.complete_dir(Path(c).expanduser(), ALL_FILES, "fashion-mnist")
        if found is not None:
            return IdxSource("full", found)
    return IdxSource("subset", SUBSET_DIR, tuple(candidates))
