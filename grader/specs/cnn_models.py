"""Specs of lab 5: CNN models."""

from __future__ import annotations

import numpy as np

from grader.spec import Case, Exercise, key, randn, rng

M = "cnn_models"
TREE_HINT = ("compare your parameter tree with the docstring: layer order, filters, kernel size, "
             "strides and padding decide every shape")


# Parameter shapes of the lectures' networks (as Flax names them).
WORKSHOP_SHAPES = {"Conv_0": {"kernel": (3, 3, 1, 16), "bias": (16,)},
                   "Conv_1": {"kernel": (3, 3, 16, 32), "bias": (32,)},
                   "Conv_2": {"kernel": (3, 3, 32, 64), "bias": (64,)},
                   "Dense_0": {"kernel": (1024, 10), "bias": (10,)}}
SEMINAR_SHAPES = {"Conv_0": {"kernel": (5, 5, 1, 4), "bias": (4,)},
                  "Conv_1": {"kernel": (5, 5, 4, 12), "bias": (12,)},
                  "Dense_0": {"kernel": (300, 512), "bias": (512,)},
                  "Dense_1": {"kernel": (512, 100), "bias": (100,)}}
MLP_SHAPES = {"Dense_0": {"kernel": (784, 16), "bias": (16,)},
              "Dense_1": {"kernel": (16, 10), "bias": (10,)}}


def _zeros(shapes: dict) -> dict:
    return {k: {kk: np.zeros(v, np.float32) for kk, v in d.items()} for k, d in shapes.items()}


def _exercises() -> list[Exercise]:
    r = rng(5)
    return [
        Exercise(M, "WorkshopCNN", 2.0, (
            Case("28x28x1, 10 classes", (randn(r, 2, 28, 28, 1), key(0)), {"num_classes": 10},
                 mode="driver:flax_model", hint=TREE_HINT, hint_on=("shape",)),
            Case("16x16x3, 4 classes", (randn(r, 1, 16, 16, 3), key(1)), {"num_classes": 4},
                 mode="driver:flax_model", hint="use self.num_classes for the last layer",
                 hint_on=("shape",)),
        ), hint="3 x (nn.Conv(f, (3, 3), strides=2, padding='SAME') + relu), flatten, nn.Dense"),
        Exercise(M, "SeminarCNN", 2.0, (
            Case("the lecture's input 32x32x1, 100 classes (the defaults)",
                 (randn(r, 2, 32, 32, 1), key(3)), mode="driver:flax_model",
                 hint=TREE_HINT + "; the defaults are the lecture's num_classes=100, hidden=512",
                 hint_on=("shape",)),
            Case("Fashion-MNIST 28x28x1, 10 classes", (randn(r, 2, 28, 28, 1), key(0)),
                 {"num_classes": 10}, mode="driver:flax_model", hint=TREE_HINT,
                 hint_on=("shape",)),
            Case("32x32x3, 3 classes, hidden 64", (randn(r, 1, 32, 32, 3), key(2)),
                 {"num_classes": 3, "hidden": 64}, mode="driver:flax_model",
                 hint="use self.hidden and self.num_classes", hint_on=("shape",)),
        ), hint="conv 4@5x5 valid, pool, conv 12@5x5 valid, pool, flatten, dense, dense"),
        Exercise(M, "receptive_field", 1.0, (
            Case("no layers", ([],)),
            Case("two 3x3 stride 1", ([(3, 1), (3, 1)],),
                 hint="r += (k - 1) * j with j the jump *before* this layer"),
            Case("three 3x3 stride 1 (VGG: as one 7x7)", ([(3, 1), (3, 1), (3, 1)],)),
            Case("the workshop CNN: three 3x3 stride 2", ([(3, 2), (3, 2), (3, 2)],),
                 hint="multiply the jump by the stride *after* adding (k - 1) * j"),
            Case("AlexNet start: 11/4, pool 3/2, 5/1", ([(11, 4), (3, 2), (5, 1)],)),
            Case("pool 2/2 then 3/1", ([(2, 2), (3, 1)],)),
        ), hint="r, j = 1, 1; for k, s: r += (k - 1) * j; j *= s"),
        Exercise(M, "count_params", 1.0, (
            Case("the workshop CNN (33,546)", (_zeros(WORKSHOP_SHAPES),),
                 hint="add up the sizes of *every* leaf, kernels and biases"),
            Case("the seminar CNN at 32x32x1, 100 classes (206,728)", (_zeros(SEMINAR_SHAPES),)),
            Case("the 784-16-10 MNIST network (12,730)", (_zeros(MLP_SHAPES),)),
            Case("a single array", (randn(r, 3, 4),)),
        ), hint="sum of leaf.size over jax.tree_util.tree_leaves(params)"),
    ]


EXERCISES = _exercises()
