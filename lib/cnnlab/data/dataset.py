"""The core of cnnlab.data: :class:`Split`, :class:`Dataset` and :func:`read_split`.

Every loader (:mod:`~cnnlab.data.loading`, :mod:`~cnnlab.data.image_folder`) imports this module
and none is imported by it. A data set is prepared once by a TFDS builder as ``array_record``
files in the TFDS data dir (:func:`default_tfds_dir`) and read back whole into numpy arrays by
:func:`read_split`, through ``builder.as_data_source()`` (random access, no TensorFlow), or by
:func:`read_split_cached` from a decoded copy kept beside the records. Whole splits are small
enough to hold in memory (full Fashion-MNIST or MNIST: 55 MB, CIFAR-10: 184 MB), so the training
loop indexes numpy arrays.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from cnnlab import fileio

_CHUNK = 10_000  # records read per data-source call: big reads, bounded memory for raw bytes
ARRAYS_DIR = "cnnlab-arrays"  # decoded whole splits, beside a prepared copy's records


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in memory: ``images`` uint8 ``(N, H, W, C)`` (or float features), ``labels``
    int32 ``(N,)`` (or float32 regression targets ``(N, ...)``, e.g. ``cnnlab forecast``'s)."""

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


def default_tfds_dir() -> Path:
    """Where prepared data sets live unless a ``tfds_dir`` is given.

    Returns:
      ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets`` (the same default TFDS uses).
    """
    return Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def read_split(builder, split: str, *, image_key: str = "image", label_key: str = "label",
               fast: bool = True) -> Split:
    """Read a whole split of a prepared builder through its data source into numpy arrays.

    Records are fetched in slices of ``_CHUNK``. With ``fast=True`` and an image feature stored as
    raw bytes (``Tensor(..., encoding=BYTES)``, as cnnlab's builders do) each record is parsed with
    TFDS's own ``tf.train.Example`` protobuf class and the image bytes are joined into one buffer,
    about twice as fast as TFDS's per-example decoding; other features (PNG images of catalog data
    sets and image folders) use TFDS's decoding (``fast=False`` forces it, to check the two agree).

    Args:
      builder: a prepared ``tfds.core.DatasetBuilder`` whose features hold a fixed-shape uint8
        image and an integer label.
      split: the split's name, e.g. "train".
      image_key, label_key: the two features.
      fast: parse raw-bytes images without TFDS's per-example decoding.

    Returns:
      A :class:`Split`: images uint8 ``(N, H, W, C)``, labels int32 ``(N,)``, in record order.
    """
    # TFDS is imported here, not at the top: it takes about a second, and `import cnnlab.data`
    # (which every training run does for the batch arithmetic) must not pay for it.
    import tensorflow_datasets as tfds  # noqa: PLC0415 - see above
    from tensorflow_datasets.core import decode  # noqa: PLC0415 - see above
    from tensorflow_datasets.proto import tf_example_pb2  # noqa: PLC0415 - see above

    feature = builder.info.features[image_key]
    raw_bytes = (fast and isinstance(feature, tfds.features.Tensor)
                 and feature.to_json_content().encoding == tfds.features.Encoding.BYTES.value)
    method = (decode.DeserializeMethod.RAW_BYTES if raw_bytes
              else decode.DeserializeMethod.DESERIALIZE_AND_DECODE)
    source = builder.as_data_source(split=split, deserialize_method=method)
    n = len(source)
    images = np.empty((n, *feature.shape), dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int32)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        records = source.__getitems__(range(start, stop))
        if raw_bytes:
            maps = [tf_example_pb2.Example.FromString(r).features.feature for r in records]
            images[start:stop] = np.frombuffer(
                b"".join([m[image_key].bytes_list.value[0] for m in maps]), np.uint8
            ).reshape(stop - start, *feature.shape)
            labels[start:stop] = [m[label_key].int64_list.value[0] for m in maps]
        else:
            images[start:stop] = np.stack([r[image_key] for r in records])
            labels[start:stop] = [r[label_key] for r in records]
    return Split(images, labels)


def read_split_cached(builder, split: str, *, image_key: str = "image",
                      label_key: str = "label") -> Split:
    """:func:`read_split` through a decoded copy of the split kept beside the records.

    The first read writes ``<builder.data_dir>/cnnlab-arrays/<split>-<image_key>-<label_key>.npz``
    (uncompressed, atomically): loading full Fashion-MNIST from it takes tens of milliseconds
    instead of about a second of record parsing. The copy is used only while it matches the
    records it was made from (name, size and modification time of each record file, the number
    of examples, uint8 images and int32 labels); a copy that does not, or that fails to read (a
    flipped bit fails the zip member's CRC-32), is ignored and written again from the records,
    which are only ever read. When the data dir is not writable the records are read each time.

    Args:
      builder: a prepared ``tfds.core.DatasetBuilder`` (as for :func:`read_split`).
      split: the split's name, e.g. "train".
      image_key, label_key: the two features.

    Returns:
      A :class:`Split` equal to ``read_split(builder, split, ...)``.
    """
    path = Path(builder.data_dir) / ARRAYS_DIR / f"{split}-{image_key}-{label_key}.npz"
    stamp = _records_stamp(builder, split)
    count = builder.info.splits[split].num_examples
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["stamp"]) == stamp:
                images, labels = saved["images"], saved["labels"]
                if (len(images) == len(labels) == count and images.dtype == np.uint8
                        and labels.dtype == np.int32):
                    return Split(images, labels)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # missing or damaged: the records are the truth
    result = read_split(builder, split, image_key=image_key, label_key=label_key)
    try:
        with fileio.atomic_open(path, "wb", durable=False) as f:
            np.savez(f, images=result.images, labels=result.labels, stamp=np.array(stamp))
    except OSError:
        pass  # a read-only data dir: read the records every time
    return result


def _records_stamp(builder, split: str) -> str:
    """Name, size and modification time (ns) of each record file of ``split``, as JSON."""
    stats = {os.path.basename(p): os.stat(p) for p in builder.info.splits[split].filepaths}
    return json.dumps([[name, st.st_size, st.st_mtime_ns] for name, st in stats.items()])
