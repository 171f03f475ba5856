"""Training: jit-compiled Optax steps over Flax linen models, and a whole run into a workdir.

The pieces, each usable on its own (Flax's ``examples/mnist`` conventions):

- :class:`TrainState`: Flax's :class:`flax.training.train_state.TrainState` with
  ``batch_stats`` (``create``, ``apply_gradients``); a pytree, so it is jitted, donated, sharded
  and checkpointed as a whole. :func:`create_train_state` initialises a model into one.
- :func:`make_optimizer` / :func:`make_schedule`: optax optimizers and schedules by name, from
  plain arguments (:func:`optimizer_from_config` reads them from a :class:`TrainConfig`).
- :func:`make_train_step` / :func:`make_eval_step`: the jitted steps, built from parts you can
  replace (``loss_fn``), optionally with in/out shardings for a device mesh
  (:mod:`cnnlab.distributed`); the state is donated and batch shapes are fixed, so each compiles
  exactly once per run. :data:`train_step` and :data:`eval_step` are the defaults.
- :func:`evaluate`: metrics over a whole split.
- :func:`train_and_evaluate`: a whole run into a workdir (:mod:`cnnlab.workdir`): data, a
  validation split held out of the training data, model, the one training loop
  (:func:`cnnlab.loop.fit`), the test split once at the end, plots. :func:`load_run` reads a
  finished run back.

Determinism (what makes resuming exact): the order of epoch ``e`` is a permutation drawn from
``(seed, e)`` (:func:`cnnlab.data.batch_indices`) and the randomness of step ``s`` (dropout,
augmentation) is ``fold_in(key(seed), s)``; so after restoring step ``s`` a run replays exactly
the batches and keys an uninterrupted run would have used.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from cnnlab import data, distributed, metrics, models
from cnnlab.checkpoints import Checkpoints, abstract_like, on_one_device
from cnnlab.compilation import TRACE_COUNTS, enable_compilation_cache
from cnnlab.config import OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig
from cnnlab.data.feeding import BatchFeeder, eval_batches
from cnnlab.errors import CnnlabError
from cnnlab.loop import FitResult, Loop, LoopSpec, Reporter, epoch_scalars, fit
from cnnlab.workdir import CheckpointMeta, RunInfo, Workdir

__all__ = [
    "TrainConfig", "TrainState", "create_train_state", "make_schedule", "make_optimizer",
    "optimizer_from_config", "StepOptions", "apply_model", "cross_entropy_loss",
    "make_train_step", "make_eval_step", "train_step", "eval_step", "evaluate", "fit",
    "Reporter", "restore_or_create", "train_and_evaluate", "Run", "load_run", "tta_probs",
    "tta_accuracy", "predict_logits", "map_batches", "read_metrics", "split_metrics", "TRACE_COUNTS",
    "enable_compilation_cache", "OPTIMIZERS", "SCHEDULES", "PRECISIONS",
]


# --------------------------------------------------------------------------------------------
# State and optimizer
# --------------------------------------------------------------------------------------------

class TrainState(train_state.TrainState):
    """Flax's ``TrainState`` (``step``, ``params``, ``opt_state``, static ``apply_fn`` and ``tx``)
    plus ``batch_stats`` (``{}`` for models without batch norm).

    ``step`` is an int32 array (not a Python int), so the state has the same structure inside
    and outside ``jax.jit`` and in checkpoints.
    """

    batch_stats: Any = struct.field(default_factory=dict)

    @classmethod
    def create(cls, *, apply_fn, params, tx, **kwargs) -> TrainState:
        """Flax's ``TrainState.create`` with ``step`` an int32 zero."""
        state = super().create(apply_fn=apply_fn, params=params, tx=tx, **kwargs)
        return state.replace(step=jnp.zeros((), jnp.int32))

    def arrays(self) -> dict[str, Any]:
        """The checkpointed part: ``{"step", "params", "batch_stats", "opt_state"}``."""
        return {"step": self.step, "params": self.params, "batch_stats": self.batch_stats,
                "opt_state": self.opt_state}

    def with_arrays(self, arrays: Mapping[str, Any]) -> TrainState:
        """This state with the (restored) arrays of :meth:`arrays` in place."""
        return self.replace(**arrays)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                       input_shape: Sequence[int]) -> TrainState:
    """Initialise ``model`` on zeros and wrap it with ``tx`` in a :class:`TrainState`.

    Args:
      model: a Flax module called as ``model.apply(variables, x, train=...)``.
      tx: the optimizer.
      key: PRNG key of the initialisation.
      input_shape: (H, W, C) or (N, H, W, C).

    Returns:
      The state at step 0.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) == 3:
        input_shape = (1, *input_shape)
    params_key, dropout_key = jax.random.split(key)
    variables = model.init({"params": params_key, "dropout": dropout_key},
                           jnp.zeros(input_shape, jnp.float32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}))


def make_schedule(name: str, learning_rate: float, total_steps: int, *,
                  warmup_steps: int = 0) -> optax.Schedule:
    """Learning rate as a function of the step.

    Args:
      name: "constant" (``lr``); "cosine" (``lr * (1 + cos(pi t / T)) / 2`` over all ``T``
        steps, after an optional linear warm-up from 0); "one_cycle" (fast.ai's one-cycle:
        cosine up to ``lr`` in the first 30% of the steps, then down to ``lr / 25 / 1e4``).
      learning_rate: the (peak) rate ``lr``.
      total_steps: ``T``, the steps of the whole run.
      warmup_steps: linear warm-up steps of "cosine".

    Returns:
      An optax schedule ``step -> learning rate``.

    >>> round(float(make_schedule("cosine", 1.0, 100)(50)), 6)
    0.5
    """
    total = max(1, int(total_steps))
    if name == "constant":
        return optax.constant_schedule(learning_rate)
    if name == "cosine":
        if warmup_steps:
            return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps,
                                                      max(total, warmup_steps + 1))
        return optax.cosine_decay_schedule(learning_rate, total)
    if name == "one_cycle":
        return optax.cosine_onecycle_schedule(total, learning_rate)
    raise CnnlabError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")


def _decay_mask(params):
    # Decay kernels only, not biases or batch-norm scales (the usual convention).
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def make_optimizer(name: str, learning_rate: float | optax.Schedule, *, momentum: float = 0.9,
                   nesterov: bool = False, weight_decay: float = 0.0,
                   clip_grad_norm: float = 0.0) -> optax.GradientTransformation:
    """An optax optimizer by name.

    Args:
      name: "sgd" (``p -= lr g``), "momentum" (heavy-ball, or Nesterov), "adam", "adamw"
        (decoupled weight decay) or "adadelta".
      learning_rate: a number or a schedule (:func:`make_schedule`).
      momentum: for "momentum".
      nesterov: Nesterov momentum, for "momentum".
      weight_decay: decoupled for "adamw"; for the others ``wd * p`` is added to the gradient
        (L2). Kernels only (arrays with more than one dimension).
      clip_grad_norm: clip the gradients to this global norm first (0 = off).

    Returns:
      The ``optax.GradientTransformation``.

    Raises:
      CnnlabError: an unknown name (the message lists the valid ones).

    >>> tx = make_optimizer("momentum", 0.1, nesterov=True)
    """
    if name not in OPTIMIZERS:
        raise CnnlabError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    lr = learning_rate
    if name == "sgd":
        tx = optax.sgd(lr)
    elif name == "momentum":
        tx = optax.sgd(lr, momentum=momentum, nesterov=nesterov)
    elif name == "adam":
        tx = optax.adam(lr)
    elif name == "adamw":
        tx = optax.adamw(lr, weight_decay=weight_decay, mask=_decay_mask)
    else:
        tx = optax.adadelta(lr)
    parts = []
    if clip_grad_norm:
        parts.append(optax.clip_by_global_norm(clip_grad_norm))
    if weight_decay and name != "adamw":
        parts.append(optax.add_decayed_weights(weight_decay, mask=_decay_mask))
    return optax.chain(*parts, tx) if parts else tx


def optimizer_from_config(config: TrainConfig, steps_per_epoch: int
                          ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer and schedule a :class:`TrainConfig` describes.

    Args:
      config: ``optimizer``, ``learning_rate``, ``schedule``, ``warmup_epochs``, ``epochs``,
        ``momentum``, ``nesterov``, ``weight_decay``, ``clip_grad_norm`` are read.
      steps_per_epoch: optimizer steps per epoch (schedules span ``epochs`` of them).

    Returns:
      ``(tx, schedule)``: :func:`make_optimizer` over :func:`make_schedule`.
    """
    schedule = make_schedule(config.schedule, config.learning_rate,
                             config.epochs * steps_per_epoch,
                             warmup_steps=int(config.warmup_epochs * steps_per_epoch))
    tx = make_optimizer(config.optimizer, schedule, momentum=config.momentum,
                        nesterov=config.nesterov, weight_decay=config.weight_decay,
                        clip_grad_norm=config.clip_grad_norm)
    return tx, schedule


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StepOptions:
    """The static (compile-time) settings of the steps.

    Attributes:
      label_smoothing: of the default loss.
      augment: random pad-and-crop (``augment_pad`` pixels), flips (``augment_flip``) and
        random erasing (probability ``augment_erase``) of each training batch, on device.
      precision: "f32", or "bf16" (bfloat16 compute, float32 parameters and statistics).
      top_k: k of the top-k accuracy of :func:`make_eval_step`.
      train_mode: the model's ``train`` flag while training; False keeps batch norm on its
        running statistics and dropout off (fine-tuning, as Keras advises).
    """

    label_smoothing: float = 0.0
    augment: bool = False
    augment_flip: bool = True
    augment_pad: int = 2
    augment_erase: float = 0.0
    precision: str = "f32"
    top_k: int = 5
    train_mode: bool = True

    @classmethod
    def from_config(cls, config: TrainConfig) -> StepOptions:
        return cls(label_smoothing=config.label_smoothing, augment=config.augment,
                   augment_flip=config.augment_flip, augment_pad=config.augment_pad,
                   augment_erase=config.augment_erase, precision=config.precision, top_k=config.top_k)


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
    """Run the model in float32 or bfloat16.

    ``precision="bf16"``: parameters and inputs are cast to bfloat16 for the forward (and so the
    backward) pass, every layer's output stays bfloat16; gradients flow back through the casts
    to the float32 parameters, and batch-norm statistics are reduced and kept in float32.

    Args:
      apply_fn: ``model.apply``.
      params, batch_stats: the variables (``batch_stats`` ``{}`` without batch norm).
      x: float inputs (N, H, W, C).
      train: the model's ``train`` flag (batch statistics are updated when True).
      rngs: PRNG streams, e.g. ``{"dropout": key}``.
      precision: "f32" or "bf16".

    Returns:
      ``(logits float32 (N, C), new_batch_stats)``.
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


def cross_entropy_loss(logits: jax.Array, labels: jax.Array, *,
                       label_smoothing: float = 0.0) -> jax.Array:
    """The default loss: mean (label-smoothed) softmax cross-entropy
    (:func:`cnnlab.metrics.cross_entropy`).

    Args:
      logits: float (B, C).
      labels: int (B,).
      label_smoothing: ``a`` of the smoothed target ``(1 - a) one_hot(y) + a / C``.

    Returns:
      The mean loss, a scalar.
    """
    return metrics.cross_entropy(logits, labels, label_smoothing=label_smoothing).mean()


def mean_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """The default loss of float targets (a regression, e.g. ``cnnlab forecast``).

    Args:
      predictions: the model's outputs, float (B, ...).
      targets: float (B, ...), the same shape.

    Returns:
      The mean over examples of :func:`cnnlab.metrics.squared_error`, a scalar.
    """
    return metrics.squared_error(predictions, targets).mean()


def is_regression(labels: jax.Array) -> bool:
    """Whether a batch's labels are regression targets (decided at trace time from the dtype;
    :func:`cnnlab.data.feeding.label_array` makes them so).

    Args:
      labels: a batch's labels (B, ...).

    Returns:
      True for float targets, False for integer class indices.
    """
    return bool(jnp.issubdtype(labels.dtype, jnp.floating))


LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def make_train_step(loss_fn: LossFn | None = None, *, options: StepOptions = StepOptions(),
                    mesh: jax.sharding.Mesh | None = None, state_sharding=None) -> Callable:
    """The jitted training step ``(state, images, labels, key) -> (state, metrics)``.

    One optimizer update: images (uint8 are scaled to [0, 1] on device; float pass through) are
    augmented (``options.augment``), the model runs with ``train=options.train_mode`` and dropout
    key ``fold_in(key, state.step)``, the loss is differentiated and
    :meth:`TrainState.apply_gradients` applies it. The state is donated: do not use it after the
    call. Every source of randomness depends only on ``(key, state.step)``. Integer labels are
    classes; float labels are regression targets (:func:`is_regression`), the model's outputs
    their predictions.

    Args:
      loss_fn: ``(logits float32 (B, C), labels int (B,)) -> scalar`` to minimise (or
        ``(predictions (B, ...), targets float (B, ...))``); default
        :func:`cross_entropy_loss` with ``options.label_smoothing`` for class labels,
        :func:`mean_squared_error` for float targets.
      options: the static settings (:class:`StepOptions`).
      mesh: with ``state_sharding``, compile for a device mesh: batches split along ``data``,
        the state laid out as ``state_sharding`` (a :class:`TrainState` of shardings), metrics
        replicated.

    Returns:
      ``train_step``; its ``metrics`` are the batch's ``loss`` and, for class labels,
      ``accuracy``.

    Example (a focal loss; see the README's research section for a whole loop):

    >>> def focal(logits, labels, gamma=2.0):
    ...     logp = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1)[:, 0]
    ...     return -jnp.mean((1 - jnp.exp(logp)) ** gamma * logp)
    >>> step = make_train_step(loss_fn=focal)
    """
    if loss_fn is None:
        def loss_fn(logits, labels):
            if is_regression(labels):
                return mean_squared_error(logits, labels)
            return cross_entropy_loss(logits, labels, label_smoothing=options.label_smoothing)

    def step(state: TrainState, images, labels, key):
        TRACE_COUNTS["train_step"] += 1
        # The step's randomness depends only on (run key, step): a resumed run replays it exactly.
        augment_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
        x = data.to_float(images)
        if options.augment:
            x = data.augment(augment_key, x, flip=options.augment_flip, pad=options.augment_pad,
                             erase=options.augment_erase)

        def loss_of(params):
            logits, new_stats = apply_model(state.apply_fn, params, state.batch_stats, x,
                                            train=options.train_mode,
                                            rngs={"dropout": dropout_key},
                                            precision=options.precision)
            return loss_fn(logits, labels), (logits, new_stats)

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(
            state.params)
        state = state.apply_gradients(grads=grads, batch_stats=new_stats)
        if is_regression(labels):
            return state, {"loss": loss}
        return state, {"loss": loss, "accuracy": metrics.correct(logits, labels).mean()}

    if mesh is None:
        return jax.jit(step, donate_argnums=0)
    batch, rep = distributed.batch_sharding(mesh), distributed.replicated(mesh)
    return jax.jit(step, in_shardings=(state_sharding, batch, batch, rep),
                   out_shardings=(state_sharding, rep), donate_argnums=0)


def make_eval_step(*, options: StepOptions = StepOptions(), mesh: jax.sharding.Mesh | None = None,
                   state_sharding=None) -> Callable:
    """The jitted evaluation step ``(state, images, labels, mask=None) -> sums``, inference mode.

    Args:
      options: ``precision`` and ``top_k``.
      mesh, state_sharding: as for :func:`make_train_step` (``mask`` is then required).

    Returns:
      ``eval_step``; its result holds sums that add up across batches (``count``, ``loss_sum``,
      ``correct``, ``top_k_correct``, ``confusion`` (C, C); see :func:`cnnlab.metrics.finalize`)
      plus the batch's mean ``loss`` and ``accuracy``. ``mask`` (B,) 0/1 excludes padding rows.
    """
    def step(state: TrainState, images, labels, mask=None):
        TRACE_COUNTS["eval_step"] += 1
        logits, _ = apply_model(state.apply_fn, state.params, state.batch_stats,
                                data.to_float(images), train=False, precision=options.precision)
        sums = metrics.batch_sums(logits, labels, mask, top_k=options.top_k)
        sums["loss"] = sums["loss_sum"] / sums["count"]
        sums["accuracy"] = sums["correct"] / sums["count"]
        return sums

    if mesh is None:
        return jax.jit(step)
    batch = distributed.batch_sharding(mesh)
    return jax.jit(step, in_shardings=(state_sharding, batch, batch, batch),
                   out_shardings=distributed.replicated(mesh))


#: The default training step: cross-entropy, no augmentation, float32 (see
#: :func:`make_train_step`): ``state, metrics = train_step(state, images, labels, key)``.
train_step = make_train_step()
#: The default evaluation step (see :func:`make_eval_step`).
eval_step = make_eval_step()


def evaluate(state: TrainState, feeder: BatchFeeder, eval_fn: Callable, batch_size: int, *,
             rows: np.ndarray | None = None, top_k: int = 5) -> dict:
    """Metrics over a whole split, every example exactly once.

    Args:
      state: the state to evaluate.
      feeder: the split's :class:`~cnnlab.data.BatchFeeder`.
      eval_fn: an evaluation step (:func:`make_eval_step`).
      batch_size: fixed batch size (the last batch is padded and masked); a multiple of the
        mesh's ``data`` axis.
      rows: evaluate only these rows of the feeder's split (e.g. the validation hold-out).
      top_k: as in the evaluation step.

    Returns:
      ``loss``, ``accuracy``, ``top{k}_accuracy``, ``count`` and ``confusion_matrix``
      (:func:`cnnlab.metrics.finalize`).
    """
    n = feeder.num_examples if rows is None else len(rows)
    total, pending = None, []
    for idx, mask in eval_batches(n, batch_size):
        images, labels = feeder.batch(idx if rows is None else rows[idx])
        pending.append(eval_fn(state, images, labels, feeder.put(mask)))
    for sums in pending:  # fetch after dispatching all: the device never waits for the host
        total = metrics.add_sums(total, distributed.to_host(
            {k: v for k, v in sums.items() if k not in ("loss", "accuracy")}))
    return metrics.finalize(total, top_k=top_k)


def split_metrics(prefix: str, m: Mapping[str, Any], top_k: int) -> dict[str, float]:
    """The record entries of one split's metrics.

    Args:
      prefix: "val" or "test".
      m: :func:`evaluate`'s result.
      top_k: its k.

    Returns:
      ``{prefix_loss, prefix_accuracy, prefix_top{k}_accuracy}``.
    """
    return {f"{prefix}_loss": m["loss"], f"{prefix}_accuracy": m["accuracy"],
            f"{prefix}_top{top_k}_accuracy": m[f"top{top_k}_accuracy"]}


# --------------------------------------------------------------------------------------------
# A whole run: train_and_evaluate
# --------------------------------------------------------------------------------------------

def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclasses.dataclass
class _Setup:
    """What :func:`train_and_evaluate` derives from the config and the data before training."""

    ds: Any
    train_rows: np.ndarray
    val_rows: np.ndarray
    mesh: jax.sharding.Mesh
    model: nn.Module
    steps_per_epoch: int
    eval_batch_size: int
    info: RunInfo


def _setup(config: TrainConfig) -> _Setup:
    ds = data.load(config.dataset, data_dir=config.data_dir, tfds_dir=config.tfds_dir)
    train_rows, val_rows = data.holdout(ds.train.labels, config.val_fraction, seed=config.seed)
    n_train, n_val, n_test = len(train_rows), len(val_rows), len(ds.test)
    if config.batch_size > n_train:
        held = f" (after holding out {n_val:,} for validation)" if n_val else ""
        raise CnnlabError(f"batch size {config.batch_size} is larger than the {n_train:,} training "
                          f"images of {config.dataset}{held}; choose --batch-size <= {n_train}")
    mesh = distributed.make_mesh(config.model_parallelism)
    n_shards = distributed.data_size(mesh)
    if config.batch_size % n_shards:
        raise CnnlabError(f"batch size {config.batch_size} must be a multiple of the {n_shards} "
                          "data-parallel devices")
    # One evaluation batch shape for validation and test: the evaluation step compiles once.
    eval_bs = _round_up(min(config.eval_batch_size, max(n_val, n_test)), n_shards)
    steps_per_epoch = n_train // config.batch_size
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    model = models.get(config.model, num_classes=ds.num_classes, **dict(config.model_kwargs))
    input_shape = tuple(int(d) for d in ds.image_shape)
    abstract_params = jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                           jnp.zeros((1, *input_shape), jnp.float32), train=False)["params"])
    info = RunInfo(
        class_names=tuple(ds.class_names), input_shape=input_shape, dataset=config.dataset,
        source=ds.source, train_examples=n_train, val_examples=n_val, test_examples=n_test,
        param_count=models.param_count(abstract_params), devices=jax.device_count(),
        processes=jax.process_count(), mesh=dict(mesh.shape), steps_per_epoch=steps_per_epoch,
        imports=_model_imports(config.model))
    return _Setup(ds, train_rows, val_rows, mesh, model, steps_per_epoch, eval_bs, info)


def _model_imports(name: str) -> list[dict] | None:
    """What ``run.json`` records so that a later process finds model ``name`` again."""
    source = models.source_of(name)
    return [source] if source else None


def _import_recorded(wd: Workdir) -> None:
    """Import what a run's ``run.json`` says its model needs (a model of yours)."""
    if wd.is_run() and wd.read_run_info().imports:
        try:
            models.import_models(wd.read_run_info().imports)
        except CnnlabError as e:
            raise CnnlabError(f"the run in {wd.path} trained a model of yours, registered by "
                              f"{wd.read_run_info().imports}, which does not import now: {e}; "
                              "pass --import MODULE with the module that registers it") from None


def restore_or_create(wd: Workdir, ckpts: Checkpoints, create, state_sharding, init_key, *,
                      resume: bool, reporter: Reporter):
    """``(state, meta, history)``: from the newest checkpoint that restores, or fresh.

    Args:
      wd, ckpts: the run's workdir and checkpoints.
      create: ``key -> state`` (a fresh state). The state has ``arrays()`` (what a checkpoint
        holds, :meth:`TrainState.arrays`) and ``with_arrays(arrays)`` (its inverse); a
        :class:`TrainState` or another trainer's state (``cnnlab gan``'s two networks).
      state_sharding: the state's layout (a state of shardings).
      init_key: the key of a fresh state.
      resume: look for a checkpoint (else start fresh).
      reporter: gets the notes (resuming, damaged checkpoints set aside).

    Returns:
      The state, the restored :class:`~cnnlab.workdir.CheckpointMeta` (None when fresh) and the
      records of the epochs before it.
    """
    abstract = jax.eval_shape(create, jax.random.key(0))
    if resume and ckpts.latest_step() is not None:
        target = abstract_like(abstract.arrays(), state_sharding.arrays())
        arrays, meta, step = ckpts.restore_newest(target, note=reporter.note)
        meta = CheckpointMeta.from_json(meta)
        history = [r for r in wd.read_metrics()
                   if not r.get("final") and r["epoch"] <= meta.epochs_done]
        reporter.note(f"resuming from step {step} in {wd.path}")
        return abstract.with_arrays(arrays), meta, history
    if resume:
        reporter.note(f"no checkpoint in {wd.path} yet: starting from scratch")
    return jax.jit(create, out_shardings=state_sharding)(init_key), None, []


def train_and_evaluate(config: TrainConfig, workdir: str, *, resume: bool = False,
                       overwrite: bool = False, reporter: Reporter | None = None,
                       loss_fn: LossFn | None = None) -> tuple[TrainState, dict]:
    """Train ``config.model`` on ``config.dataset`` into ``workdir``; test once at the end.

    ``config.val_fraction`` of the training split is held out (stratified, by seed) and
    evaluated after every epoch; with a validation split the checkpoint with the lowest
    validation loss is the one selected, and ``config.early_stopping`` stops after that many
    epochs without improvement. The test split is evaluated once, at the end, on the selected
    checkpoint (and after every epoch with ``config.test_every_epoch``). Runs on every device
    of every process: the global batch ``config.batch_size`` is split along the mesh's ``data``
    axis. Writes the workdir of :mod:`cnnlab.workdir`.

    Args:
      config: the run's settings.
      workdir: where everything goes.
      resume: continue from the newest checkpoint in ``workdir`` that restores (bit-identical
        to not having stopped).
      overwrite: replace an earlier run in ``workdir``.
      reporter: progress callbacks (process 0 only).
      loss_fn: the training loss (default: cross-entropy, see :func:`make_train_step`).

    Returns:
      ``(state, final)``: the selected state (lowest validation loss; the last one without a
      validation split) and the final record: ``test_accuracy``, ``test_loss``,
      ``test_top{k}_accuracy``, ``test_accuracy_tta`` (with ``config.tta``: flip test-time
      augmentation, :func:`tta_accuracy`), ``confusion_matrix``, ``checkpoint_step``, ``val_*``
      of that checkpoint, ``stopped_early``, ``step``, ``epoch``, ``seconds``, ``source``, ...

    Raises:
      CnnlabError: bad names or numbers, missing or corrupt data, a batch larger than the data
        set, an unwritable workdir, a non-finite or diverging loss (the last good checkpoint is
        kept), no checkpoint that restores.
      Interrupted: SIGTERM or SIGINT (the current step is saved first).
    """
    t_start = time.time()
    if resume:
        _import_recorded(Workdir(workdir))
    models.check_name(config.model)  # before any data is loaded
    main = distributed.is_main_process()
    reporter = reporter if (reporter is not None and main) else Reporter()
    wd = Workdir(workdir)
    wd.prepare(resume=resume, overwrite=overwrite)
    setup = _setup(config)
    ds, mesh, model, spe = setup.ds, setup.mesh, setup.model, setup.steps_per_epoch
    tx, schedule = optimizer_from_config(config, spe)
    create = functools.partial(create_train_state, model, tx, input_shape=setup.info.input_shape)
    state_sharding = distributed.state_shardings(jax.eval_shape(create, jax.random.key(0)), mesh,
                                                 config.sharding)
    rep = distributed.replicated(mesh)
    # Made inside jit so that with several processes they are global (replicated) arrays.
    init_key, run_key = jax.jit(lambda: tuple(jax.random.split(jax.random.key(config.seed))),
                                out_shardings=(rep, rep))()
    has_val = len(setup.val_rows) > 0
    ckpts = wd.checkpoints(keep=config.keep_checkpoints, best_metric="val_loss" if has_val else None)
    try:
        state, meta, history = restore_or_create(wd, ckpts, create, state_sharding, init_key,
                                                  resume=resume, reporter=reporter)
        wd.write_config(config)
        wd.write_run_info(setup.info)
        wd.log_epochs(history)
        options = StepOptions.from_config(config)
        eval_fn = make_eval_step(options=options, mesh=mesh, state_sharding=state_sharding)
        train_feed = BatchFeeder(ds.train, mesh, on_device=config.data_on_device)
        test_feed = BatchFeeder(ds.test, mesh, on_device=config.data_on_device)
        k, bs = config.top_k, setup.eval_batch_size

        def evaluate_epoch(s):
            out = {}
            if has_val:
                out.update(split_metrics("val", evaluate(s, train_feed, eval_fn, bs,
                                                         rows=setup.val_rows, top_k=k), k))
            if config.test_every_epoch:
                out.update(split_metrics("test", evaluate(s, test_feed, eval_fn, bs, top_k=k), k))
            return out

        loop = Loop(
            train_step=make_train_step(loss_fn, options=options, mesh=mesh,
                                       state_sharding=state_sharding),
            feeder=train_feed, rows=setup.train_rows, run_key=run_key, evaluate=evaluate_epoch,
            lr_at=lambda s: float(schedule(s)), workdir=wd, checkpoints=ckpts, reporter=reporter,
            spec=LoopSpec(epochs=config.epochs, steps_per_epoch=spe, batch_size=config.batch_size,
                          seed=config.seed, log_every_steps=config.log_every_steps,
                          checkpoint_every_steps=config.checkpoint_every_steps,
                          early_stopping=config.early_stopping, select_best=has_val,
                          divergence_factor=config.divergence_factor,
                          divergence_steps=config.divergence_steps,
                          profile_steps=config.profile))
        reporter.run_start({"model": config.model, "dataset": config.dataset,
                            "source": ds.source, "devices": jax.device_count(),
                            "mesh": dict(mesh.shape), "param_count": setup.info.param_count,
                            "steps_per_epoch": spe, "epochs": config.epochs,
                            "val_examples": len(setup.val_rows)})
        result = fit(state, loop, history=history, meta=meta)
        chosen, chosen_step = _selected_state(result, ckpts, state_sharding)
        test = evaluate(chosen, test_feed, eval_fn, bs, top_k=k)
        if not math.isfinite(test["loss"]):
            raise CnnlabError(f"the test loss of the checkpoint at step {chosen_step} is "
                              f"{test['loss']}; its checkpoints are kept in {wd.path}; lower the "
                              "learning rate and run again")
        final = {
            "final": True, "epoch": result.meta.epochs_done, "step": result.meta.step,
            "checkpoint_step": chosen_step, **split_metrics("test", test, k),
            "test_examples": test["count"], "confusion_matrix": test["confusion_matrix"],
        }
        if config.tta:
            final["test_accuracy_tta"] = tta_accuracy(model.apply, chosen, ds.test.images,
                                                      ds.test.labels, precision=config.precision,
                                                      batch_size=bs)
        chosen_record = next((r for r in result.history if r["step"] == chosen_step), {})
        final.update({key: v for key, v in chosen_record.items() if key.startswith("val_")})
        final.update(stopped_early=result.stopped_early, model=config.model,
                     dataset=config.dataset, source=ds.source, devices=jax.device_count(),
                     precision=config.precision, seconds=round(time.time() - t_start, 2))
        wd.log_epochs(result.history + [final])
        wd.log_scalars(final["step"], epoch_scalars(
            {key: v for key, v in final.items() if key.startswith("test_")}))
        reporter.run_end(final)  # the answer first; plots take a second or two more
        if config.plots:
            _write_plots(wd, model, chosen, ds, result.history, test, config)
        ckpts.wait()
        return chosen, final
    finally:
        wd.close_events()
        ckpts.close()


def _selected_state(result: FitResult, ckpts: Checkpoints, state_sharding
                    ) -> tuple[TrainState, int]:
    """The state the final test metrics belong to: the best checkpoint by validation loss when
    there is one (restored), else the last state."""
    best = result.meta.best_step
    if best is None or best == result.meta.step:
        return result.state, result.meta.step
    ckpts.wait()
    target = abstract_like(jax.eval_shape(lambda: result.state.arrays()), state_sharding.arrays())
    arrays, _ = ckpts.restore(target, best)
    return result.state.replace(**arrays), best


def map_batches(fn: Callable[[np.ndarray], Any], inputs: np.ndarray, batch_size: int
                ) -> np.ndarray:
    """``fn`` over fixed-size batches of ``inputs``, results concatenated.

    The last batch is padded with zeros (and its padding dropped from the result), so a jitted
    ``fn`` compiles once whatever N.

    Args:
      fn: ``(batch_size, ...) -> (batch_size, ...)``.
      inputs: (N, ...).
      batch_size: rows per call (at most N).

    Returns:
      numpy (N, ...).

    >>> map_batches(lambda x: x * 2, np.arange(5), 2).tolist()
    [0, 2, 4, 6, 8]
    """
    inputs = np.asarray(inputs)
    n = len(inputs)
    batch_size = max(1, min(batch_size, n))
    outs = []
    for start in range(0, n, batch_size):
        chunk = inputs[start:start + batch_size]
        if len(chunk) < batch_size:
            pad = np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        outs.append(np.asarray(fn(chunk))[:min(batch_size, n - start)])
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def predict_logits(apply_fn, params, batch_stats, images, *, precision: str = "f32",
                   batch_size: int = 1000) -> np.ndarray:
    """A model's logits in inference mode, on the default device, in fixed-size batches
    (:func:`map_batches`; one compilation per architecture and batch shape).

    Args:
      apply_fn: ``model.apply``.
      params, batch_stats: the variables (``batch_stats`` ``{}`` without batch norm).
      images: (N, H, W, C), uint8 or float in [0, 1].
      precision: "f32" or "bf16".
      batch_size: images per call.

    Returns:
      float32 numpy (N, C).
    """
    return map_batches(lambda x: _logits(apply_fn, params, batch_stats, x, precision=precision),
                       images, batch_size)


@functools.partial(jax.jit, static_argnames=("apply_fn", "precision"))
def _logits(apply_fn, params, batch_stats, x, *, precision: str):
    # ``apply_fn`` is static: ``model.apply`` of equal modules hashes equal (modules compare by
    # value), so repeated calls with one architecture and shape compile once.
    return apply_model(apply_fn, params, batch_stats, data.to_float(x), train=False,
                       precision=precision)[0]


def tta_probs(logits_fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray, *,
              logits: np.ndarray | None = None) -> np.ndarray:
    """Test-time augmentation: class probabilities averaged over each image and its left-right
    mirror, ``(softmax(f(x)) + softmax(f(flip(x)))) / 2``.

    Args:
      logits_fn: images (N, H, W, C) -> logits (N, C).
      images: (N, H, W, C).
      logits: ``f(x)`` (N, C) when the caller has it already (then only the mirrors run).

    Returns:
      Probabilities (N, C).
    """
    images = np.asarray(images)
    p = jax.nn.softmax(jnp.asarray(logits_fn(images) if logits is None else logits), axis=-1)
    q = jax.nn.softmax(jnp.asarray(logits_fn(images[:, :, ::-1])), axis=-1)
    return np.asarray((p + q) / 2)


def tta_accuracy(apply_fn, state: TrainState, images: np.ndarray, labels: np.ndarray, *,
                 precision: str = "f32", batch_size: int = 1000) -> float:
    """Accuracy of flip test-time augmentation (:func:`tta_probs`) on one split.

    Args:
      apply_fn: ``model.apply``.
      state: the state to evaluate (may be sharded; it is fetched to the host).
      images: (N, H, W, C) uint8 or float in [0, 1]; labels: int (N,).
      precision, batch_size: as for :func:`predict_logits`.

    Returns:
      ``mean(argmax(tta_probs) == labels)``.
    """
    host = distributed.to_host(state.arrays())
    probs = tta_probs(lambda x: predict_logits(apply_fn, host["params"], host["batch_stats"], x,
                                               precision=precision, batch_size=batch_size),
                      images)
    return float(np.mean(probs.argmax(-1) == np.asarray(labels)))


def _write_plots(wd: Workdir, model, state, ds, history, test, config) -> None:
    host_state = distributed.to_host(state.arrays())
    n = min(25, len(ds.test))
    logits = predict_logits(model.apply, host_state["params"], host_state["batch_stats"],
                            ds.test.images[:n], precision=config.precision)
    wd.write_plots(history, test["confusion_matrix"], ds.class_names, ds.test.images[:n],
                   ds.test.labels[:n], logits.argmax(-1))


def read_metrics(workdir: str) -> list[dict]:
    """What a run wrote to ``metrics.jsonl`` (:meth:`cnnlab.workdir.Workdir.read_metrics`).

    Args:
      workdir: the run's workdir.

    Returns:
      One dict per line: the epochs' records, then the final one (``"final": true``).
    """
    return Workdir(workdir).read_metrics()


# --------------------------------------------------------------------------------------------
# Reading a finished run back (evaluate / predict / visualize / finetune --backbone)
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """A trained run read back from its workdir, on this process's first device."""

    workdir: str
    config: TrainConfig
    info: RunInfo
    model: nn.Module
    state: TrainState
    step: int

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.info.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.info.input_shape)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, C) of uint8 images (N, H, W, C) of the run's input shape."""
        return predict_logits(self.model.apply, self.state.params, self.state.batch_stats, images,
                              precision=self.config.precision)


def load_run(workdir: str, *, step: int | str | None = None, optimizer: bool = False) -> Run:
    """A run's model and a checkpoint, whatever device count it was trained on.

    Args:
      workdir: a ``cnnlab train`` (or ``cnnlab finetune``) workdir.
      step: which checkpoint: a step, ``"latest"`` (the newest that restores; damaged ones are
        skipped with a note), or None: the selected one (lowest validation loss) when the run
        kept one, else the newest.
      optimizer: also restore the optimizer state (``cnnlab train`` runs only: the optimizer
        is rebuilt from ``config.json``).

    Returns:
      A :class:`Run`; its ``state`` lives on one device (``opt_state`` None unless
      ``optimizer``).

    Raises:
      CnnlabError: not a run, no checkpoint, none that restores.
    """
    wd = Workdir(workdir)
    wd.require_run()
    config, info = wd.read_config(), wd.read_run_info()
    if config.model not in models.names():
        _import_recorded(wd)
    model = models.get(config.model, num_classes=info.num_classes, **dict(config.model_kwargs))
    tx = optimizer_from_config(config, info.steps_per_epoch)[0] if optimizer else None
    abstract = jax.eval_shape(functools.partial(
        create_train_state, model, tx or optax.identity(), input_shape=info.input_shape),
        jax.random.key(0))
    arrays = abstract.arrays()
    if not optimizer:
        del arrays["opt_state"]
    target = on_one_device(arrays)
    ckpts = wd.checkpoints_to_read()
    try:
        if step is None or step == "latest":
            restored, meta, newest = ckpts.restore_newest(target, note=_note)
            best = meta.get("best_step") if step is None else None
            step = newest
            if best is not None and best != step and best in ckpts.all_steps():
                restored, _ = ckpts.restore(target, best)
                step = best
        else:
            restored, _ = ckpts.restore(target, step)
    finally:
        ckpts.close()
    state = abstract.replace(**{"tx": tx, "opt_state": None, **restored})
    return Run(wd.path, config, info, model, state, int(step))


def _note(text: str) -> None:
    print(f"note: {text}", flush=True)
