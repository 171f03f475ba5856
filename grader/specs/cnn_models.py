"""Specs of lab 5: CNN models."""

from __future__ import annotations

from grader.spec import Case, Exercise, key, randn, rng

M = "cnn_models"
TREE_HINT = ("compare your parameter tree with the docstring: layer order, filters, kernel size, "
             "strides and padding decide every shape")


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
            Case("28x28x1, 10 classes", (randn(r, 2, 28, 28, 1), key(0)), {"num_classes": 10},
                 mode="driver:flax_model", hint=TREE_HINT, hint_on=("shape",)),
            Case("32x32x3, 3 classes, hidden 64", (randn(r, 1, 32, 32, 3), key(2)),
                 {"num_classes": 3, "hidden": 64}, mode="driver:flax_model",
                 hint="use self.hidden and self.num_classes", hint_on=("shape",)),
        ), hint="conv 4@5x5 valid, pool, conv 12@5x5 valid, pool, flatten, dense, dense"),
        Exercise(M, "receptive_field", 1.0, (
            Case("no layers", ([],)),
            Case("two 3x3 stride 1", ([(3, 1), (3, 1)],),
                 hint="r += (k - 1) * j with j the jump *before* this layer"),
            Case("the workshop CNN: three 3x3 stride 2", ([(3, 2), (3, 2), (3, 2)],),
                 hint="multiply the jump by the stride *after* adding (k - 1) * j"),
            Case("AlexNet start: 11/4, pool 3/2, 5/1", ([(11, 4), (3, 2), (5, 1)],)),
            Case("pool 2/2 then 3/1", ([(2, 2), (3, 1)],)),
        ), hint="r, j = 1, 1; for k, s: r += (k - 1) * j; j *= s"),
    ]


EXERCISES = _exercises()
