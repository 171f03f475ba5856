"""``load(name)``: find a data set's files, prepare them with TFDS once, read them into memory.

Every data set goes through tensorflow-datasets: a builder (:mod:`cnnlab.data.builders`) writes
``array_record`` files into the TFDS data dir once, keyed by the source files' checksums
(:mod:`cnnlab.data.sources`; new or broken files never replace a good copy, see
:mod:`cnnlab.data.preparation`), and :func:`~cnnlab.data.dataset.read_split` reads them back.

The modules that import TFDS (``builders``, ``preparation``, ``image_folder``) are imported
inside the functions that need them: TFDS takes about a second to import, and ``import
cnnlab.data`` (which every training run does for its batch arithmetic) must not pay for it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnlab.data import cifar10, fashion_mnist, mnist
from cnnlab.data.dataset import Dataset, default_tfds_dir, read_split, read_split_cached
from cnnlab.data.sources import Sources
from cnnlab.errors import CnnlabError

NAMES = ("fashion_mnist", "fashion_mnist_subset", "mnist", "cifar10", "digits")
#: The data sets prepared from files, which ``data_dir`` (``--data-dir``) can point at.
FILE_DATASETS = ("fashion_mnist", "mnist", "cifar10")


def names() -> list[str]:
    """The data sets cnnlab prepares itself; any other name is looked up in the TFDS catalog.

    Returns:
      The names :func:`load` takes besides TFDS catalog names and ``folder:`` specs.
    """
    return list(NAMES)


def _resolve(tfds_dir: str | os.PathLike | None) -> Path:
    return Path(tfds_dir).expanduser() if tfds_dir is not None else default_tfds_dir()


def load(name: str, *, data_dir: str | os.PathLike | None = None,
         tfds_dir: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Load a data set by name into memory, preparing it with TFDS on first use.

    Args:
      name: "fashion_mnist" (full data when found, else the embedded subset: ``source`` says which),
        "fashion_mnist_subset", "mnist", "cifar10", "digits", an image folder spec
        "folder:/path?image_size=64" (see :func:`cnnlab.data.image_folder.dataset_spec`), or any
        TFDS catalog name (e.g. "kmnist", "svhn_cropped").
      data_dir: the directory with the original files of fashion_mnist, mnist or cifar10 (see
        :mod:`~cnnlab.data.fashion_mnist`, :mod:`~cnnlab.data.mnist`, :mod:`~cnnlab.data.cifar10`);
        if given it must hold them. Without it mnist and cifar10 are downloaded once from their
        original locations.
      tfds_dir: the TFDS data dir for the prepared array_record files (default
        :func:`~cnnlab.data.dataset.default_tfds_dir`).
      download: let TFDS download and prepare a *catalog* data set that is not prepared yet.

    Returns:
      A :class:`~cnnlab.data.dataset.Dataset`, images uint8 ``(N, H, W, C)``, labels int32 ``(N,)``.

    Raises:
      CnnlabError: unknown name, missing or corrupt files (one line naming the file), a download
        that cannot be made (offline), or a catalog data set not prepared.
    """
    tfds_dir = _resolve(tfds_dir)
    if name.startswith("folder:"):  # an image folder of your own; its spec names the folder
        from cnnlab.data import image_folder  # noqa: PLC0415 - imports TFDS (module doc)
        return image_folder.load_spec(name, tfds_dir=tfds_dir)
    if data_dir is not None and name not in FILE_DATASETS:
        raise CnnlabError(f"--data-dir only applies to {', '.join(FILE_DATASETS)}, not to {name!r}; "
                          "leave it out")
    if name == "fashion_mnist":
        return load_fashion_mnist(data_dir=data_dir, tfds_dir=tfds_dir)
    if name == "fashion_mnist_subset":
        return _load_fashion_mnist(fashion_mnist.IdxSource("subset", fashion_mnist.SUBSET_DIR),
                                   tfds_dir, name=name)
    if name == "mnist":
        return load_mnist(data_dir=data_dir, tfds_dir=tfds_dir)
    if name == "cifar10":
        return load_cifar10(data_dir=data_dir, tfds_dir=tfds_dir)
    if name == "digits":
        return _load_digits(tfds_dir)
    return load_catalog(name, tfds_dir=tfds_dir, download=download)


def load_fashion_mnist(*, data_dir: str | os.PathLike | None = None,
                       tfds_dir: str | os.PathLike | None = None,
                       system_dirs: Sequence[str | os.PathLike] = fashion_mnist.SYSTEM_DIRS) -> Dataset:
    """Fashion-MNIST from the first place that has it, else the embedded subset.

    Args:
      data_dir: a directory that must hold the four IDX files; None: ``$CNNLAB_DATA_DIR``, then
        ``system_dirs``, then the embedded subset (:mod:`~cnnlab.data.fashion_mnist`).
      tfds_dir: the TFDS data dir for the prepared copy (default :func:`default_tfds_dir`).
      system_dirs: replaces ``/usr/share/datasets/fashion-mnist`` (tests pass ``()`` to see the
        fallback on a machine that has the Debian package).

    Returns:
      A :class:`Dataset` whose ``source`` says which data it is and where it came from.
    """
    source = fashion_mnist.find(data_dir, system_dirs=system_dirs)
    return _load_fashion_mnist(source, _resolve(tfds_dir), name="fashion_mnist")


def _load_fashion_mnist(source: fashion_mnist.IdxSource, tfds_dir: Path, *, name: str) -> Dataset:
    ds = _load_files("fashion_mnist", Sources.local(source.directory, fashion_mnist.ALL_FILES),
                     tfds_dir, name=name, title="Fashion-MNIST")
    counts = f"{len(ds.train):,}/{len(ds.test):,}"
    if source.kind == "full":
        text = f"full Fashion-MNIST ({counts}) from {source.directory}"
    elif source.searched:
        text = (f"embedded Fashion-MNIST subset ({counts}; full data not found in "
                f"{', '.join(source.searched)}; set {fashion_mnist.ENV_VAR} or install "
                f"dataset-fashion-mnist for all 70,000 images)")
    else:
        text = f"embedded Fashion-MNIST subset ({counts})"
    return Dataset(ds.name, ds.train, ds.test, ds.class_names, text)


def load_mnist(*, data_dir: str | os.PathLike | None = None,
               tfds_dir: str | os.PathLike | None = None) -> Dataset:
    """MNIST from ``data_dir``, else from the copy of the original files (downloaded once).

    Args:
      data_dir: a directory that must hold the four IDX files (:mod:`~cnnlab.data.mnist`).
      tfds_dir: the TFDS data dir for the prepared copy (default :func:`default_tfds_dir`).

    Returns:
      A :class:`Dataset`: 60,000 train and 10,000 test images ``(28, 28, 1)``.
    """
    return _load_files("mnist", mnist.find(data_dir), _resolve(tfds_dir), name="mnist",
                       title="MNIST", hint=mnist.OFFLINE_HINT)


def load_cifar10(*, data_dir: str | os.PathLike | None = None,
                 tfds_dir: str | os.PathLike | None = None) -> Dataset:
    """CIFAR-10 from ``data_dir``, else from the copy of the original archive (downloaded once).

    Args:
      data_dir: a directory that must hold the seven python-version files or their archive
        (:mod:`~cnnlab.data.cifar10`).
      tfds_dir: the TFDS data dir for the prepared copy (default :func:`default_tfds_dir`).

    Returns:
      A :class:`Dataset`: 50,000 train and 10,000 test images ``(32, 32, 3)``.
    """
    return _load_files("cifar10", cifar10.find(data_dir), _resolve(tfds_dir), name="cifar10",
                       title="CIFAR-10", hint=cifar10.OFFLINE_HINT)


def _load_files(kind: str, sources: Sources, tfds_dir: Path, *, name: str, title: str,
                hint: str = "") -> Dataset:
    """Prepare (once) and read the copy of ``sources`` with the builder of ``kind``."""
    from cnnlab.data import builders, preparation  # noqa: PLC0415 - imports TFDS (module doc)

    builder_cls = {"fashion_mnist": builders.CnnlabFashionMnist, "mnist": builders.CnnlabMnist,
                   "cifar10": builders.CnnlabCifar10}[kind]
    config = builder_cls.config_for(sources)
    downloaded, where = sources.files is None, sources.where
    builder = preparation.prepare(
        lambda: builder_cls(config=config, data_dir=tfds_dir, file_format=builders.FILE_FORMAT),
        what=f"{title} from {where}", downloads=builder_cls.DOWNLOADS if downloaded else None,
        hint=hint)
    with preparation.quiet():
        train, test = read_split_cached(builder, "train"), read_split_cached(builder, "test")
    text = (f"{title} ({len(train):,}/{len(test):,}) "
            f"{'downloaded from' if downloaded else 'from'} {where}")
    return Dataset(name, train, test, _class_names(builder), text)


def _load_digits(tfds_dir: Path) -> Dataset:
    from cnnlab.data import builders, preparation  # noqa: PLC0415 - imports TFDS (module doc)

    builder = preparation.prepare(
        lambda: builders.CnnlabDigits(data_dir=tfds_dir, file_format=builders.FILE_FORMAT),
        what="scikit-learn digits")
    with preparation.quiet():
        train, test = read_split_cached(builder, "train"), read_split_cached(builder, "test")
    return Dataset("digits", train, test, _class_names(builder),
                   f"scikit-learn digits ({len(train):,}/{len(test):,}; stratified split, "
                   f"seed {builders.CnnlabDigits.SEED}) prepared in {builder.data_dir}")


def load_catalog(name: str, *, tfds_dir: Path, download: bool = False) -> Dataset:
    """A TFDS catalog data set with an image and a class label feature, as a :class:`Dataset`.

    Reading needs it prepared as ``array_record`` in ``tfds_dir``. Preparing it (``download=True``)
    downloads it; for image data sets TFDS then needs TensorFlow to encode the images.

    Args:
      name: a TFDS catalog name, optionally with config and version (``"kmnist"``,
        ``"svhn_cropped:3.1.0"``).
      tfds_dir: the TFDS data dir it is prepared in.
      download: prepare it when it is not prepared yet.

    Returns:
      A :class:`Dataset` of its supervised (image, label) features; the test split is
      ``"validation"`` when the data set has no ``"test"``.
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415 - TFDS import cost (module doc)

    import cnnlab.data.builders  # noqa: F401, PLC0415 - registers cnnlab_* so they load by name too

    # Check the name first: an unknown name would make TFDS search the community catalog online.
    catalog = tfds.list_builders(with_community_datasets=False)
    base = name.split("/")[0].split(":")[0]
    if base not in catalog:
        close = difflib.get_close_matches(base, list(dict.fromkeys([*NAMES, *catalog])), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise CnnlabError(f"unknown dataset {name!r}{hint}; valid: {', '.join(NAMES)}, or a TFDS "
                          "catalog name such as kmnist or svhn_cropped (tfds.list_builders())")
    try:
        builder = tfds.builder(name, data_dir=os.fspath(tfds_dir), try_gcs=False)
    except Exception as e:  # e.g. a config or version that does not exist
        raise CnnlabError(f"dataset {name!r}: {str(e).splitlines()[0]}") from None
    where = tfds_dir / builder.name
    if not (builder.data_path.exists() and builder.is_prepared()):
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


def _supervised_keys(builder, name: str) -> tuple[str, str]:
    import tensorflow_datasets as tfds  # noqa: PLC0415 - TFDS import cost (module doc)

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
