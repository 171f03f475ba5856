"""Transfer learning and fine-tuning: reuse a trained network for your own classes.

The recipe (Keras's transfer-learning guide, fast.ai's ``fine_tune``), one function per step:

1. :func:`replace_head`: a fresh output layer for the new classes (the old classes are gone);
2. a freeze specification: the network as ordered blocks (:func:`blocks`), the last ``k`` of them
   trainable (:func:`freeze_labels`) -> an ``optax.multi_transform`` label tree, with
   discriminative learning rates (:func:`discriminative_lrs`, :func:`finetune_optimizer`);
3. feature extraction, the fast path on a CPU: run the frozen network once, keep the input of the
   head (:func:`head_inputs`), train only the head on those cached features (:func:`train_head`);
4. fine-tuning (:func:`train_blocks`): unfreeze the last blocks and train them with small,
   per-block learning rates on a one-cycle schedule (:func:`one_cycle`); batch norm stays in
   inference mode (as Keras advises: its statistics would otherwise be overwritten by a few small
   batches);
5. tools: :func:`lr_find` (exponential sweep, loss-vs-lr plot, a suggestion), test-time
   augmentation (:func:`tta_probs`), and :func:`interpret` (confusion matrix, most-confused pairs,
   a grid of the top losses).

:func:`finetune` runs it all from an image folder into a workdir laid out like ``cnnlab train``'s
(``cnnlab finetune --backbone resnet50 --weights FILE.h5 --data-dir ROOT ...``), and
``cnnlab predict --model resnet50 --weights FILE.h5 IMAGE`` prints ImageNet predictions.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnlab.errors import CnnlabError

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

    "predictions" (Keras, cnnlab's VGG16/ResNet50) or "head" when present, else the last (by
    number) Dense-like entry (a 2-D ``kernel``), e.g. ``Dense_1`` of an auto-named model.
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


def layer_order(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """Top-level submodule names in the order the forward pass calls them (traced abstractly:
    nothing is computed). ``input_shape`` (N, H, W, C) or (H, W, C)."""
    shape = tuple(input_shape)
    shape = (1, *shape) if len(shape) == 3 else shape
    order: list[str] = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        path = module.scope.path if module.scope is not None else ()
        if len(path) == 1 and path[0] not in order:
            order.append(path[0])
        return next_fun(*args, **kwargs)

    def init():
        with nn.intercept_methods(record):
            return model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                              jnp.zeros(shape, jnp.float32), train=False)

    jax.eval_shape(init)
    return order


_BLOCK_PREFIX = re.compile(r"^((?:conv|block|stage)\d+)_")


def blocks(order: Sequence[str], params: Mapping) -> list[tuple[str, list[str]]]:
    """Group the layers (in call order) into blocks, input to output; the head is the last block.

    Keras-style names share a block by prefix (``conv3_block2_1_conv`` -> ``conv3``,
    ``block4_conv1`` -> ``block4``; cnnlab's ``stage2_block1``); a batch norm without such a
    prefix joins the layer before it (``stem`` + ``stem_bn``); every other layer is its own block.
    ResNet50 -> conv1, conv2, conv3, conv4, conv5, predictions; VGG16 -> block1..block5, [fc1,
    fc2,] predictions.
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
    """Label of a trainable block: "head", then "block-1" (just before the head), "block-2"..."""
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
    """Top-level layer names whose label is not "frozen"."""
    return [k for k, v in labels.items() if any(lab != FROZEN for lab in jax.tree.leaves(v))]


def discriminative_lrs(labels: Mapping, max_lr: float, ratio: float = 100.0) -> dict[str, float]:
    """Per-label learning rates, geometric from ``max_lr / ratio`` (the earliest unfrozen block)
    up to ``max_lr`` (the head), like fast.ai's ``slice(max_lr / ratio, max_lr)``.

    With trainable blocks ``b_m .. b_1, head`` (``m`` blocks): ``lr(block-j) = max_lr *
    ratio ** (-j / m)``; ``lr(head) = max_lr``.
    """
    used = {lab for lab in jax.tree.leaves(dict(labels)) if lab != FROZEN}
    depth = max((int(lab.split("-")[1]) for lab in used if lab != HEAD), default=0)
    return {lab: float(max_lr * ratio ** (-(0 if lab == HEAD else int(lab.split("-")[1]))
                                        / max(depth, 1)))
            for lab in sorted(used)}


def one_cycle(total_steps: int, max_lr: float) -> optax.Schedule:
    """fast.ai's one-cycle schedule (Smith 2018): cosine warm-up from ``max_lr / 25`` to
    ``max_lr`` over the first 30% of the steps, then cosine annealing to ``max_lr / 25 / 1e4``
    (``optax.cosine_onecycle_schedule``)."""
    return optax.cosine_onecycle_schedule(max(int(total_steps), 1), max_lr)


def finetune_optimizer(labels: Mapping | Callable, lrs: Mapping[str, float], total_steps: int, *,
                       optimizer: Callable[..., optax.GradientTransformation] = optax.adam
                       ) -> optax.GradientTransformation:
    """``optax.multi_transform``: for each label ``optimizer(one_cycle(total_steps, lrs[label]))``,
    and ``set_to_zero`` for "frozen" (no state, no update). ``labels``: the label tree of
    :func:`freeze_labels`, or a function of the parameters returning it."""
    transforms = {lab: optimizer(one_cycle(total_steps, lr)) for lab, lr in lrs.items()}
    transforms[FROZEN] = optax.set_to_zero()
    return optax.multi_transform(transforms, labels if callable(labels) else dict(labels))


# --------------------------------------------------------------------------------------------
# Feature extraction: the frozen network runs once, the head trains on its cached output
# --------------------------------------------------------------------------------------------

def _to_float(images) -> jax.Array:
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def _batched(fn, images: np.ndarray, batch_size: int) -> np.ndarray:
    """``fn`` over fixed-size batches (the last one padded, so ``fn`` compiles once)."""
    n = len(images)
    batch_size = max(1, min(batch_size, n))
    outs = []
    for start in range(0, n, batch_size):
        chunk = images[start:start + batch_size]
        if len(chunk) < batch_size:
            pad = np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        outs.append(np.asarray(fn(chunk))[:min(batch_size, n - start)])
    return np.concatenate(outs)


def head_inputs(model: nn.Module, variables: Mapping, images: np.ndarray, *,
                head: str | None = None, batch_size: int = 64) -> np.ndarray:
    """What the head layer receives, for every image: the features of the frozen network.

    ``images`` uint8 (N, H, W, C) (scaled to [0, 1] as in training) -> float32 (N, D), computed in
    inference mode by intercepting the head's call (works for any model whose output layer is a
    Dense). ``logits = features @ head.kernel + head.bias`` reproduces the model's output.
    """
    head = head or head_name(variables["params"])
    variables = dict(variables)
    return _batched(lambda x: _head_input(model, head, variables, x), np.asarray(images),
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
        model.apply(variables, _to_float(x), train=False)
    return captured[0].reshape(x.shape[0], -1)


def _head_loss(head_params, features, labels):
    logits = features @ head_params["kernel"] + head_params["bias"]
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    return optax.softmax_cross_entropy(logits, onehot).mean(), logits


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, *, top_k: int = 5) -> dict:
    """``loss``, ``accuracy``, ``top{k}_accuracy``, ``count``, ``confusion_matrix`` (as
    :func:`cnnlab.metrics.finalize` gives them) of a whole split's logits."""
    from cnnlab import metrics
    sums = metrics.batch_sums(jnp.asarray(logits), jnp.asarray(labels, jnp.int32), top_k=top_k)
    return metrics.finalize(metrics.add_sums(None, sums), top_k=top_k)


@functools.lru_cache(maxsize=32)
def _head_trainer(total_steps: int, lr: float):
    """(tx, jitted step) for :func:`train_head`, shared by calls with the same schedule (so
    repeated runs, e.g. a benchmark's seeds, compile once)."""
    tx = optax.adam(one_cycle(total_steps, lr))

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, feats, labs, idx):
        (loss, logits), grads = jax.value_and_grad(_head_loss, has_aux=True)(
            params, feats[idx], labs[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        acc = jnp.mean(jnp.argmax(logits, -1) == labs[idx])
        return optax.apply_updates(params, updates), opt_state, loss, acc

    return tx, step


def train_head(head_params: Mapping, features: np.ndarray, labels: np.ndarray, *,
               epochs: int, batch_size: int, lr: float, seed: int = 0,
               val: tuple[np.ndarray, np.ndarray] | None = None, top_k: int = 5,
               on_epoch: Callable[[dict], None] | None = None) -> tuple[dict, list[dict]]:
    """Train a dense head ``{"kernel" (D, C), "bias" (C,)}`` on cached features.

    Adam on a one-cycle schedule peaking at ``lr``, ``epochs`` passes over ``features`` (N, D) in
    shuffled batches (:func:`cnnlab.data.batch_indices`, seeded), softmax cross-entropy.

    Returns:
      ``(head_params, history)``; one record per epoch: ``train_loss``, ``train_accuracy`` (means
      over the epoch's batches), ``learning_rate``, ``epoch_seconds``, and with ``val``
      ``test_loss``, ``test_accuracy``, ``test_top{k}_accuracy``.
    """
    from cnnlab import data
    n = len(labels)
    batch_size = min(batch_size, n)
    steps = n // batch_size
    schedule = one_cycle(epochs * steps, lr)
    tx, step = _head_trainer(epochs * steps, float(lr))
    params = jax.tree.map(jnp.asarray, dict(head_params))
    opt_state = tx.init(params)
    feats = jnp.asarray(features)
    labs = jnp.asarray(labels, jnp.int32)

    history, done = [], 0
    for epoch in range(epochs):
        t0 = time.time()
        order = data.batch_indices(n, batch_size, seed=seed, epoch=epoch)
        losses, accs = [], []
        for idx in order:
            params, opt_state, loss, acc = step(params, opt_state, feats, labs, jnp.asarray(idx))
            losses.append(loss)
            accs.append(acc)
            done += 1
        record = {"train_loss": float(np.mean(losses)), "train_accuracy": float(np.mean(accs)),
                  "learning_rate": float(schedule(done - 1)),
                  "epoch_seconds": round(time.time() - t0, 3),
                  "images_per_second": round(steps * batch_size / max(time.time() - t0, 1e-9), 1)}
        if val is not None:
            logits = np.asarray(val[0] @ np.asarray(params["kernel"]) + np.asarray(params["bias"]))
            m = evaluate_logits(logits, val[1], top_k=top_k)
            record.update(test_loss=m["loss"], test_accuracy=m["accuracy"],
                          **{f"test_top{top_k}_accuracy": m[f"top{top_k}_accuracy"]})
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return jax.tree.map(np.asarray, params), history


# --------------------------------------------------------------------------------------------
# lr_find, test-time augmentation, interpretation
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LRFind:
    """Result of :func:`lr_find`: the sweep and its suggestions.

    ``suggestion`` is ``minimum / 10`` (fast.ai's "lr_min": a tenth of the rate with the lowest
    smoothed loss, safely before the divergence); ``steepest`` is where the smoothed loss falls
    fastest (``d loss / d log lr`` most negative).
    """

    lrs: np.ndarray
    losses: np.ndarray          # smoothed (bias-corrected exponential moving average)
    raw_losses: np.ndarray
    minimum: float              # lr at the lowest smoothed loss
    steepest: float
    suggestion: float
    plot: str | None = None


def lr_find(loss_fn: Callable[[Any, Any], jax.Array], params, batches: Sequence, *,
            start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100,
            optimizer: Callable[..., optax.GradientTransformation] = optax.adam,
            smoothing: float = 0.98, diverge: float = 4.0, plot: str | None = None) -> LRFind:
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
      plot: if given, a PNG path: loss vs learning rate (log scale) with the suggestions marked.
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
    if n < 3:
        raise CnnlabError("lr_find: the loss diverged at once; lower start_lr")
    lrs, smooth, raw = lrs[:n], np.array(smooth), np.array(raw)
    i_min = int(np.argmin(smooth))
    grads = np.gradient(smooth, np.log(lrs))
    i_steep = int(np.argmin(grads[:max(i_min, 1) + 1]))
    result = LRFind(lrs, smooth, raw, float(lrs[i_min]), float(lrs[i_steep]),
                    float(lrs[i_min] / 10))
    if plot:
        result = dataclasses.replace(result, plot=plot_lr_find(result, plot))
    return result


def plot_lr_find(result: LRFind, path: str) -> str:
    """Loss vs learning rate (log x) with ``steepest`` and ``suggestion`` (min/10) marked."""
    from cnnlab import plots
    fig = plots._figure(6, 4)
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
    return plots._save(fig, path)


def tta_probs(logits_fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """Test-time augmentation: class probabilities averaged over each image and its left-right
    mirror, ``(softmax(f(x)) + softmax(f(flip(x)))) / 2``; ``images`` (N, H, W, C) -> (N, C)."""
    images = np.asarray(images)
    p = jax.nn.softmax(jnp.asarray(logits_fn(images)), axis=-1)
    q = jax.nn.softmax(jnp.asarray(logits_fn(images[:, :, ::-1])), axis=-1)
    return np.asarray((p + q) / 2)


def interpret(images: np.ndarray, labels: np.ndarray, logits: np.ndarray,
              class_names: Sequence[str], *, top_losses: int = 9,
              out_dir: str | None = None) -> dict:
    """What the model gets wrong, like fast.ai's ``ClassificationInterpretation``.

    Returns ``confusion_matrix`` (rows = true class), ``most_confused`` (``[true, predicted,
    count]``, most frequent first, off-diagonal only) and ``top_losses`` (``[index, true,
    predicted, loss, probability of the prediction]`` for the ``top_losses`` highest losses).
    With ``out_dir``: ``top_losses.png`` (the grid), ``interpretation.json``; paths under
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
        from cnnlab.train import write_json
        os.makedirs(out_dir, exist_ok=True)
        grid = plot_top_losses(images[order], top, os.path.join(out_dir, "top_losses.png"))
        path = os.path.join(out_dir, "interpretation.json")
        write_json(path, report)
        report["files"] = {"top_losses": grid, "interpretation": path}
    return report


def plot_top_losses(images: np.ndarray, rows: Sequence[Sequence], path: str) -> str:
    """Grid of images titled "predicted / true / loss / probability" (fast.ai's
    ``plot_top_losses``)."""
    from cnnlab import plots
    n = max(len(rows), 1)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig = plots._figure(3.0 * cols, 3.2 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, (_, true, pred, loss, prob) in zip(axes, images, rows):
        plots._show(ax, image)
        ax.set_title(f"{pred} / {true}\nloss {loss:.2f} p {prob:.2f}", fontsize=8,
                     color="green" if pred == true else "red")
    fig.suptitle("top losses: predicted / true", fontsize=10)
    return plots._save(fig, path)


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
    """ResNet50 / VGG16 with Keras ImageNet weights (full or ``_notop`` file) and a fresh head.

    The model takes [0, 1] RGB (``preprocess="caffe"`` inside); VGG16 uses the light
    ``classifier="avg"`` top (global average pool + dense), so any ``image_size`` >= 32 works.
    """
    from cnnlab import keras_h5, models
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
    variables = dict(keras_h5.load_model_weights(weights, model, shape, keep=("predictions",)))
    variables["params"] = replace_head(variables["params"], num_classes, key,
                                       name="predictions")
    return Backbone(name, kwargs, model, variables, shape,
                    f"{name} with Keras weights {os.fspath(weights)}")


def checkpoint_backbone(workdir: str, num_classes: int, *, key: jax.Array) -> Backbone:
    """The newest checkpoint of a ``cnnlab train`` (or ``finetune``) run, head replaced."""
    from cnnlab import models
    from cnnlab.train import load_run
    run = load_run(workdir)
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


# --------------------------------------------------------------------------------------------
# Fine-tuning loop
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Every setting of ``cnnlab finetune`` (saved as ``finetune.json`` in the workdir)."""

    backbone: str                        # "resnet50", "vgg16" or the workdir of a cnnlab run
    data_dir: str                        # ROOT/<class>/<images>
    weights: str | None = None           # Keras .h5 for resnet50/vgg16
    freeze_epochs: int = 2               # head only, on cached features
    epochs: int = 2                      # then the last `unfreeze` blocks + head
    unfreeze: int = 1                    # blocks before the head to train (-1: all)
    image_size: int | None = None        # default: 224 (ImageNet) or the run's input size
    val_fraction: float = 0.2
    batch_size: int = 32
    lr: float = 1e-3                     # head phase peak lr; fine-tuning peaks at lr / 2
    lr_ratio: float = 100.0              # discriminative lrs span lr/2/ratio .. lr/2
    lr_find: bool = False                # pick the head lr with lr_find (suggestion)
    flip: bool = True                    # random left-right flips while fine-tuning
    tta: bool = True                     # final accuracy also with flip TTA
    seed: int = 0
    top_k: int = 5
    tfds_dir: str | None = None
    keep_checkpoints: int = 3
    plots: bool = True

    def validate(self) -> None:
        for name in ("freeze_epochs", "epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise CnnlabError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.freeze_epochs + self.epochs == 0:
            raise CnnlabError("nothing to train: give --freeze-epochs and/or --epochs > 0")
        if self.batch_size < 1:
            raise CnnlabError(f"batch size must be positive, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise CnnlabError(f"the learning rate must be a positive number, got {self.lr}")
        if self.unfreeze < -1:
            raise CnnlabError(f"--unfreeze must be >= 0 blocks, or -1 for all, got {self.unfreeze}")


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
        from cnnlab import keras_h5
        if not config.weights:
            raise CnnlabError(f"--backbone {config.backbone} needs --weights FILE.h5 (ImageNet "
                              "weights, full or _notop): "
                              + keras_h5.weights_help(config.backbone, include_top=False))
        if not os.path.isfile(config.weights):
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


class _Printer:
    """Default reporter: one line per epoch (like ``cnnlab train``)."""

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)

    def epoch_end(self, r: dict) -> None:
        print(f"epoch {r['epoch']:>3} [{r['phase']:<8}] train loss {r['train_loss']:.4f} acc "
              f"{r['train_accuracy']:.4f}  val loss {r['test_loss']:.4f} acc "
              f"{r['test_accuracy']:.4f}  lr {r['learning_rate']:.2e}  "
              f"{r['epoch_seconds']:.1f} s", flush=True)


def finetune(config: FinetuneConfig, workdir: str, *, overwrite: bool = False,
             reporter=None) -> dict:
    """Fine-tune ``config.backbone`` on the image folder ``config.data_dir`` into ``workdir``.

    Phase "head" (``freeze_epochs``): the backbone runs once over the training and validation
    images (inference mode); the fresh head trains on the cached features. Phase "finetune"
    (``epochs``): the last ``unfreeze`` blocks and the head train together, with random flips
    (``flip``), discriminative learning rates on a one-cycle schedule, batch norm in inference mode.

    The workdir is laid out like ``cnnlab train``'s (``config.json``, ``run.json``,
    ``metrics.jsonl`` with one record per epoch and a final one, ``checkpoints/<step>/``,
    ``plots/curves.png``, ``confusion_matrix.png``, ``predictions.png``), plus ``finetune.json``,
    ``plots/top_losses.png``, ``interpretation.json`` and with ``lr_find`` ``plots/lr_find.png``;
    ``cnnlab predict --workdir W IMAGE`` and ``cnnlab evaluate`` read it like any run. The
    checkpoints hold the trained parameters; their optimizer state is a fresh one of the recorded
    ``config.json`` optimizer (a fine-tuning run does not resume).

    Returns the final record (``test_accuracy`` = validation accuracy, ``test_accuracy_tta``,
    ``most_confused``, ...).
    """
    from cnnlab import data, models, train
    from cnnlab.checkpoints import Checkpoints
    from cnnlab.data.image_folder import dataset_spec, load_image_folder

    t_start = time.time()
    config.validate()
    reporter = reporter or _Printer()
    workdir = os.path.abspath(workdir)
    size, channels = _backbone_input(config)  # checks backbone and weights before any work
    if os.path.isdir(config.backbone) and os.path.abspath(config.backbone) == workdir:
        raise CnnlabError(f"--workdir {workdir} is the backbone's run; give another --workdir")
    train.prepare_workdir(workdir, resume=False, overwrite=overwrite)
    ds = load_image_folder(config.data_dir, image_size=size, val_fraction=config.val_fraction,
                           seed=config.seed, tfds_dir=config.tfds_dir, channels=channels)
    num_classes = len(ds.class_names)
    bb = _load_backbone(config, num_classes, jax.random.key(config.seed), size)
    model, variables = bb.model, bb.variables
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    head = head_name(params)
    groups = blocks(layer_order(model, (1, *bb.input_shape)), params)
    n_train, n_val = len(ds.train), len(ds.test)
    batch_size = min(config.batch_size, n_train)
    if batch_size < config.batch_size:
        reporter.note(f"batch size {config.batch_size} > {n_train} training images: using "
                      f"{batch_size}")
    steps_per_epoch = n_train // batch_size
    total_epochs = config.freeze_epochs + config.epochs

    # The workdir speaks TrainConfig, so `cnnlab evaluate/predict/visualize` read it as a run.
    spec = dataset_spec(config.data_dir, image_size=size, val_fraction=config.val_fraction,
                        seed=config.seed, channels=bb.input_shape[-1])
    tconfig = train.TrainConfig(
        model=bb.model_name, model_kwargs=bb.model_kwargs, dataset=spec,
        tfds_dir=config.tfds_dir, epochs=total_epochs, batch_size=batch_size,
        optimizer="adam", learning_rate=config.lr, schedule="one_cycle", seed=config.seed,
        top_k=config.top_k, keep_checkpoints=config.keep_checkpoints, plots=config.plots)
    train.write_json(os.path.join(workdir, "config.json"), tconfig.to_dict())
    train.write_json(os.path.join(workdir, "finetune.json"), dataclasses.asdict(config))
    train.write_json(os.path.join(workdir, "run.json"), {
        "class_names": list(ds.class_names), "input_shape": list(bb.input_shape),
        "num_classes": num_classes, "dataset": spec, "source": ds.source,
        "train_examples": n_train, "test_examples": n_val,
        "param_count": models.param_count(params), "devices": 1, "processes": 1,
        "mesh": {"data": 1}, "steps_per_epoch": steps_per_epoch,
        "backbone": bb.description, "blocks": [[name, layers] for name, layers in groups]})
    reporter.note(f"fine-tuning {bb.description} on {ds.source}; {num_classes} classes, blocks "
                  f"{', '.join(name for name, _ in groups)}")

    history: list[dict] = []
    plots_dir = os.path.join(workdir, "plots")
    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    fresh_opt = train.make_optimizer(tconfig, steps_per_epoch)
    step = 0

    def save(params, step):
        # The optimizer state slot holds a fresh state of the config's optimizer (see docstring).
        ckpts.save(step, {"step": jnp.int32(step), "params": params, "batch_stats": stats,
                          "opt_state": fresh_opt.init(params)},
                   {"step": step, "epoch": len(history), "epochs_done": len(history),
                    "epoch_sums": None})

    def record(r: dict, phase: str, step: int):
        r = {"epoch": len(history) + 1, "step": step, "phase": phase, **r}
        history.append(r)
        train._write_metrics(workdir, history)
        reporter.epoch_end(r)

    try:
        # ---- phase 1: head on cached features
        head_lr = config.lr
        if config.freeze_epochs:
            t0 = time.time()
            f_train = head_inputs(model, variables, ds.train.images, head=head)
            f_val = head_inputs(model, variables, ds.test.images, head=head)
            reporter.note(f"features {f_train.shape[1]}-d of {n_train + n_val} images in "
                          f"{time.time() - t0:.1f} s (the backbone runs once)")
            if config.lr_find:
                found = lr_find(
                    lambda p, b: _head_loss(p, *b)[0], params[head],
                    [(f_train[i], ds.train.labels[i]) for i in data.batch_indices(
                        n_train, batch_size, seed=config.seed, epoch=0)],
                    start_lr=1e-6, end_lr=10.0, num_steps=100,
                    plot=os.path.join(plots_dir, "lr_find.png") if config.plots else None)
                head_lr = found.suggestion
                reporter.note(f"lr_find: suggestion {found.suggestion:.2g} (minimum "
                              f"{found.minimum:.2g} / 10; steepest {found.steepest:.2g})"
                              + (f"; plot {found.plot}" if found.plot else ""))

            def on_epoch(r):
                nonlocal step
                step += steps_per_epoch
                record(r, "head", step)

            new_head, _ = train_head(params[head], f_train, ds.train.labels,
                                     epochs=config.freeze_epochs, batch_size=batch_size,
                                     lr=head_lr, seed=config.seed,
                                     val=(f_val, ds.test.labels), top_k=config.top_k,
                                     on_epoch=on_epoch)
            params = {**params, head: {k: jnp.asarray(v) for k, v in new_head.items()}}
            save(params, step)

        # ---- phase 2: unfreeze the last blocks
        if config.epochs:
            def on_finetune_epoch(r, new_params):
                nonlocal step
                step += steps_per_epoch
                record(r, "finetune", step)
                save(new_params, step)

            params, _ = train_blocks(
                model, {"params": params, "batch_stats": stats}, groups, ds.train.images,
                ds.train.labels, unfreeze=config.unfreeze, epochs=config.epochs,
                batch_size=batch_size, lr=config.lr / 2, lr_ratio=config.lr_ratio,
                seed=config.seed, flip=config.flip, val=(ds.test.images, ds.test.labels),
                top_k=config.top_k, on_epoch=on_finetune_epoch, reporter=reporter)

        # ---- final evaluation, TTA, interpretation, plots
        def logits_fn(images):
            return predict(model, {"params": params, **({"batch_stats": stats} if stats else {})},
                           images)

        val_logits = logits_fn(ds.test.images)
        m = evaluate_logits(val_logits, ds.test.labels, top_k=config.top_k)
        final = {"final": True, "epoch": len(history), "step": step, "test_loss": m["loss"],
                 "test_accuracy": m["accuracy"],
                 f"test_top{config.top_k}_accuracy": m[f"top{config.top_k}_accuracy"],
                 "test_examples": m["count"], "confusion_matrix": m["confusion_matrix"]}
        if config.tta:
            probs = tta_probs(logits_fn, ds.test.images)
            final["test_accuracy_tta"] = float(np.mean(probs.argmax(-1) == ds.test.labels))
        report = interpret(ds.test.images, ds.test.labels, val_logits, ds.class_names,
                           out_dir=plots_dir if config.plots else None)
        if "files" in report:
            os.replace(report["files"]["interpretation"],
                       os.path.join(workdir, "interpretation.json"))
        final.update(most_confused=report["most_confused"][:10], model=bb.model_name,
                     backbone=bb.description, dataset=spec, source=ds.source, devices=1,
                     precision="f32", seconds=round(time.time() - t_start, 2))
        train._write_metrics(workdir, history + [final])
        if config.plots and history:
            from cnnlab import plots
            plots.training_curves(history, os.path.join(plots_dir, "curves.png"))
            plots.confusion_matrix(np.asarray(m["confusion_matrix"]), ds.class_names,
                                   os.path.join(plots_dir, "confusion_matrix.png"))
            n = min(25, n_val)
            plots.prediction_grid(ds.test.images[:n], ds.test.labels[:n],
                                  val_logits[:n].argmax(-1), ds.class_names,
                                  os.path.join(plots_dir, "predictions.png"))
        ckpts.wait()
        return final
    finally:
        ckpts.close()


def predict(model: nn.Module, variables: Mapping, images: np.ndarray, *,
            batch_size: int = 64) -> np.ndarray:
    """Logits (N, C) of uint8 images (N, H, W, C), inference mode, fixed-size batches."""
    variables = dict(variables)
    return _batched(lambda x: _logits(model, variables, x), np.asarray(images), batch_size)


@functools.partial(jax.jit, static_argnames="model")
def _logits(model, variables, x):
    # Modules hash by value: one compilation per (architecture, shapes), however often called.
    return model.apply(variables, _to_float(x), train=False)


@functools.lru_cache(maxsize=32)
def _block_trainer(model: nn.Module, layer_labels: tuple[tuple[str, str], ...],
                   lrs: tuple[tuple[str, float], ...], total: int, flip: bool, has_stats: bool):
    """(tx, jitted step) for :func:`train_blocks`, shared by calls with the same model, freeze
    specification and schedule (so repeated runs compile once)."""
    from cnnlab import data
    label_of = dict(layer_labels)
    tx = finetune_optimizer(
        lambda p: {k: jax.tree.map(lambda _, lab=label_of[k]: lab, v) for k, v in p.items()},
        dict(lrs), total)

    def loss_fn(trainable, frozen, stats, x, y):
        v = {"params": {**frozen, **trainable}}
        if has_stats:
            v["batch_stats"] = stats
        logits = model.apply(v, x, train=False)  # BN in inference mode (see module docstring)
        onehot = jax.nn.one_hot(y, logits.shape[-1])
        return optax.softmax_cross_entropy(logits, onehot).mean(), logits

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(trainable, opt_state, frozen, stats, images, labels, idx, key):
        x = _to_float(images[idx])
        if flip:
            x = data.random_flip(key, x)
        y = labels[idx]
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, frozen, stats, x, y)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return optax.apply_updates(trainable, updates), opt_state, loss, acc

    return tx, train_step


def train_blocks(model: nn.Module, variables: Mapping, groups: Sequence[tuple[str, Sequence[str]]],
                 images: np.ndarray, labels: np.ndarray, *, unfreeze: int, epochs: int,
                 batch_size: int, lr: float, lr_ratio: float = 100.0, seed: int = 0,
                 flip: bool = True, val: tuple[np.ndarray, np.ndarray] | None = None,
                 top_k: int = 5, on_epoch: Callable[[dict, dict], None] | None = None,
                 reporter=None) -> tuple[dict, list[dict]]:
    """Fine-tune the head and the last ``unfreeze`` blocks of ``model`` on uint8 ``images``.

    Only the trainable layers are differentiated and updated (the frozen ones are passed through
    untouched: bit-identical, and their weight gradients are never computed); each block has its
    own Adam on a one-cycle schedule peaking at its discriminative rate
    (:func:`discriminative_lrs` from ``lr`` for the head down to ``lr / lr_ratio``); random
    left-right flips with ``flip``; batch norm in inference mode, no dropout (``train=False``).

    Args:
      variables: ``{"params": ..., ["batch_stats": ...]}`` (not modified).
      groups: :func:`blocks` of the model.
      on_epoch: called with ``(record, params)`` after every epoch (e.g. to save a checkpoint).

    Returns:
      ``(params, history)``: the new parameters and one record per epoch (``train_loss``,
      ``train_accuracy``, ``learning_rate``, ``epoch_seconds``, ``images_per_second``, and with
      ``val`` the ``test_*`` metrics).
    """
    from cnnlab import data
    params = dict(variables["params"])
    stats = variables.get("batch_stats") or {}
    tags = freeze_labels(params, groups, unfreeze)
    names = trainable_layers(tags)
    lrs = discriminative_lrs(tags, lr, lr_ratio)
    n = len(labels)
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size
    total = epochs * steps_per_epoch
    trainable = {k: jax.tree.map(jnp.asarray, params[k]) for k in names}
    frozen = {k: v for k, v in params.items() if k not in trainable}
    layer_labels = tuple((k, jax.tree.leaves(tags[k])[0]) for k in names)
    tx, train_step = _block_trainer(model, layer_labels, tuple(sorted(lrs.items())), total,
                                    flip, bool(stats))
    opt_state = tx.init(trainable)
    if reporter is not None:
        reporter.note("fine-tuning " + ", ".join(
            f"{name} (lr {lrs[block_label(len(groups) - 1 - i)]:.1e})"
            for i, (name, _) in enumerate(groups)
            if block_label(len(groups) - 1 - i) in lrs) + "; the rest stays frozen")
    schedule = one_cycle(total, max(lrs.values()))
    images_dev = jnp.asarray(images)
    labels_dev = jnp.asarray(labels, jnp.int32)
    key = jax.random.key(seed)
    history, step = [], 0
    for e in range(epochs):
        t0 = time.time()
        order = data.batch_indices(n, batch_size, seed=seed, epoch=1000 + e)
        losses, accs = [], []
        for idx in order:
            trainable, opt_state, loss, acc = train_step(
                trainable, opt_state, frozen, stats, images_dev, labels_dev, jnp.asarray(idx),
                jax.random.fold_in(key, step))
            losses.append(loss)
            accs.append(acc)
            step += 1
        losses = [float(v) for v in losses]
        if not all(math.isfinite(v) for v in losses):
            raise CnnlabError(f"the loss became {losses[-1]} while fine-tuning; lower the "
                              f"learning rate (it was {lr:.3g})")
        seconds = time.time() - t0
        params = {**frozen, **trainable}
        record = {"train_loss": float(np.mean(losses)),
                  "train_accuracy": float(np.mean([float(a) for a in accs])),
                  "learning_rate": float(schedule(step - 1)), "epoch_seconds": round(seconds, 3),
                  "images_per_second": round(steps_per_epoch * batch_size / max(seconds, 1e-9),
                                             1)}
        if val is not None:
            v = {"params": params, **({"batch_stats": stats} if stats else {})}
            m = evaluate_logits(predict(model, v, val[0]), val[1], top_k=top_k)
            record.update(test_loss=m["loss"], test_accuracy=m["accuracy"],
                          **{f"test_top{top_k}_accuracy": m[f"top{top_k}_accuracy"]})
        history.append(record)
        if on_epoch is not None:
            on_epoch(record, params)
    return {**frozen, **trainable}, history


# --------------------------------------------------------------------------------------------
# ImageNet predictions and the CLI
# --------------------------------------------------------------------------------------------

def imagenet_predict(model_name: str, weights: str | None, images: Sequence[str], *,
                     top: int = 3) -> list[list[tuple[str, str, float]]]:
    """Keras-style ImageNet predictions for image files: load at 224x224 (nearest, like
    ``keras.utils.load_img``), caffe preprocessing, softmax, :func:`cnnlab.imagenet.
    decode_predictions`."""
    from cnnlab import imagenet, keras_h5, models
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


def _cmd_finetune(args) -> int:
    config = FinetuneConfig(
        backbone=args.backbone, data_dir=args.data_dir, weights=args.weights,
        freeze_epochs=args.freeze_epochs, epochs=args.epochs, unfreeze=args.unfreeze,
        image_size=args.image_size, val_fraction=args.val_fraction, batch_size=args.batch_size,
        lr=args.lr, lr_ratio=args.lr_ratio, lr_find=args.lr_find, flip=args.flip, tta=args.tta,
        seed=args.seed, tfds_dir=args.tfds_dir, plots=args.plots)
    workdir = args.workdir or os.path.join("runs", "finetune")
    with warnings.catch_warnings():
        # Our own warnings (bad images skipped) as plain "warning: ..." lines, not
        # "file.py:123: UserWarning:" with a source line.
        warnings.simplefilter("default")
        warnings.showwarning = _warning_printer(warnings.showwarning)
        final = finetune(config, workdir, overwrite=args.overwrite)
    tta = (f", with flip TTA {final['test_accuracy_tta']:.2%}"
           if "test_accuracy_tta" in final else "")
    print(f"validation accuracy {final['test_accuracy']:.2%}{tta} (loss "
          f"{final['test_loss']:.4f}) on {final['test_examples']:,} images after "
          f"{final['epoch']} epoch(s), {final['seconds']:.1f} s")
    if final["most_confused"]:
        print("most confused: " + "; ".join(f"{t} -> {p} ({c}x)"
                                            for t, p, c in final["most_confused"][:3]))
    print(f"workdir: {workdir} (metrics.jsonl, checkpoints/, plots/, interpretation.json)")
    return 0


def _warning_printer(original):
    """cnnlab's own UserWarnings (images skipped) as "warning: ..." lines; others as usual."""
    def show(message, category, filename, lineno, file=None, line=None):
        if category is UserWarning and "cnnlab" in filename:
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            original(message, category, filename, lineno, file, line)
    return show


def _cmd_predict_imagenet(args) -> int:
    results = imagenet_predict(args.model, args.weights, args.images, top=args.top_k)
    for path, top in zip(args.images, results):
        print(f"{path}: " + ", ".join(f"{name} {p:.1%}" for _, name, p in top))
    return 0


def add_cli(subparsers) -> None:
    """``cnnlab finetune`` and ``cnnlab predict --model resnet50|vgg16 --weights FILE.h5``
    (the hook of :mod:`cnnlab.cli`)."""
    import argparse

    f = subparsers.add_parser(
        "finetune", help="transfer a pretrained network to your own image folder")
    f.add_argument("--backbone", required=True,
                   help="resnet50, vgg16 (with --weights) or the workdir of a cnnlab run")
    f.add_argument("--weights", help="Keras ImageNet .h5 file (full or _notop) for "
                   "resnet50/vgg16")
    f.add_argument("--data-dir", required=True, help="image folder ROOT/<class>/<images>")
    f.add_argument("--freeze-epochs", type=int, default=2,
                   help="epochs training only the new head, on cached features (default 2)")
    f.add_argument("--epochs", type=int, default=2,
                   help="epochs fine-tuning the last --unfreeze blocks + head (default 2)")
    f.add_argument("--unfreeze", type=int, default=1,
                   help="blocks before the head to fine-tune (default 1; -1 = all)")
    f.add_argument("--image-size", type=int,
                   help="resize images to this square size (default 224 for ImageNet backbones, "
                   "the run's input size otherwise)")
    f.add_argument("--val-fraction", type=float, default=0.2)
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--lr", type=float, default=1e-3,
                   help="head learning rate (fine-tuning peaks at lr/2)")
    f.add_argument("--lr-ratio", type=float, default=100.0,
                   help="discriminative lrs: earliest unfrozen block gets lr/2/ratio")
    f.add_argument("--lr-find", action="store_true",
                   help="choose the head learning rate with lr_find (plots/lr_find.png)")
    f.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="random left-right flips while fine-tuning (--no-flip when orientation "
                   "matters, e.g. text or Fashion-MNIST's left-facing shoes)")
    f.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="also report validation accuracy with flip test-time augmentation")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--tfds-dir", help="TFDS data dir for the prepared image folder")
    f.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True)
    f.add_argument("--workdir", help="where metrics, checkpoints and plots go "
                   "(default runs/finetune)")
    f.add_argument("--overwrite", action="store_true", help="delete an earlier run in --workdir")
    f.set_defaults(func=_cmd_finetune)

    p = subparsers.choices.get("predict")
    if p is not None:
        p.add_argument("--model", help="resnet50 or vgg16: ImageNet predictions (with --weights)")
        p.add_argument("--weights", help="Keras ImageNet .h5 file for --model")
        builtin = p.get_default("func")
        p.set_defaults(func=lambda args: (_cmd_predict_imagenet(args) if args.model
                                          else builtin(args)))
