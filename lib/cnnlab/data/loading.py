"""``load(name)``: prepare a data set with TFDS once, then read it into numpy arrays.

Every data set goes through tensorflow-datasets: a builder writes ``array_record`` files into the
TFDS data dir (once; TFDS writes into a temporary directory and renames it, so an interrupted
preparation leaves nothing half-done), and :func:`read_split` reads them back through
``builder.as_data_source()`` (random access, no TensorFlow). Whole splits are small enough to
hold in memory (full Fashion-MNIST: 55 MB), so the training loop indexes numpy arrays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fcntl
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnlab.data import fashion_mnist
from cnnlab.errors import CnnlabError

NAMES = ("fashion_mnist", "fashion_mnist_subset", "digits")
_CHUNK = 10_000  # records read per data-source call: big reads, bounded memory for raw bytes


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in memory: ``images`` uint8 ``(N, H, W, C)``, ``labels`` int32 ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A data set in memory, with ``source`` saying in one sentence where it came from."""

    name: str
    train: Split
    test: Split
    class_names: tuple[str, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(self.train.images.shape[1:])


def names() -> list[str]:
    """The data sets cnnlab prepares itself; any other name is looked up in the TFDS catalog."""
    return list(NAMES)


def default_tfds_dir() -> Path:
    """``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets`` (the same default TFDS uses)."""
    return Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def load(name: str, *, data_dir: str | os.PathLike | None = None,
         tfds_dir: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Load a data set by name into memory, preparing it with TFDS on first use.

    Args:
      name: "fashion_mnist" (full data when found, else the embedded subset: ``source`` says which),
        "fashion_mnist_subset", "digits", an image folder spec "folder:/path?image_size=64"
        (see :func:`cnnlab.data.image_folder.dataset_spec`), or any TFDS catalog name (e.g.
        "mnist", "cifar10").
      data_dir: where to look for the raw Fashion-MNIST IDX files (see
        :mod:`cnnlab.data.fashion_mnist`); if given it must hold them.
      tfds_dir: the TFDS data dir for the prepared array_record files (default
        :func:`default_tfds_dir`).
      download: allow TFDS to download and prepare a catalog data set that is not prepared yet.

    Returns:
      A :class:`Dataset`, images uint8 ``(N, H, W, C)``, labels int32 ``(N,)``.

    Raises:
      CnnlabError: unknown name, missing or corrupt files, or a catalog data set not prepared.
    """
    tfds_dir = Path(tfds_dir).expanduser() if tfds_dir is not None else default_tfds_dir()
    if name == "fashion_mnist":
        return load_fashion_mnist(data_dir=data_dir, tfds_dir=tfds_dir)
    if name.startswith("folder:"):  # an image folder of your own (cnnlab.data.image_folder)
        from cnnlab.data import image_folder
        return image_folder.load_spec(name, tfds_dir=tfds_dir)
    if data_dir is not None:
        raise CnnlabError(f"--data-dir only applies to fashion_mnist, not to {name!r}; leave it out")
    if name == "fashion_mnist_subset":
        return _load_idx_builder(fashion_mnist.IdxSource("subset", fashion_mnist.SUBSET_DIR),
                                 tfds_dir, name=name)
    if name == "digits":
        from cnnlab.data import builders
        builder = _prepare(builders.CnnlabDigits, None, tfds_dir)
        train, test = read_split(builder, "train"), read_split(builder, "test")
        return Dataset(name, train, test, _class_names(builder),
                       f"scikit-learn digits ({len(train):,}/{len(test):,}; stratified split, "
                       f"seed {builders.CnnlabDigits.SEED}) prepared in {builder.data_dir}")
    return load_catalog(name, tfds_dir=tfds_dir, download=download)


def load_fashion_mnist(*, data_dir: str | os.PathLike | None = None,
                       tfds_dir: str | os.PathLike | None = None,
                       system_dirs: Sequence[str | os.PathLike] = fashion_mnist.SYSTEM_DIRS) -> Dataset:
    """Fashion-MNIST from the first place that has it, else the embedded subset.

    ``system_dirs`` replaces ``/usr/share/datasets/fashion-mnist`` (tests pass ``()`` to see the
    fallback on a machine that has the Debian package).
    """
    tfds_dir = Path(tfds_dir).expanduser() if tfds_dir is not None else default_tfds_dir()
    source = fashion_mnist.find(data_dir, system_dirs=system_dirs)
    return _load_idx_builder(source, tfds_dir, name="fashion_mnist")


def _load_idx_builder(source: fashion_mnist.IdxSource, tfds_dir: Path, *, name: str) -> Dataset:
    from cnnlab.data import builders
    builder = _prepare(builders.CnnlabFashionMnist, source.kind, tfds_dir, manual_dir=source.directory)
    train, test = read_split(builder, "train"), read_split(builder, "test")
    counts = f"{len(train):,}/{len(test):,}"
    if source.kind == "full":
        text = f"full Fashion-MNIST ({counts}) from {source.directory}"
    elif source.searched:
        text = (f"embedded Fashion-MNIST subset ({counts}; full data not found in "
                f"{', '.join(source.searched)}; set {fashion_mnist.ENV_VAR} or install "
                f"dataset-fashion-mnist for all 70,000 images)")
    else:
        text = f"embedded Fashion-MNIST subset ({counts})"
    return Dataset(name, train, test, _class_names(builder), text)


@contextlib.contextmanager
def _quiet_tfds():
    """Silence TFDS's progress bars and its "Downloading and preparing" log lines.

    Nothing is downloaded for our own builders, so those lines would only mislead; cnnlab prints one
    line of its own instead.
    """
    import absl.logging
    from tensorflow_datasets.core.utils import tqdm_utils

    verbosity, bars = absl.logging.get_verbosity(), tqdm_utils._active
    absl.logging.set_verbosity(absl.logging.WARNING)
    tqdm_utils.display_progress_bar(False)
    try:
        yield
    finally:
        absl.logging.set_verbosity(verbosity)
        tqdm_utils.display_progress_bar(bars)


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock file, so parallel processes (pytest-xdist, several trainings) prepare a
    data set once instead of racing to rename the same directory."""
    try:
        f = open(path, "a")
    except OSError:  # a read-only data dir (prepared by someone else): nothing to race for
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prepare(builder_cls, config: str | None, tfds_dir: Path, *, manual_dir: Path | None = None):
    """A prepared builder of ``builder_cls``: reused when its recorded source files are the current
    ones, else (re-)prepared. Returns the builder, ready for ``as_data_source``."""
    import tensorflow_datasets as tfds

    from cnnlab.data import builders

    try:
        tfds_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CnnlabError(f"cannot create the TFDS data dir {tfds_dir} ({e.strerror}); "
                          "pass a writable --tfds-dir or set TFDS_DATA_DIR") from None
    wanted = None  # the source checksums the prepared copy must have been made from
    if builder_cls is builders.CnnlabFashionMnist:
        wanted = {f: builders.sha256(manual_dir / f) for f in fashion_mnist.ALL_FILES}
    with _lock(tfds_dir / f".{builder_cls.name}.lock"):
        builder = builder_cls(config=config, data_dir=tfds_dir, file_format=builders.FILE_FORMAT)
        prepared = _is_prepared(builder)
        if prepared and (wanted is None or builder.info.metadata.get("source_sha256") == wanted):
            return builder
        # Stale (prepared from other files) or absent: (re-)prepare. TFDS deletes a stale copy and
        # writes the new one into a temporary directory that is renamed when complete.
        mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if prepared
                else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
        config_kw = dict(manual_dir=os.fspath(manual_dir)) if manual_dir else {}
        try:
            print(f"cnnlab: preparing {builder_cls.name}/{config} in {tfds_dir} (once)", file=sys.stderr)
            with _quiet_tfds():
                builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                    try_download_gcs=False, download_mode=mode, **config_kw))
        except PermissionError as e:
            raise CnnlabError(f"cannot write to the TFDS data dir {tfds_dir} ({e.strerror}: "
                              f"{e.filename}); pass a writable --tfds-dir or set TFDS_DATA_DIR") from None
        return builder_cls(config=config, data_dir=tfds_dir, file_format=builders.FILE_FORMAT)


def load_catalog(name: str, *, tfds_dir: Path, download: bool = False) -> Dataset:
    """A TFDS catalog data set with an image and a class label feature, as a :class:`Dataset`.

    Reading needs it prepared as ``array_record`` in ``tfds_dir``. Preparing it (``download=True``)
    downloads it; for image data sets TFDS then needs TensorFlow to encode the images.
    """
    import tensorflow_datasets as tfds

    import cnnlab.data.builders  # noqa: F401  (registers cnnlab_* so they load by name too)

    # Check the name first: an unknown name would make TFDS search the community catalog online.
    catalog = tfds.list_builders(with_community_datasets=False)
    base = name.split("/")[0].split(":")[0]
    if base not in catalog:
        close = difflib.get_close_matches(base, list(dict.fromkeys([*NAMES, *catalog])), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise CnnlabError(f"unknown dataset {name!r}{hint}; valid: {', '.join(NAMES)}, or a TFDS "
                          "catalog name such as mnist or cifar10 (tfds.list_builders())")
    try:
        builder = tfds.builder(name, data_dir=os.fspath(tfds_dir), try_gcs=False)
    except Exception as e:  # e.g. a config or version that does not exist
        raise CnnlabError(f"dataset {name!r}: {str(e).splitlines()[0]}") from None
    where = tfds_dir / builder.name
    if not _is_prepared(builder):
        if not download:
            raise CnnlabError(
                f"TFDS dataset {name!r} is not prepared in {tfds_dir}; prepare it once with "
                f"`tfds build {name} --file_format=array_record --data_dir={tfds_dir}` (preparing "
                f"image datasets from the TFDS catalog needs TensorFlow: pip install tensorflow-cpu) "
                f"or allow downloading it (download=True)")
        try:
            builder.download_and_prepare(file_format="array_record")
        except Exception as e:
            raise CnnlabError(
                f"could not prepare TFDS dataset {name!r} in {tfds_dir}: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''} (preparing image datasets from the TFDS "
                "catalog needs TensorFlow and network access)") from None
        builder = tfds.builder(name, data_dir=os.fspath(tfds_dir), try_gcs=False)
    file_format = builder.info.file_format.value if builder.info.file_format else "tfrecord"
    if file_format != "array_record":
        raise CnnlabError(f"TFDS dataset {name!r} in {where} is stored as {file_format}; "
                          "cnnlab reads array_record without TensorFlow: rebuild it with "
                          f"`tfds build {name} --file_format=array_record --data_dir={tfds_dir}`")
    image_key, label_key = _supervised_keys(builder, name)
    splits = list(builder.info.splits.keys())
    test_split = next((s for s in ("test", "validation") if s in splits), None)
    if "train" not in splits or test_split is None:
        raise CnnlabError(f"TFDS dataset {name!r} has splits {splits}; cnnlab needs train and test "
                          "(or validation)")
    train = read_split(builder, "train", image_key=image_key, label_key=label_key)
    test = read_split(builder, test_split, image_key=image_key, label_key=label_key)
    return Dataset(name, train, test, _class_names(builder, label_key),
                   f"TFDS dataset {builder.info.full_name} ({len(train):,}/{len(test):,}"
                   f"{'' if test_split == 'test' else '; test = validation split'}) from {tfds_dir}")


def _is_prepared(builder) -> bool:
    # Checking existence first keeps TFDS from warning about a variant folder that is not there.
    return builder.data_path.exists() and builder.is_prepared()


def _supervised_keys(builder, name: str) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    features = builder.info.features
    image_key, label_key = builder.info.supervised_keys or ("image", "label")
    if not isinstance(image_key, str) or image_key not in features or label_key not in features:
        raise CnnlabError(f"TFDS dataset {name!r} has no (image, label) pair of features "
                          f"(features: {', '.join(features.keys())})")
    shape, label = features[image_key].shape, features[label_key]
    if (len(shape) != 3 or None in shape or features[image_key].np_dtype != np.uint8
            or not isinstance(label, tfds.features.ClassLabel)):
        raise CnnlabError(f"TFDS dataset {name!r}: cnnlab needs fixed-size uint8 (H, W, C) images and a "
                          f"class label; found {image_key} {shape} {features[image_key].np_dtype} "
                          f"and {label_key} {type(label).__name__}")
    return image_key, label_key


def _class_names(builder, label_key: str = "label") -> tuple[str, ...]:
    return tuple(builder.info.features[label_key].names)


def read_split(builder, split: str, *, image_key: str = "image", label_key: str = "label",
               fast: bool = True) -> Split:
    """Read a whole split of a prepared builder through its data source into numpy arrays.

    Records are fetched in slices of ``_CHUNK``. With ``fast=True`` and an image feature stored as
    raw bytes (``Tensor(..., encoding=BYTES)``, as cnnlab's builders do) each record is parsed with
    TFDS's own ``tf.train.Example`` protobuf class and the image bytes are joined into one buffer,
    about twice as fast as TFDS's per-example decoding; other features (PNG images of catalog data
    sets) use TFDS's decoding (``fast=False`` forces it, to check the two agree).
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import decode

    feature = builder.info.features[image_key]
    raw_bytes = (fast and isinstance(feature, tfds.features.Tensor)
                 and feature.to_json_content().encoding == tfds.features.Encoding.BYTES.value)
    method = decode.DeserializeMethod.RAW_BYTES if raw_bytes else decode.DeserializeMethod.DESERIALIZE_AND_DECODE
    source = builder.as_data_source(split=split, deserialize_method=method)
    n = len(source)
    images = np.empty((n, *feature.shape), dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int32)
    if raw_bytes:
        from tensorflow_datasets.proto import tf_example_pb2
        parse = tf_example_pb2.Example.FromString
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        records = source.__getitems__(range(start, stop))
        if raw_bytes:
            maps = [parse(r).features.feature for r in records]
            images[start:stop] = np.frombuffer(
                b"".join([m[image_key].bytes_list.value[0] for m in maps]), np.uint8
            ).reshape(stop - start, *feature.shape)
            labels[start:stop] = [m[label_key].int64_list.value[0] for m in maps]
        else:
            images[start:stop] = np.stack([r[image_key] for r in records])
            labels[start:stop] = [r[label_key] for r in records]
    return Split(images, labels)
