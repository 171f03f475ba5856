"""Read and write gzip-compressed IDX files (the MNIST / Fashion-MNIST file format).

IDX layout (all integers big-endian)::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 = uint8 (the only type MNIST-style files use)
    byte  3     number of dimensions d
    4*d bytes   the d sizes, each a uint32
    then        prod(sizes) elements, row-major

Fashion-MNIST ships four such files, each gzip-compressed: images are ``(N, 28, 28)`` uint8 and
labels ``(N,)`` uint8 in 0..9. Every way a file can be broken (not gzip, cut short, wrong magic,
extra bytes, images and labels of different lengths, labels out of range) raises
:class:`~cnnlab.errors.CnnlabError` with one line naming the file and the fault.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from cnnlab import fileio
from cnnlab.errors import CnnlabError

_UINT8 = 0x08


def _decompress(path: Path) -> bytes:
    """Return the decompressed bytes of a gzip file; CnnlabError if it is not gzip or is cut short."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CnnlabError(f"{path}: file not found") from None
    except OSError as e:
        raise CnnlabError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] != b"\x1f\x8b":
        raise CnnlabError(f"{path}: not a gzip file (an IDX .gz file must start with bytes 1f 8b)")
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise CnnlabError(f"{path}: truncated gzip data (the download was probably cut short)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise CnnlabError(f"{path}: corrupt gzip data ({e})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one gzip-compressed IDX file of uint8 elements.

    Args:
      path: a ``*-idx?-ubyte.gz`` file.

    Returns:
      uint8 array with the shape stored in the header, e.g. ``(60000, 28, 28)`` or ``(60000,)``.

    Raises:
      CnnlabError: not gzip, truncated, wrong magic, unsupported element type, or a size that
        does not match the header.
    """
    path = Path(path)
    data = _decompress(path)
    if len(data) < 4:
        raise CnnlabError(f"{path}: truncated IDX header ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or ndim == 0:
        raise CnnlabError(f"{path}: not an IDX file (magic bytes {data[:4].hex(' ')}; expected "
                          "00 00 08 and the number of dimensions)")
    if dtype != _UINT8:
        raise CnnlabError(f"{path}: IDX element type 0x{dtype:02x} is not supported (only uint8, 0x08)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CnnlabError(f"{path}: truncated IDX header ({len(data)} bytes, expected {header})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    got = len(data) - header
    if got < expected:
        raise CnnlabError(f"{path}: truncated: header says shape {shape} ({expected:,} bytes) "
                          f"but only {got:,} bytes follow")
    if got > expected:
        raise CnnlabError(f"{path}: {got - expected:,} unexpected bytes after the {shape} array")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_images_and_labels(images_path: str | os.PathLike, labels_path: str | os.PathLike, *,
                           num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read a matching pair of IDX files.

    Returns:
      images uint8 ``(N, H, W, 1)`` and labels int32 ``(N,)`` with values in ``[0, num_classes)``.

    Raises:
      CnnlabError: either file is broken (see :func:`read_idx`), the images are not 3-D, the labels
        not 1-D, the counts differ, or a label is out of range.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise CnnlabError(f"{images_path}: expected an (N, H, W) image array, found shape {images.shape}")
    if labels.ndim != 1:
        raise CnnlabError(f"{labels_path}: expected an (N,) label array, found shape {labels.shape}")
    if len(images) != len(labels):
        raise CnnlabError(f"{images_path} has {len(images):,} images but {labels_path} has "
                          f"{len(labels):,} labels; the files do not belong together")
    if len(labels) and labels.max() >= num_classes:
        raise CnnlabError(f"{labels_path}: label {labels.max()} out of range 0..{num_classes - 1}")
    return images[..., None], labels.astype(np.int32)


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compresslevel: int = 9) -> None:
    """Write a uint8 array as a gzip-compressed IDX file, atomically (temp file + rename).

    ``mtime=0`` and no file name in the gzip header make the bytes depend only on the array, so
    the same data always gives the same sha256.
    """
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"IDX writer supports uint8 only, got {array.dtype}")
    header = struct.pack(">HBB", 0, _UINT8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with fileio.atomic_open(path, "wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0) as gz:
        gz.write(header)
        gz.write(array.tobytes())
