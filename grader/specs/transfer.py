"""Specs of lab 6: transfer learning."""

from __future__ import annotations

import numpy as np

from cnnlab import imagenet
from grader.spec import Case, Exercise, f32, ints, key, randn, rng

M = "transfer"


def backbone_tree(r, features=6, classes=10, head="head"):
    """A small parameter tree shaped like a CNN with a classifier head."""
    return {"backbone": {"Conv_0": {"kernel": randn(r, 3, 3, 1, 4), "bias": randn(r, 4)},
                         "Dense_0": {"kernel": randn(r, 8, features), "bias": randn(r, features)}},
            head: {"kernel": randn(r, features, classes), "bias": randn(r, classes)}}


def mlp_tree(r, d=6, h=8, c=3):
    """Parameters of the harness MLP of the fine-tuning driver: blocks "backbone" and "head"."""
    return {"backbone": {"kernel": randn(r, d, h, scale=0.5), "bias": randn(r, h, scale=0.1)},
            "head": {"kernel": randn(r, h, c, scale=0.5), "bias": randn(r, c, scale=0.1)}}


def _softmax_rows(r, n, c):
    z = r.standard_normal((n, c)) * 3
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _grads(r, tree, n=3):
    return [{k: {kk: randn(r, *np.shape(vv)) for kk, vv in v.items()} for k, v in tree.items()}
            for _ in range(n)]


def imagenet_names() -> list[str]:
    """The 1000 ImageNet class names in Keras' order (281 "tabby", 287 "lynx")."""
    return [imagenet.class_name(i) for i in range(1000)]


def lecture_probs() -> np.ndarray:
    """The probabilities ResNet50 printed for the lecture's cat.jpg: tabby 47.4 %, lynx 39.9 %,
    Egyptian cat 4.8 %, the rest spread evenly over the other 997 classes."""
    p = np.full((1, 1000), (1.0 - 0.474 - 0.399 - 0.048) / 997, np.float32)
    p[0, [281, 287, 285]] = [0.474, 0.399, 0.048]
    return p


def _exercises() -> list[Exercise]:
    r = rng(6)
    t3 = {"stem": {"w": randn(r, 3, 3)}, "block1": {"w": randn(r, 3, 3), "b": randn(r, 3)},
          "head": {"kernel": randn(r, 3, 2), "bias": randn(r, 2)}}
    mlp = mlp_tree(r)
    names = imagenet_names()
    pixels = r.integers(0, 256, (2, 4, 5, 3)).astype(np.float32)
    return [
        Exercise(M, "caffe_preprocess", 1.0, (
            Case("a pure red pixel [255, 0, 0]", (f32([[255.0, 0.0, 0.0]]),),
                 hint="RGB -> BGR first (reverse the last axis), then subtract the BGR means"),
            Case("a batch of 2 images 4x5x3", (pixels,),
                 hint="subtract 103.939 from B, 116.779 from G, 123.68 from R; no scaling"),
            Case("under jax.jit", (pixels,), mode="jit"),
        ), hint="images[..., ::-1] - [103.939, 116.779, 123.68]"),
        Exercise(M, "decode_predictions", 1.0, (
            Case("the lecture's cat.jpg: tabby 47.4%, lynx 39.9%, Egyptian cat 4.8%",
                 (lecture_probs(), names),
                 hint="the top classes, most probable first, as (name, probability) pairs"),
            Case("two images, top 5", (_softmax_rows(r, 2, 1000), names), {"top": 5},
                 hint="one list per image, each with `top` pairs"),
            Case("4 classes, top 2", (_softmax_rows(r, 3, 4), ["cat", "dog", "car", "cup"]),
                 {"top": 2}, hint="use the class_names argument and the `top` argument"),
            Case("ties go to the lower index", (f32([[0.25, 0.25, 0.25, 0.25]]),
                                                 ["a", "b", "c", "d"]), {"top": 2},
                 hint="on ties the lower class index comes first (jax.lax.top_k does that)"),
        ), hint="for each row: the `top` largest probabilities with their class names"),
        Exercise(M, "replace_head", 2.0, (
            Case("ImageNet-like head 1000 -> 5 classes", (backbone_tree(r, classes=1000), 5,
                                                          key(0)),
                 hint="the new head has num_classes outputs: kernel (F, num_classes)",
                 hint_on=("shape",)),
            Case("10 -> 2 classes", (backbone_tree(r), 2, key(1))),
            Case("head named 'classifier'", (backbone_tree(r, head="classifier"), 3, key(2)),
                 {"head": "classifier"}, hint="use the `head` argument",
                 hint_on=("error", "shape", "value")),
            Case("under jax.jit", (backbone_tree(r), 4, key(3)), mode="jit"),
            Case("the input tree is not modified", (backbone_tree(r), 3, key(4)), mode="call",
                 options={"eager": True}, hint="build a new dict: new = dict(params)",
                 hint_on=("mutated",)),
        ), hint="a new outer dict whose head has num_classes outputs; the other blocks unchanged"),
        Exercise(M, "trainable_labels", 1.0, (
            Case("train the head", (backbone_tree(r), ("head",)),
                 hint="'frozen' for every leaf outside the trainable blocks"),
            Case("train block1 and head", (t3, ("block1", "head"))),
            Case("train nothing", (t3, ())),
        ), hint="the same tree structure, a string at every leaf"),
        Exercise(M, "freeze_optimizer", 2.0, (
            Case("adamw on the head, 3 updates", (mlp, ("head",), _grads(r, mlp)),
                 mode="driver:optimizer", options={"inner": "adamw", "frozen": ["backbone"]},
                 check="unchanged",
                 hint="zero gradients do not freeze a parameter under weight decay: use "
                      "optax.set_to_zero() for the frozen label"),
            Case("adamw on block1 and head", (t3, ("block1", "head"), _grads(r, t3)),
                 mode="driver:optimizer", options={"inner": "adamw", "frozen": ["stem"]},
                 check="unchanged"),
        ), hint="route every frozen leaf to an update of exactly zero"),
        Exercise(M, "discriminative_learning_rates", 1.0, (
            Case("3 blocks 1e-5 .. 1e-3", (("a", "b", "c"), 1e-5, 1e-3),
                 hint="geometric spacing (np.geomspace), not linear", rtol=1e-6, atol=0.0),
            Case("5 blocks 1e-4 .. 1e-2", (("stem", "b1", "b2", "b3", "head"), 1e-4, 1e-2),
                 hint="first block lr_min, last block lr_max", rtol=1e-6, atol=0.0),
            Case("one block gets lr_max", (("head",), 1e-5, 1e-3), rtol=1e-6, atol=0.0),
        ), hint="lr_min * (lr_max / lr_min) ** (i / (B - 1))"),
        Exercise(M, "discriminative_optimizer", 1.0, (
            Case("3 blocks, 2 updates", (t3, {"stem": 1e-3, "block1": 1e-2, "head": 1e-1},
                                         _grads(r, t3, 2)),
                 mode="driver:optimizer",
                 hint="each block's leaves use optax.sgd with that block's learning rate"),
            Case("2 blocks", (mlp, {"backbone": 0.01, "head": 0.5}, _grads(r, mlp, 1)),
                 mode="driver:optimizer"),
        ), hint="one SGD per block, each leaf labelled with its block's name"),
        Exercise(M, "finetune_step", 2.0, (
            Case("3 steps, head only", (mlp, randn(r, 3, 5, 6), ints(r, 3, 15).reshape(3, 5)),
                 mode="driver:finetune", options={"frozen": ["backbone"]}, check="unchanged",
                 hint="differentiate w.r.t. the trainable blocks only and update only them"),
            Case("3 steps, both blocks trainable",
                 (mlp, randn(r, 3, 5, 6), ints(r, 3, 15).reshape(3, 5)),
                 {"trainable": ("backbone", "head")}, mode="driver:finetune",
                 hint="use the `trainable` argument", hint_on=("value", "error")),
        ), hint="only the trainable blocks are differentiated and updated"),
    ]


EXERCISES = _exercises()
