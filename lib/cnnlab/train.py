"""Training: a jit-compiled Optax step over a Flax linen model, and ``train_and_evaluate``.

The pieces, each usable on its own:

- :class:`TrainConfig`: every knob of a run (a frozen dataclass; named presets are small
  ``get_config()`` functions in :mod:`cnnlab.configs`).
- :class:`TrainState`: ``step``, ``params``, ``batch_stats``, ``opt_state`` (+ static ``apply_fn``
  and ``tx``): a pytree, so it is jitted, donated, sharded and checkpointed as a whole.
- :func:`make_optimizer`: optax optimizers and schedules by name.
- :func:`train_step` / :func:`eval_step`: pure functions, ``jax.jit``-ed with the state donated;
  batch shapes are fixed (training drops the last partial batch, evaluation pads it and masks the
  padding), so each compiles exactly once per run. :func:`make_step_fns` builds the same two with
  explicit in/out shardings for a device mesh (:mod:`cnnlab.distributed`).
- :func:`train_and_evaluate`: the loop, writing into a workdir::

      workdir/config.json      the TrainConfig of the run
      workdir/run.json         facts: class names, input shape, data source, devices, parameters
      workdir/metrics.jsonl    one JSON line per epoch, then one with "final": true
      workdir/checkpoints/N/   orbax checkpoints (every epoch; last ``keep_checkpoints`` kept)
      workdir/plots/*.png      curves.png, confusion_matrix.png, predictions.png

Determinism (what makes ``resume`` exact): the order of epoch ``e`` is a permutation drawn from
``(seed, e)`` (:func:`cnnlab.data.batch_indices`) and the randomness of step ``s`` (dropout,
augmentation) is ``fold_in(key(seed), s)``; so after restoring step ``s`` a run replays exactly
the batches and keys an uninterrupted run would have used.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from cnnlab import distributed, fileio, metrics
from cnnlab.errors import CnnlabError

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adadelta")
SCHEDULES = ("constant", "cosine", "one_cycle")
PRECISIONS = ("f32", "bf16")

# Python-side trace counts of the jitted functions (the body runs once per compilation): the test
# that "each shape compiles once" reads these.
TRACE_COUNTS: collections.Counter = collections.Counter()


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Keep compiled XLA programs on disk so the next run with the same shapes skips compiling.

    On a small CPU compiling dominates short runs (seconds per program: the init and the train
    step each take several); this is JAX's persistent compilation cache, keyed by the program,
    the compiler version and the devices. ``path`` defaults to ``$CNNLAB_CACHE_DIR`` or
    ``~/.cache/cnnlab/jax``; ``CNNLAB_CACHE_DIR=off`` disables it (entries are a few hundred kB
    each; delete the directory any time). Returns the directory used, or None.
    """
    path = path or os.environ.get("CNNLAB_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "cnnlab", "jax")
    if path.lower() in ("off", "0", "none", ""):
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None  # a cache is an optimisation: never fail a run over it
    from jax.experimental.compilation_cache import compilation_cache
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    # A failed cache write (e.g. two processes racing on one entry) only costs a recompile.
    warnings.filterwarnings("ignore", message=".*persistent compilation cache.*")
    compilation_cache.reset_cache()  # in case something compiled before the directory was set
    return path


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; ``config.json`` in the workdir is ``asdict`` of this."""

    model: str = "workshop_cnn"
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str = "fashion_mnist"
    data_dir: str | None = None          # raw IDX files (see cnnlab.data.load)
    tfds_dir: str | None = None          # TFDS data dir (a bucket through a gcsfuse mount)
    epochs: int = 3
    batch_size: int = 128                # global batch, split over the devices of the "data" axis
    eval_batch_size: int = 1000
    max_steps_per_epoch: int | None = None   # cut epochs short (tests, smoke runs)
    optimizer: str = "adam"              # one of OPTIMIZERS
    learning_rate: float = 1e-3
    momentum: float = 0.9                # for "momentum"
    nesterov: bool = False
    schedule: str = "constant"           # one of SCHEDULES
    warmup_epochs: float = 0.0           # linear warm-up before "cosine"
    weight_decay: float = 0.0            # decoupled for adamw, added to the gradient otherwise
    clip_grad_norm: float = 0.0          # 0 = off
    label_smoothing: float = 0.0
    augment: bool = False                # random flip + pad-and-crop, on device
    augment_flip: bool = True
    augment_pad: int = 2
    seed: int = 0
    precision: str = "f32"               # "bf16": bfloat16 compute, float32 params/opt state
    top_k: int = 5
    keep_checkpoints: int = 3
    checkpoint_every_steps: int = 0      # extra mid-epoch checkpoints (0 = only each epoch)
    log_every_steps: int = 25            # progress / NaN check cadence (a host sync)
    model_parallelism: int = 1           # size of the mesh's "model" axis
    sharding: str = "replicate"          # state sharding rule: "replicate" or "fsdp"
    data_on_device: bool | None = None   # whole data set on device (None: when it fits easily)
    plots: bool = True

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model_kwargs"] = dict(self.model_kwargs)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (JSON lists in model options become tuples again, so
        the model stays hashable)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CnnlabError(f"unknown config fields {unknown}; "
                              f"valid fields: {', '.join(sorted(known))}")
        d = dict(d)
        d["model_kwargs"] = {k: _tuples(v) for k, v in dict(d.get("model_kwargs") or {}).items()}
        return cls(**d)

    def validate(self) -> None:
        """Raise CnnlabError for names and numbers that cannot work (before any data is loaded)."""
        from cnnlab import models
        for what, value, valid in (("model", self.model, models.names()),
                                   ("optimizer", self.optimizer, OPTIMIZERS),
                                   ("schedule", self.schedule, SCHEDULES),
                                   ("precision", self.precision, PRECISIONS),
                                   ("sharding rule", self.sharding, ("replicate", "fsdp"))):
            if value not in valid:
                raise CnnlabError(f"unknown {what} {value!r}; choose one of: {', '.join(valid)}")
        for name in ("epochs", "batch_size", "eval_batch_size", "keep_checkpoints", "top_k",
                     "log_every_steps", "model_parallelism"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "epochs" else 1):
                raise CnnlabError(f"{name} must be a positive integer, got {value!r}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise CnnlabError(f"max_steps_per_epoch must be >= 1, got {self.max_steps_per_epoch}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise CnnlabError(
                f"the learning rate must be a positive number, got {self.learning_rate}")
        if not 0 <= self.label_smoothing < 1:
            raise CnnlabError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.weight_decay < 0:
            raise CnnlabError(f"weight decay must be >= 0, got {self.weight_decay}")


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


# --------------------------------------------------------------------------------------------
# State and optimizer
# --------------------------------------------------------------------------------------------

class TrainState(struct.PyTreeNode):
    """What changes during training. ``apply_fn`` (``model.apply``) and ``tx`` are static."""

    step: jax.Array                       # int32 scalar: number of optimizer updates so far
    params: Any
    batch_stats: Any                      # {} for models without batch norm
    opt_state: Any
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    def arrays(self) -> dict[str, Any]:
        """The checkpointed part: ``{"step", "params", "batch_stats", "opt_state"}``."""
        return {"step": self.step, "params": self.params, "batch_stats": self.batch_stats,
                "opt_state": self.opt_state}


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Learning rate as a function of the step.

    constant: ``lr``; cosine: ``lr * (1 + cos(pi t / T)) / 2`` over all ``T`` steps (after an
    optional linear warm-up); one_cycle: fast.ai's one-cycle (cosine up to ``lr`` in the first 30%,
    then down to ``lr / 25 / 1e4``).
    """
    total = max(1, config.epochs * steps_per_epoch)
    lr = config.learning_rate
    if config.schedule == "constant":
        return optax.constant_schedule(lr)
    if config.schedule == "cosine":
        warmup = int(config.warmup_epochs * steps_per_epoch)
        if warmup:
            return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total, warmup + 1))
        return optax.cosine_decay_schedule(lr, total)
    if config.schedule == "one_cycle":
        return optax.cosine_onecycle_schedule(total, lr)
    raise CnnlabError(
        f"unknown schedule {config.schedule!r}; choose one of: {', '.join(SCHEDULES)}")


def _decay_mask(params):
    # Decay kernels only, not biases or batch-norm scales (the usual convention).
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optax transformation named by ``config.optimizer`` with ``config.schedule``.

    sgd: ``p -= lr g``; momentum: heavy-ball (or Nesterov) with ``config.momentum``; adam; adamw
    (decoupled weight decay ``config.weight_decay``); adadelta. For the others a nonzero
    ``weight_decay`` adds ``wd * p`` to the gradient (L2). Decay applies to kernels only.
    """
    name = config.optimizer
    if name not in OPTIMIZERS:
        raise CnnlabError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    lr = make_schedule(config, steps_per_epoch)
    wd = config.weight_decay
    if name == "sgd":
        tx = optax.sgd(lr)
    elif name == "momentum":
        tx = optax.sgd(lr, momentum=config.momentum, nesterov=config.nesterov)
    elif name == "adam":
        tx = optax.adam(lr)
    elif name == "adamw":
        tx = optax.adamw(lr, weight_decay=wd, mask=_decay_mask)
    else:
        tx = optax.adadelta(lr)
    parts = []
    if config.clip_grad_norm:
        parts.append(optax.clip_by_global_norm(config.clip_grad_norm))
    if wd and name != "adamw":
        parts.append(optax.add_decayed_weights(wd, mask=_decay_mask))
    return optax.chain(*parts, tx) if parts else tx


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                       input_shape) -> TrainState:
    """Initialise ``model`` on zeros of ``input_shape`` ((H, W, C) or (N, H, W, C))."""
    input_shape = tuple(input_shape)
    if len(input_shape) == 3:
        input_shape = (1, *input_shape)
    params_key, dropout_key = jax.random.split(key)
    variables = model.init({"params": params_key, "dropout": dropout_key},
                           jnp.zeros(input_shape, jnp.float32), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      apply_fn=model.apply, tx=tx)


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StepOptions:
    """The static (compile-time) settings of the steps, from :class:`TrainConfig`."""

    label_smoothing: float = 0.0
    augment: bool = False
    augment_flip: bool = True
    augment_pad: int = 2
    precision: str = "f32"
    top_k: int = 5

    @classmethod
    def from_config(cls, config: TrainConfig) -> StepOptions:
        return cls(label_smoothing=config.label_smoothing, augment=config.augment,
                   augment_flip=config.augment_flip, augment_pad=config.augment_pad,
                   precision=config.precision, top_k=config.top_k)


def _to_float(images: jax.Array) -> jax.Array:
    """uint8 (N, H, W, C) -> float32 in [0, 1]; float input passes through."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def _is_float(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating)


def _cast_module_outputs(dtype):
    """A Flax method interceptor casting every module's floating outputs to ``dtype``.

    Why: layers promote mixed inputs (a bf16 activation and an f32 batch-norm statistic give f32);
    casting each layer's output keeps the whole forward pass in ``dtype`` whatever the model.
    """
    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        return jax.tree.map(lambda y: y.astype(dtype) if _is_float(y) else y, out)
    return interceptor


def apply_model(apply_fn, params, batch_stats, x, *, train: bool, rngs=None,
                precision: str = "f32"):
    """Run the model; returns ``(logits float32, new_batch_stats)``.

    ``precision="bf16"``: parameters and inputs are cast to bfloat16 for the forward (and so the
    backward) pass, every layer's output stays bfloat16; gradients flow back through the casts
    to the float32 parameters, and batch-norm statistics are reduced and kept in float32.
    """
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    mutable = ["batch_stats"] if (train and batch_stats) else False

    def run():
        out = apply_fn(variables, x, train=train, rngs=rngs, mutable=mutable)
        return out if mutable else (out, {})

    if precision == "bf16":
        variables["params"] = jax.tree.map(
            lambda p: p.astype(jnp.bfloat16) if _is_float(p) else p, params)
        x = x.astype(jnp.bfloat16)
        with nn.intercept_methods(_cast_module_outputs(jnp.bfloat16)):
            logits, updates = run()
    else:
        logits, updates = run()
    return logits.astype(jnp.float32), updates.get("batch_stats", batch_stats)


def _train_step(state: TrainState, images: jax.Array, labels: jax.Array, key: jax.Array,
                options: StepOptions = StepOptions()) -> tuple[TrainState, dict]:
    TRACE_COUNTS["train_step"] += 1
    # The step's randomness depends only on (run key, step): a resumed run replays it exactly.
    step_key = jax.random.fold_in(key, state.step)
    augment_key, dropout_key = jax.random.split(step_key)
    x = _to_float(images)
    if options.augment:
        from cnnlab import data
        x = data.augment(augment_key, x, flip=options.augment_flip, pad=options.augment_pad)

    def loss_fn(params):
        logits, new_stats = apply_model(state.apply_fn, params, state.batch_stats, x, train=True,
                                        rngs={"dropout": dropout_key}, precision=options.precision)
        loss = metrics.cross_entropy(logits, labels, label_smoothing=options.label_smoothing).mean()
        return loss, (logits, new_stats)

    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              batch_stats=new_stats, opt_state=opt_state)
    return new_state, {"loss": loss, "accuracy": metrics.correct(logits, labels).mean()}


def _eval_step(state: TrainState, images: jax.Array, labels: jax.Array,
               mask: jax.Array | None = None, options: StepOptions = StepOptions()) -> dict:
    TRACE_COUNTS["eval_step"] += 1
    logits, _ = apply_model(state.apply_fn, state.params, state.batch_stats, _to_float(images),
                            train=False, precision=options.precision)
    sums = metrics.batch_sums(logits, labels, mask, top_k=options.top_k)
    sums["loss"] = sums["loss_sum"] / sums["count"]
    sums["accuracy"] = sums["correct"] / sums["count"]
    return sums


train_step = jax.jit(_train_step, donate_argnums=0, static_argnames="options")
train_step.__doc__ = """One optimizer update: ``(state, images, labels, key) -> (state, metrics)``.

``images`` uint8 or float (B, H, W, C) (uint8 is scaled to [0, 1] on device), ``labels`` int (B,),
``key`` the run's key: the step uses ``fold_in(key, state.step)`` for dropout and augmentation.
The loss is the mean (label-smoothed) softmax cross-entropy; ``metrics`` = batch ``loss`` and
``accuracy``. ``state`` is donated: do not use it after the call.
"""
eval_step = jax.jit(_eval_step, static_argnames="options")
eval_step.__doc__ = """``(state, images, labels, mask=None) -> dict``: one batch, inference mode.

Sums (``count``, ``loss_sum``, ``correct``, ``top_k_correct``, ``confusion`` (C, C)) that add up
across batches (see :func:`cnnlab.metrics.finalize`), plus the batch's mean ``loss`` and
``accuracy``. ``mask`` (B,) 0/1 excludes padding rows.
"""


def make_step_fns(options: StepOptions, mesh: jax.sharding.Mesh, state_sharding):
    """``(train_fn, eval_fn)`` jitted for ``mesh``: batches split along ``data``, the state as
    ``state_sharding`` (a TrainState of NamedShardings), metrics replicated, state donated.

    Same signatures as :func:`train_step` (without ``options``) and :func:`eval_step`.
    """
    batch = distributed.batch_sharding(mesh)
    rep = distributed.replicated(mesh)
    train_fn = jax.jit(functools.partial(_train_step, options=options),
                       in_shardings=(state_sharding, batch, batch, rep),
                       out_shardings=(state_sharding, rep), donate_argnums=0)
    eval_fn = jax.jit(functools.partial(_eval_step, options=options),
                      in_shardings=(state_sharding, batch, batch, batch), out_shardings=rep)
    return train_fn, eval_fn


# --------------------------------------------------------------------------------------------
# Feeding batches
# --------------------------------------------------------------------------------------------

def _gather(images, labels, idx):
    TRACE_COUNTS["gather"] += 1
    return jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0)


class BatchFeeder:
    """Global batches of one split by index: ``feeder.batch(indices) -> (images, labels)``.

    ``on_device=True``: the whole split (uint8) is placed once on every device and batches are
    gathered there by index (nothing but B indices crosses from the host per step).
    ``on_device=False``: each process gathers the rows of the batch that belong on its devices
    from host memory (:func:`cnnlab.distributed.local_rows`) and they are assembled with
    :func:`jax.make_array_from_process_local_data`, for data sets too large for device memory.
    Both give the same global arrays, sharded along ``data``.
    """

    def __init__(self, split, mesh, *, on_device: bool | None = None):
        self.mesh = mesh
        self.sharding = distributed.batch_sharding(mesh)
        self.num_examples = len(split.labels)
        if on_device is None:
            on_device = split.images.nbytes <= (1 << 30)
        self.on_device = on_device
        self._rows: dict[int, np.ndarray] = {}
        if on_device:
            self.images = distributed.replicate_from_host(mesh, split.images)
            self.labels = distributed.replicate_from_host(mesh, split.labels.astype(np.int32))
            self._take = jax.jit(_gather, out_shardings=(self.sharding, self.sharding))
        else:
            self.images = np.asarray(split.images)
            self.labels = np.asarray(split.labels, np.int32)

    def rows(self, batch_size: int) -> np.ndarray:
        if batch_size not in self._rows:
            self._rows[batch_size] = distributed.local_rows(self.sharding, batch_size)
        return self._rows[batch_size]

    def put(self, values: np.ndarray) -> jax.Array:
        """A per-row host array known to every process (B, ...) -> global array split along data."""
        b = len(values)
        return distributed.global_batch(self.sharding, values[self.rows(b)], b)

    def batch(self, indices: np.ndarray) -> tuple[jax.Array, jax.Array]:
        indices = np.asarray(indices)
        if self.on_device:
            return self._take(self.images, self.labels, self.put(indices.astype(np.int32)))
        local = indices[self.rows(len(indices))]
        b = len(indices)
        return (distributed.global_batch(self.sharding, self.images[local], b),
                distributed.global_batch(self.sharding, self.labels[local], b))


def eval_batches(num_examples: int, batch_size: int):
    """Yield ``(indices, mask)`` covering ``range(num_examples)`` exactly once in fixed-size
    batches; the last one is padded with index 0 and mask 0."""
    for start in range(0, num_examples, batch_size):
        idx = np.arange(start, start + batch_size)
        mask = (idx < num_examples).astype(np.float32)
        yield np.where(idx < num_examples, idx, 0), mask


def evaluate(state: TrainState, feeder: BatchFeeder, eval_fn, batch_size: int, *,
             top_k: int = 5) -> dict:
    """Metrics over a whole split (every example exactly once): see :func:`metrics.finalize`."""
    total = None
    pending = []
    for idx, mask in eval_batches(feeder.num_examples, batch_size):
        images, labels = feeder.batch(idx)
        pending.append(eval_fn(state, images, labels, feeder.put(mask)))
    for sums in pending:  # fetch after dispatching all: the device never waits for the host
        total = metrics.add_sums(total, distributed.to_host(
            {k: v for k, v in sums.items() if k not in ("loss", "accuracy")}))
    return metrics.finalize(total, top_k=top_k)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

class Reporter:
    """Progress callbacks of :func:`train_and_evaluate` (the CLI draws a rich progress bar).
    Only process 0 gets them."""

    def run_start(self, info: dict) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None: ...
    def step(self, done: int, values: dict) -> None: ...
    def epoch_end(self, record: dict) -> None: ...
    def note(self, text: str) -> None: ...


def write_json(path: str, obj) -> None:
    fileio.write_text(path, json.dumps(obj, indent=2) + "\n")


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_metrics(workdir: str, records: list[dict]) -> None:
    fileio.write_text(os.path.join(workdir, "metrics.jsonl"),
                      "".join(json.dumps(r) + "\n" for r in records))


RUN_FILES = ("config.json", "run.json", "metrics.jsonl", "checkpoints", "plots")


def prepare_workdir(workdir: str, *, resume: bool, overwrite: bool) -> None:
    """Create ``workdir`` and check it is writable; refuse to clobber an earlier run.

    Raises CnnlabError when it cannot be written, or holds checkpoints and neither ``resume`` nor
    ``overwrite`` is set. ``overwrite`` deletes only the files a run writes (``RUN_FILES``).
    """
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test"):
            pass
    except OSError as e:
        raise CnnlabError(f"cannot write to workdir {workdir}: {e.strerror or e}; "
                          "choose another --workdir") from None
    ckpt_dir = os.path.join(workdir, "checkpoints")
    has_run = os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))
    if has_run and not resume and not overwrite:
        raise CnnlabError(f"{workdir} already holds a training run; pass --resume to continue it, "
                          "--overwrite to start over, or choose another --workdir")
    if overwrite and not resume and distributed.is_main_process():
        for name in RUN_FILES:
            path = os.path.join(workdir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)


def _check_finite(losses: list[tuple[int, float]], ckpts, workdir: str, lr_at) -> None:
    for step, loss in losses:
        if not math.isfinite(loss):
            ckpts.wait()  # the last good checkpoint finishes writing before we stop
            last = ckpts.latest_step()
            kept = (f"the last good checkpoint (step {last}) is kept in {workdir}"
                    if last is not None else "no checkpoint had been written yet")
            raise CnnlabError(f"loss became {loss} at step {step + 1}; stopped; {kept}; lower the "
                              f"learning rate (it was {lr_at(step):.3g}) and run again")


def train_and_evaluate(config: TrainConfig, workdir: str, *, resume: bool = False,
                       overwrite: bool = False, reporter: Reporter | None = None) -> dict:
    """Train ``config.model`` on ``config.dataset``, evaluate on the test split after every epoch.

    Writes the workdir described in the module docstring (process 0 only, except checkpoints,
    which every process writes its shards of). ``resume``: continue from the newest complete
    checkpoint in ``workdir`` (bit-identical to not having stopped). Runs on every device of every
    process: the global batch ``config.batch_size`` is split along the mesh's ``data`` axis.

    Returns the final record: ``test_accuracy``, ``test_loss``, ``test_top{k}_accuracy``,
    ``confusion_matrix``, ``step``, ``epoch``, ``seconds``, ``source`` (which data was used), ...

    Raises:
      CnnlabError: bad names or numbers, missing or corrupt data, a batch larger than the data
        set, an unwritable workdir, a non-finite loss (the last good checkpoint is kept).
    """
    from cnnlab import data, models

    t_start = time.time()
    config.validate()
    main = distributed.is_main_process()
    reporter = reporter if (reporter is not None and main) else Reporter()
    workdir = os.path.abspath(workdir)
    prepare_workdir(workdir, resume=resume, overwrite=overwrite)

    ds = data.load(config.dataset, data_dir=config.data_dir, tfds_dir=config.tfds_dir)
    n_train, n_test = len(ds.train.labels), len(ds.test.labels)
    if config.batch_size > n_train:
        raise CnnlabError(f"batch size {config.batch_size} is larger than the {n_train:,} training "
                          f"images of {config.dataset}; choose --batch-size <= {n_train}")
    mesh = distributed.make_mesh(config.model_parallelism)
    n_shards = distributed.data_size(mesh)
    if config.batch_size % n_shards:
        raise CnnlabError(f"batch size {config.batch_size} must be a multiple of the {n_shards} "
                          "data-parallel devices")
    eval_bs = min(config.eval_batch_size, n_test)
    eval_bs = -(-eval_bs // n_shards) * n_shards

    steps_per_epoch = n_train // config.batch_size
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    total_steps = config.epochs * steps_per_epoch
    num_classes = len(ds.class_names)
    input_shape = tuple(int(d) for d in ds.train.images.shape[1:])
    model = models.get(config.model, num_classes=num_classes, **dict(config.model_kwargs))
    tx = make_optimizer(config, steps_per_epoch)
    schedule = make_schedule(config, steps_per_epoch)

    create = functools.partial(create_train_state, model, tx, input_shape=input_shape)
    abstract = jax.eval_shape(create, jax.random.key(0))
    state_sharding = distributed.state_shardings(abstract, mesh, config.sharding)
    rep = distributed.replicated(mesh)
    # Made inside jit so that with several processes they are global (replicated) arrays.
    init_key, run_key = jax.jit(lambda: tuple(jax.random.split(jax.random.key(config.seed))),
                                out_shardings=(rep, rep))()

    from cnnlab.checkpoints import Checkpoints, abstract_like
    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    try:
        meta: dict = {}
        history: list[dict] = []
        if resume and ckpts.latest_step() is not None:
            target = abstract_like(abstract.arrays(), state_sharding.arrays())
            try:
                arrays, meta = ckpts.restore(target)
            except (ValueError, KeyError, TypeError) as e:
                raise CnnlabError(
                    f"the checkpoint in {workdir} does not fit this model/optimizer "
                    f"({config.model}, {config.optimizer}): {str(e).splitlines()[0][:200]}; "
                    "resume with the settings of the original run") from None
            state = abstract.replace(**arrays)
            history = [r for r in read_metrics(workdir)
                       if not r.get("final") and r["epoch"] <= meta.get("epochs_done", 0)]
            reporter.note(f"resuming from step {int(meta['step'])} in {workdir}")
        else:
            if resume:
                reporter.note(f"no checkpoint in {workdir} yet: starting from scratch")
            state = jax.jit(create, out_shardings=state_sharding)(init_key)
        if main:
            write_json(os.path.join(workdir, "config.json"), config.to_dict())
            write_json(os.path.join(workdir, "run.json"), {
                "class_names": list(ds.class_names), "input_shape": list(input_shape),
                "num_classes": num_classes, "dataset": config.dataset, "source": ds.source,
                "train_examples": n_train, "test_examples": n_test,
                "param_count": models.param_count(abstract.params),
                "devices": jax.device_count(), "processes": jax.process_count(),
                "mesh": dict(mesh.shape), "steps_per_epoch": steps_per_epoch})
            _write_metrics(workdir, history)

        options = StepOptions.from_config(config)
        train_fn, eval_fn = make_step_fns(options, mesh, state_sharding)
        train_feed = BatchFeeder(ds.train, mesh, on_device=config.data_on_device)
        test_feed = BatchFeeder(ds.test, mesh, on_device=config.data_on_device)
        reporter.run_start({"model": config.model, "dataset": config.dataset, "source": ds.source,
                            "devices": jax.device_count(), "mesh": dict(mesh.shape),
                            "param_count": models.param_count(abstract.params),
                            "steps_per_epoch": steps_per_epoch, "epochs": config.epochs})

        step = int(distributed.to_host(state.step))
        test: dict | None = None
        while step < total_steps:
            epoch, offset = divmod(step, steps_per_epoch)
            order = data.batch_indices(n_train, config.batch_size, seed=config.seed, epoch=epoch)
            order = order[:steps_per_epoch]
            # Running sums of the epoch's training metrics survive a mid-epoch resume via meta.
            sums = meta.get("epoch_sums") if offset else None
            sums = dict(sums) if sums else {"loss": 0.0, "accuracy": 0.0, "steps": 0}
            reporter.epoch_start(epoch + 1, config.epochs, steps_per_epoch, offset)
            t_epoch, t_window, n_window = time.time(), time.time(), 0
            pending: list[tuple[int, dict]] = []

            def flush():
                nonlocal t_window, n_window
                if not pending:
                    return
                values = distributed.to_host([m for _, m in pending])
                losses = [(s, float(v["loss"])) for (s, _), v in zip(pending, values)]
                _check_finite(losses, ckpts, workdir, schedule)
                for v in values:
                    sums["loss"] += float(v["loss"])
                    sums["accuracy"] += float(v["accuracy"])
                    sums["steps"] += 1
                now = time.time()
                ips = n_window * config.batch_size / max(now - t_window, 1e-9)
                t_window, n_window = now, 0
                reporter.step(pending[-1][0] + 1 - epoch * steps_per_epoch,
                              {"loss": float(values[-1]["loss"]),
                               "accuracy": sums["accuracy"] / sums["steps"],
                               "images_per_second": ips})
                pending.clear()

            for i in range(offset, steps_per_epoch):
                images, labels = train_feed.batch(order[i])
                state, m = train_fn(state, images, labels, run_key)
                pending.append((step, m))
                step += 1
                n_window += 1
                if len(pending) >= config.log_every_steps:
                    flush()
                if (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0
                        and i + 1 < steps_per_epoch):
                    flush()
                    ckpts.save(step, state.arrays(),
                               {"step": step, "epochs_done": epoch, "epoch_sums": sums})
            flush()
            epoch_seconds = time.time() - t_epoch
            test = evaluate(state, test_feed, eval_fn, eval_bs, top_k=config.top_k)
            record = {
                "epoch": epoch + 1, "step": step,
                "train_loss": sums["loss"] / max(sums["steps"], 1),
                "train_accuracy": sums["accuracy"] / max(sums["steps"], 1),
                "test_loss": test["loss"], "test_accuracy": test["accuracy"],
                f"test_top{config.top_k}_accuracy": test[f"top{config.top_k}_accuracy"],
                "learning_rate": float(schedule(step - 1)),
                "epoch_seconds": round(epoch_seconds, 3),
                "images_per_second": round((steps_per_epoch - offset) * config.batch_size
                                           / max(epoch_seconds, 1e-9), 1),
            }
            history.append(record)
            if main:
                _write_metrics(workdir, history)
            # Metrics line first, checkpoint second: a resume drops lines past its checkpoint.
            ckpts.save(step, state.arrays(),
                       {"step": step, "epochs_done": epoch + 1, "epoch_sums": None})
            reporter.epoch_end(record)

        if test is None:  # nothing left to train (resumed a finished run): evaluate what we have
            test = evaluate(state, test_feed, eval_fn, eval_bs, top_k=config.top_k)
        final = {
            "final": True, "epoch": step // max(steps_per_epoch, 1), "step": step,
            "test_loss": test["loss"], "test_accuracy": test["accuracy"],
            f"test_top{config.top_k}_accuracy": test[f"top{config.top_k}_accuracy"],
            "test_examples": test["count"], "confusion_matrix": test["confusion_matrix"],
            "model": config.model, "dataset": config.dataset, "source": ds.source,
            "devices": jax.device_count(), "precision": config.precision,
            "seconds": round(time.time() - t_start, 2),
        }
        if config.plots:
            host_state = distributed.to_host(state.arrays())
        if main:
            _write_metrics(workdir, history + [final])
            if config.plots:
                _write_plots(workdir, model, host_state, ds, history, test, config)
        ckpts.wait()
        return final
    finally:
        ckpts.close()


def predict_logits(apply_fn, params, batch_stats, images, *, precision: str = "f32",
                   batch_size: int = 1000) -> np.ndarray:
    """Logits (N, C) of images (N, H, W, C) (uint8 or float in [0, 1]), in inference mode."""
    fn = jax.jit(lambda p, s, x: apply_model(apply_fn, p, s, _to_float(x), train=False,
                                             precision=precision)[0])
    out = [np.asarray(fn(params, batch_stats, images[i:i + batch_size]))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _write_plots(workdir, model, host_state, ds, history, test, config) -> None:
    from cnnlab import plots
    out = os.path.join(workdir, "plots")
    os.makedirs(out, exist_ok=True)
    plots.training_curves(history, os.path.join(out, "curves.png"))
    plots.confusion_matrix(np.asarray(test["confusion_matrix"]), ds.class_names,
                           os.path.join(out, "confusion_matrix.png"))
    n = min(25, len(ds.test.labels))
    logits = predict_logits(model.apply, host_state["params"], host_state["batch_stats"],
                            ds.test.images[:n], precision=config.precision)
    plots.prediction_grid(ds.test.images[:n], ds.test.labels[:n], logits.argmax(-1),
                          ds.class_names, os.path.join(out, "predictions.png"))


# --------------------------------------------------------------------------------------------
# Reading a finished run back (evaluate / predict / visualize)
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """A trained run read back from its workdir, on this process's devices."""

    workdir: str
    config: TrainConfig
    info: dict                 # run.json
    model: nn.Module
    state: TrainState
    step: int

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.info["class_names"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.info["input_shape"])

    def logits(self, images: np.ndarray) -> np.ndarray:
        return predict_logits(self.model.apply, self.state.params, self.state.batch_stats, images,
                              precision=self.config.precision)


def load_run(workdir: str, *, step: int | None = None) -> Run:
    """Read ``config.json``, ``run.json`` and the newest (or ``step``) checkpoint of ``workdir``
    onto a 1-device layout, whatever device count it was trained on."""
    from cnnlab import models
    from cnnlab.checkpoints import Checkpoints, abstract_like
    workdir = os.path.abspath(workdir)
    paths = [os.path.join(workdir, n) for n in ("config.json", "run.json")]
    if not all(os.path.exists(p) for p in paths):
        raise CnnlabError(f"{workdir} is not a training run (no config.json/run.json); "
                          f"train one with `cnnlab train --workdir {workdir}`")
    with open(paths[0]) as f:
        config = TrainConfig.from_dict(json.load(f))
    with open(paths[1]) as f:
        info = json.load(f)
    model = models.get(config.model, num_classes=info["num_classes"], **dict(config.model_kwargs))
    tx = make_optimizer(config, info.get("steps_per_epoch", 1))
    abstract = jax.eval_shape(functools.partial(create_train_state, model, tx,
                                                input_shape=info["input_shape"]),
                              jax.random.key(0))
    device = jax.local_devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    try:
        if ckpts.latest_step() is None:
            raise CnnlabError(f"no complete checkpoint in {workdir}/checkpoints; train first")
        target = abstract_like(abstract.arrays(),
                               jax.tree.map(lambda _: sharding, abstract.arrays()))
        arrays, _ = ckpts.restore(target, step)
        restored_step = step if step is not None else ckpts.latest_step()
    finally:
        ckpts.close()
    return Run(workdir, config, info, model, abstract.replace(**arrays), int(restored_step))
