# Lab 6 (transfer), generated from the reference solution. Fill in every
# `raise NotImplementedError(...)`, then grade one function with `make check EX=replace_head`
# (any function's name; EX=transfer for the whole lab), here or in the folder above.
"""Lab 6 — Transfer learning and fine-tuning.

A network trained on a big data set (ImageNet) has learned general features in its early blocks.
To reuse it for a new task with N classes: keep the backbone, replace the classifier head by a
fresh one with N outputs, train the head with the backbone frozen, then fine-tune everything with
small (and, for early blocks, smaller) learning rates.

Parameter trees here are nested dicts whose top-level keys are blocks, e.g.
``{"backbone": {"Conv_0": {...}, ...}, "head": {"kernel": (F, 1000), "bias": (1000,)}}``.
Nothing modifies its inputs: build new dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


def replace_head(params: dict, num_classes: int, key: jax.Array, *, head: str = "head") -> dict:
    """Replace the classifier head of a parameter tree by a fresh one for ``num_classes`` classes.

    ``params[head]`` is ``{"kernel": (F, old_classes), "bias": (old_classes,)}``. The result has
    every other block unchanged and ``params[head] = {"kernel": lecun_normal (F, num_classes),
    "bias": zeros (num_classes,)}`` where the kernel is exactly
    ``jax.nn.initializers.lecun_normal()(key, (F, num_classes), jnp.float32)``.
    An ImageNet head (2048, 1000) becomes (2048, 5) for 5 flower classes. Does not modify ``params``.
    """
    raise NotImplementedError('copy the outer dict and put a new head dict into the copy')


def trainable_labels(params: dict, trainable: Sequence[str]) -> dict:
    """A label tree for ``optax.multi_transform``: the same structure as ``params`` with the string
    ``"trainable"`` at every leaf of the top-level blocks named in ``trainable`` and ``"frozen"``
    everywhere else.

    ``{"backbone": {"w": ...}, "head": {"kernel": ..., "bias": ...}}`` with ``trainable=["head"]``
    -> ``{"backbone": {"w": "frozen"}, "head": {"kernel": "trainable", "bias": "trainable"}}``.
    """
    raise NotImplementedError('tree_map each block to a constant label')


def freeze_optimizer(params: dict, trainable: Sequence[str],
                     tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """An optimizer that applies ``tx`` to the trainable blocks and leaves the others *exactly*
    unchanged, whatever ``tx`` does (momentum, weight decay, ...).

    Use ``optax.multi_transform`` with :func:`trainable_labels`: ``tx`` for "trainable" and
    ``optax.set_to_zero()`` for "frozen". Zeroing the *gradients* of frozen parameters is not
    enough: weight decay (``optax.adamw``) would still shrink them.
    """
    raise NotImplementedError('optax.multi_transform with optax.set_to_zero() for the frozen label')


def discriminative_learning_rates(block_names: Sequence[str], lr_min: float,
                                  lr_max: float) -> dict[str, float]:
    """Learning rates per block, growing geometrically from ``lr_min`` (first, most general block)
    to ``lr_max`` (last block, the head), as fast.ai's ``slice(lr_min, lr_max)``.

    ``lr_i = lr_min * (lr_max / lr_min) ** (i / (B - 1))`` for block i of B (a single block gets
    ``lr_max``). Returns ``{name: float}``. ``["a", "b", "c"], 1e-5, 1e-3`` -> 1e-5, 1e-4, 1e-3.
    """
    raise NotImplementedError('np.geomspace spaces values geometrically')


def discriminative_optimizer(params: dict,
                             learning_rates: dict[str, float]) -> optax.GradientTransformation:
    """Plain SGD with a learning rate per top-level block: ``optax.sgd(learning_rates[name])`` for
    every leaf under ``params[name]``.

    ``optax.multi_transform({name: optax.sgd(lr) ...}, labels)`` with labels naming each leaf's block.
    """
    raise NotImplementedError('optax.multi_transform with one optax.sgd per block and a label tree naming blocks')


def finetune_step(params: dict, opt_state, images: jax.Array, labels: jax.Array, *,
                  apply_fn: Callable, tx: optax.GradientTransformation,
                  trainable: Sequence[str] = ("head",)):
    """One fine-tuning step that trains only the ``trainable`` blocks, computing no gradient for
    the frozen ones (cheaper than freezing through the optimizer).

    Split ``params`` into ``train_p = {k: params[k] for k in trainable}`` and the frozen rest;
    ``loss(train_p) = mean softmax cross-entropy of apply_fn({"params": {**frozen, **train_p}},
    images)`` vs integer ``labels``; differentiate with respect to ``train_p`` only;
    ``updates, opt_state = tx.update(grads, opt_state, train_p)``; apply them to ``train_p``.
    ``opt_state`` was made by ``tx.init(train_p)``.

    Returns ``(new_params, new_opt_state, loss)``: frozen blocks are bit-for-bit unchanged.
    """
    raise NotImplementedError('split the dict, differentiate a loss of the trainable part only, update it, merge')
