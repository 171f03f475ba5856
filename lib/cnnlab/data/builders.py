"""TFDS builders that prepare data sets from local files (no download, no TensorFlow).

Each builder writes ``array_record`` files (read back with random access through
``builder.as_data_source()`` / ``tfds.data_source``) with the features::

    image: tfds.features.Tensor(shape=(H, W, 1), dtype=uint8)   stored as raw bytes
    label: tfds.features.ClassLabel(names=...)

``tfds.features.Image`` is avoided on purpose: encoding numpy images to PNG needs TensorFlow.
Shuffling is disabled, so example ``i`` of a split is example ``i`` of the source.

Importing this module registers ``cnnlab_fashion_mnist`` (configs ``full`` and ``subset``) and
``cnnlab_digits`` in the TFDS registry, so after ``import cnnlab.data.builders`` also
``tfds.data_source("cnnlab_fashion_mnist/full", data_dir=...)`` works. The names start with
``cnnlab_`` so they never clash with TFDS's own catalog ``fashion_mnist`` (which downloads).

The source files' sha256 sums are stored in the prepared data set's metadata; :func:`prepare`
re-prepares when they change (e.g. ``--data-dir`` now points at different files).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from cnnlab.data import fashion_mnist
from cnnlab.data.idx import read_images_and_labels

FILE_FORMAT = "array_record"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder that prepares from files already on this machine.

    TFDS prints "Downloading and preparing dataset Unknown size ..." around every preparation; for
    builders that download nothing that only misleads, so these stay quiet (cnnlab.data.load prints
    one line of its own).
    """

    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass


class FashionMnistConfig(tfds.core.BuilderConfig):
    """``full``: the four IDX files from the manual dir; ``subset``: the files shipped in cnnlab."""


class CnnlabFashionMnist(LocalBuilder):
    """Fashion-MNIST (Xiao et al. 2017) from local IDX ``.gz`` files.

    ``full`` reads them from ``download_config.manual_dir`` (see :mod:`cnnlab.data.fashion_mnist`
    for where cnnlab looks); ``subset`` reads the embedded 6,000/1,000 subset.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Prepared from local IDX files."}
    BUILDER_CONFIGS = [
        FashionMnistConfig(name="full", description="All 60,000/10,000 images from local IDX files."),
        FashionMnistConfig(name="subset", description="600 train + 100 test images per class, "
                                                      "embedded in cnnlab."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Put {', '.join(fashion_mnist.ALL_FILES)} in the manual dir: {fashion_mnist.HOW_TO_GET}.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=fashion_mnist.CLASS_NAMES),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            citation="Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset "
                     "for Benchmarking Machine Learning Algorithms. arXiv:1708.07747, 2017.",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        subset = self.builder_config.name == "subset"
        directory = fashion_mnist.SUBSET_DIR if subset else Path(dl_manager.manual_dir)
        self.info.metadata["source_dir"] = str(directory)
        self.info.metadata["source_sha256"] = {f: sha256(directory / f) for f in fashion_mnist.ALL_FILES}
        return {split: self._generate_examples(directory / images, directory / labels)
                for split, (images, labels) in fashion_mnist.FILES.items()}

    def _generate_examples(self, images_path: Path, labels_path: Path):
        images, labels = read_images_and_labels(images_path, labels_path)
        for i in range(len(labels)):
            yield i, {"image": images[i], "label": labels[i]}


class CnnlabDigits(LocalBuilder):
    """scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set), 1,797 images.

    A stratified split with a fixed seed (``SEED``) holds out ``TEST_SIZE`` images; pixel values
    0..16 are scaled to 0..255 (``round(v * 255 / 16)``) so every data set is uint8 in 0..255.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Stratified 1,437/360 split of sklearn.datasets.load_digits."}
    SEED = 0
    TEST_SIZE = 360

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
            citation="E. Alpaydin, C. Kaynak. Optical Recognition of Handwritten Digits. "
                     "UCI Machine Learning Repository, 1998.",
        )

    def _split_generators(self, dl_manager):
        train, test = digits_arrays(seed=self.SEED, test_size=self.TEST_SIZE)
        return {"train": self._generate_examples(*train), "test": self._generate_examples(*test)}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for i in range(len(labels)):
            yield i, {"image": images[i], "label": labels[i]}


def digits_arrays(*, seed: int, test_size: int):
    """scikit-learn's digits as ``((train_images, train_labels), (test_images, test_labels))``.

    Images uint8 ``(N, 8, 8, 1)`` in 0..255, labels int32 ``(N,)``; the split is stratified by class
    and fixed by ``seed``; each split keeps the original order of the examples.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_size,
                                           stratify=labels, random_state=seed)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])
