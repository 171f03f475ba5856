"""The settings of a run as frozen dataclasses, every field checked; no JAX is imported here.

:class:`TrainConfig` describes ``cnnlab train`` (and :func:`cnnlab.train.train_and_evaluate`),
:class:`FinetuneConfig` ``cnnlab finetune``, :class:`GanConfig` ``cnnlab gan``,
:class:`ForecastConfig` ``cnnlab forecast`` and :class:`TextConfig` ``cnnlab text``. Presets are small ``get_config()`` functions in
:mod:`cnnlab.configs` that build one of these, so reading a preset costs no JAX import.

Each field says what it accepts (an :class:`Accepts`: a kind, a range or a set of choices) and a
help text; from that one declaration come

- the check at construction (Python, ``--config FILE.py``, ``config.json`` and the command line
  alike): a wrong type or a value out of range is one :class:`~cnnlab.errors.CnnlabError` line
  naming the field and what it accepts, e.g. ``learning_rate must be a finite number > 0, got
  '1e-3' (str)``;
- the command-line flags (:func:`add_arguments`: ``--learning-rate``, ``--augment/--no-augment``,
  ...), so every field can be set, and ``--set FIELD=VALUE`` with dotted names into mapping
  fields (:func:`apply_overrides`: ``--set model_kwargs.widths=[32,64,128]``).

The same concept has the same name in both configs (``learning_rate``, ``batch_size``,
``val_fraction``, ``augment_flip``, ``seed``, ...).

Example:

>>> from cnnlab.config import TrainConfig
>>> TrainConfig(model="lenet5", epochs=2).learning_rate
0.001
>>> TrainConfig(learning_rate="1e-3")
Traceback (most recent call last):
...
cnnlab.errors.CnnlabError: learning_rate must be a finite number > 0, got '1e-3' (str)
>>> apply_overrides(TrainConfig(), ["model_kwargs.widths=[32,64]", "epochs=5"]).model_kwargs
{'widths': (32, 64)}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from cnnlab.errors import CnnlabError

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adadelta")
SCHEDULES = ("constant", "cosine", "one_cycle")
PRECISIONS = ("f32", "bf16")
SHARDINGS = ("replicate", "fsdp")
SERIES = ("sunspots", "co2")          # cnnlab.forecast.load_series
FORECASTERS = ("mlp", "lstm")         # cnnlab.models.sequence.FORECASTERS


@dataclasses.dataclass(frozen=True)
class Accepts:
    """What one config field accepts.

    ``kind`` is "int", "float", "bool", "str", "choice", "choices" (a non-empty list of
    choices; on the command line comma-separated) or "mapping"; numbers may have a range
    (``low``/``high``, open or closed) and an ``off`` value outside it (e.g. 0 = off);
    ``optional`` also accepts None.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    off: float | None = None
    literal: tuple[str, ...] = ()   # words an optional field keeps as text (not None)

    def describe(self) -> str:
        """What is accepted, in words (completes "FIELD must be ...")."""
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "str":
            text = "a string"
        elif self.kind == "choice":
            text = "one of: " + ", ".join(self.choices)
        elif self.kind == "choices":
            text = "a non-empty list of: " + ", ".join(self.choices)
        elif self.kind == "mapping":
            text = 'a mapping of model options, e.g. {"widths": [32, 64]}'
        else:
            text = ("an integer" if self.kind == "int" else "a finite number") + self._range()
        if self.off is not None:
            text = f"{self.off:g} (off) or {text}"
        return f"none or {text}" if self.optional else text

    def _range(self) -> str:
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return f" in {'(' if self.low_open else '['}{lo:g}, {hi:g}{')' if self.high_open else ']'}"
        if lo is not None:
            return f" {'>' if self.low_open else '>='} {lo:g}"
        if hi is not None:
            return f" {'<' if self.high_open else '<='} {hi:g}"
        return ""

    def check(self, value: Any) -> tuple[bool, Any]:
        """``(accepted, value normalised)``: ints become floats for "float", lists inside a
        mapping become tuples (so a model built from it stays hashable)."""
        if value is None:
            return self.optional, value
        if self.kind == "bool":
            return isinstance(value, bool), value
        if self.kind == "str":
            return isinstance(value, str) and bool(value), value
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices, value
        if self.kind == "choices":
            ok = (isinstance(value, (list, tuple)) and bool(value)
                  and all(isinstance(v, str) and v in self.choices for v in value))
            return ok, tuple(value) if ok else value
        if self.kind == "mapping":
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                return False, value
            return True, {k: _tuples(v) for k, v in value.items()}
        number = (int,) if self.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, number):
            return False, value
        value = float(value) if self.kind == "float" else value
        if self.off is not None and value == self.off:
            return True, value
        return math.isfinite(value) and self._in_range(value), value

    def _in_range(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or (x < self.high if self.high_open else x <= self.high)

    def parse(self, text: str) -> Any:
        """A command-line string -> a value (the type check comes after, in the dataclass)."""
        if self.optional and text.lower() in ("none", "null") and text.lower() not in self.literal:
            return None
        if self.kind == "int":
            return int(text)
        if self.kind == "float":
            return float(text)
        if self.kind == "choices":
            return tuple(name.strip() for name in text.split(",") if name.strip())
        return text


def _tuples(value):
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _field(default, accepts: Accepts, help: str, *, flags: Sequence[str] = (), factory=None):
    """A dataclass field that declares what it accepts, its help text and extra flag names."""
    metadata = {"accepts": accepts, "help": help, "flags": tuple(flags)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _int(low=None, high=None, **kw) -> Accepts:
    return Accepts("int", low=low, high=high, **kw)


def _float(low=None, high=None, **kw) -> Accepts:
    return Accepts("float", low=low, high=high, **kw)


_BOOL = Accepts("bool")
_STR = Accepts("str")
_PATH = Accepts("str", optional=True)


class _Checked:
    """Checks every field at construction (so also ``replace`` and ``from_dict``)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            accepts: Accepts = f.metadata["accepts"]
            value = getattr(self, f.name)
            ok, normalised = accepts.check(value)
            if not ok:
                got = f"{value!r}" + (f" ({type(value).__name__})"
                                      if not isinstance(value, (int, float)) or
                                      isinstance(value, bool) else "")
                raise CnnlabError(f"{f.name} must be {accepts.describe()}, got {got}")
            if normalised is not value:
                object.__setattr__(self, f.name, normalised)
        self.check_together()

    def check_together(self) -> None:
        """Rules that involve several fields (overridden per config)."""

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: what ``config.json`` holds."""
        d = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.metadata["accepts"].kind == "mapping":
                d[f.name] = json.loads(json.dumps(dict(getattr(self, f.name))))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Inverse of :meth:`to_dict` (missing fields take their defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CnnlabError(f"unknown config fields {unknown}; "
                              f"valid fields: {', '.join(sorted(known))}")
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Checked):
    """Every setting of a training run; ``config.json`` in the workdir is :meth:`to_dict`."""

    model: str = _field("workshop_cnn", _STR, "model name (cnnlab.models.names())")
    model_kwargs: Mapping[str, Any] = _field(
        None, Accepts("mapping"), "model options, e.g. --set model_kwargs.widths=[32,64,128]",
        factory=dict)
    dataset: str = _field("fashion_mnist", _STR,
                          "fashion_mnist, fashion_mnist_subset, mnist, cifar10, digits, "
                          "folder:PATH or a TFDS catalog name")
    data_dir: str | None = _field(None, _PATH, "directory with the original files of "
                                  "fashion_mnist or mnist (IDX .gz) or cifar10 (python batches)")
    tfds_dir: str | None = _field(None, _PATH,
                                  "TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    epochs: int = _field(3, _int(1), "passes over the training split")
    batch_size: int = _field(128, _int(1), "global batch size (split over the devices)")
    eval_batch_size: int = _field(1000, _int(1), "batch size of evaluation")
    max_steps_per_epoch: int | None = _field(None, _int(1, optional=True),
                                             "cut epochs short (tests, smoke runs)")
    val_fraction: float = _field(0.1, _float(0, 1, high_open=True),
                                 "share of the training data held out for validation "
                                 "(stratified, by seed; 0 = none)")
    optimizer: str = _field("adam", Accepts("choice", choices=OPTIMIZERS), "the optimizer")
    learning_rate: float = _field(1e-3, _float(0, low_open=True), "(peak) learning rate",
                                  flags=("--lr",))
    momentum: float = _field(0.9, _float(0, 1, high_open=True), "momentum (optimizer momentum)")
    nesterov: bool = _field(False, _BOOL, "Nesterov momentum (optimizer momentum)")
    schedule: str = _field("constant", Accepts("choice", choices=SCHEDULES),
                           "learning-rate schedule")
    warmup_epochs: float = _field(0.0, _float(0), "linear warm-up before the cosine schedule")
    weight_decay: float = _field(0.0, _float(0), "decoupled for adamw, L2 otherwise; kernels only")
    clip_grad_norm: float = _field(0.0, _float(0), "clip gradients to this global norm (0 = off)")
    label_smoothing: float = _field(0.0, _float(0, 1, high_open=True), "label smoothing")
    augment: bool = _field(False, _BOOL, "random flips and pad-and-crop, on device")
    augment_flip: bool = _field(True, _BOOL, "flips as part of --augment")
    augment_pad: int = _field(2, _int(0), "pad-and-crop shift in pixels as part of --augment")
    augment_erase: float = _field(0.0, _float(0, 1), "probability of random erasing (one "
                                  "rectangle of 2-40 % of the image set to 0) as part of "
                                  "--augment")
    tta: bool = _field(False, _BOOL, "also report the final test accuracy with flip test-time "
                       "augmentation (test_accuracy_tta: softmax averaged over each test image "
                       "and its mirror)")
    seed: int = _field(0, _int(0), "seed of initialisation, shuffling, validation split, dropout")
    precision: str = _field("f32", Accepts("choice", choices=PRECISIONS),
                            "f32, or bf16 (bfloat16 compute, float32 parameters)")
    top_k: int = _field(5, _int(1), "k of the top-k accuracy")
    early_stopping: int = _field(0, _int(0), "stop after this many epochs without a lower "
                                 "validation loss (0 = off)")
    test_every_epoch: bool = _field(False, _BOOL, "also evaluate the test split after every "
                                    "epoch (measurements; never for model selection)")
    keep_checkpoints: int = _field(3, _int(1), "newest checkpoints kept (plus the best one)")
    checkpoint_every_steps: int = _field(1000, _int(0), "also checkpoint every N steps inside "
                                         "an epoch (0 = only at epoch ends)")
    log_every_steps: int = _field(25, _int(1), "progress, NaN and divergence checks every N "
                                  "steps (a host sync)")
    divergence_factor: float = _field(10.0, _float(1, low_open=True, off=0.0),
                                      "stop when the training loss stays above this many times "
                                      "its starting value ...")
    divergence_steps: int = _field(20, _int(1), "... for this many steps in a row")
    model_parallelism: int = _field(1, _int(1), "size of the mesh's model axis")
    sharding: str = _field("replicate", Accepts("choice", choices=SHARDINGS),
                           "state sharding rule")
    data_on_device: bool | None = _field(None, Accepts("bool", optional=True),
                                         "whole data set on device (default: when it fits)")
    plots: bool = _field(True, _BOOL, "write PNG plots")
    profile: int = _field(0, _int(0), "write a jax.profiler trace of this many steps (from the "
                          "second, after compilation) to WORKDIR/tensorboard (0 = off)")

    def check_together(self) -> None:
        if self.early_stopping and not self.val_fraction:
            raise CnnlabError("early_stopping needs a validation split: val_fraction must be > 0")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(_Checked):
    """Every setting of ``cnnlab finetune`` (saved as ``finetune.json`` in the workdir)."""

    backbone: str = _field(dataclasses.MISSING, _STR,
                           "resnet50, vgg16 (with --weights) or the workdir of a cnnlab run")
    data_dir: str = _field(dataclasses.MISSING, _STR, "image folder ROOT/<class>/<images>")
    weights: str | None = _field(None, Accepts("str", optional=True, literal=("none",)),
                                 "Keras ImageNet .h5 file (full or _notop) for resnet50/vgg16, "
                                 "or none: random initialisation (training from scratch)")
    freeze_epochs: int = _field(2, _int(0), "epochs training only the new head, on cached "
                                "features")
    epochs: int = _field(2, _int(0), "epochs fine-tuning the last --unfreeze blocks + head")
    unfreeze: int = _field(1, _int(-1), "blocks before the head to fine-tune (-1 = all)")
    image_size: int | None = _field(None, _int(8, optional=True),
                                    "square image size (default 224 for ImageNet backbones, the "
                                    "run's input size otherwise)")
    val_fraction: float = _field(0.2, _float(0, 1, low_open=True, high_open=True),
                                 "share of each class held out for validation")
    batch_size: int = _field(32, _int(1), "batch size")
    learning_rate: float = _field(1e-3, _float(0, low_open=True),
                                  "head learning rate (fine-tuning peaks at learning_rate/2)",
                                  flags=("--lr",))
    lr_ratio: float = _field(100.0, _float(1), "discriminative learning rates: the earliest "
                             "unfrozen block gets learning_rate/2/lr_ratio")
    lr_find: bool = _field(False, _BOOL, "choose the head learning rate with lr_find "
                           "(plots/lr_find.png)")
    augment_flip: bool = _field(True, _BOOL, "random left-right flips while fine-tuning (off when "
                                "orientation matters, e.g. text)", flags=("--flip",))
    tta: bool = _field(True, _BOOL, "also report validation accuracy with flip test-time "
                       "augmentation")
    seed: int = _field(0, _int(0), "seed of the split, the head and the shuffles")
    top_k: int = _field(5, _int(1), "k of the top-k accuracy")
    tfds_dir: str | None = _field(None, _PATH, "TFDS data dir for the prepared image folder")
    keep_checkpoints: int = _field(3, _int(1), "newest checkpoints kept")
    plots: bool = _field(True, _BOOL, "write PNG plots")

    def check_together(self) -> None:
        if self.freeze_epochs + self.epochs == 0:
            raise CnnlabError("nothing to train: give --freeze-epochs and/or --epochs > 0")


@dataclasses.dataclass(frozen=True)
class GanConfig(_Checked):
    """Every setting of ``cnnlab gan`` (``config.json`` of its workdir): the workshop's DCGAN
    (Adam 2e-4 with beta1 0.5, batch 128, latent 100, generator 128 / discriminator 64
    features, dropout 0.4)."""

    dataset: str = _field("fashion_mnist", _STR, "image data set: fashion_mnist, mnist, digits "
                          "(scikit-learn's 8x8, upsampled to 28x28), ...")
    data_dir: str | None = _field(None, _PATH, "directory with the original files of "
                                  "fashion_mnist or mnist (IDX .gz)")
    tfds_dir: str | None = _field(None, _PATH,
                                  "TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    image_size: int | None = _field(None, _int(4, optional=True),
                                    "train on images resized to this side, a multiple of 4 "
                                    "(default 28 for data sets with smaller images, the 8x8 "
                                    "digits: the DCGAN is made for 28x28; else their own size)")
    epochs: int = _field(5, _int(1), "passes over all images (train and test splits)")
    batch_size: int = _field(128, _int(1), "real images per step (as many generated)")
    max_steps_per_epoch: int | None = _field(None, _int(1, optional=True),
                                             "cut epochs short (tests, smoke runs)")
    latent_dim: int = _field(100, _int(1), "size of the generator's noise vector z")
    learning_rate: float = _field(2e-4, _float(0, low_open=True), "Adam learning rate of both "
                                  "networks", flags=("--lr",))
    beta1: float = _field(0.5, _float(0, 1, high_open=True), "Adam beta1 of both networks")
    g_features: int = _field(128, _int(1), "feature maps of the generator's layers")
    d_features: int = _field(64, _int(1), "feature maps of the discriminator's layers")
    dropout: float = _field(0.4, _float(0, 1, high_open=True), "discriminator dropout rate")
    seed: int = _field(0, _int(0), "seed of initialisation, shuffling and noise")
    samples: int = _field(64, _int(1), "images in each epoch's sample grid (fixed noise)")
    keep_checkpoints: int = _field(2, _int(1), "newest checkpoints kept")
    checkpoint_every_steps: int = _field(1000, _int(0), "also checkpoint every N steps inside "
                                         "an epoch (0 = only at epoch ends)")
    log_every_steps: int = _field(25, _int(1), "progress and NaN checks every N steps")
    plots: bool = _field(True, _BOOL, "write the sample grids and the loss curves")

    #: What ``--resume`` may change: the rest must be the run's own, or it would not be exact.
    RESUMABLE = ("epochs", "keep_checkpoints", "checkpoint_every_steps", "log_every_steps",
                 "plots", "data_dir", "tfds_dir")


@dataclasses.dataclass(frozen=True)
class ForecastConfig(_Checked):
    """Every setting of ``cnnlab forecast``: one-step-ahead forecasts of a real series."""

    series: str = _field("sunspots", Accepts("choice", choices=SERIES),
                         "the series (bundled with statsmodels, offline)")
    models: tuple[str, ...] = _field(FORECASTERS, Accepts("choices", choices=FORECASTERS),
                                     "forecasters compared with the last-value baseline")
    lookback: int = _field(12, _int(1), "values in each input window")
    train_fraction: float = _field(0.67, _float(0.1, 0.95), "first share of the series that "
                                   "trains (the rest tests)")
    hidden: int = _field(32, _int(1), "hidden units of each forecaster")
    epochs: int = _field(200, _int(1), "passes over the training windows")
    batch_size: int = _field(32, _int(1), "windows per step")
    learning_rate: float = _field(3e-3, _float(0, low_open=True), "Adam learning rate",
                                  flags=("--lr",))
    seed: int = _field(0, _int(0), "seed of initialisation and shuffling")
    keep_checkpoints: int = _field(2, _int(1), "newest checkpoints kept (per model)")
    checkpoint_every_epochs: int = _field(25, _int(1), "checkpoint every N epochs (and the "
                                          "last; a few steps each, so not every epoch)")
    log_every_steps: int = _field(25, _int(1), "NaN checks every N steps")
    plots: bool = _field(True, _BOOL, "write plots/forecast.png")

    #: What ``--resume`` may change: the rest must be the run's own, or it would not be exact.
    RESUMABLE = ("epochs", "keep_checkpoints", "checkpoint_every_epochs", "log_every_steps",
                 "plots")


@dataclasses.dataclass(frozen=True)
class TextConfig(_Checked):
    """Every setting of ``cnnlab text``: IMDB review sentiment with an embedding-LSTM."""

    data: str = _field("~/.keras/datasets/imdb.npz", _STR,
                       "Keras's imdb.npz, or tfds for a prepared TFDS imdb_reviews")
    tfds_dir: str | None = _field(None, _PATH,
                                  "TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    num_words: int = _field(5000, _int(4), "vocabulary: the most frequent words kept")
    maxlen: int = _field(500, _int(1), "words per review (cut or padded at the front)")
    max_train_examples: int | None = _field(None, _int(1, optional=True),
                                            "use only the first N training reviews")
    embed_dim: int = _field(32, _int(1), "embedding size")
    hidden: int = _field(32, _int(1), "LSTM units")
    epochs: int = _field(3, _int(1), "passes over the training reviews")
    batch_size: int = _field(64, _int(1), "reviews per step")
    learning_rate: float = _field(1e-3, _float(0, low_open=True), "Adam learning rate",
                                  flags=("--lr",))
    seed: int = _field(0, _int(0), "seed of initialisation and shuffling")
    keep_checkpoints: int = _field(2, _int(1), "newest checkpoints kept")
    log_every_steps: int = _field(25, _int(1), "progress and NaN checks every N steps")
    plots: bool = _field(True, _BOOL, "write plots/curves.png")


# --------------------------------------------------------------------------------------------
# Overrides and command-line flags, generated from the fields
# --------------------------------------------------------------------------------------------

def apply_overrides(config, assignments: Sequence[str]):
    """``config`` with ``FIELD=VALUE`` assignments applied (what ``--set`` takes).

    ``VALUE`` is read as JSON when it parses (``5``, ``1e-3``, ``true``, ``[32, 64]``,
    ``{"widths": [8]}``), else as a string (``mnist``). ``FIELD.KEY=VALUE`` sets one key of a
    mapping field (``model_kwargs.widths=[32,64,128]``).

    Raises:
      CnnlabError: no ``=``, an unknown field, a key into a field that is not a mapping, or a
        value the field does not accept.
    """
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for assignment in assignments:
        path, sep, text = assignment.partition("=")
        if not sep or not path:
            raise CnnlabError(f"--set takes FIELD=VALUE, got {assignment!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        name, _, key = path.partition(".")
        if name not in fields:
            raise CnnlabError(f"unknown config field {name!r} in --set {assignment}; valid "
                              f"fields: {', '.join(fields)}")
        if key:
            if fields[name].metadata["accepts"].kind != "mapping":
                raise CnnlabError(f"--set {assignment}: {name} is not a mapping; use "
                                  f"--set {name}=VALUE")
            current = dict(changes.get(name, getattr(config, name)))
            current[key] = value
            value = current
        changes[name] = value
    return config.replace(**changes)


def add_arguments(parser: argparse.ArgumentParser, config_cls, *, defaults: bool = False) -> None:
    """One flag per field of ``config_cls`` (mapping fields only through ``--set``).

    ``--field-name VALUE`` (plus the aliases a field declares, e.g. ``--lr``), booleans as
    ``--name/--no-name``. With ``defaults=False`` every flag defaults to None, meaning "not
    given" (so a preset or a saved config keeps its value); fields without a default become
    required flags.
    """
    for f in dataclasses.fields(config_cls):
        accepts: Accepts = f.metadata["accepts"]
        if accepts.kind == "mapping":
            continue
        names = ["--" + f.name.replace("_", "-"), *f.metadata["flags"]]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if (required or not defaults) else f.default
        shown = "" if required else f"; default {f.default!r}"
        help_text = f"{f.metadata['help']} ({accepts.describe()}{shown})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        if accepts.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _argument_type(accepts)
            if accepts.kind == "choice":
                kwargs["metavar"] = "{" + ",".join(accepts.choices) + "}"
            elif accepts.kind == "choices":
                kwargs["metavar"] = ",".join(accepts.choices)
            kwargs["required"] = required
        parser.add_argument(*names, **kwargs)


def _argument_type(accepts: Accepts):
    if not accepts.optional and accepts.kind in ("int", "float"):
        return int if accepts.kind == "int" else float  # argparse: "invalid int value: 'x'"

    def parse(text: str):
        return accepts.parse(text)
    parse.__name__ = accepts.kind  # argparse names it in "invalid int value"
    return parse


def given_arguments(args: argparse.Namespace, config_cls) -> dict[str, Any]:
    """The fields of ``config_cls`` that were given on the command line (not None)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)
            if getattr(args, f.name, None) is not None}
