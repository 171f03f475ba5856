"""Make the embedded Fashion-MNIST subset from the full IDX files.

    python lib/cnnlab/data/subset/make_subset.py [--source /usr/share/datasets/fashion-mnist] [--seed 0]

For every class it draws, without replacement, 600 of the 6,000 training images and 100 of the
1,000 test images (``np.random.default_rng(seed)``, classes 0..9 in order, train before test), then
keeps the chosen examples in their original order. The result is written next to this script in the
format of the originals (gzip -9 IDX files with the same names, so the same TFDS builder reads
them) together with ``manifest.json``: the seed, the sha256 of every written file, the sha256 of the
source files (of the ``.gz`` bytes, which differ between mirrors, and of the decompressed bytes,
which do not), and the source index of every example, so tests can check each subset image
against the full data.

Running it again with the same seed and source gives byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # lib/, so the script runs from a plain checkout
from cnnlab.data import fashion_mnist  # noqa: E402
from cnnlab.data.idx import read_images_and_labels, write_idx  # noqa: E402

PER_CLASS = {"train": 600, "test": 100}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def select(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``per_class`` examples of every class 0..9 drawn without replacement."""
    chosen = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(chosen))


def make_subset(source: Path, out: Path, seed: int) -> dict:
    """Write the subset IDX files and ``manifest.json`` into ``out``; return the manifest."""
    rng = np.random.default_rng(seed)
    manifest = {
        "description": "Stratified subset of Fashion-MNIST (Xiao, Rasul, Vollgraf 2017, MIT license): "
                       "600 train and 100 test images per class, in source order.",
        "made_by": f"python lib/cnnlab/data/subset/make_subset.py --seed {seed}",
        "seed": seed,
        "per_class": PER_CLASS,
        "source": {},
        "files": {},
        "source_indices": {},
    }
    for split, (images_name, labels_name) in fashion_mnist.FILES.items():
        images, labels = read_images_and_labels(source / images_name, source / labels_name)
        idx = select(labels, PER_CLASS[split], rng)
        write_idx(out / images_name, images[idx, :, :, 0])
        write_idx(out / labels_name, labels[idx].astype(np.uint8))
        manifest["source_indices"][split] = idx.tolist()
    for name in fashion_mnist.ALL_FILES:
        gz = (source / name).read_bytes()
        manifest["source"][name] = {"sha256_gz": sha256_bytes(gz),
                                    "sha256": sha256_bytes(gzip.decompress(gz))}
        manifest["files"][name] = sha256_bytes((out / name).read_bytes())
    text = json.dumps(manifest, indent=2)
    # One line per index list rather than one line per index.
    for idx in manifest["source_indices"].values():
        text = text.replace(json.dumps(idx, indent=2).replace("\n", "\n    "), json.dumps(idx))
    tmp = out / "manifest.json.tmp"
    tmp.write_text(text + "\n")
    os.replace(tmp, out / "manifest.json")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path(fashion_mnist.SYSTEM_DIRS[0]),
                        help="directory with the four full Fashion-MNIST IDX .gz files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    manifest = make_subset(args.source, args.out, args.seed)
    for name, digest in manifest["files"].items():
        print(f"{digest}  {args.out / name}")


if __name__ == "__main__":
    main()
