"""Regenerate ``classes.txt``: the 1000 ImageNet classes in Keras's index order.

Both halves ship inside tensorflow-datasets (no download): the WordNet synset ids in
``tensorflow_datasets/datasets/imagenet2012/labels.txt`` (sorted synsets = Keras's class index)
and their names in ``tensorflow_datasets.datasets.siscore.labels.IMAGENET_LABELS_LIST``.
One line per class: ``synset<TAB>comma-separated names``; index 281 is
``n02123045<TAB>tabby, tabby cat``.

    python lib/cnnlab/imagenet/make_classes.py
"""

from __future__ import annotations

import os
import pathlib

import tensorflow_datasets as tfds
from tensorflow_datasets.datasets.siscore.labels import IMAGENET_LABELS_LIST

OUT = pathlib.Path(__file__).with_name("classes.txt")


def main() -> None:
    labels = pathlib.Path(tfds.__file__).parent / "datasets" / "imagenet2012" / "labels.txt"
    synsets = labels.read_text().split()
    if len(synsets) != 1000 or len(IMAGENET_LABELS_LIST) != 1000:
        raise SystemExit(f"expected 1000 classes, got {len(synsets)} synsets and "
                         f"{len(IMAGENET_LABELS_LIST)} names")
    if synsets != sorted(synsets):
        raise SystemExit("labels.txt is not sorted: it is not Keras's class order")
    lines = [f"{s}\t{n}\n" for s, n in zip(synsets, IMAGENET_LABELS_LIST)]
    assert lines[281] == "n02123045\ttabby, tabby cat\n", lines[281]
    tmp = OUT.with_suffix(".txt.tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, OUT)
    print(f"wrote {OUT} ({len(lines)} classes)")


if __name__ == "__main__":
    main()
