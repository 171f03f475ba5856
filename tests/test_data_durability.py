"""Bad data never destroys good data (issue 11, point 5).

A good prepared copy exists in the shared TFDS data dir; then the same data dir is handed corrupt
files (truncated or wrong IDX files, a pickle that names a forbidden global, a cut-short archive),
an image folder gains a broken file or loses every usable image of a class, or a preparation is
killed with SIGKILL halfway. Every time the good copy must stay byte for byte (same files, same
inodes, same contents), and once the files are good again it is reused without preparing anything.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import cnnlab.data as data
from cnnlab.data import cifar10, dataset, fashion_mnist
from cnnlab.data.idx import read_idx, write_idx
from cnnlab.data.image_folder import load_image_folder
from cnnlab.errors import CnnlabError

sys.path.insert(0, str(Path(__file__).parent))
from data_files import cifar10_archive, py2_pickle, write_cifar10, write_mnist  # noqa: E402
from test_image_folder import make_folder  # noqa: E402


def snapshot(tfds_dir: Path) -> dict[str, tuple[int, str]]:
    """Every file of every prepared copy: relative path -> (inode, sha256)."""
    files = {}
    for path in sorted(tfds_dir.rglob("*")):
        if path.is_file() and "downloads" not in path.parts and not path.name.endswith(".lock"):
            files[str(path.relative_to(tfds_dir))] = (path.stat().st_ino,
                                                      hashlib.sha256(path.read_bytes()).hexdigest())
    return files


def copies(tfds_dir: Path, builder: str) -> list[Path]:
    """The complete prepared copies of ``builder`` (a version dir appears only when complete)."""
    return sorted(p for p in (tfds_dir / builder).glob("*/1.0.0"))


# --- corrupt files in the data dir of a prepared data set -----------------------------------------

def _cut_in_half(path: Path):  # a truncated gzip, batch, archive or decoded copy
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _truncate_idx_payload(path: Path):  # valid gzip, but fewer bytes than the IDX header says
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 3]))


def _drop_a_label(path: Path):
    write_idx(path, read_idx(path)[:-1])


def _forbidden_global(path: Path):
    class Payload:
        def __reduce__(self):
            return os.system, ("echo pwned",)
    path.write_bytes(py2_pickle({b"data": Payload(), b"labels": []}))


def _write_fashion(d: Path):
    d.mkdir(parents=True)
    for name in fashion_mnist.ALL_FILES:
        shutil.copy(fashion_mnist.SUBSET_DIR / name, d / name)


def _write_archive(d: Path):
    write_cifar10(d.parent / "batches", per_batch=4)
    d.mkdir(parents=True)
    cifar10_archive(d.parent / "batches", d / cifar10.ARCHIVE)


CASES = {  # name -> (data set, write good files into D, file to break, how, expected message)
    "fashion truncated gzip": ("fashion_mnist", _write_fashion, "train-images-idx3-ubyte.gz",
                               _cut_in_half, "truncated gzip"),
    "fashion truncated idx": ("fashion_mnist", _write_fashion, "t10k-images-idx3-ubyte.gz",
                              _truncate_idx_payload, "truncated: header says shape"),
    "fashion mismatched labels": ("fashion_mnist", _write_fashion, "t10k-labels-idx1-ubyte.gz",
                                  _drop_a_label, "the files do not belong together"),
    "mnist truncated gzip": ("mnist", write_mnist, "train-labels-idx1-ubyte.gz", _cut_in_half,
                             "truncated gzip"),
    "cifar10 forbidden global": ("cifar10", write_cifar10, "data_batch_4", _forbidden_global,
                                 "refused to unpickle posix.system"),
    "cifar10 truncated batch": ("cifar10", write_cifar10, "test_batch", _cut_in_half, "truncated"),
    "cifar10 truncated archive": ("cifar10", _write_archive, cifar10.ARCHIVE, _cut_in_half,
                                  "not a readable .tar.gz archive"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_corrupt_files_never_replace_the_good_prepared_copy(tmp_path, capfd, case):
    name, write, broken, corrupt, fault = CASES[case]
    files, tfds_dir = tmp_path / "files", tmp_path / "tfds"
    write(files)
    good = data.load(name, data_dir=files, tfds_dir=tfds_dir)
    before = snapshot(tfds_dir)
    assert len(copies(tfds_dir, f"cnnlab_{name}")) == 1
    saved = (files / broken).read_bytes()
    corrupt(files / broken)  # the same --data-dir, now with a corrupt file
    capfd.readouterr()
    with pytest.raises(CnnlabError) as e:
        data.load(name, data_dir=files, tfds_dir=tfds_dir)
    message = str(e.value)
    assert str(files / broken) in message and fault in message and "\n" not in message
    assert "pwned" not in capfd.readouterr().out
    assert snapshot(tfds_dir) == before  # nothing removed, replaced or added
    assert not list((tfds_dir / f"cnnlab_{name}").glob("*/incomplete.*"))
    (files / broken).write_bytes(saved)  # repaired: the good copy is used as it is
    again = data.load(name, data_dir=files, tfds_dir=tfds_dir)
    assert "preparing" not in capfd.readouterr().err
    np.testing.assert_array_equal(again.train.images, good.train.images)
    np.testing.assert_array_equal(again.test.labels, good.test.labels)
    assert snapshot(tfds_dir) == before


# --- an image folder -------------------------------------------------------------------------------

def _load_folder(root, tfds_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_image_folder(root, image_size=16, tfds_dir=tfds_dir)
    return ds, [str(w.message) for w in caught if "image folder" in str(w.message)]


def test_image_folder_changes_never_touch_the_good_prepared_copy(tmp_path, capfd):
    root, tfds_dir = make_folder(tmp_path / "colours", broken=False), tmp_path / "tfds"
    first, warned = _load_folder(root, tfds_dir)
    assert not warned
    before = snapshot(tfds_dir)
    # A broken file joins the folder: prepared beside the first copy (it is skipped, with a warning).
    good_jpg = (root / "red" / "1.jpg").read_bytes()
    (root / "red" / "broken.jpg").write_bytes(good_jpg[: len(good_jpg) // 2])
    with_broken, warned = _load_folder(root, tfds_dir)
    assert "red/broken.jpg (truncated or corrupt, skipped)" in warned[0]
    assert len(copies(tfds_dir, "cnnlab_image_folder")) == 2
    after_second = snapshot(tfds_dir)
    assert {k: v for k, v in after_second.items() if k in before} == before
    # Every image of a class becomes unreadable: the preparation fails, nothing is touched.
    blue = {p: p.read_bytes() for p in (root / "blue").iterdir()}
    for p in blue:
        p.write_bytes(b"this is not an image any more")
    with pytest.raises(CnnlabError, match="class 'blue' has 0 usable image"):
        _load_folder(root, tfds_dir)
    assert snapshot(tfds_dir) == after_second
    # The first files again (new mtimes, same contents): the first copy, not prepared again.
    for p, content in blue.items():
        p.write_bytes(content)
    (root / "red" / "broken.jpg").unlink()
    capfd.readouterr()
    again, _ = _load_folder(root, tfds_dir)
    assert "preparing" not in capfd.readouterr().err
    np.testing.assert_array_equal(again.train.images, first.train.images)
    assert snapshot(tfds_dir) == after_second


# --- a preparation killed halfway --------------------------------------------------------------------

def test_a_preparation_killed_with_sigkill_leaves_the_good_copy_and_prepares_again(tmp_path, capfd):
    tfds_dir = tmp_path / "tfds"
    small = write_mnist(tmp_path / "small")
    data.load("mnist", data_dir=tmp_path / "small", tfds_dir=tfds_dir)
    before = snapshot(tfds_dir)
    big = write_mnist(tmp_path / "big", train=20_000, test=100, seed=1, compresslevel=1)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, cnnlab.data as d; "
         "d.load('mnist', data_dir=sys.argv[1], tfds_dir=sys.argv[2])", tmp_path / "big", tfds_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((tfds_dir / "cnnlab_mnist").glob("src-*/incomplete.*")):
        assert child.poll() is None, "the preparation ended before it could be interrupted"
        assert time.monotonic() < deadline, "no preparation started within 120 s"
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)  # mid-preparation: no cleanup runs, the lock dies with it
    assert child.wait(timeout=60) == -signal.SIGKILL
    leftovers = list((tfds_dir / "cnnlab_mnist").glob("src-*/incomplete.*"))
    assert leftovers and len(copies(tfds_dir, "cnnlab_mnist")) == 1  # half-written, never in place
    assert {k: v for k, v in snapshot(tfds_dir).items() if "incomplete." not in k} == before
    capfd.readouterr()
    ds = data.load("mnist", data_dir=tmp_path / "small", tfds_dir=tfds_dir)  # the good copy, as it was
    assert "preparing" not in capfd.readouterr().err
    np.testing.assert_array_equal(ds.train.images, small["train"][0])
    ds = data.load("mnist", data_dir=tmp_path / "big", tfds_dir=tfds_dir)  # prepared again, whole
    np.testing.assert_array_equal(ds.train.images, big["train"][0])
    np.testing.assert_array_equal(ds.test.labels, big["test"][1])
    assert not any(p.exists() for p in leftovers) and len(copies(tfds_dir, "cnnlab_mnist")) == 2
    assert {k: v for k, v in snapshot(tfds_dir).items() if k in before} == before


# --- the decoded copy beside the records (cnnlab.data.dataset.read_split_cached) --------------------

def _flip_a_byte(path: Path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the images: only the zip member's CRC-32 can tell
    path.write_bytes(bytes(raw))


def _int64_labels(path: Path):  # the right stamp, the wrong dtype
    with np.load(path) as saved:
        arrays = dict(saved)
    np.savez(path, **{**arrays, "labels": arrays["labels"].astype(np.int64)})


def _records_rewritten(path: Path):  # a copy of other records, which have changed since
    with np.load(path) as saved:
        arrays = dict(saved)
    np.savez(path, **{**arrays, "images": np.zeros_like(arrays["images"])})
    for record in path.parent.parent.glob("*-train.array_record-*"):
        os.utime(record, ns=(time.time_ns(), time.time_ns() + 10**9))


def _not_a_directory(path: Path):  # nothing can be written there, whoever runs the test
    shutil.rmtree(path.parent)
    path.parent.write_text("not a directory")


DECODED_DAMAGE = {"a flipped byte": _flip_a_byte, "cut in half": _cut_in_half,
                  "int64 labels": _int64_labels, "stale": _records_rewritten,
                  "unwritable": _not_a_directory}


@pytest.fixture(scope="module")
def fashion_files(tmp_path_factory):
    files = tmp_path_factory.mktemp("fashion") / "files"
    _write_fashion(files)
    return files


def test_the_second_load_reads_the_decoded_copy_not_the_records(tmp_path, fashion_files,
                                                                monkeypatch):
    first = data.load("fashion_mnist", data_dir=fashion_files, tfds_dir=tmp_path)
    decoded = sorted(p.name for p in tmp_path.rglob(f"{dataset.ARRAYS_DIR}/*.npz"))
    assert decoded == ["test-image-label.npz", "train-image-label.npz"]

    def no_records(*args, **kwargs):
        raise AssertionError("the records were read again")

    monkeypatch.setattr(dataset, "read_split", no_records)
    again = data.load("fashion_mnist", data_dir=fashion_files, tfds_dir=tmp_path)
    for a, b in ((first.train, again.train), (first.test, again.test)):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert b.labels.dtype == np.int32 and b.images.dtype == np.uint8


@pytest.mark.parametrize("damage", list(DECODED_DAMAGE))
def test_a_bad_decoded_copy_is_read_from_the_records_again(tmp_path, fashion_files, damage):
    good = data.load("fashion_mnist", data_dir=fashion_files, tfds_dir=tmp_path)
    [decoded] = tmp_path.rglob(f"{dataset.ARRAYS_DIR}/train-image-label.npz")
    DECODED_DAMAGE[damage](decoded)
    records = {p: p.read_bytes() for p in decoded.parent.parent.glob("*.array_record-*")}
    again = data.load("fashion_mnist", data_dir=fashion_files, tfds_dir=tmp_path)
    np.testing.assert_array_equal(again.train.images, good.train.images)
    np.testing.assert_array_equal(again.train.labels, good.train.labels)
    assert again.train.labels.dtype == np.int32
    assert {p: p.read_bytes() for p in records} == records  # the records are only read
    if damage != "unwritable":  # written again, and good: a third load reads it
        with np.load(decoded) as saved:
            np.testing.assert_array_equal(saved["images"], good.train.images)
            assert saved["labels"].dtype == np.int32
