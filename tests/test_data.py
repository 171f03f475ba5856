"""cnnlab.data: IDX reader, TFDS builders, lookup and fallback, embedded subset, batches, augmentation.

Everything runs on real data: the embedded subset, the Debian Fashion-MNIST files where installed,
scikit-learn's digits, and real TFDS preparation into temporary TFDS data dirs. Nothing downloads.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

import cnnlab.data as data
from cnnlab.data import builders, fashion_mnist, preparation
from cnnlab.data.idx import read_idx, read_images_and_labels, write_idx
from cnnlab.data.sources import Sources
from cnnlab.errors import CnnlabError

SUBSET = fashion_mnist.SUBSET_DIR
MANIFEST = json.loads((SUBSET / "manifest.json").read_text())
DEBIAN = Path(fashion_mnist.SYSTEM_DIRS[0])
SUBSET_KEY = Sources.local(SUBSET, fashion_mnist.ALL_FILES).fingerprint  # the copy's config name


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def subset_arrays(split: str):
    images, labels = fashion_mnist.FILES[split]
    return read_images_and_labels(SUBSET / images, SUBSET / labels)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> Path:
    """One TFDS data dir for the module, so each builder prepares once."""
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def subset_ds(tfds_dir) -> data.Dataset:
    return data.load("fashion_mnist_subset", tfds_dir=tfds_dir)


@pytest.fixture(scope="module")
def digits_ds(tfds_dir) -> data.Dataset:
    return data.load("digits", tfds_dir=tfds_dir)


@pytest.fixture
def idx_dir(tmp_path) -> Path:
    """A writable copy of the subset's four IDX files (a stand-in for a user's data dir)."""
    d = tmp_path / "idx"
    d.mkdir()
    for name in fashion_mnist.ALL_FILES:
        shutil.copy(SUBSET / name, d / name)
    return d


# --- the embedded subset -------------------------------------------------------------------------

def test_subset_files_match_manifest_checksums():
    assert set(MANIFEST["files"]) == set(fashion_mnist.ALL_FILES)
    for name, digest in MANIFEST["files"].items():
        assert sha256(SUBSET / name) == digest, name


@pytest.mark.parametrize("split, per_class", [("train", 600), ("test", 100)])
def test_subset_is_stratified(split, per_class):
    images, labels = subset_arrays(split)
    assert images.shape == (10 * per_class, 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [per_class] * 10)
    indices = MANIFEST["source_indices"][split]
    assert len(indices) == len(set(indices)) == 10 * per_class and indices == sorted(indices)
    assert MANIFEST["per_class"][split] == per_class


@pytest.mark.requires_full_data
@pytest.mark.parametrize("split", ["train", "test"])
def test_subset_images_are_the_recorded_images_of_the_full_data(split):
    images_name, labels_name = fashion_mnist.FILES[split]
    for name in (images_name, labels_name):  # the full files are the ones the subset was made from
        raw = gzip.decompress((DEBIAN / name).read_bytes())
        assert hashlib.sha256(raw).hexdigest() == MANIFEST["source"][name]["sha256"], name
    full_images, full_labels = read_images_and_labels(DEBIAN / images_name, DEBIAN / labels_name)
    images, labels = subset_arrays(split)
    idx = np.array(MANIFEST["source_indices"][split])
    np.testing.assert_array_equal(images, full_images[idx])
    np.testing.assert_array_equal(labels, full_labels[idx])


@pytest.mark.requires_full_data
def test_make_subset_selects_the_recorded_indices():
    # Rerunning the whole script takes seconds (gzip -9); its selection step is what matters: the
    # files themselves are pinned by the checksum and full-data tests above and by write_idx's
    # deterministic output (test_idx_round_trip).
    spec = importlib.util.spec_from_file_location("make_subset", SUBSET / "make_subset.py")
    make_subset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_subset)
    rng = np.random.default_rng(MANIFEST["seed"])
    for split, (_, labels_name) in fashion_mnist.FILES.items():  # train first, as the script does
        labels = read_idx(DEBIAN / labels_name)
        indices = make_subset.select(labels, make_subset.PER_CLASS[split], rng)
        assert indices.tolist() == MANIFEST["source_indices"][split], split


# --- IDX reader ----------------------------------------------------------------------------------

def test_idx_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 3, 4), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)
    write_idx(tmp_path / "b.gz", array)  # deterministic bytes: same data, same checksum
    assert sha256(tmp_path / "a.gz") == sha256(tmp_path / "b.gz")


def _gz(path: Path, payload: bytes) -> Path:
    path.write_bytes(gzip.compress(payload))
    return path


@pytest.mark.parametrize("make, fault", [
    (lambda p: p.write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 20), "not a gzip file"),
    (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x03abc")[:-10]), "truncated gzip"),
    (lambda p: _gz(p, b"\x12\x34\x08\x01\x00\x00\x00\x03abc"), "not an IDX file"),
    (lambda p: _gz(p, b"\x00\x00\x0d\x01\x00\x00\x00\x03abc"), "not supported"),
    (lambda p: _gz(p, b"\x00\x00\x08\x03\x00\x00"), "truncated IDX header"),
    (lambda p: _gz(p, b"\x00\x00\x08\x02\x00\x00\x00\x03\x00\x00\x00\x02abcde"), "truncated"),
    (lambda p: _gz(p, b"\x00\x00\x08\x01\x00\x00\x00\x03abcd"), "unexpected bytes"),
])
def test_broken_idx_files_raise_one_line_naming_the_file(tmp_path, make, fault):
    path = tmp_path / "broken-idx1-ubyte.gz"
    make(path)
    with pytest.raises(CnnlabError) as e:
        read_idx(path)
    message = str(e.value)
    assert str(path) in message and fault in message and "\n" not in message


def test_missing_idx_file_is_a_cnnlab_error(tmp_path):
    with pytest.raises(CnnlabError, match="file not found"):
        read_idx(tmp_path / "nothing.gz")


def test_images_and_labels_must_belong_together(idx_dir):
    labels = read_idx(idx_dir / "t10k-labels-idx1-ubyte.gz")
    write_idx(idx_dir / "t10k-labels-idx1-ubyte.gz", labels[:-1])
    with pytest.raises(CnnlabError, match="1,000 images but .* 999 labels"):
        read_images_and_labels(idx_dir / "t10k-images-idx3-ubyte.gz", idx_dir / "t10k-labels-idx1-ubyte.gz")
    write_idx(idx_dir / "t10k-labels-idx1-ubyte.gz", np.where(labels == 3, 10, labels).astype(np.uint8))
    with pytest.raises(CnnlabError, match="label 10 out of range 0..9"):
        read_images_and_labels(idx_dir / "t10k-images-idx3-ubyte.gz", idx_dir / "t10k-labels-idx1-ubyte.gz")


def test_truncated_file_in_data_dir_fails_cleanly_and_leaves_nothing_prepared(idx_dir, tmp_path):
    bad = idx_dir / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:100_000])
    tfds_dir = tmp_path / "tfds"
    with pytest.raises(CnnlabError, match="train-images-idx3-ubyte.gz: truncated gzip"):
        data.load("fashion_mnist", data_dir=idx_dir, tfds_dir=tfds_dir)
    assert not list((tfds_dir / "cnnlab_fashion_mnist").glob("src-*/*"))  # no half-written data
    shutil.copy(SUBSET / bad.name, bad)  # repaired: the next load prepares normally
    ds = data.load("fashion_mnist", data_dir=idx_dir, tfds_dir=tfds_dir)
    assert len(ds.train) == 6000


# --- TFDS builders and load() --------------------------------------------------------------------

def test_names():
    assert data.names() == ["fashion_mnist", "fashion_mnist_subset", "mnist", "cifar10", "digits"]


def test_subset_builder_output_equals_the_idx_contents(subset_ds, tfds_dir):
    for split in ("train", "test"):
        images, labels = subset_arrays(split)
        got = getattr(subset_ds, split)
        assert got.images.dtype == np.uint8 and got.labels.dtype == np.int32
        np.testing.assert_array_equal(got.images, images)
        np.testing.assert_array_equal(got.labels, labels)
    assert subset_ds.class_names == fashion_mnist.CLASS_NAMES
    assert subset_ds.source == "embedded Fashion-MNIST subset (6,000/1,000)"
    assert subset_ds.image_shape == (28, 28, 1) and subset_ds.num_classes == 10
    prepared = tfds_dir / "cnnlab_fashion_mnist" / SUBSET_KEY / "1.0.0"
    assert sorted(p.name for p in prepared.glob("*.array_record*")) == [
        "cnnlab_fashion_mnist-test.array_record-00000-of-00001",
        "cnnlab_fashion_mnist-train.array_record-00000-of-00001"]


def test_prepared_data_reads_back_with_tfds_data_source(subset_ds, tfds_dir):
    source = tfds.data_source(f"cnnlab_fashion_mnist/{SUBSET_KEY}", data_dir=tfds_dir, split="test",
                              try_gcs=False)
    assert len(source) == 1000
    for i in (0, 123, 999):  # random access, TFDS's own decoding
        np.testing.assert_array_equal(source[i]["image"], subset_ds.test.images[i])
        assert source[i]["label"] == subset_ds.test.labels[i]


def test_fast_reader_agrees_with_tfds_decoding(subset_ds, tfds_dir):
    config = builders.CnnlabFashionMnist.config_for(Sources.local(SUBSET, fashion_mnist.ALL_FILES))
    builder = builders.CnnlabFashionMnist(config=config, data_dir=tfds_dir)
    slow = data.read_split(builder, "test", fast=False)
    np.testing.assert_array_equal(slow.images, subset_ds.test.images)
    np.testing.assert_array_equal(slow.labels, subset_ds.test.labels)


def test_second_load_reuses_the_prepared_files(subset_ds, tfds_dir):
    prepared = tfds_dir / "cnnlab_fashion_mnist" / SUBSET_KEY / "1.0.0"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in prepared.iterdir()}
    again = data.load("fashion_mnist_subset", tfds_dir=tfds_dir)
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in prepared.iterdir()} == before
    np.testing.assert_array_equal(again.train.images, subset_ds.train.images)


def test_fashion_mnist_falls_back_to_the_subset_and_says_so(subset_ds, tfds_dir, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(empty))
    ds = data.load_fashion_mnist(tfds_dir=tfds_dir, system_dirs=[tmp_path / "no-debian-here"])
    assert ds.name == "fashion_mnist"
    assert ds.source.startswith("embedded Fashion-MNIST subset (6,000/1,000; full data not found in ")
    assert str(empty) in ds.source and "no-debian-here" in ds.source
    np.testing.assert_array_equal(ds.test.images, subset_ds.test.images)


def test_lookup_order_data_dir_then_env_then_system(idx_dir, tmp_path, monkeypatch):
    other = tmp_path / "other" / "fashion-mnist"  # D/fashion-mnist counts as D
    shutil.copytree(idx_dir, other)
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(other.parent))
    assert fashion_mnist.find(idx_dir).directory == idx_dir
    assert fashion_mnist.find(None, system_dirs=[idx_dir]).directory == other
    monkeypatch.delenv("CNNLAB_DATA_DIR")
    assert fashion_mnist.find(None, system_dirs=[tmp_path / "nothing", idx_dir]).directory == idx_dir


def test_changed_files_in_a_data_dir_are_prepared_beside_the_first_copy(idx_dir, tmp_path):
    tfds_dir = tmp_path / "tfds"
    ds = data.load("fashion_mnist", data_dir=idx_dir, tfds_dir=tfds_dir)
    assert ds.source == f"full Fashion-MNIST (6,000/1,000) from {idx_dir}"
    first = list((tfds_dir / "cnnlab_fashion_mnist").glob("src-*/1.0.0"))
    for name, n in [("t10k-images-idx3-ubyte.gz", 50), ("t10k-labels-idx1-ubyte.gz", 50)]:
        write_idx(idx_dir / name, read_idx(idx_dir / name)[:n])  # other files, same names
    ds = data.load("fashion_mnist", data_dir=idx_dir, tfds_dir=tfds_dir)
    assert len(ds.test) == 50 and len(ds.train) == 6000
    copies = list((tfds_dir / "cnnlab_fashion_mnist").glob("src-*/1.0.0"))
    assert len(first) == 1 and len(copies) == 2 and first[0] in copies


@pytest.mark.parametrize("level", [logging.DEBUG, logging.WARNING, logging.ERROR])
def test_quiet_data_loading_gives_back_the_absl_level_it_found(level):
    absl_logger = logging.getLogger("absl")
    before = absl_logger.level
    absl_logger.setLevel(level)
    try:
        with preparation.quiet():
            assert not absl_logger.isEnabledFor(logging.WARNING)
        assert absl_logger.level == level
    finally:
        absl_logger.setLevel(before)


def test_explicit_data_dir_without_the_files_names_where_it_looked(tmp_path):
    with pytest.raises(CnnlabError, match=f"not found in {tmp_path} \\(missing train-images-idx3"):
        data.load("fashion_mnist", data_dir=tmp_path, tfds_dir=tmp_path / "tfds")
    with pytest.raises(CnnlabError, match=f"data dir {tmp_path / 'nope'} does not exist"):
        data.load("fashion_mnist", data_dir=tmp_path / "nope", tfds_dir=tmp_path / "tfds")


@pytest.mark.requires_full_data
def test_default_lookup_finds_the_debian_files(monkeypatch):
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    assert fashion_mnist.find() == fashion_mnist.IdxSource("full", DEBIAN)


def test_digits(digits_ds):
    ds = digits_ds
    assert (len(ds.train), len(ds.test)) == (1437, 360)
    assert ds.image_shape == (8, 8, 1) and ds.train.images.dtype == np.uint8
    assert ds.class_names == tuple("0123456789") and ds.source.startswith("scikit-learn digits (1,437/360")
    # Stratified: every class has its share of the test split (to within one image).
    counts, test_counts = np.bincount(load_digits().target), np.bincount(ds.test.labels)
    assert np.all(np.abs(test_counts - counts * 360 / 1797) <= 1)
    # The images are sklearn's, scaled 0..16 -> 0..255, split without loss or overlap.
    ref = load_digits()
    ref_images = np.rint(ref.images * 255 / 16).astype(np.uint8)[..., None]
    both = np.concatenate([ds.train.images, ds.test.images])
    def key(images, labels):  # the multiset of (image bytes, label) pairs
        return sorted(zip(map(bytes, images.reshape(len(images), -1)), labels.tolist(), strict=True))
    assert key(both, np.concatenate([ds.train.labels, ds.test.labels])) == key(ref_images, ref.target)
    assert both.max() == 255


def test_catalog_names_load_prepared_tfds_datasets(digits_ds, tfds_dir):
    # cnnlab_digits is a registered TFDS builder, prepared above: the catalog path reads it.
    ds = data.load("cnnlab_digits", tfds_dir=tfds_dir)
    np.testing.assert_array_equal(ds.test.images, digits_ds.test.images)
    assert ds.class_names == digits_ds.class_names and "cnnlab_digits/1.0.0" in ds.source


def test_catalog_dataset_not_prepared_says_how_without_downloading(tmp_path):
    with pytest.raises(CnnlabError) as e:
        data.load("kmnist", tfds_dir=tmp_path)
    message = str(e.value)
    assert f"not prepared in {tmp_path}" in message and "tfds build kmnist" in message
    assert "needs TensorFlow" in message and "\n" not in message
    assert not (tmp_path / "kmnist").exists() and not (tmp_path / "downloads").exists()


@pytest.mark.parametrize("name", ["fashion_mnst", "no_such_dataset", "Fashion-MNIST"])
def test_unknown_dataset_names_list_the_valid_ones(name, tmp_path):
    valid = "valid: fashion_mnist, fashion_mnist_subset, mnist, cifar10, digits"
    with pytest.raises(CnnlabError, match=valid):
        data.load(name, tfds_dir=tmp_path)


def test_data_dir_only_applies_to_data_sets_made_from_files(tmp_path):
    with pytest.raises(CnnlabError, match="only applies to fashion_mnist, mnist, cifar10, not to 'digits'"):
        data.load("digits", data_dir=tmp_path, tfds_dir=tmp_path)


# --- epochs and batches --------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 300), batch=st.integers(1, 300), seed=st.integers(0, 2**31), epoch=st.integers(0, 50),
       drop=st.booleans())
def test_batch_indices(n, batch, seed, epoch, drop):
    if batch > n:
        with pytest.raises(CnnlabError, match=f"batch size {batch} is larger than the data set"):
            data.batch_indices(n, batch, seed=seed, epoch=epoch)
        return
    b = data.batch_indices(n, batch, seed=seed, epoch=epoch, drop_remainder=drop)
    assert b.dtype == np.int32 and b.shape[1] == batch
    if drop:
        assert b.shape[0] == n // batch and len(np.unique(b)) == b.size
        np.testing.assert_array_equal(b.ravel(), data.epoch_permutation(n, seed=seed, epoch=epoch)[:b.size])
    else:
        assert b.shape[0] == -(-n // batch)
        np.testing.assert_array_equal(np.sort(b.ravel()[:n]), np.arange(n))  # each example once
        assert data.batch_mask(n, batch).sum() == n and data.batch_mask(n, batch).shape == b.shape
    again = data.batch_indices(n, batch, seed=seed, epoch=epoch, drop_remainder=drop)
    np.testing.assert_array_equal(b, again)


def test_epochs_shuffle_differently_and_reproducibly():
    p0 = data.epoch_permutation(1000, seed=3, epoch=0)
    np.testing.assert_array_equal(p0, data.epoch_permutation(1000, seed=3, epoch=0))
    assert not np.array_equal(p0, data.epoch_permutation(1000, seed=3, epoch=1))
    assert not np.array_equal(p0, data.epoch_permutation(1000, seed=4, epoch=0))
    np.testing.assert_array_equal(data.batch_indices(10, 5, seed=0, epoch=0, shuffle=False),
                                  [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])


@pytest.mark.parametrize("batch", [0, -1, 7001])
def test_bad_batch_sizes(batch, subset_ds):
    with pytest.raises(CnnlabError, match="batch size"):
        data.batch_indices(len(subset_ds.test), batch, seed=0, epoch=0)


# --- augmentation --------------------------------------------------------------------------------

def _images(shape, seed=0):
    """Random uint8 images in 1..255 (so zero padding is visible)."""
    return np.random.default_rng(seed).integers(1, 256, shape, dtype=np.uint8)


def test_normalize():
    x = data.normalize(np.array([[[[0]], [[51]], [[255]]]], np.uint8))
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.asarray(x).ravel(), [0.0, 0.2, 1.0])


def test_random_flip_mirrors_about_half_of_the_images_each_on_its_own():
    images = _images((400, 5, 7, 2))
    out = np.asarray(data.random_flip(jax.random.key(0), images))
    same = np.all(out == images, axis=(1, 2, 3))
    mirrored = np.all(out == images[:, :, ::-1, :], axis=(1, 2, 3))
    assert np.all(same ^ mirrored)  # every image is itself or its left-right mirror
    assert 150 < mirrored.sum() < 250
    again = np.asarray(data.random_flip(jax.random.key(0), images))
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, np.asarray(data.random_flip(jax.random.key(1), images)))


# Every new shape compiles anew (about 0.3 s), hence few examples; the explicit ones are the edges.
@settings(max_examples=6, deadline=None)
@example(n=1, h=1, w=1, c=1, pad=3, seed=0)
@example(n=3, h=28, w=28, c=1, pad=2, seed=1)
@given(n=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 3),
       pad=st.integers(0, 3), seed=st.integers(0, 1000))
def test_random_crop_cuts_a_window_of_the_padded_image(n, h, w, c, pad, seed):
    images = _images((n, h, w, c), seed)
    out = np.asarray(data.random_crop(jax.random.key(seed), images, pad=pad))
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    for i in range(n):
        windows = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if np.array_equal(out[i], padded[i, dy:dy + h, dx:dx + w])]
        assert windows, f"image {i} is no window of its padded input"


def test_random_crop_offsets_vary_per_image():
    images = np.broadcast_to(_images((1, 12, 12, 1)), (64, 12, 12, 1))
    out = np.asarray(data.random_crop(jax.random.key(0), images, pad=2))
    assert len({o.tobytes() for o in out}) > 10


def _erased_rectangle(before: np.ndarray, after: np.ndarray):
    """(top, left, height, width) of the one all-channel rectangle where ``after`` is 0 and
    ``before`` is not, None when nothing was erased; fails if the changed pixels are not one
    rectangle set to 0 or anything else changed."""
    changed = np.any(after != before, axis=-1)  # (H, W)
    if not changed.any():
        return None
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    top, left = rows[0], cols[0]
    height, width = rows[-1] - top + 1, cols[-1] - left + 1
    assert changed[top:top + height, left:left + width].all(), "changed pixels are no rectangle"
    assert np.all(after[top:top + height, left:left + width] == 0), "erased pixels are not 0"
    return top, left, height, width


def test_random_erase_zeroes_one_rectangle_per_image_within_the_area_bounds():
    images = _images((300, 28, 28, 2))  # no pixel is 0 before erasing
    out = np.asarray(data.random_erase(jax.random.key(0), images, prob=0.5))
    assert out.shape == images.shape and out.dtype == np.uint8
    boxes = [_erased_rectangle(images[i], out[i]) for i in range(len(images))]
    erased = [b for b in boxes if b is not None]
    assert 110 < len(erased) < 190  # about prob = 0.5 of the images
    areas = np.array([h * w for _, _, h, w in erased])
    # a ~ U(0.02, 0.4) of 784 pixels, rounding each side by up to half a pixel.
    assert areas.min() >= 0.02 * 784 - 0.5 * 56 and areas.max() <= 0.4 * 784 + 0.5 * 56 + 0.25
    assert areas.max() > 0.3 * 784 and areas.min() < 0.1 * 784  # the whole range is used
    assert len({(top, left) for top, left, _, _ in erased}) > 50  # positions vary per image
    assert {h > w for _, _, h, w in erased} == {True, False}  # tall and wide ones
    np.testing.assert_array_equal(out, data.random_erase(jax.random.key(0), images, prob=0.5))
    np.testing.assert_array_equal(data.random_erase(jax.random.key(0), images, prob=0.0), images)
    every = np.asarray(data.random_erase(jax.random.key(1), images, prob=1.0))
    assert all(_erased_rectangle(images[i], every[i]) for i in range(len(images)))
    floats = data.random_erase(jax.random.key(1), data.normalize(images), prob=1.0)
    np.testing.assert_array_equal(np.asarray(floats) == 0, every == 0)  # floats alike


def test_augment_with_erasing_keeps_crops_and_flips_and_erases_on_top():
    images = _images((64, 28, 28, 1))
    plain = np.asarray(data.augment(jax.random.key(3), images, pad=2))
    erased = np.asarray(data.augment(jax.random.key(3), images, pad=2, erase=1.0))
    # Where nothing was erased the crops and flips are those of erase=0 (same key).
    kept = erased != 0
    np.testing.assert_array_equal(erased[kept], plain[kept])
    assert (erased == 0).sum() > (plain == 0).sum() + 64 * 15  # >= 0.02 * 784 per image
    flipped = np.asarray(data.augment(jax.random.key(3), images, pad=0))  # no zero pixels
    erased = np.asarray(data.augment(jax.random.key(3), images, pad=0, erase=1.0))
    assert all(_erased_rectangle(flipped[i], erased[i]) for i in range(64))


def test_augment_is_jittable_deterministic_by_key_and_does_not_mutate():
    images = _images((16, 28, 28, 1))
    before = images.copy()
    step = jax.jit(lambda key, x: data.normalize(data.augment(key, x)))  # as inside a train step
    a = data.augment(jax.random.key(7), images)
    assert a.shape == images.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(step(jax.random.key(7), images), data.normalize(a))
    assert not np.array_equal(a, data.augment(jax.random.key(8), images))
    np.testing.assert_array_equal(images, before)
    np.testing.assert_array_equal(data.augment(jax.random.key(7), images, flip=False, pad=0), images)
    x = data.augment(jax.random.key(7), data.normalize(images))  # works on float batches too
    assert x.dtype == np.float32 and x.shape == images.shape


# --- module structure ----------------------------------------------------------------------------

def _data_module_imports() -> dict[str, set[str]]:
    """cnnlab.data module -> the cnnlab.data modules it imports (anywhere in the file)."""
    package = Path(data.__file__).parent
    graph = {}
    for path in package.glob("*.py"):
        name = f"cnnlab.data.{path.stem}" if path.stem != "__init__" else "cnnlab.data"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnlab.data"):
                targets |= ({f"{node.module}.{a.name}" for a in node.names} | {node.module})
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("cnnlab.data")}
        graph[name] = targets
    return {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}


def test_data_modules_have_no_import_cycle_and_the_core_imports_no_loader():
    graph = _data_module_imports()
    assert graph["cnnlab.data.dataset"] == set()  # the core: Split, Dataset, read_split
    for loader in ("cnnlab.data.loading", "cnnlab.data.image_folder"):
        assert "cnnlab.data.dataset" in graph[loader]
    visiting, done = [], set()

    def visit(module):  # depth-first search; a module met again while still open is a cycle
        assert module not in visiting, f"import cycle: {' -> '.join([*visiting, module])}"
        if module in done:
            return
        visiting.append(module)
        for target in graph[module] - {"cnnlab.data"}:
            visit(target)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_importing_cnnlab_data_does_not_import_tensorflow_datasets():
    code = "import sys, cnnlab.data; print('tensorflow_datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
