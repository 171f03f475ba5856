"""Lab 6 — Transfer learning and fine-tuning.

A network trained on a big data set (ImageNet) has learned general features in its early blocks.
To reuse it for a new task with N classes: keep the backbone, replace the classifier head by a
fresh one with N outputs, train the head with the backbone frozen, then fine-tune everything with
small (and, for early blocks, smaller) learning rates.

The lectures: "Pre-trained CNN models: Models for image classification with weights trained on
ImageNet" (VGG16, ResNet, ...) and "Transfer Learning": "keep the early layers of a pre-trained
network, and re-train the later layers for a specific application"; "Reconstruct Top layer:
change the output layer to suit your needs"; "Fine Tuning: ... how much and how far back to
fine-tune" (002_7bece5f3dd1db8ed.txt). First the pre-trained model as it comes: preprocess an
image and read its predictions (003_dd4e96de96f4046f.txt, the ResNet50 example).

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


#: ImageNet's mean pixel in BGR order (Keras' "caffe" preprocessing of VGG16 and ResNet50).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def caffe_preprocess(images: jax.Array) -> jax.Array:
    """Keras' ``preprocess_input`` for VGG16 and ResNet50 ("caffe" mode): RGB -> BGR, then the
    ImageNet mean pixel is subtracted per channel; no scaling.

    ``out[..., c] = images[..., 2 - c] - CAFFE_MEAN_BGR[c]``. Shapes: (..., H, W, 3) RGB values in
    [0, 255] -> float32, same shape. A pure red pixel [255, 0, 0] becomes
    [-103.939, -116.779, 131.32]. Lecture: 003_dd4e96de96f4046f.txt, the ResNet50 example:
    ``x = np.expand_dims(image.img_to_array(img), axis=0); x = preprocess_input(x)``.
    """
    # BEGIN SOLUTION
    # HINT: reverse the last axis, then subtract an array of the three means
    x = jnp.asarray(images, jnp.float32)
    return x[..., ::-1] - jnp.asarray(CAFFE_MEAN_BGR, jnp.float32)
    # END SOLUTION


def decode_predictions(probs: jax.Array, class_names: Sequence[str], top: int = 3) -> list:
    """The ``top`` most probable classes of each image, most probable first, like Keras'
    ``decode_predictions``: a list (one per image) of lists of ``(class name, probability)``.

    Shapes: probs (N, C) (softmax outputs), ``class_names`` C strings -> N lists of ``top`` pairs
    ``(str, float)``; ties go to the lower class index. Lecture: 003_dd4e96de96f4046f.txt, the
    ResNet50 example, ``print('Predicted:', decode_predictions(preds, top=3)[0])`` printed for
    cat.jpg: "Tabby 47.4%, Lynx 39.9%, Egyptian cat 4.8%" — with ImageNet's names (281 "tabby",
    287 "lynx", 285 "Egyptian cat"): ``[("tabby", 0.474), ("lynx", 0.399), ("Egyptian cat",
    0.048)]``. (``cnnlab.imagenet`` has the 1000 names; ``top`` is a plain int.)
    """
    # BEGIN SOLUTION
    # HINT: jax.lax.top_k gives the indices of the largest values; convert with float() and int()
    values, indices = jax.lax.top_k(jnp.asarray(probs), top)
    return [[(class_names[int(i)], float(v)) for v, i in zip(vs, idx)]
            for vs, idx in zip(values, indices)]
    # END SOLUTION


def replace_head(params: dict, num_classes: int, key: jax.Array, *, head: str = "head") -> dict:
    """Replace the classifier head of a parameter tree by a fresh one for ``num_classes`` classes.

    ``params[head]`` is ``{"kernel": (F, old_classes), "bias": (old_classes,)}``. The result has
    every other block unchanged and ``params[head] = {"kernel": lecun_normal (F, num_classes),
    "bias": zeros (num_classes,)}`` where the kernel is exactly
    ``jax.nn.initializers.lecun_normal()(key, (F, num_classes), jnp.float32)``.
    An ImageNet head (2048, 1000) becomes (2048, 5) for 5 flower classes. Does not modify ``params``.
    Lecture: 002_7bece5f3dd1db8ed.txt, "Transfer Learning: Reconstruct Top layer": "Change the
    output layer to suit your needs, e.g. different number of categories".
    """
    # BEGIN SOLUTION
    # HINT: copy the outer dict and put a new head dict into the copy
    features = params[head]["kernel"].shape[0]
    new = dict(params)
    new[head] = {
        "kernel": jax.nn.initializers.lecun_normal()(key, (features, num_classes), jnp.float32),
        "bias": jnp.zeros((num_classes,), jnp.float32),
    }
    return new
    # END SOLUTION


def trainable_labels(params: dict, trainable: Sequence[str]) -> dict:
    """A label tree for ``optax.multi_transform``: the same structure as ``params`` with the string
    ``"trainable"`` at every leaf of the top-level blocks named in ``trainable`` and ``"frozen"``
    everywhere else.

    ``{"backbone": {"w": ...}, "head": {"kernel": ..., "bias": ...}}`` with ``trainable=["head"]``
    -> ``{"backbone": {"w": "frozen"}, "head": {"kernel": "trainable", "bias": "trainable"}}``.
    """
    # BEGIN SOLUTION
    # HINT: tree_map each block to a constant label
    return {name: jax.tree_util.tree_map(
                lambda _, lab="trainable" if name in trainable else "frozen": lab, block)
            for name, block in params.items()}
    # END SOLUTION


def freeze_optimizer(params: dict, trainable: Sequence[str],
                     tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """An optimizer that applies ``tx`` to the trainable blocks and leaves the others *exactly*
    unchanged, whatever ``tx`` does (momentum, weight decay, ...).

    Use ``optax.multi_transform`` with :func:`trainable_labels`: ``tx`` for "trainable" and
    ``optax.set_to_zero()`` for "frozen". Zeroing the *gradients* of frozen parameters is not
    enough: weight decay (``optax.adamw``) would still shrink them. Lecture:
    002_7bece5f3dd1db8ed.txt, "Transfer Learning: Basic idea": "keep the early layers of a
    pre-trained network, and re-train the later layers".
    """
    # BEGIN SOLUTION
    # HINT: optax.multi_transform with optax.set_to_zero() for the frozen label
    return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()},
                                 trainable_labels(params, trainable))
    # END SOLUTION


def discriminative_learning_rates(block_names: Sequence[str], lr_min: float,
                                  lr_max: float) -> dict[str, float]:
    """Learning rates per block, growing geometrically from ``lr_min`` (first, most general block)
    to ``lr_max`` (last block, the head), as fast.ai's ``slice(lr_min, lr_max)``.

    ``lr_i = lr_min * (lr_max / lr_min) ** (i / (B - 1))`` for block i of B (a single block gets
    ``lr_max``). Returns ``{name: float}``. ``["a", "b", "c"], 1e-5, 1e-3`` -> 1e-5, 1e-4, 1e-3.
    Lecture: 004_9604be48adb20edc.txt, "Steps of creating a world-class Image Classifier": 3.
    unfreeze, 4. "Find a good learning rate(s)", 5. fine-tune with ``fit_one_cycle``; and
    002_7bece5f3dd1db8ed.txt: "Early layers ... should be general", "Later layers are easier
    (quicker) to train".
    """
    # BEGIN SOLUTION
    # HINT: np.geomspace spaces values geometrically
    if len(block_names) == 1:
        return {block_names[0]: float(lr_max)}
    lrs = np.geomspace(lr_min, lr_max, len(block_names))
    return {name: float(lr) for name, lr in zip(block_names, lrs)}
    # END SOLUTION


def discriminative_optimizer(params: dict,
                             learning_rates: dict[str, float]) -> optax.GradientTransformation:
    """Plain SGD with a learning rate per top-level block: ``optax.sgd(learning_rates[name])`` for
    every leaf under ``params[name]``.

    ``optax.multi_transform({name: optax.sgd(lr) ...}, labels)`` with labels naming each leaf's block.
    """
    # BEGIN SOLUTION
    # HINT: optax.multi_transform with one optax.sgd per block and a label tree naming blocks
    labels = {name: jax.tree_util.tree_map(lambda _, n=name: n, block)
              for name, block in params.items()}
    return optax.multi_transform({name: optax.sgd(lr) for name, lr in learning_rates.items()},
                                 labels)
    # END SOLUTION


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
    Lecture: 002_7bece5f3dd1db8ed.txt, "Transfer Learning: Fine Tuning": "Should I train just the
    very last layer? Go back a few layers? Re-train the entire network?" — ``trainable`` says.
    """
    # BEGIN SOLUTION
    # HINT: split the dict, differentiate a loss of the trainable part only, update it, merge
    train_p = {k: params[k] for k in trainable}
    frozen = {k: v for k, v in params.items() if k not in trainable}

    def loss_fn(tp):
        logits = apply_fn({"params": {**frozen, **tp}}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(train_p)
    updates, opt_state = tx.update(grads, opt_state, train_p)
    train_p = optax.apply_updates(train_p, updates)
    return {**frozen, **train_p}, opt_state, loss
    # END SOLUTION
