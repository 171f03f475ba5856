"""The one training loop of cnnlab: :func:`fit`.

``cnnlab train`` (:func:`cnnlab.train.train_and_evaluate`) and ``cnnlab finetune`` (both of its
phases, :mod:`cnnlab.transfer`) train through it, so everything a loop does is written once:

- one flat loop over the steps of a phase; each step feeds the next batch of the epoch's order
  (drawn from ``(seed, epoch)``, made ahead by :func:`cnnlab.data.prefetch`) to a jitted train
  step (:func:`cnnlab.train.make_train_step`);
- every ``log_every_steps`` the step metrics are fetched (one host sync) and checked: a NaN loss,
  or a loss that stays above ``divergence_factor`` x its first value for ``divergence_steps``
  steps, stops the run with the last good checkpoint kept;
- at each epoch end: evaluation (validation), the epoch's record into ``metrics.jsonl``, a
  checkpoint; the lowest validation loss is tracked (the selected checkpoint, always kept) and
  early stopping ends the run after ``early_stopping`` epochs without improvement;
- checkpoints also every ``checkpoint_every_steps`` steps, and on SIGTERM/SIGINT at the current
  step, after which :class:`~cnnlab.errors.Interrupted` is raised (resuming is bit-identical);
- with a workdir, TensorBoard event files (:meth:`cnnlab.workdir.Workdir.log_scalars`): every
  step's ``train/loss``, ``train/accuracy`` (class labels; a regression's steps report no
  accuracy, and its records have no ``train_accuracy``) and ``train/learning_rate``, every
  epoch's record (``val/loss``, ``val/accuracy``, ``epoch/train_loss``, ...); and with
  ``LoopSpec.profile_steps`` a :mod:`jax.profiler` trace of that many steps (after the first,
  which compiles) beside them.

Example: a loop of your own pieces on tiny data (no workdir, no checkpoints):

>>> import jax, numpy as np, optax
>>> from cnnlab import data, distributed, models, train
>>> split = data.Split(np.zeros((32, 8, 8, 1), np.uint8), np.arange(32) % 2)
>>> model = models.get("mlp", num_classes=2, hidden=4)
>>> state = train.create_train_state(model, optax.sgd(0.1), jax.random.key(0), (8, 8, 1))
>>> loop = Loop(train_step=train.make_train_step(), run_key=jax.random.key(1),
...             feeder=data.BatchFeeder(split, distributed.make_mesh()),
...             spec=LoopSpec(epochs=2, steps_per_epoch=4, batch_size=8))
>>> result = fit(state, loop)
>>> int(result.state.step), [r["epoch"] for r in result.history]
(8, [1, 2])
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from cnnlab import data, distributed
from cnnlab.checkpoints import Checkpoints
from cnnlab.data.feeding import BatchFeeder, prefetch
from cnnlab.errors import CnnlabError, Interrupted
from cnnlab.workdir import CheckpointMeta, EpochSums, Workdir

class Reporter:
    """Progress callbacks of :func:`fit` (the CLI draws a rich progress bar). Only process 0
    gets them."""

    def run_start(self, info: dict) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None: ...
    def step(self, done: int, values: dict) -> None: ...
    def epoch_end(self, record: dict) -> None: ...
    def note(self, text: str) -> None: ...
    def run_end(self, final: dict) -> None:
        """The final record, as soon as the test metrics are known (before plots are drawn and
        the last checkpoint has finished writing)."""


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    """The static plan of one training phase (see :func:`fit`).

    Attributes:
      epochs: epochs of this phase.
      steps_per_epoch: optimizer steps per epoch (the last partial batch is dropped).
      batch_size: global batch size.
      seed: shuffles epoch ``e`` by ``(seed, e)``.
      first_epoch, first_step: epochs and steps of earlier phases (``cnnlab finetune``'s second
        phase); epochs and checkpoints are numbered globally, ``state.step`` counts this phase.
      log_every_steps: progress, NaN and divergence checks (and, with several processes, the
        agreement on a stop signal) every N steps.
      checkpoint_every_steps: also checkpoint every N (global) steps inside an epoch (0 = off).
      checkpoint_every_epochs: checkpoint at the end of every N-th epoch of the phase (and of
        its last, and when early stopping ends it); 1 = every epoch. More than 1 suits epochs of
        a few steps (``cnnlab forecast``), where a checkpoint would cost more than the epoch;
        keep 1 with ``select_best`` (the selected epoch must have its checkpoint).
      early_stopping: stop after this many epochs without a lower validation loss (0 = off).
      select_best: keep track of the checkpoint with the lowest validation loss.
      divergence_factor, divergence_steps: stop when the training loss stays above
        ``factor`` x the phase's first loss (when that is positive) for ``steps`` steps in a
        row (factor 0 = off).
      phase: a name written into every record and checkpoint (e.g. "head").
      profile_steps: trace this many steps with :func:`jax.profiler.start_trace` into the
        workdir's ``tensorboard/`` (TensorBoard's profile tab, Perfetto); 0 = off.
    """

    epochs: int
    steps_per_epoch: int
    batch_size: int
    seed: int = 0
    first_epoch: int = 0
    first_step: int = 0
    log_every_steps: int = 25
    checkpoint_every_steps: int = 0
    checkpoint_every_epochs: int = 1
    early_stopping: int = 0
    select_best: bool = True
    divergence_factor: float = 10.0
    divergence_steps: int = 20
    phase: str | None = None
    profile_steps: int = 0

    @property
    def last_step(self) -> int:
        return self.first_step + self.epochs * self.steps_per_epoch


@dataclasses.dataclass
class Loop:
    """Everything :func:`fit` needs besides the state.

    Attributes:
      train_step: ``(state, images, labels, key) -> (state, metrics)``
        (:func:`cnnlab.train.make_train_step`).
      feeder: the training split's :class:`~cnnlab.data.BatchFeeder`.
      spec: the plan (:class:`LoopSpec`).
      run_key: the run's PRNG key (each step folds its step number in).
      rows: train on these rows of the feeder's split only (the rest may be validation).
      evaluate: ``state -> record entries`` at each epoch end (e.g. ``val_loss``,
        ``val_accuracy``); ``val_loss`` drives best-checkpoint selection and early stopping.
      lr_at: ``phase step -> learning rate``, for the records.
      workdir: where records go (:meth:`cnnlab.workdir.Workdir.log_epochs`), or None.
      checkpoints: where checkpoints go, or None.
      to_checkpoint: ``state -> {"step", "params", "batch_stats", "opt_state"}`` to save
        (default ``state.arrays()``, :meth:`cnnlab.train.TrainState.arrays`).
      reporter: progress callbacks.
      after_epoch: ``(state, record) -> None`` once an epoch's record is written, before its
        checkpoint: the epoch's artefacts (e.g. ``cnnlab gan``'s grid of samples).
    """

    train_step: Callable
    feeder: BatchFeeder
    spec: LoopSpec
    run_key: jax.Array
    rows: np.ndarray | None = None
    evaluate: Callable[[Any], dict] | None = None
    lr_at: Callable[[int], float] | None = None
    workdir: Workdir | None = None
    checkpoints: Checkpoints | None = None
    to_checkpoint: Callable[[Any], dict] | None = None
    reporter: Reporter = dataclasses.field(default_factory=Reporter)
    after_epoch: Callable[[Any, dict], None] | None = None


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns: the final ``state``, every epoch's record (``history``, earlier
    phases and runs included), the last checkpoint's ``meta`` (best step, ...) and whether early
    stopping ended it."""

    state: Any
    history: list[dict]
    meta: CheckpointMeta
    stopped_early: bool = False


class _StopSignals:
    """SIGTERM and SIGINT ask the loop to stop between two steps (a second SIGINT interrupts at
    once). With several processes they agree at log steps, so all stop at the same step."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, every: int):
        self.every = every
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signum = signum

    def requested(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self.signum is not None
        if step % self.every:
            return False
        flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
        self.signum = self.signum or int(np.max(flags)) or None
        return self.signum is not None


class _Tracker:
    """The loop's bookkeeping: the epoch's running sums, the window of steps not yet checked,
    the divergence streak, the best validation loss and the checkpoint meta they make."""

    def __init__(self, loop: Loop, meta: CheckpointMeta | None):
        self.loop, self.spec = loop, loop.spec
        same_phase = meta is not None and meta.phase == self.spec.phase
        self.initial_loss = meta.initial_loss if same_phase else None
        self.best_step = meta.best_step if meta else None
        self.best_val_loss = meta.best_val_loss if meta else None
        self.bad_epochs = meta.epochs_without_improvement if meta else 0
        self.resume_sums = meta.epoch_sums if same_phase else None
        self.sums = EpochSums()
        self.pending: list[tuple[int, dict]] = []
        self.streak = 0
        self.window_start, self.window_steps = time.time(), 0
        self.classifies = True  # the steps report an accuracy (a regression's do not)

    def start_epoch(self, offset: int) -> None:
        self.sums = (EpochSums(**dataclasses.asdict(self.resume_sums))
                     if offset and self.resume_sums else EpochSums())
        self.resume_sums = None
        self.epoch_start, self.epoch_offset = time.time(), offset
        self.window_start, self.window_steps = time.time(), 0

    def add(self, step: int, values: dict) -> None:
        """Record step ``step``'s metrics (still on device); check them every log step."""
        self.pending.append((step, values))
        self.window_steps += 1
        if len(self.pending) >= self.spec.log_every_steps:
            self.flush()

    def flush(self) -> None:
        """Fetch the pending metrics (a host sync), check them, add them up, report."""
        if not self.pending:
            return
        values = distributed.to_host([m for _, m in self.pending])
        self.classifies = "accuracy" in values[-1]
        for (step, _), v in zip(self.pending, values):
            self._check(step, float(v["loss"]))
            self.sums.add(float(v["loss"]), float(v.get("accuracy", 0.0)), _extra(v))
            self._log_step(step, v)
        now = time.time()
        ips = self.window_steps * self.spec.batch_size / max(now - self.window_start, 1e-9)
        self.window_start, self.window_steps = now, 0
        last_step = self.pending[-1][0]
        self.pending.clear()
        report = {"loss": float(values[-1]["loss"]), "images_per_second": ips}
        if self.classifies:
            report["accuracy"] = self.sums.means()[1]
        self.loop.reporter.step(
            last_step + 1 - self.spec.first_step - self._epoch_index(last_step)
            * self.spec.steps_per_epoch, report)

    def _log_step(self, step: int, values: dict) -> None:
        """Step ``step``'s metrics into the event files, at global step ``step + 1`` (the
        step count after it, as the epoch records and checkpoints count)."""
        wd = self.loop.workdir
        if wd is None:
            return
        scalars = {"train/loss": float(values["loss"])}
        if "accuracy" in values:  # a regression's steps have none
            scalars["train/accuracy"] = float(values["accuracy"])
        scalars.update({f"train/{name}": v for name, v in _extra(values).items()})
        if self.loop.lr_at is not None:
            scalars["train/learning_rate"] = self.loop.lr_at(step - self.spec.first_step)
        wd.log_scalars(step + 1, scalars)

    def _epoch_index(self, step: int) -> int:
        return (step - self.spec.first_step) // self.spec.steps_per_epoch

    def _check(self, step: int, loss: float) -> None:
        """NaN/inf, or ``divergence_steps`` losses in a row above ``factor`` x the first."""
        spec = self.spec
        if self.initial_loss is None:
            self.initial_loss = loss
        if not math.isfinite(loss):
            self._stop(f"loss became {loss} at step {step + 1}", step)
        factor = spec.divergence_factor
        # "k times its start" means something for a positive loss only (a loss of your own may
        # be negative, e.g. a log-likelihood to maximise).
        above = factor and self.initial_loss > 0 and loss > factor * self.initial_loss
        self.streak = self.streak + 1 if above else 0
        if self.streak >= spec.divergence_steps:
            self._stop(f"the loss diverged: {loss:.4g} at step {step + 1}, above {factor:g} x its "
                       f"starting value {self.initial_loss:.4g} for {self.streak} steps in a row",
                       step)

    def _stop(self, what: str, step: int) -> None:
        ckpts = self.loop.checkpoints
        last = None
        if ckpts is not None:
            ckpts.wait()  # the last good checkpoint finishes writing before we stop
            last = ckpts.latest_step()
        where = self.loop.workdir.path if self.loop.workdir else "the workdir"
        kept = (f"the last good checkpoint (step {last}) is kept in {where}"
                if last is not None else "no checkpoint had been written yet")
        lr = self.loop.lr_at(step - self.spec.first_step) if self.loop.lr_at else None
        advice = (f"lower the learning rate (it was {lr:.3g}) and run again" if lr is not None
                  else "lower the learning rate and run again")
        raise CnnlabError(f"{what}; stopped; {kept}; {advice}")

    @property
    def suspect(self) -> bool:
        """The loss is above the divergence threshold right now: do not checkpoint this state."""
        return self.streak > 0

    def end_epoch(self, record: dict, step: int) -> None:
        """Best-checkpoint and early-stopping bookkeeping of a finished epoch's record."""
        for split, name in (("val", "validation"), ("test", "test")):
            loss = record.get(f"{split}_loss")
            if loss is not None and not math.isfinite(loss):
                self._stop(f"the {name} loss became {loss} after epoch {record['epoch']}",
                           step - 1)
        val_loss = record.get("val_loss")
        if val_loss is None:
            return
        if not self.spec.select_best:
            return
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_step, self.best_val_loss, self.bad_epochs = step, val_loss, 0
        else:
            self.bad_epochs += 1

    def meta(self, step: int, epochs_done: int, *, mid_epoch: bool) -> CheckpointMeta:
        return CheckpointMeta(
            step=step, epochs_done=epochs_done,
            epoch_sums=EpochSums(**dataclasses.asdict(self.sums)) if mid_epoch else None,
            phase=self.spec.phase, initial_loss=self.initial_loss, best_step=self.best_step,
            best_val_loss=self.best_val_loss, epochs_without_improvement=self.bad_epochs)

    def stop_early(self) -> bool:
        return bool(self.spec.early_stopping) and self.bad_epochs >= self.spec.early_stopping


def _extra(values: dict) -> dict[str, float]:
    """A step's metrics besides ``loss`` and ``accuracy`` (averaged per epoch as ``train_NAME``:
    a GAN step's ``g_loss``, ...)."""
    return {name: float(v) for name, v in values.items() if name not in ("loss", "accuracy")}


def _epoch_batches(loop: Loop, epoch: int, offset: int):
    """The batches of (global) epoch ``epoch`` from step ``offset`` on, made ahead."""
    spec = loop.spec
    n = loop.feeder.num_examples if loop.rows is None else len(loop.rows)
    order = data.batch_indices(n, spec.batch_size, seed=spec.seed, epoch=epoch)
    order = order[:spec.steps_per_epoch]
    if loop.rows is not None:
        order = loop.rows[order]
    return prefetch(loop.feeder.batch(idx) for idx in order[offset:])


def _save(loop: Loop, tracker: _Tracker, state, step: int, epochs_done: int, *,
          mid_epoch: bool, val_loss: float | None = None) -> bool:
    """Checkpoint ``state`` as ``step`` (unless the loss is diverging right now)."""
    if loop.checkpoints is None or tracker.suspect:
        return False
    arrays = loop.to_checkpoint(state) if loop.to_checkpoint else state.arrays()
    meta = tracker.meta(step, epochs_done, mid_epoch=mid_epoch)
    loop.checkpoints.save(step, arrays, meta.to_json(),
                          metrics={"val_loss": val_loss} if val_loss is not None else None)
    return True


def fit(state, loop: Loop, *, history: Sequence[dict] = (),
        meta: CheckpointMeta | None = None) -> FitResult:
    """Train ``state`` for ``loop.spec.epochs`` epochs: the one training loop of cnnlab.

    One flat loop over the phase's steps. Each step feeds the next batch of the epoch's order
    (made ahead, :func:`cnnlab.data.prefetch`) to ``loop.train_step``. Every
    ``log_every_steps`` the metrics are fetched and checked (a NaN loss, or a loss above
    ``divergence_factor`` x its first value for ``divergence_steps`` steps, stops the run with
    the last good checkpoint kept). At each epoch end ``loop.evaluate`` runs, the epoch's record
    is written and a checkpoint saved (every ``checkpoint_every_epochs``-th); the lowest
    ``val_loss`` is tracked and with ``early_stopping`` ends the run after that many epochs
    without improvement. Checkpoints also come every ``checkpoint_every_steps`` steps and, on
    SIGTERM/SIGINT, at the current step before :class:`~cnnlab.errors.Interrupted` is raised.

    Args:
      state: a :class:`cnnlab.train.TrainState` to start from: fresh, or restored from the
        checkpoint whose ``meta`` is given.
      loop: the pieces (:class:`Loop`).
      history: the records of earlier epochs (a resumed run, an earlier phase).
      meta: the restored checkpoint's :class:`~cnnlab.workdir.CheckpointMeta` (running sums of
        an unfinished epoch, best step, ...).

    Returns:
      A :class:`FitResult`.

    Raises:
      CnnlabError: a non-finite or diverging training loss, a non-finite validation loss.
      Interrupted: SIGTERM or SIGINT (after saving the current step).
    """
    spec, history = loop.spec, list(history)
    tracker = _Tracker(loop, meta)
    start = spec.first_step + int(distributed.to_host(state.step))
    result = FitResult(state, history, tracker.meta(start, (start - spec.first_step)
                                                    // spec.steps_per_epoch + spec.first_epoch,
                                                    mid_epoch=False))
    if tracker.stop_early():  # resumed a run that early stopping had already ended
        result.stopped_early = True
        return result
    batches = None
    if loop.workdir is not None:
        loop.workdir.open_events(start)
    profiler = _Profiler(loop, start)
    with _StopSignals(spec.log_every_steps) as stop, profiler:
        for step in range(start, spec.last_step):
            profiler.before(step, state)
            epoch, i = divmod(step - spec.first_step, spec.steps_per_epoch)
            epoch += spec.first_epoch
            if stop.requested(step):
                tracker.flush()
                saved = bool(i) and _save(loop, tracker, state, step, epoch, mid_epoch=True)
                if loop.checkpoints is not None:
                    loop.checkpoints.wait()
                    saved = saved or step in loop.checkpoints.all_steps()
                raise Interrupted(stop.signum, step, saved)
            if batches is None or i == 0:
                batches = _epoch_batches(loop, epoch, i)
                tracker.start_epoch(i)
                loop.reporter.epoch_start(epoch + 1, spec.first_epoch + spec.epochs,
                                          spec.steps_per_epoch, i)
            images, labels = next(batches)
            state, step_metrics = loop.train_step(state, images, labels, loop.run_key)
            tracker.add(step, step_metrics)
            done = step + 1
            if i + 1 < spec.steps_per_epoch:
                if spec.checkpoint_every_steps and done % spec.checkpoint_every_steps == 0:
                    tracker.flush()
                    _save(loop, tracker, state, done, epoch, mid_epoch=True)
                continue
            # ---- the epoch ends: evaluate, record, checkpoint
            tracker.flush()
            record = _epoch_record(loop, tracker, state, epoch, done)
            tracker.end_epoch(record, done)
            history.append(record)
            if loop.workdir is not None:
                # Metrics line first, checkpoint second: a resume drops lines past its checkpoint.
                loop.workdir.log_epochs(history)
                loop.workdir.log_scalars(done, epoch_scalars(record))
                loop.workdir.flush_events()
            if loop.after_epoch is not None:
                loop.after_epoch(state, record)
            if (done == spec.last_step or tracker.stop_early()
                    or (epoch + 1 - spec.first_epoch) % spec.checkpoint_every_epochs == 0):
                _save(loop, tracker, state, done, epoch + 1, mid_epoch=False,
                      val_loss=record.get("val_loss"))
            loop.reporter.epoch_end(record)
            result.meta = tracker.meta(done, epoch + 1, mid_epoch=False)
            if tracker.stop_early():
                loop.reporter.note(f"early stopping: the validation loss has not improved for "
                                   f"{tracker.bad_epochs} epochs (best at step "
                                   f"{tracker.best_step})")
                result.stopped_early = True
                break
        profiler.stop(state)  # a run shorter than the trace: its last steps finish inside it
    result.state, result.history = state, history
    return result


def epoch_scalars(record: dict) -> dict[str, float]:
    """An epoch's (or the final) record as TensorBoard tags: ``val_loss`` -> ``val/loss``,
    ``test_accuracy`` -> ``test/accuracy``, anything else ``epoch/<key>`` (``epoch/train_loss``,
    ``epoch/learning_rate``, ``epoch/images_per_second``, ...).

    Args:
      record: a record of ``metrics.jsonl``.

    Returns:
      ``{tag: value}`` (``epoch``, ``step`` and other bookkeeping keys left out).

    >>> epoch_scalars({"epoch": 1, "step": 10, "train_loss": 0.5, "val_accuracy": 0.9})
    {'epoch/train_loss': 0.5, 'val/accuracy': 0.9}
    """
    out = {}
    for key, value in record.items():
        if key in ("epoch", "step", "final", "checkpoint_step"):
            continue
        split, _, rest = key.partition("_")
        out[f"{split}/{rest}" if split in ("val", "test", "epoch") else f"epoch/{key}"] = value
    return out


class _Profiler:
    """A :mod:`jax.profiler` trace of ``spec.profile_steps`` steps, from the second step this
    process runs (the first compiles), into the workdir's ``tensorboard/``."""

    def __init__(self, loop: Loop, start: int):
        self.steps = loop.spec.profile_steps if loop.workdir is not None else 0
        self.dir = loop.workdir.tensorboard_dir if loop.workdir is not None else None
        self.first = start + 1 if loop.spec.last_step - start > 1 else start
        self.running = False

    def __enter__(self) -> _Profiler:
        return self

    def before(self, step: int, state) -> None:
        if self.steps and step == self.first:
            jax.block_until_ready(state)
            jax.profiler.start_trace(self.dir)
            self.running = True
        elif self.running and step == self.first + self.steps:
            self.stop(state)

    def stop(self, state=None) -> None:
        if self.running:
            if state is not None:
                jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.running = False

    def __exit__(self, *exc) -> None:
        self.stop()


def _epoch_record(loop: Loop, tracker: _Tracker, state, epoch: int, done: int) -> dict:
    spec = loop.spec
    seconds = time.time() - tracker.epoch_start
    train_loss, train_accuracy = tracker.sums.means()
    record: dict[str, Any] = {"epoch": epoch + 1, "step": done}
    if spec.phase:
        record["phase"] = spec.phase
    record["train_loss"] = train_loss
    if tracker.classifies:  # a regression's steps have no accuracy
        record["train_accuracy"] = train_accuracy
    record.update({f"train_{name}": v for name, v in tracker.sums.extra_means().items()})
    if loop.evaluate is not None:
        record.update(loop.evaluate(state))
    if loop.lr_at is not None:
        record["learning_rate"] = float(loop.lr_at(done - 1 - spec.first_step))
    record["epoch_seconds"] = round(seconds, 3)
    record["images_per_second"] = round((spec.steps_per_epoch - tracker.epoch_offset)
                                        * spec.batch_size / max(seconds, 1e-9), 1)
    return record
