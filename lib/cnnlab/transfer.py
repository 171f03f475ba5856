"""Transfer learning and fine-tuning: reuse a trained network for your own classes.

The recipe (Keras's transfer-learning guide, fast.ai's ``fine_tune``), one function per step:

1. :func:`replace_head`: a fresh output layer for the new classes (the old classes are gone);
2. a freeze specification: the network as ordered blocks (:func:`blocks`), the last ``k`` of them
   trainable (:func:`freeze_labels`) -> an ``optax.multi_transform`` label tree, with
   discriminative learning rates (:func:`discriminative_lrs`, :func:`finetune_optimizer`;
   frozen parameters get ``optax.set_to_zero``);
3. feature extraction, the fast path on a CPU: run the frozen network once, keep the input of the
   head (:func:`head_inputs`), train only the head on those cached features (:func:`train_head`);
4. fine-tuning (:func:`train_blocks`): unfreeze the last blocks and train them with small,
   per-block learning rates on a one-cycle schedule (:func:`one_cycle`); batch norm stays in
   inference mode (as Keras advises: its statistics would otherwise be overwritten by a few small
   batches);
5. tools: :func:`lr_find` (exponential sweep, loss-vs-lr plot, a suggestion), test-time
   augmentation (:func:`tta_probs`), and :func:`interpret` (confusion matrix, most-confused pairs,
   a grid of the top losses).

Training (steps 3 and 4) goes through the library's one loop, :func:`cnnlab.loop.fit`, and its
step builder :func:`cnnlab.train.make_train_step`. :func:`finetune` runs it all from an image
folder into a workdir laid out like ``cnnlab train``'s (``cnnlab finetune --backbone resnet50
--weights FILE.h5 --data-dir ROOT ...``), and :func:`imagenet_predict` is ``cnnlab predict
--model resnet50 --weights FILE.h5 IMAGE``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnlab import data, distributed, fileio, imagenet, keras_h5, metrics, models, plots, train
from cnnlab.config import FinetuneConfig, TrainConfig
from cnnlab.data.image_folder import dataset_spec, load_image_folder
from cnnlab.errors import CnnlabError
from cnnlab.models import layer_order
from cnnlab.loop import FitResult, Loop, LoopSpec, Reporter, fit
from cnnlab.checkpoints import abstract_like
from cnnlab.train import StepOptions, TrainState, tta_probs
from cnnlab.workdir import CheckpointMeta, RunInfo, Workdir

__all__ = [
    "head_name", "replace_head", "layer_order", "blocks", "block_label", "freeze_labels",
    "trainable_layers", "discriminative_lrs", "one_cycle", "finetune_optimizer", "head_inputs",
    "evaluate_logits", "train_head", "train_blocks", "LRFind", "lr_find", "plot_lr_find",
    "tta_probs", "interpret", "plot_top_losses", "Backbone", "imagenet_backbone",
    "checkpoint_backbone", "FinetuneConfig", "finetune", "predict", "imagenet_predict",
]

FROZEN = "frozen"
HEAD = "head"
#: names cnnlab and Keras give the output layer; other models: the last Dense-like layer
HEAD_NAMES = ("predictions", "head")
IMAGENET_BACKBONES = ("resnet50", "vgg16")


# --------------------------------------------------------------------------------------------
# Heads and blocks
# --------------------------------------------------------------------------------------------

def _shape(x) -> tuple[int, ...]:
    return tuple(np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape)


def _is_dense(layer) -> bool:
    return (isinstance(layer, Mapping) and "kernel" in layer
            and len(_shape(layer["kernel"])) == 2)


def _natural_key(name: str):
    """"Dense_10" after "Dense_2": compare digit runs as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def head_name(params: Mapping) -> str:
    """The top-level name of the output layer in ``params``.

    Args:
      params: the model's parameters (top-level layer name -> its parameters).

    Returns:
      "predictions" (Keras, cnnlab's VGG16/ResNet50) or "head" when present, else the last (by
      number) Dense-like entry (a 2-D ``kernel``), e.g. ``Dense_1`` of an auto-named model.

    Raises:
      CnnlabError: the model has no dense layer.

    >>> head_name({"Conv_0": {"kernel": np.zeros((3, 3, 1, 4))},
    ...            "Dense_2": {"kernel": np.zeros((8, 8))}, "Dense_10": {"kernel": np.zeros((8, 2))}})
    'Dense_10'
    """
    for name in HEAD_NAMES:
        if name in params and _is_dense(params[name]):
            return name
    dense = [n for n, layer in params.items() if _is_dense(layer)]
    if not dense:
        raise CnnlabError("the model has no dense output layer (a 2-D 'kernel') to replace; "
                          f"its layers are: {', '.join(params)}")
    return max(dense, key=_natural_key)


def replace_head(params: Mapping, num_classes: int, key: jax.Array, *,
                 name: str | None = None) -> dict:
    """``params`` with a fresh output layer for ``num_classes`` classes.

    The head's kernel (D, C_old) becomes (D, num_classes), drawn with Flax's Dense initializer
    (LeCun normal: N(0, 1/D)); the bias becomes zeros (num_classes,). Every other entry is kept as
    is (shared, not copied); ``params`` is not modified.

    Args:
      params: the model's parameters.
      num_classes: the new number of classes.
      key: PRNG key of the new kernel.
      name: the head's name (default :func:`head_name`).

    Returns:
      A new top-level dict.

    >>> new = replace_head({"Dense_0": {"kernel": np.ones((8, 10)), "bias": np.ones(10)}}, 3,
    ...                    jax.random.key(0))
    >>> new["Dense_0"]["kernel"].shape, new["Dense_0"]["bias"].tolist()
    ((8, 3), [0.0, 0.0, 0.0])
    """
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise CnnlabError(f"num_classes must be a positive integer, got {num_classes!r}")
    name = name or head_name(params)
    fan_in = _shape(params[name]["kernel"])[0]
    new = dict(params)
    new[name] = {
        "kernel": nn.initializers.lecun_normal()(key, (fan_in, int(num_classes)), jnp.float32),
        "bias": jnp.zeros((int(num_classes),), jnp.float32),
    }
    return new


_BLOCK_PREFIX = re.compile(r"^((?:conv|block|stage)\d+)_")


def blocks(order: Sequence[str], params: Mapping) -> list[tuple[str, list[str]]]:
    """Group the layers (in call order) into blocks, input to output; the head is the last block.

    Keras-style names share a block by prefix (``conv3_block2_1_conv`` -> ``conv3``,
    ``block4_conv1`` -> ``block4``; cnnlab's ``stage2_block1``); a batch norm without such a
    prefix joins the layer before it (``stem`` + ``stem_bn``); every other layer is its own block.
    ResNet50 -> conv1, conv2, conv3, conv4, conv5, predictions; VGG16 -> block1..block5, [fc1,
    fc2,] predictions.

    Args:
      order: top-level layer names in call order (:func:`cnnlab.models.layer_order`).
      params: the model's parameters.

    Returns:
      ``[(block name, [layer names]), ...]``, input to output.
    """
    head = head_name(params)
    groups: list[tuple[str, list[str]]] = []
    names = [n for n in order if n in params and n != head]
    names += [n for n in params if n not in names and n != head]  # not seen while tracing
    for n in names:
        m = _BLOCK_PREFIX.match(n)
        is_bn = "scale" in params[n] and "kernel" not in params[n]
        if groups and ((m and groups[-1][0] == m.group(1)) or (is_bn and not m)):
            groups[-1][1].append(n)
        else:
            groups.append((m.group(1) if m else n, [n]))
    groups.append((head, [head]))
    return groups


def block_label(position_from_head: int) -> str:
    """The :func:`freeze_labels` label of a trainable block.

    Args:
      position_from_head: 0 for the head, 1 for the block just before it, ...

    Returns:
      "head", "block-1", "block-2", ...
    """
    return HEAD if position_from_head == 0 else f"block-{position_from_head}"


def freeze_labels(params: Mapping, groups: Sequence[tuple[str, Sequence[str]]],
                  unfreeze: int = 0) -> dict:
    """The freeze specification as a label tree (same structure as ``params``, string leaves).

    Args:
      params: the model's parameters.
      groups: :func:`blocks` of the model (input to output, head last).
      unfreeze: how many blocks before the head are trainable: 0 = only the head (feature
        extraction), k = the head and the last k blocks, -1 = everything.

    Returns:
      ``labels`` with "frozen" for frozen layers, "head" for the head and "block-1", "block-2",
      ... (counting back from the head) for unfrozen blocks: the ``param_labels`` of
      :func:`finetune_optimizer` / ``optax.multi_transform``.
    """
    n = len(groups)
    trainable = n if unfreeze < 0 else min(n, unfreeze + 1)
    labels = {}
    for i, (_, layers) in enumerate(groups):
        from_head = n - 1 - i
        label = block_label(from_head) if from_head < trainable else FROZEN
        for layer in layers:
            labels[layer] = jax.tree.map(lambda _, lab=label: lab, params[layer])
    missing = [k for k in params if k not in labels]
    if missing:
        raise ValueError(f"layers {missing} are in no block")
    return labels


def trainable_layers(labels: Mapping) -> list[str]:
    """The layers that train.

    Args:
      labels: a label tree (:func:`freeze_labels`).

    Returns:
      Top-level layer names whose label is not "frozen".
    """
    return [k for k, v in labels.items() if any(lab != FROZEN for lab in jax.tree.leaves(v))]


def discriminative_lrs(labels: Mapping, max_lr: float, ratio: float = 100.0) -> dict[str, float]:
    """Per-label learning rates, geometric from ``max_lr / ratio`` (the earliest unfrozen block)
    up to ``max_lr`` (the head), like fast.ai's ``slice(max_lr / ratio, max_lr)``.

    With trainable blocks ``b_m .. b_1, head`` (``m`` blocks): ``lr(block-j) = max_lr *
    ratio ** (-j / m)``; ``lr(head) = max_lr``.

    Args:
      labels: a label tree (:func:`freeze_labels`).
      max_lr: the head's rate.
      ratio: the head's rate over the earliest unfrozen block's.

    Returns:
      ``{label: learning rate}`` for every label but "frozen".

    >>> labels = {"conv": {"kernel": "frozen"}, "fc": {"kernel": "block-1"},
    ...           "out": {"kernel": "head"}}
    >>> discriminative_lrs(labels, 1e-3, ratio=100)
    {'block-1': 1e-05, 'head': 0.001}
    """
    used = {lab for lab in jax.tree.leaves(dict(labels)) if lab != FROZEN}
    depth = max((int(lab.split("-")[1]) for lab in used if lab != HEAD), default=0)
    return {lab: float(max_lr * ratio ** (-(0 if lab == HEAD else int(lab.split("-")[1]))
                                        / max(depth, 1)))
            for lab in sorted(used)}


def one_cycle(total_steps: int, max_lr: float) -> optax.Schedule:
    """fast.ai's one-cycle schedule (Smith 2018): cosine warm-up from ``max_lr / 25`` to
    ``max_lr`` over the first 30% of the steps, then cosine annealing to ``max_lr / 25 / 1e4``
    (``optax.cosine_onecycle_schedule``).

    Args:
      total_steps: the steps of the whole phase.
      max_lr: the peak.

    Returns:
      An optax schedule ``step -> learning rate``.
    """
    return optax.cosine_onecycle_schedule(max(int(total_steps), 1), max_lr)


def finetune_optimizer(labels: Mapping | Callable, lrs: Mapping[str, float], total_steps: int, *,
                       optimizer: Callable[..., optax.GradientTransformation] = optax.adam
                       ) -> optax.GradientTransformation:
    """The optimizer of fine-tuning: discriminative rates, frozen layers masked.

    Args:
      labels: the label tree of :func:`freeze_labels`, or a function of the parameters
        returning it.
      lrs: ``{label: peak learning rate}`` (:func:`discriminative_lrs`).
      total_steps: the steps of the phase (the one-cycle schedules span them).
      optimizer: ``learning rate or schedule -> GradientTransformation``.

    Returns:
      ``optax.multi_transform``: for each label ``optimizer(one_cycle(total_steps,
      lrs[label]))``, and ``optax.set_to_zero()`` for "frozen" (no state, no update).
    """
    transforms = {lab: optimizer(one_cycle(total_steps, lr)) for lab, lr in lrs.items()}
    transforms[FROZEN] = optax.set_to_zero()
    return optax.multi_transform(transforms, labels if callable(labels) else dict(labels))


# --------------------------------------------------------------------------------------------
# Feature extraction: the frozen network runs once, the head trains on its cached output
# --------------------------------------------------------------------------------------------

def head_inputs(model: nn.Module, variables: Mapping, images: np.ndarray, *,
                head: str | None = None, batch_size: int = 64) -> np.ndarray:
    """What the head layer receives, for every image: the features of the frozen network.

    Computed in inference mode by intercepting the head's call (works for any model whose
    output layer is a Dense); ``logits = features @ head.kernel + head.bias`` reproduces the
    model's output.

    Args:
      model: the network.
      variables: its ``{"params", ["batch_stats"]}``.
      images: uint8 (N, H, W, C) (scaled to [0, 1] as in training).
      head: the head's name (default :func:`head_name`).
      batch_size: images per forward pass.

    Returns:
      float32 (N, D).
    """
    head = head or head_name(variables["params"])
    variables = dict(variables)
    return train.map_batches(lambda x: _head_input(model, head, variables, x), images,
                             batch_size)


@functools.partial(jax.jit, static_argnames=("model", "head"))
def _head_input(model, head, variables, x):
    captured = []

    def grab(next_fun, args, kwargs, context):
        module = context.module
        if (context.method_name == "__call__" and module.scope is not None
                and module.scope.path == (head,)):
            captured.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(grab):
        model.apply(variables, data.to_float(x), train=False)
    return captured[0].reshape(x.shape[0], -1)


def _head_loss(head_params, features, labels):
    logits = features @ head_params["kernel"] + head_params["bias"]
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    return optax.softmax_cross_entropy(logits, onehot).mean(), logits


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, *, top_k: int = 5) -> dict:
    """Metrics of a whole split from its logits.

    Args:
      logits: (N, C).
      labels: int (N,).
      top_k: k of the top-k accuracy.

    Returns:
      ``loss``, ``accuracy``, ``top{k}_accuracy``, ``count``, ``confusion_matrix`` (as
      :func:`cnnlab.metrics.finalize` gives them).
    """
    sums = metrics.batch_sums(jnp.asarray(logits), jnp.asarray(labels, jnp.int32), top_k=top_k)
    return metrics.finalize(metrics.add_sums(None, sums), top_k=top_k)


class DenseHead(nn.Module):
    """The output layer alone, for training it on cached features: ``(N, D) -> (N, C)``; its
    parameters are ``{"head": {"kernel" (D, C), "bias" (C,)}}``."""

    num_classes: int

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        return nn.Dense(self.num_classes, name=HEAD)(x)


def fitting_batch_size(batch_size: int, num_examples: int) -> int:
    """The largest batch size <= ``batch_size`` and <= ``num_examples`` that splits evenly over
    the data-parallel devices (fine-tuning runs on every device, like ``cnnlab train``).

    Args:
      batch_size: the batch size asked for.
      num_examples: training examples (a batch never exceeds them).

    Returns:
      The batch size to use.

    Raises:
      CnnlabError: fewer examples than devices.
    """
    n = distributed.data_size(distributed.make_mesh())
    size = min(batch_size, num_examples) // n * n
    if size < n:
        raise CnnlabError(f"{num_examples} training images cannot fill a batch over {n} devices; "
                          "add images or run on fewer devices")
    return size


def _phase(state: TrainState, images, labels, spec: LoopSpec, *, options: StepOptions,
           val: tuple[np.ndarray, np.ndarray] | None, key: jax.Array, lr_at, history=(),
           reporter=None, workdir: Workdir | None = None, checkpoints=None,
           to_checkpoint=None, meta: CheckpointMeta | None = None) -> FitResult:
    """One training phase of ``state`` on in-memory ``(images, labels)`` through
    :func:`cnnlab.loop.fit`, validating on ``val`` after every epoch."""
    mesh = distributed.make_mesh()
    sharding = distributed.state_shardings(state, mesh)
    state = jax.device_put(state, sharding)
    feeder = data.BatchFeeder(data.Split(np.asarray(images), np.asarray(labels, np.int32)), mesh)
    evaluate_epoch = None
    if val is not None:
        val_feeder = data.BatchFeeder(data.Split(np.asarray(val[0]),
                                                 np.asarray(val[1], np.int32)), mesh)
        eval_fn = train.make_eval_step(options=options, mesh=mesh, state_sharding=sharding)
        shards = distributed.data_size(mesh)
        eval_bs = -(-min(256, len(val[1])) // shards) * shards  # padded and masked

        def evaluate_epoch(s):
            m = train.evaluate(s, val_feeder, eval_fn, eval_bs, top_k=options.top_k)
            return train.split_metrics("val", m, options.top_k)

    loop = Loop(train_step=train.make_train_step(options=options, mesh=mesh,
                                                 state_sharding=sharding),
                feeder=feeder, spec=spec, run_key=key, evaluate=evaluate_epoch, lr_at=lr_at,
                workdir=workdir, checkpoints=checkpoints, to_checkpoint=to_checkpoint,
                reporter=reporter or Reporter())
    return fit(state, loop, history=history, meta=meta)


def train_head(head_params: Mapping, features: np.ndarray, labels: np.ndarray, *,
               epochs: int, batch_size: int, lr: float, seed: int = 0,
               val: tuple[np.ndarray, np.ndarray] | None = None, top_k: int = 5,
               reporter=None) -> tuple[dict, list[dict]]:
    """Train a dense head ``{"kernel" (D, C), "bias" (C,)}`` on cached features.

    Adam on a one-cycle schedule peaking at ``lr``, ``epochs`` passes over ``features`` (N, D) in
    shuffled batches (seeded), softmax cross-entropy: :func:`cnnlab.loop.fit` on
    :class:`DenseHead`.

    Args:
      head_params: the starting head (not modified).
      features, labels: float32 (N, D), int (N,).
      val: ``(features, labels)`` to evaluate after every epoch.
      reporter: progress callbacks (:class:`cnnlab.loop.Reporter`).

    Returns:
      ``(head_params, history)``; one record per epoch: ``train_loss``, ``train_accuracy``
      (means over the epoch's batches), ``learning_rate``, ``epoch_seconds``, and with ``val``
      ``val_loss``, ``val_accuracy``, ``val_top{k}_accuracy``.
    """
    n = len(labels)
    batch_size = fitting_batch_size(batch_size, n)
    spe = n // batch_size
    schedule = one_cycle(epochs * spe, lr)
    num_classes = np.shape(head_params["kernel"])[1]
    state = TrainState.create(apply_fn=DenseHead(num_classes).apply, tx=optax.adam(schedule),
                              params={HEAD: jax.tree.map(jnp.asarray, dict(head_params))})
    spec = LoopSpec(epochs=epochs, steps_per_epoch=spe, batch_size=batch_size, seed=seed,
                    select_best=False, phase=HEAD)
    result = _phase(state, np.asarray(features, np.float32), labels, spec,
                    options=StepOptions(top_k=top_k), val=val, key=jax.random.key(seed),
                    lr_at=schedule, reporter=reporter)
    return jax.tree.map(np.asarray, result.state.params[HEAD]), result.history


def train_blocks(model: nn.Module, variables: Mapping, groups: Sequence[tuple[str, Sequence[str]]],
                 images: np.ndarray, labels: np.ndarray, *, unfreeze: int, epochs: int,
                 batch_size: int, lr: float, lr_ratio: float = 100.0, seed: int = 0,
                 flip: bool = True, val: tuple[np.ndarray, np.ndarray] | None = None,
                 top_k: int = 5, reporter=None) -> tuple[dict, list[dict]]:
    """Fine-tune the head and the last ``unfreeze`` blocks of ``model`` on uint8 ``images``.

    The same step as ``cnnlab train`` (:func:`cnnlab.train.make_train_step` through
    :func:`cnnlab.loop.fit`) with :func:`finetune_optimizer`: each trainable block has its own
    Adam on a one-cycle schedule peaking at its discriminative rate (:func:`discriminative_lrs`
    from ``lr`` for the head down to ``lr / lr_ratio``) and the frozen ones get
    ``optax.set_to_zero`` (they stay bit-identical; XLA drops their unused weight gradients);
    random left-right flips with ``flip``; batch norm in inference mode, no dropout.

    Args:
      variables: ``{"params": ..., ["batch_stats": ...]}`` (not modified).
      groups: :func:`blocks` of the model.
      val: ``(images, labels)`` to evaluate after every epoch.

    Returns:
      ``(params, history)``: the new parameters and one record per epoch (``train_loss``,
      ``train_accuracy``, ``learning_rate``, ``epoch_seconds``, ``images_per_second``, and with
      ``val`` the ``val_*`` metrics).
    """
    batch_size = fitting_batch_size(batch_size, len(labels))
    spec = LoopSpec(epochs=epochs, steps_per_epoch=len(labels) // batch_size,
                    batch_size=batch_size, seed=seed, select_best=False)
    state, lr_at = _blocks_state(model, variables, groups, unfreeze=unfreeze, lr=lr,
                                 lr_ratio=lr_ratio, total_steps=epochs * spec.steps_per_epoch,
                                 reporter=reporter)
    result = _phase(state, images, labels, spec, options=_blocks_options(flip, top_k), val=val,
                    key=jax.random.key(seed), lr_at=lr_at, reporter=reporter)
    return jax.tree.map(np.asarray, result.state.params), result.history


def _blocks_options(flip: bool, top_k: int) -> StepOptions:
    # Flips only (no shift), batch norm on its running statistics, no dropout.
    return StepOptions(augment=flip, augment_flip=True, augment_pad=0, top_k=top_k,
                       train_mode=False)


def _blocks_state(model, variables, groups, *, unfreeze: int, lr: float, lr_ratio: float,
                  total_steps: int, reporter=None) -> tuple[TrainState, optax.Schedule]:
    """The :class:`~cnnlab.train.TrainState` of fine-tuning (frozen blocks masked) and the
    schedule of its fastest block."""
    params = dict(variables["params"])
    labels = freeze_labels(params, groups, unfreeze)
    lrs = discriminative_lrs(labels, lr, lr_ratio)
    if reporter is not None:
        reporter.note("fine-tuning " + ", ".join(
            f"{name} (lr {lrs[block_label(len(groups) - 1 - i)]:.1e})"
            for i, (name, _) in enumerate(groups)
            if block_label(len(groups) - 1 - i) in lrs) + "; the rest stays frozen")
    state = TrainState.create(apply_fn=model.apply, params=jax.tree.map(jnp.asarray, params),
                              tx=finetune_optimizer(labels, lrs, total_steps),
                              batch_stats=variables.get("batch_stats") or {})
    return state, one_cycle(total_steps, max(lrs.values()))


# --------------------------------------------------------------------------------------------
# lr_find, test-time augmentation, interpretation
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LRFind:
    """Result of :func:`lr_find`: the sweep and its suggestions.

    ``suggestion`` is ``minimum / 10`` (fast.ai's "lr_min": a tenth of the rate with the lowest
    smoothed loss, safely before the divergence); ``steepest`` is where the smoothed loss falls
    fastest (``d loss / d log lr`` most negative). When the minimum is only the end of a sweep
    that never turned up, ``suggestion`` is the lower of the two. Both are looked for after the first
    ``skip_start`` points (where the moving average rests on a few losses only) and before the
    last ``skip_end``. ``warning`` says why the suggestion may be too high (the loss was still
    falling at the end of the sweep), else None.
    """

    lrs: np.ndarray
    losses: np.ndarray          # smoothed (bias-corrected exponential moving average)
    raw_losses: np.ndarray
    minimum: float              # lr at the lowest smoothed loss
    steepest: float
    suggestion: float
    plot: str | None = None
    warning: str | None = None


def lr_find(loss_fn: Callable[[Any, Any], jax.Array], params, batches: Sequence, *,
            start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100,
            optimizer: Callable[..., optax.GradientTransformation] = optax.adam,
            smoothing: float = 0.98, diverge: float = 4.0, skip_start: int = 10,
            skip_end: int = 5, plot: str | None = None) -> LRFind:
    """fast.ai's learning-rate finder (Smith 2015): train with an exponentially growing learning
    rate and watch the loss.

    Step ``i`` of ``num_steps`` uses ``lr_i = start_lr * (end_lr / start_lr) ** (i / (num_steps
    - 1))`` on batch ``batches[i % len(batches)]``; the sweep stops early once the smoothed loss
    exceeds ``diverge`` times its minimum (or is not finite). ``params`` is not modified (the
    sweep trains a copy and throws it away).

    Args:
      loss_fn: ``(params, batch) -> scalar loss`` (jit-able).
      params: the starting parameters (a pytree).
      batches: a sequence of batches (any pytrees ``loss_fn`` accepts), cycled.
      start_lr, end_lr, num_steps: the sweep.
      optimizer: ``learning rate -> GradientTransformation`` (wrapped in
        ``optax.inject_hyperparams``).
      smoothing: of the exponential moving average of the loss (bias-corrected).
      diverge: stop once the smoothed loss exceeds this many times its minimum.
      skip_start, skip_end: points left out at the start (the moving average's start-up: a
        "steepest" fall there is the average filling up, not learning) and at the end (the
        blow-up) when looking for the minimum and the steepest point (fast.ai's defaults).
      plot: if given, a PNG path: loss vs learning rate (log scale) with the suggestions marked.

    Returns:
      An :class:`LRFind` (the sweep, ``minimum``, ``steepest``, ``suggestion``, ``plot``,
      ``warning``).

    Raises:
      CnnlabError: no batches, or a loss that diverged before ``skip_start + skip_end + 3``
        points (lower ``start_lr``).

    Warns:
      UserWarning: when the minimum sits at the end of the sweep (the loss was still falling at
        ``end_lr``, so the minimum, and the suggestion with it, may be too high; raise
        ``end_lr`` or lower the rate).
    """
    if not batches:
        raise CnnlabError("lr_find needs at least one batch")
    tx = optax.inject_hyperparams(optimizer)(learning_rate=start_lr)
    params = jax.tree.map(jnp.array, params)  # a private copy: the caller's arrays stay intact
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, lr, batch):
        opt_state.hyperparams["learning_rate"] = lr
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    lrs = start_lr * (end_lr / start_lr) ** (np.arange(num_steps) / max(num_steps - 1, 1))
    raw, smooth, avg, best = [], [], 0.0, math.inf
    for i, lr in enumerate(lrs):
        params, opt_state, loss = step(params, opt_state, jnp.float32(lr),
                                       batches[i % len(batches)])
        loss = float(loss)
        if not math.isfinite(loss):
            break
        avg = smoothing * avg + (1 - smoothing) * loss
        s = avg / (1 - smoothing ** (i + 1))
        raw.append(loss)
        smooth.append(s)
        best = min(best, s)
        if i > 5 and s > diverge * best:
            break
    n = len(smooth)
    if n < skip_start + skip_end + 3:
        raise CnnlabError(f"lr_find: the loss diverged after {n} of {num_steps} steps, before "
                          "the sweep said anything; lower start_lr")
    lrs, smooth, raw = lrs[:n], np.array(smooth), np.array(raw)
    stop = n - skip_end if n < num_steps else n  # a sweep that blew up: leave the blow-up out
    i_min = skip_start + int(np.argmin(smooth[skip_start:stop]))
    grads = np.gradient(smooth, np.log(lrs))
    i_steep = skip_start + int(np.argmin(grads[skip_start:i_min + 1]))
    warning, suggestion = None, float(lrs[i_min] / 10)
    if n == num_steps and i_min >= n - max(skip_end, 2):  # never turned up: no blow-up seen
        # The smoothed loss lags the raw one: at the sweep's end it may still fall while the
        # raw loss already climbs, so min/10 is not known to be safe; the steepest point is.
        suggestion = min(suggestion, float(lrs[i_steep]))
        warning = (f"lr_find: the loss was still falling at the end of the sweep "
                   f"(lr {lrs[n - 1]:.2g}), so its minimum is only the sweep's end; suggesting "
                   f"the steepest point {suggestion:.2g} instead of minimum/10 "
                   f"{lrs[i_min] / 10:.2g}; sweep further (end_lr) to see the minimum")
        warnings.warn(warning, stacklevel=2)
    result = LRFind(lrs, smooth, raw, float(lrs[i_min]), float(lrs[i_steep]), suggestion,
                    warning=warning)
    if plot:
        result = dataclasses.replace(result, plot=plot_lr_find(result, plot))
    return result


def plot_lr_find(result: LRFind, path: str) -> str:
    """Loss vs learning rate (log x) with ``steepest`` and ``suggestion`` (min/10) marked.

    Args:
      result: what :func:`lr_find` found.
      path: the PNG to write (atomically).

    Returns:
      ``path``.
    """
    fig = plots.figure(6, 4)
    ax = fig.subplots()
    ax.plot(result.lrs, result.raw_losses, color="0.8", lw=1, label="loss")
    ax.plot(result.lrs, result.losses, lw=2, label="smoothed loss")
    for lr, style, name in ((result.steepest, "o", "steepest"),
                            (result.suggestion, "s", "suggestion (min/10)")):
        y = np.interp(np.log(lr), np.log(result.lrs), result.losses)
        ax.plot([lr], [y], style, ms=8, label=f"{name}: {lr:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    top = np.percentile(result.raw_losses, 95)
    ax.set_ylim(min(result.raw_losses.min(), result.losses.min()) * 0.95, top * 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("learning-rate finder")
    return plots.save(fig, path)


def interpret(images: np.ndarray, labels: np.ndarray, logits: np.ndarray,
              class_names: Sequence[str], *, top_losses: int = 9,
              out_dir: str | None = None) -> dict:
    """What the model gets wrong, like fast.ai's ``ClassificationInterpretation``.

    Args:
      images: (N, H, W, C), for the grid of top losses.
      labels: int (N,).
      logits: (N, C).
      class_names: C names.
      top_losses: how many of the highest losses to list.
      out_dir: if given, write ``top_losses.png`` (the grid) and ``interpretation.json`` there.

    Returns:
      ``confusion_matrix`` (rows = true class), ``most_confused`` (``[true, predicted,
      count]``, most frequent first, off-diagonal only), ``top_losses`` (``[index, true,
      predicted, loss, probability of the prediction]``), and with ``out_dir`` the paths under
      ``"files"``.
    """
    labels = np.asarray(labels)
    logits = np.asarray(logits, np.float32)
    c = len(class_names)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    pred = probs.argmax(-1)
    losses = -np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-30))
    cm = np.zeros((c, c), int)
    np.add.at(cm, (labels, pred), 1)
    pairs = [[class_names[t], class_names[p], int(cm[t, p])]
             for t in range(c) for p in range(c) if t != p and cm[t, p]]
    pairs.sort(key=lambda r: -r[2])
    order = np.argsort(-losses, kind="stable")[:top_losses]
    top = [[int(i), class_names[labels[i]], class_names[pred[i]], float(losses[i]),
            float(probs[i, pred[i]])] for i in order]
    report = {"confusion_matrix": cm.tolist(), "most_confused": pairs, "top_losses": top}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        grid = plot_top_losses(images[order], top, os.path.join(out_dir, "top_losses.png"))
        path = os.path.join(out_dir, "interpretation.json")
        fileio.write_text(path, json.dumps(report, indent=2) + "\n")
        report["files"] = {"top_losses": grid, "interpretation": path}
    return report


def plot_top_losses(images: np.ndarray, rows: Sequence[Sequence], path: str) -> str:
    """Grid of images titled "predicted / true / loss / probability" (fast.ai's
    ``plot_top_losses``).

    Args:
      images: (K, H, W, C).
      rows: K ``[index, true, predicted, loss, probability]`` (:func:`interpret`).
      path: the PNG to write (atomically).

    Returns:
      ``path``.
    """
    n = max(len(rows), 1)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig = plots.figure(3.0 * cols, 3.2 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, (_, true, pred, loss, prob) in zip(axes, images, rows):
        plots.show_image(ax, image)
        ax.set_title(f"{pred} / {true}\nloss {loss:.2f} p {prob:.2f}", fontsize=8,
                     color="green" if pred == true else "red")
    fig.suptitle("top losses: predicted / true", fontsize=10)
    return plots.save(fig, path)


# --------------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Backbone:
    """A network ready for new classes: ``model`` (with ``num_classes`` outputs), its
    ``variables`` (fresh head), the input ``shape`` (H, W, C) and how it was made."""

    model_name: str
    model_kwargs: dict
    model: nn.Module
    variables: dict
    input_shape: tuple[int, int, int]
    description: str


def imagenet_backbone(name: str, weights: str | os.PathLike | None, num_classes: int, *,
                      image_size: int, key: jax.Array) -> Backbone:
    """ResNet50 / VGG16 with Keras ImageNet weights (full or ``_notop`` file) and a fresh head,
    or randomly initialised (``weights="none"``).

    The model takes [0, 1] RGB (``preprocess="caffe"`` inside); VGG16 uses the light
    ``classifier="avg"`` top (global average pool + dense), so any ``image_size`` >= 32 works.

    Args:
      name: "resnet50" or "vgg16".
      weights: the ``.h5`` file, or "none": Flax's initialisation, seeded by ``key`` (train it
        all: ``unfreeze=-1``).
      num_classes: of the new head.
      image_size: the square input size.
      key: PRNG key of the new head.

    Returns:
      A :class:`Backbone`.

    Raises:
      CnnlabError: no weights, an image size below 32, or a file that does not fit.
    """
    if not weights:
        raise CnnlabError(f"--backbone {name} needs --weights FILE.h5 (ImageNet weights, full or "
                          f"_notop): " + keras_h5.weights_help(name, include_top=False))
    if image_size < 32:
        raise CnnlabError(f"{name} needs images of at least 32x32, got --image-size {image_size}")
    kwargs = {"preprocess": "caffe"}
    if name == "vgg16":
        kwargs["classifier"] = "avg"
    model = models.get(name, num_classes=num_classes, **kwargs)
    shape = (image_size, image_size, 3)
    if is_none(weights):
        variables = dict(jax.jit(lambda k: model.init(k, jnp.zeros((1, *shape)), train=False))(
            key))
        return Backbone(name, kwargs, model, variables, shape,
                        f"{name} with random initialisation (--weights none)")
    variables = dict(keras_h5.load_model_weights(weights, model, shape, keep=("predictions",)))
    variables["params"] = replace_head(variables["params"], num_classes, key,
                                       name="predictions")
    return Backbone(name, kwargs, model, variables, shape,
                    f"{name} with Keras weights {os.fspath(weights)}")


def is_none(weights) -> bool:
    """``--weights none``: random initialisation instead of a weights file.

    Args:
      weights: the ``weights`` setting (a path, "none" or None).

    Returns:
      Whether it asks for a random initialisation.
    """
    return isinstance(weights, str) and weights.lower() == "none"


def checkpoint_backbone(workdir: str, num_classes: int, *, key: jax.Array) -> Backbone:
    """A run of yours as a backbone: its selected checkpoint (:func:`cnnlab.train.load_run`),
    head replaced.

    Args:
      workdir: a ``cnnlab train`` (or ``finetune``) workdir.
      num_classes: of the new head.
      key: PRNG key of the new head.

    Returns:
      A :class:`Backbone` (its input shape is the run's).
    """
    run = train.load_run(workdir)
    kwargs = dict(run.config.model_kwargs)
    model = models.get(run.config.model, num_classes=num_classes, **kwargs)
    params = jax.tree.map(np.asarray, run.state.params)
    variables = {"params": replace_head(params, num_classes, key)}
    stats = jax.tree.map(np.asarray, run.state.batch_stats)
    if stats:
        variables["batch_stats"] = stats
    shape = tuple(int(d) for d in run.input_shape)
    return Backbone(run.config.model, kwargs, model, variables, shape,
                    f"{run.config.model} from {run.workdir} (step {run.step}, classes "
                    f"{', '.join(run.class_names)})")


def _load_backbone(config: FinetuneConfig, num_classes: int, key, image_size: int):
    if config.backbone in IMAGENET_BACKBONES:
        return imagenet_backbone(config.backbone, config.weights, num_classes,
                                 image_size=image_size or 224, key=key)
    if os.path.isdir(config.backbone):
        if config.weights:
            raise CnnlabError("--weights is for --backbone resnet50/vgg16; a cnnlab run brings "
                              "its own weights")
        return checkpoint_backbone(config.backbone, num_classes, key=key)
    raise ValueError(f"unknown backbone {config.backbone!r}")  # _backbone_input checked it


def _backbone_input(config: FinetuneConfig) -> tuple[int, int]:
    """(image size, channels) the data must have, before the backbone is built."""
    if config.backbone in IMAGENET_BACKBONES:
        if not config.weights:
            raise CnnlabError(f"--backbone {config.backbone} needs --weights FILE.h5 (ImageNet "
                              "weights, full or _notop; or --weights none for a random "
                              "initialisation): "
                              + keras_h5.weights_help(config.backbone, include_top=False))
        if not is_none(config.weights) and not os.path.isfile(config.weights):
            raise CnnlabError(f"weights file {config.weights} does not exist; "
                              + keras_h5.weights_help(config.backbone, include_top=False))
        return config.image_size or 224, 3
    if os.path.isdir(config.backbone):
        path = os.path.join(config.backbone, "run.json")
        if not os.path.exists(path):
            raise CnnlabError(f"{config.backbone} is not a cnnlab run (no run.json); train one "
                              f"with `cnnlab train --workdir {config.backbone}`")
        with open(path) as f:
            h, w, c = json.load(f)["input_shape"]
        if h != w:
            raise CnnlabError(f"the run in {config.backbone} takes {h}x{w} images; fine-tuning "
                              "needs a square input")
        if config.image_size and config.image_size != h:
            raise CnnlabError(f"the run in {config.backbone} takes {h}x{w} images; leave out "
                              f"--image-size or give {h}")
        return h, c
    raise CnnlabError(f"--backbone must be {' or '.join(IMAGENET_BACKBONES)} or the workdir of a "
                      f"cnnlab run; {config.backbone!r} is neither")


# --------------------------------------------------------------------------------------------
# cnnlab finetune: both phases through cnnlab.train.fit, into a workdir
# --------------------------------------------------------------------------------------------

class _Printer(Reporter):
    """Default reporter: one line per epoch (like ``cnnlab train``)."""

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)

    def epoch_end(self, r: dict) -> None:
        print(f"epoch {r['epoch']:>3} [{r['phase']:<8}] train loss {r['train_loss']:.4f} acc "
              f"{r['train_accuracy']:.4f}  val loss {r['val_loss']:.4f} acc "
              f"{r['val_accuracy']:.4f}  lr {r['learning_rate']:.2e}  "
              f"{r['epoch_seconds']:.1f} s", flush=True)


@dataclasses.dataclass
class _Finetuning:
    """One ``cnnlab finetune`` run: the config, the data, the backbone and where it goes."""

    config: FinetuneConfig
    wd: Workdir
    ds: Any
    bb: Backbone
    groups: list
    batch_size: int
    steps_per_epoch: int
    reporter: Any
    checkpoints: Any = None

    @property
    def stats(self) -> dict:
        return self.bb.variables.get("batch_stats", {})

    def save(self, step: int, params, opt_state, epochs_done: int, phase: str) -> None:
        self.checkpoints.save(step, {"step": jnp.int32(step), "params": params,
                                     "batch_stats": self.stats, "opt_state": opt_state},
                              CheckpointMeta(step=step, epochs_done=epochs_done,
                                             phase=phase).to_json())


def _start_finetuning(config: FinetuneConfig, workdir: str, *, overwrite: bool, resume: bool,
                      reporter) -> _Finetuning:
    """Check the backbone, prepare the workdir, load the images and the backbone, write
    ``config.json`` (a :class:`TrainConfig`, so ``cnnlab evaluate/predict`` read the run),
    ``finetune.json`` and ``run.json``."""
    wd = Workdir(workdir)
    size, channels = _backbone_input(config)  # checks backbone and weights before any work
    if os.path.isdir(config.backbone) and os.path.abspath(config.backbone) == wd.path:
        raise CnnlabError(f"--workdir {wd.path} is the backbone's run; give another --workdir")
    wd.prepare(resume=resume, overwrite=overwrite)
    if resume and os.path.exists(wd.file("finetune.json")):
        saved = wd.read_json("finetune.json")
        changed = sorted(k for k, v in config.to_dict().items() if saved.get(k) != v)
        if changed:
            raise CnnlabError(f"--resume continues the run in {wd.path} with its own settings; "
                              f"these differ: {', '.join(changed)} (see its finetune.json)")
    ds = load_image_folder(config.data_dir, image_size=size, val_fraction=config.val_fraction,
                           seed=config.seed, tfds_dir=config.tfds_dir, channels=channels)
    bb = _load_backbone(config, ds.num_classes, jax.random.key(config.seed), size)
    groups = blocks(layer_order(bb.model, (1, *bb.input_shape)), bb.variables["params"])
    n_train, n_val = len(ds.train), len(ds.test)
    batch_size = fitting_batch_size(config.batch_size, n_train)
    if batch_size < config.batch_size:
        reporter.note(f"batch size {batch_size} instead of {config.batch_size} ({n_train} "
                      f"training images, {jax.device_count()} device(s))")
    spe = n_train // batch_size
    spec = dataset_spec(config.data_dir, image_size=size, val_fraction=config.val_fraction,
                        seed=config.seed, channels=bb.input_shape[-1])
    wd.write_config(TrainConfig(
        model=bb.model_name, model_kwargs=bb.model_kwargs, dataset=spec,
        tfds_dir=config.tfds_dir, epochs=config.freeze_epochs + config.epochs,
        batch_size=batch_size, val_fraction=0.0, optimizer="adam",
        learning_rate=config.learning_rate, schedule="one_cycle", seed=config.seed,
        top_k=config.top_k, keep_checkpoints=config.keep_checkpoints, plots=config.plots))
    wd.write_json("finetune.json", config.to_dict())
    wd.write_run_info(RunInfo(
        class_names=tuple(ds.class_names), input_shape=tuple(bb.input_shape), dataset=spec,
        source=ds.source, train_examples=n_train, val_examples=n_val, test_examples=n_val,
        param_count=models.param_count(bb.variables["params"]), devices=jax.device_count(),
        processes=jax.process_count(), mesh=dict(distributed.make_mesh().shape),
        steps_per_epoch=spe, backbone=bb.description,
        blocks=[[name, layers] for name, layers in groups],
        imports=[src] if (src := models.source_of(bb.model_name)) else None))
    reporter.note(f"fine-tuning {bb.description} on {ds.source}; {ds.num_classes} classes, "
                  f"blocks {', '.join(name for name, _ in groups)}")
    return _Finetuning(config, wd, ds, bb, groups, batch_size, spe, reporter)


def _head_phase(ft: _Finetuning, params: dict) -> tuple[dict, list[dict]]:
    """Phase "head": the backbone runs once; the fresh head trains on the cached features."""
    config, ds, head = ft.config, ft.ds, head_name(params)
    t0 = time.time()
    f_train = head_inputs(ft.bb.model, ft.bb.variables, ds.train.images, head=head)
    f_val = head_inputs(ft.bb.model, ft.bb.variables, ds.test.images, head=head)
    ft.reporter.note(f"features {f_train.shape[1]}-d of {len(ds.train) + len(ds.test)} images in "
                     f"{time.time() - t0:.1f} s (the backbone runs once)")
    head_lr = config.learning_rate
    if config.lr_find:
        found = lr_find(
            lambda p, b: _head_loss(p, *b)[0], params[head],
            [(f_train[i], ds.train.labels[i]) for i in data.batch_indices(
                len(ds.train), ft.batch_size, seed=config.seed, epoch=0)],
            start_lr=1e-6, end_lr=10.0, num_steps=100,
            plot=os.path.join(ft.wd.plots_dir, "lr_find.png") if config.plots else None)
        head_lr = found.suggestion
        ft.reporter.note(f"lr_find: suggestion {found.suggestion:.2g} (minimum "
                         f"{found.minimum:.2g}; steepest {found.steepest:.2g})"
                         + (f"; plot {found.plot}" if found.plot else ""))
    schedule = one_cycle(config.freeze_epochs * ft.steps_per_epoch, head_lr)
    state = TrainState.create(apply_fn=DenseHead(ds.num_classes).apply, tx=optax.adam(schedule),
                              params={HEAD: params[head]})
    spec = LoopSpec(epochs=config.freeze_epochs, steps_per_epoch=ft.steps_per_epoch,
                    batch_size=ft.batch_size, seed=config.seed, select_best=False, phase=HEAD)
    result = _phase(state, f_train, ds.train.labels, spec, options=StepOptions(top_k=config.top_k),
                    val=(f_val, ds.test.labels), key=jax.random.key(config.seed), lr_at=schedule,
                    reporter=ft.reporter, workdir=ft.wd)
    params = {**params, head: result.state.params[HEAD]}
    # One checkpoint at the end of the phase (saving the whole backbone after every few-second
    # head epoch would cost more than the epochs); its optimizer state is the head's.
    ft.save(spec.last_step, params, result.state.opt_state, spec.epochs, HEAD)
    return params, result.history


def _finetune_phase(ft: _Finetuning, params: dict, history: list[dict], *, resume_step=None
                    ) -> tuple[dict, list[dict]]:
    """Phase "finetune": the last ``unfreeze`` blocks and the head, with flips, discriminative
    learning rates on one-cycle schedules, batch norm in inference mode; from the checkpoint
    ``resume_step`` of this phase when given."""
    config, ds = ft.config, ft.ds
    first_step = config.freeze_epochs * ft.steps_per_epoch
    spec = LoopSpec(epochs=config.epochs, steps_per_epoch=ft.steps_per_epoch,
                    batch_size=ft.batch_size, seed=config.seed, first_epoch=config.freeze_epochs,
                    first_step=first_step, select_best=False, phase="finetune")
    state, lr_at = _blocks_state(ft.bb.model, {"params": params, "batch_stats": ft.stats},
                                 ft.groups, unfreeze=config.unfreeze,
                                 lr=config.learning_rate / 2, lr_ratio=config.lr_ratio,
                                 total_steps=config.epochs * ft.steps_per_epoch,
                                 reporter=ft.reporter)

    def to_checkpoint(s: TrainState) -> dict:
        return {**s.arrays(), "step": first_step + s.step}

    meta = None
    if resume_step is not None:
        one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        arrays = jax.eval_shape(state.arrays)
        arrays, meta = ft.checkpoints.restore(
            abstract_like(arrays, jax.tree.map(lambda _: one, arrays)), resume_step)
        state = state.replace(**{**arrays, "step": arrays["step"] - first_step})
        meta = CheckpointMeta.from_json(meta)
    result = _phase(state, ds.train.images, ds.train.labels, spec,
                    options=_blocks_options(config.augment_flip, config.top_k),
                    val=(ds.test.images, ds.test.labels),
                    key=jax.random.fold_in(jax.random.key(config.seed), 1), lr_at=lr_at,
                    history=history, reporter=ft.reporter, workdir=ft.wd,
                    checkpoints=ft.checkpoints, to_checkpoint=to_checkpoint, meta=meta)
    return result.state.params, result.history


def _final_report(ft: _Finetuning, params: dict, history: list[dict], t_start: float) -> dict:
    """Validation metrics (also with flip TTA), interpretation, plots: the final record."""
    config, ds = ft.config, ft.ds
    variables = {"params": params, **({"batch_stats": ft.stats} if ft.stats else {})}

    def logits_fn(images):
        return predict(ft.bb.model, variables, images)

    val_logits = logits_fn(ds.test.images)
    m = evaluate_logits(val_logits, ds.test.labels, top_k=config.top_k)
    final = {"final": True, "epoch": len(history),
             "step": (config.freeze_epochs + config.epochs) * ft.steps_per_epoch,
             **train.split_metrics("val", m, config.top_k), "val_examples": m["count"],
             "confusion_matrix": m["confusion_matrix"]}
    if config.tta:
        probs = tta_probs(logits_fn, ds.test.images, logits=val_logits)
        final["val_accuracy_tta"] = float(np.mean(probs.argmax(-1) == ds.test.labels))
    report = interpret(ds.test.images, ds.test.labels, val_logits, ds.class_names,
                       out_dir=ft.wd.plots_dir if config.plots else None)
    if "files" in report:
        os.replace(report["files"]["interpretation"], ft.wd.file("interpretation.json"))
    final.update(most_confused=report["most_confused"][:10], model=ft.bb.model_name,
                 backbone=ft.bb.description, dataset=ds.name, source=ds.source,
                 devices=jax.device_count(),
                 precision="f32", seconds=round(time.time() - t_start, 2))
    ft.wd.log_epochs(history + [final])
    if config.plots and history:
        n = min(25, len(ds.test))
        ft.wd.write_plots(history, m["confusion_matrix"], ds.class_names, ds.test.images[:n],
                          ds.test.labels[:n], val_logits[:n].argmax(-1))
    return final


def _resume_point(ft: _Finetuning) -> tuple[dict | None, list[dict], int | None]:
    """Where a resumed fine-tuning continues: ``(params after the head phase or None, the
    records so far, the fine-tuning checkpoint's step or None)``. Nothing saved yet (the head
    phase checkpoints at its end only; it is cheap): ``(None, [], None)``, a fresh start."""
    step = ft.checkpoints.latest_step()
    if step is None:
        ft.reporter.note(f"nothing saved in {ft.wd.path} yet: starting from the beginning")
        return None, [], None
    meta = CheckpointMeta.from_json(ft.checkpoints.read_meta(step))
    history = [r for r in ft.wd.read_metrics()
               if not r.get("final") and r["epoch"] <= meta.epochs_done]
    ft.reporter.note(f"resuming from step {step} ({meta.phase} phase) in {ft.wd.path}")
    if meta.phase == "finetune":
        return None, history, step
    params = dict(ft.bb.variables["params"])
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {"step": jax.ShapeDtypeStruct((), jnp.int32),
              "params": jax.eval_shape(lambda: params), "batch_stats": jax.eval_shape(
                  lambda: ft.stats)}
    arrays, _ = ft.checkpoints.restore(abstract_like(target, jax.tree.map(lambda _: one, target)),
                                       step)
    return dict(arrays["params"]), history, None


def finetune(config: FinetuneConfig, workdir: str, *, overwrite: bool = False,
             resume: bool = False, reporter=None) -> dict:
    """Fine-tune ``config.backbone`` on the image folder ``config.data_dir`` into ``workdir``.

    Phase "head" (``freeze_epochs``): the backbone runs once over the training and validation
    images (inference mode); the fresh head trains on the cached features. Phase "finetune"
    (``epochs``): the last ``unfreeze`` blocks and the head train together (frozen blocks masked
    with ``optax.set_to_zero``), with random flips (``augment_flip``), discriminative learning
    rates on a one-cycle schedule, batch norm in inference mode. Both phases train through
    :func:`cnnlab.loop.fit`.

    The workdir is laid out like ``cnnlab train``'s (:mod:`cnnlab.workdir`: ``config.json``,
    ``run.json``, ``metrics.jsonl`` with one record per epoch and a final one,
    ``checkpoints/<step>/``, ``plots/curves.png``, ``confusion_matrix.png``,
    ``predictions.png``), plus ``finetune.json``, ``plots/top_losses.png``,
    ``interpretation.json`` and with ``lr_find`` ``plots/lr_find.png``; ``cnnlab predict
    --workdir W IMAGE`` and ``cnnlab evaluate`` read it like any run. Checkpoints come at the end
    of the head phase and after every fine-tuning epoch (and at the current step on
    SIGTERM/SIGINT); ``resume`` continues from the newest, bit-identical to a run that did not
    stop (an unfinished head phase runs again: it saves at its end only).

    Args:
      config: the settings (:class:`cnnlab.config.FinetuneConfig`).
      workdir: where everything goes.
      overwrite: replace an earlier run in ``workdir``.
      resume: continue the run in ``workdir`` (same settings).
      reporter: progress callbacks (default: one printed line per epoch).

    Returns:
      The final record (``val_accuracy``, ``val_accuracy_tta``, ``most_confused``, ...).

    Raises:
      CnnlabError: a bad backbone, weights file, image folder or setting.
      Interrupted: SIGTERM or SIGINT while fine-tuning (the current step is saved first).
    """
    t_start = time.time()
    ft = _start_finetuning(config, workdir, overwrite=overwrite, resume=resume,
                           reporter=reporter or _Printer())
    ft.checkpoints = ft.wd.checkpoints(keep=config.keep_checkpoints)
    try:
        params, history, resume_step = _resume_point(ft) if resume else (None, [], None)
        if params is None and resume_step is None:
            params, history = dict(ft.bb.variables["params"]), []
            if config.freeze_epochs:
                params, history = _head_phase(ft, params)
        if config.epochs:
            params, history = _finetune_phase(ft, params or dict(ft.bb.variables["params"]),
                                              history, resume_step=resume_step)
        final = _final_report(ft, params, history, t_start)
        ft.checkpoints.wait()
        return final
    finally:
        ft.wd.close_events()
        ft.checkpoints.close()


def predict(model: nn.Module, variables: Mapping, images: np.ndarray, *,
            batch_size: int = 64) -> np.ndarray:
    """A model's logits in inference mode (:func:`cnnlab.train.predict_logits`).

    Args:
      model: the module.
      variables: ``{"params", ["batch_stats"]}``.
      images: uint8 (N, H, W, C).
      batch_size: images per call.

    Returns:
      float32 (N, C).
    """
    variables = dict(variables)
    return train.predict_logits(model.apply, variables["params"],
                                variables.get("batch_stats") or {}, images,
                                batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# ImageNet predictions
# --------------------------------------------------------------------------------------------

def imagenet_predict(model_name: str, weights: str | None, images: Sequence[str], *,
                     top: int = 3) -> list[list[tuple[str, str, float]]]:
    """Keras-style ImageNet predictions for image files: load at 224x224 (nearest, like
    ``keras.utils.load_img``), caffe preprocessing, softmax,
    :func:`cnnlab.imagenet.decode_predictions`.

    Args:
      model_name: "resnet50" or "vgg16".
      weights: the full ImageNet ``.h5`` file (with the top).
      images: image file paths.
      top: classes per image.

    Returns:
      Per image, ``top`` ``(synset id, class name, probability)`` tuples, most likely first.

    Raises:
      CnnlabError: an unknown model, no weights, no images, or a file that is not an image.
    """
    if model_name not in IMAGENET_BACKBONES:
        raise CnnlabError(f"predict --model takes {' or '.join(IMAGENET_BACKBONES)} (with "
                          f"--weights FILE.h5); for your own runs use --workdir W")
    if not weights:
        raise CnnlabError(f"predict --model {model_name} needs --weights FILE.h5 (the full "
                          "ImageNet file, not _notop): " + keras_h5.weights_help(model_name))
    if not images:
        raise CnnlabError("predict needs at least one IMAGE file")
    model = models.get(model_name, num_classes=1000)
    variables = keras_h5.load_model_weights(weights, model, (224, 224, 3))
    x = imagenet.preprocess_input(np.stack([imagenet.load_image(p, 224) for p in images]))
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    return imagenet.decode_predictions(np.asarray(jax.nn.softmax(logits, axis=-1)), top=top)
