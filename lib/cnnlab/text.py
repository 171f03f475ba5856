"""Movie-review sentiment (``cnnlab text``): the workshop's activity 3 on the IMDB reviews.

Data, when present (no download here):

- Keras's ``imdb.npz`` (what ``keras.datasets.imdb.load_data`` downloads to
  ``~/.keras/datasets/imdb.npz``): ``x_train``, ``x_test`` object arrays of word-rank lists
  (1 = the most frequent word), ``y_train``, ``y_test`` 0/1. Read without unpickling anything
  but numpy's own array reconstruction (:func:`read_keras_npz`), then Keras's conventions: 1
  starts every review, 2 stands for a word outside the ``num_words`` most frequent, ranks are
  shifted by 3, and 0 is padding;
- TFDS ``imdb_reviews`` prepared in the TFDS data dir (``plain_text``): the texts are split
  into lower-case words and numbered by frequency on the training split, with the same
  conventions (:func:`encode_texts`).

Reviews are cut or padded to ``maxlen`` words at the front (Keras's ``pad_sequences``
defaults) and classified by :class:`cnnlab.models.TextClassifier` (embedding, LSTM, mean over
the real words, dense logits) trained with Adam on the softmax cross-entropy.

Workdir: ``config.json``, ``metrics.jsonl`` (per epoch: train loss/accuracy, test
loss/accuracy), ``plots/curves.png``.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import re
import time
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnlab.errors import CnnlabError

START, OOV, INDEX_FROM = 1, 2, 3   # Keras imdb.load_data defaults


@dataclasses.dataclass(frozen=True)
class TextConfig:
    data: str = "~/.keras/datasets/imdb.npz"   # imdb.npz path, or "tfds" for imdb_reviews
    num_words: int = 5000
    maxlen: int = 500
    embed_dim: int = 32
    hidden: int = 32
    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    max_train_examples: int | None = None
    tfds_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _NumpyOnly(pickle.Unpickler):
    """Unpickles numpy arrays of plain Python objects (lists of ints) and nothing else."""

    ALLOWED = frozenset({("numpy.core.multiarray", "_reconstruct"),
                         ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
                         ("numpy", "dtype")})

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_member(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    with zf.open(name) as f:
        data = io.BytesIO(f.read())
    version = np.lib.format.read_magic(data)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read_header(data)
    if dtype.hasobject:
        arr = _NumpyOnly(data).load()
        if not isinstance(arr, np.ndarray) or arr.shape != shape:
            raise pickle.UnpicklingError("unexpected object array content")
        return arr
    return np.frombuffer(data.read(), dtype).reshape(shape)


def read_keras_npz(path: str) -> dict[str, np.ndarray]:
    """The four arrays of a Keras ``imdb.npz`` (object arrays of word-rank lists, labels)."""
    names = ("x_train", "y_train", "x_test", "y_test")
    try:
        with zipfile.ZipFile(path) as zf:
            return {n: _read_member(zf, f"{n}.npy") for n in names}
    except FileNotFoundError:
        raise CnnlabError(f"no IMDB data at {path}: put Keras's imdb.npz there (from "
                          "keras.datasets.imdb.load_data on a machine with network access) or "
                          "pass --data tfds for a prepared imdb_reviews") from None
    except (zipfile.BadZipFile, KeyError, ValueError, pickle.UnpicklingError, EOFError) as e:
        raise CnnlabError(f"{path} is not a Keras imdb.npz ({names}): {e}") from None


def keras_encode(reviews: Sequence[Sequence[int]], num_words: int) -> list[list[int]]:
    """Keras's ``imdb.load_data`` conventions on raw word ranks: start char 1, ranks + 3,
    ranks beyond ``num_words`` -> 2."""
    return [[START] + [w + INDEX_FROM if w + INDEX_FROM < num_words else OOV for w in r]
            for r in reviews]


WORD = re.compile(r"[a-z0-9']+")


def encode_texts(train: Sequence[str], test: Sequence[str], num_words: int
                 ) -> tuple[list[list[int]], list[list[int]]]:
    """Raw texts -> word indices with Keras's conventions: lower-case words (HTML line breaks
    dropped) ranked by frequency on ``train`` (rank 1 the most frequent), index = rank + 3 when
    below ``num_words``, else 2; 1 starts every review."""
    def words(text):
        return WORD.findall(text.lower().replace("<br />", " "))

    counts = collections.Counter(w for t in train for w in words(t))
    kept = counts.most_common(max(num_words - INDEX_FROM - 1, 0))  # index rank + 3 < num_words
    rank = {w: i + 1 for i, (w, _) in enumerate(kept)}
    encode = lambda t: [START] + [rank[w] + INDEX_FROM if w in rank else OOV for w in words(t)]
    return [encode(t) for t in train], [encode(t) for t in test]


def pad(reviews: Sequence[Sequence[int]], maxlen: int) -> np.ndarray:
    """int32 (N, maxlen): each review's last ``maxlen`` words, zeros in front (Keras's
    ``pad_sequences`` defaults)."""
    out = np.zeros((len(reviews), maxlen), np.int32)
    for i, r in enumerate(reviews):
        r = list(r)[-maxlen:]
        if r:
            out[i, maxlen - len(r):] = r
    return out


def load_imdb(config: TextConfig) -> tuple[tuple[np.ndarray, np.ndarray],
                                           tuple[np.ndarray, np.ndarray], str]:
    """``((x_train, y_train), (x_test, y_test), source)`` padded as in the module docstring."""
    if config.data == "tfds":
        train, test, source = _tfds_texts(config.tfds_dir)
        x_tr, x_te = encode_texts([t for t, _ in train], [t for t, _ in test], config.num_words)
        y_tr = np.array([y for _, y in train], np.int32)
        y_te = np.array([y for _, y in test], np.int32)
    else:
        path = os.path.expanduser(config.data)
        arrays = read_keras_npz(path)
        x_tr = keras_encode(arrays["x_train"], config.num_words)
        x_te = keras_encode(arrays["x_test"], config.num_words)
        y_tr, y_te = (np.asarray(arrays[k], np.int32) for k in ("y_train", "y_test"))
        source = f"Keras imdb.npz at {path}"
    if config.max_train_examples:
        x_tr, y_tr = x_tr[:config.max_train_examples], y_tr[:config.max_train_examples]
    return (pad(x_tr, config.maxlen), y_tr), (pad(x_te, config.maxlen), y_te), source


def _tfds_texts(tfds_dir: str | None):
    """(text, label) pairs of the prepared TFDS ``imdb_reviews`` (read with tfds.data_source)."""
    import tensorflow_datasets as tfds

    from cnnlab.data import default_tfds_dir

    data_dir = tfds_dir or default_tfds_dir()
    try:
        source = tfds.data_source("imdb_reviews/plain_text", data_dir=data_dir, download=False)
    except Exception as e:  # noqa: BLE001 - TFDS raises several kinds for "not prepared"
        raise CnnlabError(f"imdb_reviews is not prepared in {data_dir} (array_record): "
                          f"{str(e).splitlines()[0][:200]}") from None

    def pairs(split):
        return [(r["text"].decode() if isinstance(r["text"], bytes) else str(r["text"]),
                 int(r["label"])) for r in source[split]]

    return pairs("train"), pairs("test"), f"TFDS imdb_reviews in {data_dir}"


def train_text(config: TextConfig, workdir: str,
               progress: Callable[[dict], None] | None = None) -> dict:
    """Train the review classifier; returns the last epoch's record (``test_accuracy``, ...)."""
    from cnnlab import plots
    from cnnlab.data import batch_indices
    from cnnlab.models import TextClassifier

    (x_tr, y_tr), (x_te, y_te), source = load_imdb(config)
    if config.batch_size > len(y_tr):
        raise CnnlabError(f"batch size {config.batch_size} is larger than the {len(y_tr)} "
                          "training reviews")
    model = TextClassifier(num_classes=2, vocab_size=config.num_words,
                           embed_dim=config.embed_dim, hidden=config.hidden)
    params = model.init(jax.random.PRNGKey(config.seed), jnp.asarray(x_tr[:1]))["params"]
    tx = optax.adam(config.learning_rate)
    opt_state = tx.init(params)

    def loss_fn(params, x, y):
        logits = model.apply({"params": params}, x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, (logits.argmax(-1) == y).mean()

    @jax.jit
    def step(params, opt_state, x, y):
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    evaluate = jax.jit(loss_fn)
    # TODO(core, issue 17): the shared run layer and training loop once they land.
    from cnnlab.train import _write_metrics, prepare_workdir, write_json

    prepare_workdir(workdir, resume=False, overwrite=True)  # no checkpoints: a rerun replaces
    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    write_json(os.path.join(workdir, "config.json"), config.to_dict())
    history = []
    for epoch in range(config.epochs):
        t0, sums = time.time(), np.zeros(2)
        batches = batch_indices(len(y_tr), config.batch_size, seed=config.seed, epoch=epoch)
        for idx in batches:
            params, opt_state, loss, acc = step(params, opt_state, x_tr[idx], y_tr[idx])
            sums += (float(loss), float(acc))
        test = np.zeros(2)
        for i in range(0, len(y_te), 500):
            loss, acc = evaluate(params, x_te[i:i + 500], y_te[i:i + 500])
            test += np.array([float(loss), float(acc)]) * len(y_te[i:i + 500])
        record = {"epoch": epoch + 1, "train_loss": sums[0] / len(batches),
                  "train_accuracy": sums[1] / len(batches), "test_loss": test[0] / len(y_te),
                  "test_accuracy": test[1] / len(y_te), "seconds": round(time.time() - t0, 1),
                  "source": source}
        history.append(record)
        _write_metrics(workdir, history)
        plots.training_curves(history, os.path.join(workdir, "plots", "curves.png"))
        if progress:
            progress(record)
    return history[-1]


def add_cli(subparsers) -> None:
    """``cnnlab text`` (the hook of :mod:`cnnlab.cli`)."""
    d = TextConfig()
    t = subparsers.add_parser("text", help="IMDB review sentiment with an embedding-LSTM "
                              "classifier (Keras imdb.npz or TFDS imdb_reviews)")
    t.add_argument("--data", default=d.data, help=f"imdb.npz path (default {d.data}) or 'tfds'")
    t.add_argument("--num-words", type=int, default=d.num_words)
    t.add_argument("--maxlen", type=int, default=d.maxlen)
    t.add_argument("--embed-dim", type=int, default=d.embed_dim)
    t.add_argument("--hidden", type=int, default=d.hidden)
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--lr", type=float, default=d.learning_rate)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--max-train-examples", type=int)
    t.add_argument("--tfds-dir")
    t.add_argument("--workdir", default=os.path.join("runs", "imdb"))
    t.set_defaults(func=_cmd_text)


def _cmd_text(args) -> int:
    for name in ("num_words", "maxlen", "embed_dim", "hidden", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise CnnlabError(f"--{name.replace('_', '-')} must be >= 1")
    config = TextConfig(data=args.data, num_words=args.num_words, maxlen=args.maxlen,
                        embed_dim=args.embed_dim, hidden=args.hidden, epochs=args.epochs,
                        batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                        max_train_examples=args.max_train_examples, tfds_dir=args.tfds_dir)
    final = train_text(config, args.workdir, progress=lambda r: print(
        f"epoch {r['epoch']}: train accuracy {r['train_accuracy']:.2%}, test accuracy "
        f"{r['test_accuracy']:.2%} ({r['seconds']:.0f} s)", flush=True))
    print(f"test accuracy {final['test_accuracy']:.2%}; data: {final['source']}")
    print(f"workdir: {args.workdir} (metrics.jsonl, plots/curves.png)")
    return 0
