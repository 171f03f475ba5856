"""``cnnlab text``: IMDB reviews in Keras's imdb.npz layout (a small file written here), read
without unpickling anything but numpy arrays, Keras's index conventions, training end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cnnlab.config import TextConfig
from cnnlab.errors import CnnlabError
from cnnlab.text import (
    encode_texts,
    keras_encode,
    load_imdb,
    pad,
    read_keras_npz,
    train_text,
)

GOOD, BAD = [1, 4, 9, 16], [2, 3, 7, 30]   # word ranks that make a review positive / negative


def write_imdb(path, n_train=512, n_test=128, seed=0):
    """A learnable imdb.npz: positive reviews use GOOD words, negative ones BAD words, in a
    sea of neutral ones; x arrays are object arrays of lists as Keras ships them."""
    r = np.random.default_rng(seed)

    def split(n):
        ys = r.integers(0, 2, n)
        xs = np.empty(n, dtype=object)
        for i, y in enumerate(ys):
            words = list(r.integers(40, 200, int(r.integers(5, 40))))
            for at in r.integers(0, len(words), 3):
                words[int(at)] = int(r.choice(GOOD if y else BAD))
            xs[i] = [int(w) for w in words]
        return xs, ys.astype(np.int64)

    (x_tr, y_tr), (x_te, y_te) = split(n_train), split(n_test)
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return x_tr


def test_keras_conventions_and_padding(tmp_path):
    raw = write_imdb(tmp_path / "imdb.npz", n_train=8, n_test=4)
    arrays = read_keras_npz(str(tmp_path / "imdb.npz"))
    assert [list(x) for x in arrays["x_train"]] == [list(x) for x in raw]
    assert keras_encode([[1, 5, 4999, 4996]], num_words=5000) == [[1, 4, 8, 2, 4999]]
    np.testing.assert_array_equal(pad([[5, 6], [1, 2, 3, 4]], 3), [[0, 5, 6], [2, 3, 4]])
    train, test = encode_texts(["the film, the end", "The<br />film"], ["film noir"], 6)
    assert train == [[1, 4, 5, 4, 2], [1, 4, 5]] and test == [[1, 5, 2]]
    (x, _), _, source = load_imdb(TextConfig(data=str(tmp_path / "imdb.npz"), maxlen=10))
    assert x.shape == (8, 10) and x.dtype == np.int32 and (x[:, -1] > 0).all()
    assert "imdb.npz" in source


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.npz"
    np.savez(path, x_train=np.array([Evil()], dtype=object), y_train=np.zeros(1),
             x_test=np.array([[1]], dtype=object), y_test=np.zeros(1))
    with pytest.raises(CnnlabError, match="not a Keras imdb.npz.*refusing to load posix.system"):
        read_keras_npz(str(path))
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(CnnlabError, match="no IMDB data"):
        read_keras_npz(str(tmp_path / "missing.npz"))


def test_cli_learns_the_small_file(tmp_path):
    write_imdb(tmp_path / "imdb.npz")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "-m", "cnnlab", "text", "--data", tmp_path / "imdb.npz",
                        "--num-words", "250", "--maxlen", "40", "--embed-dim", "8", "--hidden",
                        "16", "--epochs", "8", "--batch-size", "32", "--lr", "1e-2",
                        "--workdir", tmp_path / "run"], capture_output=True, text=True,
                       env=env, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n")
               if x]
    assert len(records) == 8 and records[-1]["test_accuracy"] >= 0.9, records[-1]
    assert (tmp_path / "run" / "plots" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    r = subprocess.run([sys.executable, "-m", "cnnlab", "text", "--data", tmp_path / "no.npz",
                        "--workdir", tmp_path / "x"], capture_output=True, text=True, env=env,
                       timeout=300, check=False)
    assert r.returncode == 2 and "no IMDB data" in r.stderr


def test_resume_continues_exactly(tmp_path):
    """A run stopped after its first epoch and resumed for a second one writes the records of
    a run that never stopped, to the last bit (the loop's checkpoints and batch order)."""
    write_imdb(tmp_path / "imdb.npz", n_train=96, n_test=32)
    config = TextConfig(data=str(tmp_path / "imdb.npz"), num_words=250, maxlen=12, embed_dim=4,
                        hidden=4, epochs=2, batch_size=32, plots=False)

    def records(run):
        return [{k: v for k, v in json.loads(x).items()
                 if k not in ("epoch_seconds", "images_per_second")}
                for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    straight = train_text(config, str(tmp_path / "straight"))
    train_text(config.replace(epochs=1), str(tmp_path / "stopped"))
    with pytest.raises(CnnlabError, match="already holds a training run"):
        train_text(config, str(tmp_path / "stopped"))
    resumed = train_text(config, str(tmp_path / "stopped"), resume=True)
    assert records("stopped") == records("straight") and len(records("straight")) == 2
    assert resumed["test_loss"] == straight["test_loss"]
    assert sorted(os.listdir(tmp_path / "stopped" / "checkpoints")) == ["3", "6"]


def write_tfds_imdb(data_dir, n_train=256, n_test=64, seed=0):
    """A learnable ``imdb_reviews/plain_text`` prepared in ``data_dir`` as TFDS would (array_record,
    TFDS's own ImdbReviews builder and metadata), its texts made up here: positive reviews use
    GOOD words, negative ones BAD words, among neutral ones (no download)."""
    from tensorflow_datasets.datasets.imdb_reviews import (  # noqa: PLC0415 - seconds; one test
        imdb_reviews_dataset_builder as official,
    )

    r = np.random.default_rng(seed)
    good, bad = ["great", "loved", "superb"], ["awful", "boring", "worst"]
    neutral = [f"word{i}" for i in range(60)]

    def reviews(n):
        for i in range(n):
            y = int(r.integers(0, 2))
            words = list(r.choice(neutral, int(r.integers(5, 25))))
            for at in r.integers(0, len(words), 2):
                words[int(at)] = str(r.choice(good if y else bad))
            yield i, {"text": " ".join(words).capitalize() + ".<br />The end.", "label": y}

    class Prepared(official.Builder, skip_registration=True):
        name = "imdb_reviews"

        @classmethod
        def _get_pkg_dir_path(cls):
            return official.Builder._get_pkg_dir_path()

        def _split_generators(self, dl_manager):
            return {"train": reviews(n_train), "test": reviews(n_test), "unsupervised": reviews(1)}

    Prepared(config="plain_text", data_dir=str(data_dir), file_format="array_record") \
        .download_and_prepare()


def test_tfds_imdb_reviews_are_read_with_keras_conventions(tmp_path):
    """A prepared TFDS imdb_reviews is read by random access (no TensorFlow) and numbered as
    Keras numbers its imdb.npz: 1 starts a review, the most frequent training word is 4 (rank 1
    + 3), words outside the vocabulary are 2, zeros pad in front."""
    write_tfds_imdb(tmp_path / "tfds", n_train=64, n_test=16)
    config = TextConfig(data="tfds", tfds_dir=str(tmp_path / "tfds"), num_words=12, maxlen=40)
    (x, y), (x_te, y_te), source = load_imdb(config)
    assert x.shape == (64, 40) and x_te.shape == (16, 40) and "imdb_reviews" in source
    assert set(np.unique(y)) <= {0, 1} and len(y_te) == 16
    first = [int(t) for t in x[0] if t]
    # every review ends "<br />The end.": "the" and "end" are the two most frequent words
    assert first[0] == 1 and first[-2:] == [4, 5], first
    assert set(np.unique(x)) <= set(range(12)) and (x == 2).any()   # a small vocabulary: OOV
    with pytest.raises(CnnlabError, match="imdb_reviews is not prepared"):
        load_imdb(config.replace(tfds_dir=str(tmp_path / "empty")))
