"""The run layer: everything a run writes into its workdir, in one place, and reading it back.

::

    workdir/config.json      the run's config (TrainConfig.to_dict())
    workdir/run.json         a RunInfo: class names, input shape, data source, devices, ...
    workdir/metrics.jsonl    one JSON line per epoch, then one with "final": true
    workdir/checkpoints/N/   orbax checkpoints (cnnlab.checkpoints) whose "meta" item is a
                             CheckpointMeta
    workdir/plots/*.png      curves.png, confusion_matrix.png, predictions.png, ...
    workdir/tensorboard/     TensorBoard event files (tensorboardX, no TensorFlow): every
                             step's train/loss, train/accuracy, train/learning_rate; every
                             epoch's val/*, epoch/*; the final test/*; and with --profile a
                             jax.profiler trace under plugins/profile/

``cnnlab finetune`` adds ``finetune.json`` and ``interpretation.json``; ``cnnlab gan`` its
``quality.json`` (:mod:`cnnlab.gan`); ``cnnlab forecast`` writes ``forecast.json`` and
``forecast.md`` and trains each model in a run directory of its own inside the workdir
(``mlp/``, ``lstm/``: :mod:`cnnlab.forecast`). :func:`cnnlab.loop.fit`
(the one training loop) and the commands write through a :class:`Workdir`; only process 0
writes files, except checkpoints, which every process writes its shards of. Another writer of
per-epoch or per-step records belongs here, beside :meth:`Workdir.log_epochs` and
:meth:`Workdir.log_scalars` (the event files).

Example:

>>> import tempfile
>>> wd = Workdir(tempfile.mkdtemp())
>>> wd.prepare(resume=False, overwrite=False)
>>> wd.log_epochs([{"epoch": 1, "train_loss": 0.5}])
>>> wd.read_metrics()
[{'epoch': 1, 'train_loss': 0.5}]
>>> CheckpointMeta.from_json(CheckpointMeta(step=10, epochs_done=1).to_json()).step
10
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab import distributed, fileio, plots
from cnnlab.checkpoints import Checkpoints
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from tensorboardX import SummaryWriter

RUN_FILES = ("config.json", "run.json", "metrics.jsonl", "checkpoints", "plots", "finetune.json",
             "interpretation.json", "tensorboard", "quality.json", "forecast.json", "forecast.md")


@dataclasses.dataclass
class EpochSums:
    """Running sums of one epoch's training metrics (per-step means added up)."""

    loss: float = 0.0
    accuracy: float = 0.0
    steps: int = 0
    extra: dict[str, float] = dataclasses.field(default_factory=dict)  # a step's other metrics

    def add(self, loss: float, accuracy: float, extra: Mapping[str, float] | None = None) -> None:
        self.loss += loss
        self.accuracy += accuracy
        self.steps += 1
        for name, value in (extra or {}).items():
            self.extra[name] = self.extra.get(name, 0.0) + value

    def means(self) -> tuple[float, float]:
        """``(mean loss, mean accuracy)`` of the steps so far."""
        n = max(self.steps, 1)
        return self.loss / n, self.accuracy / n

    def extra_means(self) -> dict[str, float]:
        """The means of the other metrics (e.g. a GAN's ``g_loss``) of the steps so far."""
        n = max(self.steps, 1)
        return {name: total / n for name, total in self.extra.items()}


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """The ``meta`` item of a checkpoint: what an exact resume needs besides the arrays.

    Attributes:
      step: the checkpoint's (global) step.
      epochs_done: complete epochs before ``step``.
      epoch_sums: running sums of the unfinished epoch (mid-epoch checkpoints), else None.
      phase: the training phase (``cnnlab finetune``: "head", "finetune"), else None.
      initial_loss: the training loss of the phase's first step (divergence check).
      best_step: the checkpoint with the lowest validation loss so far, when there is one.
      best_val_loss: its validation loss.
      epochs_without_improvement: epochs since ``best_step`` (early stopping).
    """

    step: int
    epochs_done: int
    epoch_sums: EpochSums | None = None
    phase: str | None = None
    initial_loss: float | None = None
    best_step: int | None = None
    best_val_loss: float | None = None
    epochs_without_improvement: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CheckpointMeta:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if d.get("epoch_sums"):
            d["epoch_sums"] = EpochSums(**d["epoch_sums"])
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """``run.json``: facts of a run that its config does not say (what the data turned out to be,
    where it ran)."""

    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    dataset: str
    source: str
    train_examples: int
    val_examples: int
    test_examples: int
    param_count: int
    devices: int
    processes: int
    mesh: dict[str, int]
    steps_per_epoch: int
    backbone: str | None = None                  # cnnlab finetune: what was transferred
    blocks: list | None = None                   # cnnlab finetune: [[block, [layers]], ...]
    imports: list | None = None                  # where a model of yours was registered from
                                                 # (cnnlab.models.import_models takes it back)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["class_names"], d["input_shape"] = list(self.class_names), list(self.input_shape)
        d["num_classes"] = self.num_classes
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d.setdefault("val_examples", 0)
        d["class_names"] = tuple(d["class_names"])
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


class Workdir:
    """The files of one run.

    Args:
      path: the workdir (made absolute).
      main: whether this process writes files; default: process 0 does.
    """

    def __init__(self, path: str | os.PathLike, *, main: bool | None = None):
        self.path = os.path.abspath(os.fspath(path))
        self.main = distributed.is_main_process() if main is None else main
        self._events: SummaryWriter | None = None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def plots_dir(self) -> str:
        return self.file("plots")

    @property
    def checkpoint_dir(self) -> str:
        return self.file("checkpoints")

    def has_checkpoints(self) -> bool:
        d = self.checkpoint_dir
        return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))

    def prepare(self, *, resume: bool, overwrite: bool, results: Sequence[str] = ()) -> None:
        """Create the workdir and check it is writable; refuse to clobber an earlier run.

        Args:
          resume: an earlier run here is to be continued.
          overwrite: an earlier run here is to be replaced (only the files a run writes,
            :data:`RUN_FILES`, are deleted).
          results: files whose presence also marks an earlier run (a command without
            checkpoints, e.g. ``forecast.json``).

        Raises:
          CnnlabError: it cannot be written, or it holds checkpoints and neither ``resume`` nor
            ``overwrite`` is set.
        """
        try:
            os.makedirs(self.path, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".write-test"):
                pass
        except OSError as e:
            raise CnnlabError(f"cannot write to workdir {self.path}: {e.strerror or e}; "
                              "choose another --workdir") from None
        if self.has_checkpoints() and not resume and not overwrite:
            raise CnnlabError(f"{self.path} already holds a training run; pass --resume to "
                              "continue it, --overwrite to start over, or choose another "
                              "--workdir")
        found = [n for n in results if os.path.exists(self.file(n))]
        if found and not overwrite:
            raise CnnlabError(f"{self.path} already holds the results of a run ({found[0]}); "
                              "pass --overwrite to replace them, or choose another --workdir")
        if overwrite and not resume and self.main:
            for name in RUN_FILES:
                path = self.file(name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.unlink(path)

    # -- JSON files ------------------------------------------------------------------------

    def write_json(self, name: str, obj) -> str:
        """Atomically write ``obj`` as ``name`` (process 0 only); returns the path."""
        return self.write_text(name, json.dumps(obj, indent=2) + "\n")

    def write_text(self, name: str, text: str) -> str:
        """Atomically write ``text`` as ``name`` (process 0 only); returns the path."""
        path = self.file(name)
        if self.main:
            fileio.write_text(path, text)
        return path

    def read_json(self, name: str):
        with open(self.file(name)) as f:
            return json.load(f)

    def is_run(self) -> bool:
        return all(os.path.exists(self.file(n)) for n in ("config.json", "run.json"))

    def require_run(self) -> None:
        """Raises CnnlabError unless this is the workdir of a run."""
        if not self.is_run():
            raise CnnlabError(f"{self.path} is not a training run (no config.json/run.json); "
                              f"train one with `cnnlab train --workdir {self.path}`")

    def write_config(self, config) -> None:
        self.write_json("config.json", config.to_dict())

    def read_config(self, config_cls=TrainConfig):
        """``config.json`` as a ``config_cls`` (:class:`~cnnlab.config.TrainConfig`, or the
        config of another command, e.g. :class:`~cnnlab.config.GanConfig`)."""
        return config_cls.from_dict(self.read_json("config.json"))

    def check_resumable(self, config) -> None:
        """``--resume`` continues the run as it was: only ``type(config).RESUMABLE`` fields
        may differ from the run's ``config.json``; nothing to check before a config exists.

        Args:
          config: the settings asked for now (:class:`~cnnlab.config.GanConfig`,
            :class:`~cnnlab.config.ForecastConfig`: a config class with ``RESUMABLE``).

        Raises:
          CnnlabError: naming the fields that differ.
        """
        if not os.path.exists(self.file("config.json")):
            return
        cls = type(config)
        saved = self.read_config(cls)
        keep = {name: getattr(config, name) for name in cls.RESUMABLE}
        if saved.replace(**keep) != config:
            changed = [f.name for f in dataclasses.fields(cls)
                       if getattr(saved, f.name) != getattr(config, f.name)
                       and f.name not in cls.RESUMABLE]
            verb = "differs" if len(changed) == 1 else "differ"
            raise CnnlabError(f"--resume needs the settings of the run in {self.path} "
                              f"({', '.join(changed)} {verb}; only "
                              f"{', '.join(cls.RESUMABLE)} may change); see its config.json")

    def write_run_info(self, info: RunInfo) -> None:
        self.write_json("run.json", info.to_json())

    def read_run_info(self) -> RunInfo:
        return RunInfo.from_json(self.read_json("run.json"))

    # -- metrics ---------------------------------------------------------------------------

    def read_metrics(self) -> list[dict]:
        """The records of ``metrics.jsonl`` ([] when there is none)."""
        path = self.file("metrics.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def log_epochs(self, records: Sequence[dict]) -> None:
        """Rewrite ``metrics.jsonl`` with ``records`` (atomically: a reader never sees half)."""
        if self.main:
            fileio.write_text(self.file("metrics.jsonl"),
                              "".join(json.dumps(r) + "\n" for r in records))

    # -- TensorBoard event files -----------------------------------------------------------

    @property
    def tensorboard_dir(self) -> str:
        return self.file("tensorboard")

    def open_events(self, first_step: int) -> None:
        """Start (or continue) the event files at ``first_step`` (process 0 only; once per run).

        A resumed run passes its checkpoint's step: TensorBoard then discards what the earlier
        process wrote past it (``purge_step``: steps after ``first_step``), as
        ``metrics.jsonl`` drops those lines.
        """
        if self.main and self._events is None:
            from tensorboardX import SummaryWriter  # noqa: PLC0415 - import sets $CRC32C_SW_MODE
            # tensorboardX names a file by the second it was opened and the host: a run resumed
            # within the same second would overwrite the earlier file. The suffix keeps them
            # apart and sorts the newer one last, as TensorBoard reads them.
            self._events = SummaryWriter(self.tensorboard_dir,
                                         purge_step=first_step + 1 if first_step else None,
                                         flush_secs=30, filename_suffix=f".{time.time_ns()}")

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Write ``{tag: value}`` at global ``step`` to the event files (after
        :meth:`open_events`; non-numbers and non-finite values are left out)."""
        if self._events is None:
            return
        for tag, value in values.items():
            if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) \
                    and np.isfinite(value):
                self._events.add_scalar(tag, float(value), int(step))

    def flush_events(self) -> None:
        if self._events is not None:
            self._events.flush()

    def close_events(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None

    # -- checkpoints and plots -------------------------------------------------------------

    def checkpoints(self, *, keep: int = 3, best_metric: str | None = None,
                    read_only: bool = False) -> Checkpoints:
        """The run's :class:`~cnnlab.checkpoints.Checkpoints` (see there)."""
        return Checkpoints(self.checkpoint_dir, keep=keep, best_metric=best_metric,
                           read_only=read_only)

    def checkpoints_to_read(self) -> Checkpoints:
        """The run's checkpoints, read-only (close them after use).

        Raises:
          CnnlabError: no complete checkpoint.
        """
        ckpts = self.checkpoints(read_only=True)
        if ckpts.latest_step() is None:
            ckpts.close()
            raise CnnlabError(f"no complete checkpoint in {self.checkpoint_dir}; train first")
        return ckpts

    def write_plots(self, history: Sequence[dict], confusion_matrix, class_names: Sequence[str],
                    images: np.ndarray, labels: np.ndarray, predictions: np.ndarray) -> None:
        """``plots/curves.png`` (per-epoch loss and accuracy, when there is a history),
        ``confusion_matrix.png`` and ``predictions.png`` (``images`` titled with
        ``predictions`` and ``labels``)."""
        if not self.main:
            return
        os.makedirs(self.plots_dir, exist_ok=True)
        if history:
            plots.training_curves(history, os.path.join(self.plots_dir, "curves.png"))
        plots.confusion_matrix(np.asarray(confusion_matrix), class_names,
                               os.path.join(self.plots_dir, "confusion_matrix.png"))
        plots.prediction_grid(images, labels, predictions, class_names,
                              os.path.join(self.plots_dir, "predictions.png"))
