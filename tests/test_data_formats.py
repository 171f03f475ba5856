"""MNIST and CIFAR-10 through cnnlab's own TFDS builders, from files the tests write in the original
formats (gzip IDX; Python 2 pickles), from a --data-dir or "downloaded" from a local HTTP server
(TFDS's download manager, checksums verified); offline fails in one line within seconds.
Nothing here touches the internet, and nothing imports TensorFlow."""

from __future__ import annotations

import functools
import http.server
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import cnnlab.data as data
from cnnlab.data import builders, cifar10, mnist, preparation
from cnnlab.data.sources import Download, sha256
from cnnlab.errors import CnnlabError

sys.path.insert(0, str(Path(__file__).parent))
from data_files import cifar10_archive, py2_pickle, write_cifar10, write_mnist  # noqa: E402


def assert_equal_split(split, arrays):
    images, labels = arrays
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.labels, labels)


# --- from a data dir ------------------------------------------------------------------------------

def test_mnist_from_a_data_dir(tmp_path):
    arrays = write_mnist(tmp_path / "files" / "mnist")  # D/mnist counts as D
    ds = data.load("mnist", data_dir=tmp_path / "files", tfds_dir=tmp_path / "tfds")
    assert_equal_split(ds.train, arrays["train"])
    assert_equal_split(ds.test, arrays["test"])
    assert ds.class_names == tuple("0123456789") and ds.image_shape == (28, 28, 1)
    assert ds.source == f"MNIST (120/30) from {tmp_path / 'files' / 'mnist'}"
    assert "tensorflow" not in sys.modules


def test_cifar10_from_a_data_dir(tmp_path):
    arrays = write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = data.load("cifar10", data_dir=tmp_path / "cifar-10-batches-py", tfds_dir=tmp_path / "tfds")
    assert_equal_split(ds.train, arrays["train"])  # batches 1..5 in order, RGB planes -> HWC
    assert_equal_split(ds.test, arrays["test"])
    assert ds.class_names == cifar10.CLASS_NAMES and ds.image_shape == (32, 32, 3)
    assert ds.source.startswith("CIFAR-10 (60/12) from ")
    assert "tensorflow" not in sys.modules


def test_cifar10_pixel_layout_is_the_documented_one(tmp_path):
    # One image with a known pixel: data[c * 1024 + y * 32 + x] is channel c at row y, column x.
    data_row = np.zeros((1, 3072), np.uint8)
    data_row[0, 2 * 1024 + 5 * 32 + 7] = 200
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2_pickle({b"data": data_row, b"labels": [3], b"batch_label": b"x",
                                 b"filenames": [b"a.png"]}))
    images, labels = cifar10.read_batch(path)
    assert images.shape == (1, 32, 32, 3) and images[0, 5, 7, 2] == 200 and images.sum() == 200
    assert labels.tolist() == [3]


class _Payload:
    """Unpickling this runs ``os.system(command)``: what a crafted 'data file' can do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_cifar10_pickles_naming_other_globals_are_refused_before_they_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(_Payload(f"touch {marker}"), protocol=protocol))
    with pytest.raises(CnnlabError) as e:
        cifar10.read_batch(path)
    message = str(e.value)
    assert f"{path}: refused to unpickle posix.system" in message and "\n" not in message
    assert not marker.exists()


def _broken(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    return path


def _batch(**override):
    batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}
    batch.update({k.encode(): v for k, v in override.items()})
    return py2_pickle(batch)


@pytest.mark.parametrize("make, fault", [
    (lambda p: p.write_bytes(_batch()[:-200]), "truncated"),
    (lambda p: p.write_bytes(b"\x1f\x8b\x08 this is a gzip header, not a pickle"), "corrupt pickle"),
    (lambda p: p.write_bytes(py2_pickle([1, 2, 3])), "expected a dict with data and labels"),
    (lambda p: p.write_bytes(_batch(data=np.zeros((4, 1024), np.uint8))), "uint8 (N, 3072)"),
    (lambda p: p.write_bytes(_batch(data=np.zeros((4, 3072), np.float32))), "uint8 (N, 3072)"),
    (lambda p: p.write_bytes(_batch(labels=[0, 1, 2])), "4 images but 3 labels"),
    (lambda p: p.write_bytes(_batch(labels=[0, 1, 2, 10])), "label 10 out of range 0..9"),
    (lambda p: p.write_bytes(_batch(labels="0123")), "labels must be a list of integers"),
])
def test_broken_cifar10_batches_raise_one_line_naming_the_file(tmp_path, make, fault):
    path = _broken(tmp_path, "data_batch_2", make)
    with pytest.raises(CnnlabError) as e:
        cifar10.read_batch(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and fault in message and "\n" not in message


def test_cifar10_meta_must_name_the_ten_classes(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    write_cifar10(directory, per_batch=2)
    (directory / "batches.meta").write_bytes(py2_pickle({b"label_names": [b"apple", b"bee"]}))
    with pytest.raises(CnnlabError, match="the classes are apple, bee, not CIFAR-10's"):
        data.load("cifar10", data_dir=directory, tfds_dir=tmp_path / "tfds")


@pytest.mark.parametrize("name, missing", [("mnist", "t10k-labels-idx1-ubyte.gz"),
                                           ("cifar10", "test_batch")])
def test_data_dir_without_the_files_says_which_are_missing(tmp_path, name, missing):
    files = tmp_path / "files"
    (write_mnist if name == "mnist" else write_cifar10)(files)
    (files / missing).unlink()
    with pytest.raises(CnnlabError, match=f"files not found in {files} \\(missing {missing}\\)"):
        data.load(name, data_dir=files, tfds_dir=tmp_path / "tfds")


# --- downloads ------------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server for the files under ``tmp_path/www`` (stands in for the original hosts)."""
    root = tmp_path / "www"
    root.mkdir()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _register(monkeypatch, module, builder_cls, downloads):
    """Make ``downloads`` the registered original files of a data set (URLs and checksums)."""
    monkeypatch.setattr(module, "DOWNLOADS", downloads)
    monkeypatch.setattr(builder_cls, "DOWNLOADS", downloads)


def _downloads_of(directory: Path, base_url: str, names):
    return {n: Download(base_url + n, (directory / n).stat().st_size, sha256(directory / n))
            for n in names}


def test_mnist_downloads_once_with_checksums_then_needs_no_network(tmp_path, server, monkeypatch, capfd):
    root, url = server
    arrays = write_mnist(root / "mnist")
    _register(monkeypatch, mnist, builders.CnnlabMnist,
              _downloads_of(root / "mnist", url + "mnist/", mnist.ALL_FILES))
    ds = data.load("mnist", tfds_dir=tmp_path / "tfds")
    assert_equal_split(ds.train, arrays["train"])
    assert_equal_split(ds.test, arrays["test"])
    assert ds.source == f"MNIST (120/30) downloaded from {url}mnist/"
    assert f"downloading MNIST from {url}mnist/ (0.1 MB)" in capfd.readouterr().err
    # The prepared copy is keyed by the registered checksums: found again without any network.
    for f in mnist.ALL_FILES:
        (root / "mnist" / f).unlink()
    again = data.load("mnist", tfds_dir=tmp_path / "tfds")
    assert_equal_split(again.train, arrays["train"])
    assert "preparing" not in capfd.readouterr().err


def test_cifar10_downloads_the_archive_and_reads_it_as_it_is(tmp_path, server, monkeypatch, capfd):
    root, url = server
    arrays = write_cifar10(tmp_path / "batches", per_batch=3)
    cifar10_archive(tmp_path / "batches", root / cifar10.ARCHIVE)
    _register(monkeypatch, cifar10, builders.CnnlabCifar10,
              _downloads_of(root, url, [cifar10.ARCHIVE]))
    ds = data.load("cifar10", tfds_dir=tmp_path / "tfds")
    assert_equal_split(ds.train, arrays["train"])
    assert_equal_split(ds.test, arrays["test"])
    assert ds.source == f"CIFAR-10 (15/3) downloaded from {url}{cifar10.ARCHIVE}"
    # The same archive in a --data-dir has the same checksum: the same prepared copy, no new one.
    capfd.readouterr()
    local = data.load("cifar10", data_dir=root, tfds_dir=tmp_path / "tfds")
    assert_equal_split(local.test, arrays["test"])
    assert local.source == f"CIFAR-10 (15/3) from {root}"
    assert "preparing" not in capfd.readouterr().err


def test_a_download_that_does_not_match_its_checksum_is_refused(tmp_path, server, monkeypatch):
    root, url = server
    write_mnist(root / "mnist")
    downloads = _downloads_of(root / "mnist", url + "mnist/", mnist.ALL_FILES)
    write_mnist(root / "mnist", seed=1)  # the server now has other files than those registered
    _register(monkeypatch, mnist, builders.CnnlabMnist, downloads)
    with pytest.raises(CnnlabError) as e:
        data.load("mnist", tfds_dir=tmp_path / "tfds")
    message = str(e.value)
    assert message.startswith("could not prepare MNIST") and "checksum" in message.lower()
    assert "\n" not in message
    assert not list((tmp_path / "tfds" / "cnnlab_mnist").glob("src-*/1.0.0"))


def _silent_host():
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener


@pytest.mark.parametrize("host", ["unresolvable", "silent"])
def test_offline_download_fails_in_one_line_within_seconds(tmp_path, monkeypatch, host):
    listener = _silent_host()
    base = ("https://mnist.invalid/" if host == "unresolvable"  # RFC 6761: never resolves
            else f"http://127.0.0.1:{listener.getsockname()[1]}/")
    monkeypatch.setattr(preparation, "PROBE_TIMEOUT", 2.0)
    _register(monkeypatch, mnist, builders.CnnlabMnist,
              {n: Download(base + n, 1000, "0" * 64) for n in mnist.ALL_FILES})
    start = time.monotonic()
    with pytest.raises(CnnlabError) as e:
        data.load("mnist", tfds_dir=tmp_path / "tfds")
    elapsed = time.monotonic() - start
    listener.close()
    message = str(e.value)
    assert message.startswith("cannot download MNIST from ") and "does not answer" in message
    assert "--data-dir" in message and "\n" not in message
    assert elapsed < 30, elapsed  # TFDS's own downloader would retry for minutes
    assert not (tmp_path / "tfds" / "downloads" / "mnist.invalid").exists()


# --- the command line ------------------------------------------------------------------------------

def test_cnnlab_trains_and_evaluates_on_cifar10_from_a_data_dir(tmp_path, tmp_path_factory):
    """The CLI hands --data-dir to cnnlab.data.load for every data set made from files; the run
    records it, so `cnnlab evaluate` finds the same data again."""
    write_cifar10(tmp_path / "cifar", per_batch=8)
    env = {**os.environ, "CNNLAB_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "jax-cache")}
    env.pop("XLA_FLAGS", None)
    cnnlab = [sys.executable, "-m", "cnnlab"]
    train = subprocess.run(
        [*cnnlab, "train", "--dataset", "cifar10", "--data-dir", tmp_path / "cifar", "--tfds-dir",
         tmp_path / "tfds", "--model", "workshop_cnn", "--epochs", "1", "--batch-size", "8",
         "--max-steps-per-epoch", "2", "--eval-batch-size", "8", "--workdir", tmp_path / "run"],
        capture_output=True, text=True, env=env, timeout=300)
    assert train.returncode == 0, train.stderr
    assert f"data: CIFAR-10 (40/8) from {tmp_path / 'cifar'}" in train.stdout
    evaluate = subprocess.run([*cnnlab, "evaluate", "--workdir", tmp_path / "run"],
                              capture_output=True, text=True, env=env, timeout=300)
    assert evaluate.returncode == 0, evaluate.stderr
    assert "test accuracy" in evaluate.stdout and "preparing" not in evaluate.stderr


def test_the_keys_of_the_original_files_are_stable():
    # The README names the copy of the original MNIST files; a change of the fingerprint would
    # also orphan every copy prepared before it.
    assert mnist.find(None).fingerprint == "src-52c775580c9fa460"
    assert cifar10.find(None).fingerprint == "src-0fc9ed894eb45980"
