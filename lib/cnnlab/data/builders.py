"""TFDS builders over the original file formats (no TensorFlow needed).

Each builder writes ``array_record`` files (read back with random access through
``builder.as_data_source()``) with the features::

    image: tfds.features.Tensor(shape=(H, W, C), dtype=uint8)   stored as raw bytes
    label: tfds.features.ClassLabel(names=...)

``tfds.features.Image`` is avoided on purpose: encoding numpy images to PNG needs TensorFlow.
Shuffling is disabled, so example ``i`` of a split is example ``i`` of the source files.

========================  =====================================  ================================
builder                   reads                                  from
========================  =====================================  ================================
``cnnlab_fashion_mnist``  four gzip IDX files                    a directory (or the subset)
``cnnlab_mnist``          four gzip IDX files                    a directory, or downloaded
``cnnlab_cifar10``        seven python pickles, or their .tar.gz a directory, or downloaded
``cnnlab_digits``         scikit-learn's bundled digits          scikit-learn
========================  =====================================  ================================

The file-based builders take a :class:`SourceConfig` per set of source files: its name is the
files' fingerprint (:mod:`cnnlab.data.sources`), so each set of files has its own prepared copy
(``TFDS_DIR/cnnlab_mnist/src-<16 hex>/1.0.0``) and new files never replace an existing one
(:mod:`cnnlab.data.preparation`). The source files' sha256 sums and location are recorded in the
copy's metadata. The names start with ``cnnlab_`` so they never clash with TFDS's own catalog.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums as tfds_checksums

from cnnlab.data import cifar10, fashion_mnist, mnist
from cnnlab.data.idx import read_images_and_labels
from cnnlab.data.sources import Download, Sources

FILE_FORMAT = "array_record"


class QuietBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder without TFDS's "Downloading and preparing dataset Unknown size ..." lines
    (cnnlab prints one line of its own, with what is really read or downloaded)."""

    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        """TFDS examples ``(i, {"image": images[i], "label": labels[i]})`` in order."""
        for i in range(len(labels)):
            yield i, {"image": images[i], "label": labels[i]}


@dataclasses.dataclass(eq=False)
class SourceConfig(tfds.core.BuilderConfig):
    """One set of source files. ``name``: their fingerprint (``src-<16 hex>``).

    ``files``: role -> local file, or None: the builder downloads its ``DOWNLOADS``.
    ``checksums``: role -> sha256, recorded in the prepared copy's metadata.
    """

    files: Mapping[str, str] | None = None
    checksums: Mapping[str, str] = dataclasses.field(default_factory=dict)


class SourceFilesBuilder(QuietBuilder, skip_registration=True):
    """A builder whose config names its source files (local, or downloaded and verified)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Prepared from the original files."}
    DOWNLOADS: Mapping[str, Download] = {}  # role -> the original file (none: local files only)

    @classmethod
    def config_for(cls, sources: Sources) -> SourceConfig:
        """The config of the copy prepared from ``sources``."""
        files = None if sources.files is None else {r: str(p) for r, p in sources.files.items()}
        return SourceConfig(name=sources.fingerprint, files=files, checksums=dict(sources.checksums),
                            description=f"Prepared from {sources.where}.")

    @property
    def url_infos(self):
        """The registered size and sha256 of every download (what TFDS's download manager
        verifies each downloaded file against)."""
        return {d.url: tfds_checksums.UrlInfo(size=tfds.core.units.Size(d.size), checksum=d.sha256,
                                              filename=d.url.rsplit("/", 1)[-1])
                for d in self.DOWNLOADS.values()}

    def _source_paths(self, dl_manager) -> dict[str, Path]:
        """role -> local path of every source file, downloading them if needed."""
        config = self.builder_config
        self.info.metadata["source_sha256"] = dict(config.checksums)
        if config.files is not None:
            self.info.metadata["source"] = str(Path(next(iter(config.files.values()))).parent)
            return {role: Path(p) for role, p in config.files.items()}
        self.info.metadata["source"] = ", ".join(d.url for d in self.DOWNLOADS.values())
        return {role: Path(p) for role, p in dl_manager.download(
            {role: d.url for role, d in self.DOWNLOADS.items()}).items()}


class _IdxBuilder(SourceFilesBuilder, skip_registration=True):
    """MNIST-style data: four gzip IDX files, 28x28 grey images (see :mod:`cnnlab.data.idx`)."""

    FILES: Mapping[str, tuple[str, str]] = {}  # split -> (images file, labels file)
    CLASS_NAMES: tuple[str, ...] = ()
    HOMEPAGE = CITATION = ""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=self.CLASS_NAMES),
            }),
            supervised_keys=("image", "label"), disable_shuffling=True, homepage=self.HOMEPAGE,
            citation=self.CITATION, metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        paths = self._source_paths(dl_manager)
        return {split: self._generate_examples(*read_images_and_labels(paths[images], paths[labels]))
                for split, (images, labels) in self.FILES.items()}


class CnnlabFashionMnist(_IdxBuilder):
    """Fashion-MNIST (Xiao et al. 2017) from local IDX files (see :mod:`cnnlab.data.fashion_mnist`
    for where cnnlab looks, the embedded subset included)."""

    FILES = fashion_mnist.FILES
    CLASS_NAMES = fashion_mnist.CLASS_NAMES
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"{fashion_mnist.HOW_TO_GET}."
    HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
    CITATION = ("Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset for "
                "Benchmarking Machine Learning Algorithms. arXiv:1708.07747, 2017.")


class CnnlabMnist(_IdxBuilder):
    """MNIST from its original IDX files, local or downloaded (see :mod:`cnnlab.data.mnist`)."""

    FILES = mnist.FILES
    CLASS_NAMES = mnist.CLASS_NAMES
    DOWNLOADS = mnist.DOWNLOADS
    HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
    CITATION = ("Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to "
                "document recognition. Proceedings of the IEEE 86(11), 1998.")


class CnnlabCifar10(SourceFilesBuilder):
    """CIFAR-10 from its python batches, local or downloaded (see :mod:`cnnlab.data.cifar10`).

    Train: ``data_batch_1`` .. ``data_batch_5`` in that order; test: ``test_batch``. Images are
    ``(32, 32, 3)`` RGB; ``batches.meta`` must name CIFAR-10's ten classes.
    """

    DOWNLOADS = cifar10.DOWNLOADS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=cifar10.IMAGE_SHAPE, dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=cifar10.CLASS_NAMES),
            }),
            supervised_keys=("image", "label"), disable_shuffling=True,
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            citation="Alex Krizhevsky. Learning Multiple Layers of Features from Tiny Images. "
                     "Technical report, University of Toronto, 2009.",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        paths = self._source_paths(dl_manager)
        splits = (cifar10.read_archive(paths[cifar10.ARCHIVE]) if cifar10.ARCHIVE in paths
                  else cifar10.read_directory(paths[cifar10.META].parent))
        return {split: self._generate_examples(*arrays) for split, arrays in splits.items()}


class CnnlabDigits(QuietBuilder):
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


def digits_arrays(*, seed: int, test_size: int):
    """scikit-learn's digits as ``((train_images, train_labels), (test_images, test_labels))``.

    Images uint8 ``(N, 8, 8, 1)`` in 0..255, labels int32 ``(N,)``; the split is stratified by class
    and fixed by ``seed``; each split keeps the original order of the examples.
    """
    from sklearn.datasets import load_digits  # noqa: PLC0415 - scikit-learn only for this data set
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_size,
                                           stratify=labels, random_state=seed)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])
