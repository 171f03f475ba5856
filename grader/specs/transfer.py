"""Specs of lab 6: transfer learning."""

from __future__ import annotations

from grader.spec import Case, Exercise, ints, key, randn, rng

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


def _grads(r, tree, n=3):
    import numpy as np
    return [{k: {kk: randn(r, *np.shape(vv)) for kk, vv in v.items()} for k, v in tree.items()}
            for _ in range(n)]


def _exercises() -> list[Exercise]:
    r = rng(6)
    t3 = {"stem": {"w": randn(r, 3, 3)}, "block1": {"w": randn(r, 3, 3), "b": randn(r, 3)},
          "head": {"kernel": randn(r, 3, 2), "bias": randn(r, 2)}}
    mlp = mlp_tree(r)
    return [
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
