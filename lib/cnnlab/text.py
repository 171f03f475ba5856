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

Trained by the one training loop (:func:`cnnlab.loop.fit`) into a
:class:`~cnnlab.workdir.Workdir`, with checkpoints and exact ``--resume`` like ``cnnlab train``
(see :func:`train_text`).
"""

from __future__ import annotations

import collections
import functools
import io
import os
import pickle
import re
import zipfile
from collections.abc import Sequence

import jax
import numpy as np
import optax

from cnnlab import data, distributed, models, plots, train
from cnnlab.config import TextConfig
from cnnlab.data.feeding import BatchFeeder
from cnnlab.errors import CnnlabError
from cnnlab.loop import Loop, LoopSpec, Reporter, fit
from cnnlab.models import TextClassifier
from cnnlab.workdir import RunInfo, Workdir

__all__ = ["TextConfig", "read_keras_npz", "keras_encode", "encode_texts", "pad", "load_imdb",
           "train_text"]

START, OOV, INDEX_FROM = 1, 2, 3   # Keras imdb.load_data defaults


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

    def encode(text):
        return [START] + [rank[w] + INDEX_FROM if w in rank else OOV for w in words(text)]

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
    import tensorflow_datasets as tfds  # noqa: PLC0415 - seconds of imports, only for --data tfds

    data_dir = tfds_dir or data.default_tfds_dir()
    try:
        source = tfds.data_source("imdb_reviews/plain_text", data_dir=data_dir, download=False)
    except Exception as e:  # noqa: BLE001 - TFDS raises several kinds for "not prepared"
        raise CnnlabError(f"imdb_reviews is not prepared in {data_dir} (array_record): "
                          f"{str(e).splitlines()[0][:200]}") from None

    def pairs(split):
        return [(r["text"].decode() if isinstance(r["text"], bytes) else str(r["text"]),
                 int(r["label"])) for r in source[split]]

    return pairs("train"), pairs("test"), f"TFDS imdb_reviews in {data_dir}"


def train_text(config: TextConfig, workdir: str, *, resume: bool = False,
               overwrite: bool = False, reporter: Reporter | None = None) -> dict:
    """Train the review classifier through :func:`cnnlab.loop.fit` into ``workdir``.

    The step is :func:`cnnlab.train.make_train_step` (softmax cross-entropy; the word indices
    pass through it as float32, exact below 2**24, and the model casts them back). The test
    reviews are evaluated after every epoch (a measurement, never used to choose anything).

    Args:
      config: the run's settings.
      workdir: ``config.json``, ``run.json``, ``metrics.jsonl`` (per epoch: ``train_loss``,
        ``train_accuracy``, ``test_loss``, ``test_accuracy``), ``checkpoints/``,
        ``tensorboard/``, ``plots/curves.png``.
      resume: continue from the newest checkpoint that restores (bit-identically).
      overwrite: replace an earlier run in ``workdir``.
      reporter: progress callbacks.

    Returns:
      The last epoch's record plus ``source``.

    Raises:
      CnnlabError: missing or bad data, a batch larger than the data, an occupied workdir.
      Interrupted: SIGTERM or SIGINT (the current step is saved first).
    """
    reporter = reporter or Reporter()
    wd = Workdir(workdir)
    wd.prepare(resume=resume, overwrite=overwrite)
    (x_tr, y_tr), (x_te, y_te), source = load_imdb(config)
    if config.batch_size > len(y_tr):
        raise CnnlabError(f"batch size {config.batch_size} is larger than the {len(y_tr)} "
                          "training reviews")
    model = TextClassifier(num_classes=2, vocab_size=config.num_words,
                           embed_dim=config.embed_dim, hidden=config.hidden)
    mesh = distributed.make_mesh()
    rep = distributed.replicated(mesh)
    create = functools.partial(train.create_train_state, model, optax.adam(config.learning_rate),
                               input_shape=(1, config.maxlen))
    abstract = jax.eval_shape(create, jax.random.key(0))
    state_sharding = distributed.state_shardings(abstract, mesh)
    init_key, run_key = jax.jit(lambda: tuple(jax.random.split(jax.random.key(config.seed))),
                                out_shardings=(rep, rep))()
    ckpts = wd.checkpoints(keep=config.keep_checkpoints)
    try:
        state, meta, history = train.restore_or_create(wd, ckpts, create, state_sharding,
                                                       init_key, resume=resume, reporter=reporter)
        wd.write_config(config)
        spe = len(y_tr) // config.batch_size
        wd.write_run_info(RunInfo(
            class_names=("negative", "positive"), input_shape=(config.maxlen,), dataset="imdb",
            source=source, train_examples=len(y_tr), val_examples=0, test_examples=len(y_te),
            param_count=models.param_count(abstract.params), devices=jax.device_count(),
            processes=jax.process_count(), mesh=dict(mesh.shape), steps_per_epoch=spe))
        wd.log_epochs(history)
        options = train.StepOptions(top_k=1)
        eval_fn = train.make_eval_step(options=options, mesh=mesh, state_sharding=state_sharding)
        test_feed = BatchFeeder(data.Split(x_te, y_te), mesh)
        n_shards = distributed.data_size(mesh)
        eval_bs = -(-min(500, len(y_te)) // n_shards) * n_shards

        def evaluate_test(s) -> dict:
            return train.split_metrics("test", train.evaluate(s, test_feed, eval_fn, eval_bs,
                                                              top_k=1), 1)

        def after_epoch(s, record: dict) -> None:
            if config.plots and wd.main:
                plots.training_curves(wd.read_metrics(), os.path.join(wd.plots_dir,
                                                                      "curves.png"))

        loop = Loop(
            train_step=train.make_train_step(options=options, mesh=mesh,
                                             state_sharding=state_sharding),
            feeder=BatchFeeder(data.Split(x_tr, y_tr), mesh), run_key=run_key,
            evaluate=evaluate_test, lr_at=lambda s: config.learning_rate, workdir=wd,
            checkpoints=ckpts, reporter=reporter, after_epoch=after_epoch,
            spec=LoopSpec(epochs=config.epochs, steps_per_epoch=spe, batch_size=config.batch_size,
                          seed=config.seed, log_every_steps=config.log_every_steps,
                          select_best=False))
        reporter.run_start({"model": "text_classifier", "dataset": "imdb", "source": source,
                            "devices": jax.device_count(), "mesh": dict(mesh.shape),
                            "param_count": models.param_count(abstract.params),
                            "steps_per_epoch": spe, "epochs": config.epochs, "val_examples": 0})
        result = fit(state, loop, history=history, meta=meta)
        ckpts.wait()
        return {**(result.history[-1] if result.history else {}), "source": source}
    finally:
        wd.close_events()
        ckpts.close()
