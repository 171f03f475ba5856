"""Specs of lab 4: training."""

from __future__ import annotations

import numpy as np

from grader.spec import Case, Exercise, f32, ints, key, randn, rng

M = "training"
FAST = {"jit_static": True}   # only Python ints in: compile the whole function once


def _tree(r, scale=1.0):
    return {"dense": {"kernel": randn(r, 3, 2, scale=scale), "bias": randn(r, 2, scale=scale)},
            "out": {"kernel": randn(r, 2, 4, scale=scale)}}


def _adam_state(r, count):
    return {"count": np.asarray(count, np.int32), "mu": _tree(r, 0.1),
            "nu": {k: {kk: np.abs(vv) for kk, vv in v.items()} for k, v in _tree(r, 0.1).items()}}


def _exercises() -> list[Exercise]:
    r = rng(4)
    zeros = {k: {kk: np.zeros_like(vv) for kk, vv in v.items()} for k, v in _tree(r).items()}
    return [
        Exercise(M, "minibatch_indices", 1.0, (
            Case("10 examples, batch 4, epoch 0", (10, 4), {"seed": 0, "epoch": 0}, options=FAST,
                 hint="drop the remainder: 10 // 4 = 2 batches", hint_on=("shape",)),
            Case("10 examples, batch 4, epoch 1", (10, 4), {"seed": 0, "epoch": 1}, options=FAST,
                 hint="every epoch has its own order: fold the epoch into the key"),
            Case("100 examples, batch 32, seed 3, epoch 2", (100, 32), {"seed": 3, "epoch": 2},
                 options=FAST),
            Case("7 examples, batch 7", (7, 7), {"seed": 1, "epoch": 0}, options=FAST),
            Case("batch 1", (5, 1), {"seed": 2, "epoch": 4}, options=FAST),
        ), hint="the exact permutation of the docstring, cut into N // batch_size full batches"),
        Exercise(M, "train_test_split", 1.0, (
            Case("100 examples, 25 % test", (100, 0.25), {"seed": 0}, options=FAST,
                 hint="the *first* ceil(f N) indices of the permutation are the test set",
                 hint_on=("shape", "value")),
            Case("10 examples, 20 % test", (10, 0.2), {"seed": 1}, options=FAST),
            Case("7 examples, 50 % test rounds up", (7, 0.5), {"seed": 2}, options=FAST,
                 hint="n_test = ceil(test_fraction * N)", hint_on=("shape", "value")),
        ), hint="one permutation; its first ceil(test_fraction * N) indices are the test set"),
        Exercise(M, "kfold_indices", 1.0, (
            Case("N=10, k=3", (10, 3), options=FAST,
                 hint="the first N % k folds get one extra index, so every index is validated once",
                 hint_on=("shape", "value")),
            Case("N=9, k=3", (9, 3), options=FAST),
            Case("N=5, k=5 (leave one out)", (5, 5), options=FAST),
            Case("N=7, k=2", (7, 2), options=FAST,
                 hint="the first N % k folds get one extra index", hint_on=("shape", "value")),
        ), hint="consecutive folds of size N // k (+1 for the first N % k); train = the rest"),
        Exercise(M, "sgd_step", 1.0, (
            Case("a 2-layer tree, lr 0.1", (_tree(r), _tree(r), 0.1),
                 hint="move *against* the gradient: p - lr * g"),
            Case("lr 0.5", (_tree(r), _tree(r), 0.5)),
            Case("under jax.jit", (_tree(r), _tree(r), 0.01), mode="jit"),
            Case("the input trees are not modified", (_tree(r), _tree(r), 0.1),
                 options={"eager": True}),
        ), hint="p - lr * g for every leaf of the tree"),
        Exercise(M, "adam_init", 1.0, (
            Case("a 2-layer tree", (_tree(r),),
                 hint='{"count": int32 0, "mu": zeros like params, "nu": zeros like params}',
                 hint_on=("type", "shape", "value")),
            Case("a single array", (randn(r, 5),)),
        ), hint="zeros shaped like every leaf, and an int32 step counter"),
        Exercise(M, "adam_step", 2.0, (
            Case("first step from zeros", (_tree(r), _tree(r),
                                           {"count": np.asarray(0, np.int32), "mu": zeros,
                                            "nu": zeros}, 0.01),
                 hint="bias-correct with t = count + 1: mu / (1 - b1**t), nu / (1 - b2**t)"),
            Case("step 6 from a random state", (_tree(r), _tree(r), _adam_state(r, 5), 0.001),
                 hint="nu is the average of *squared* gradients; sqrt(nu_hat) + eps"),
            Case("b1=0.5, b2=0.9", (_tree(r), _tree(r), _adam_state(r, 2), 0.1),
                 {"b1": 0.5, "b2": 0.9}, hint="use the b1 and b2 arguments"),
            Case("under jax.jit", (_tree(r), _tree(r), _adam_state(r, 1), 0.01), mode="jit"),
        ), hint="t = count + 1; mu, nu moving averages; p - lr * mu_hat / (sqrt(nu_hat) + eps)"),
        Exercise(M, "l2_penalty", 1.0, (
            Case("docstring example", ({"w": f32([[1, 2]]), "b": f32([2])}, 0.1),
                 hint="weight_decay / 2 * sum of squares: 0.05 * 9 = 0.45"),
            Case("a 2-layer tree", (_tree(r), 1e-3), hint="sum over *every* leaf of the tree"),
            Case("under jax.jit", (_tree(r), 0.5), mode="jit"),
        ), hint="weight_decay / 2 times the sum of squares of every leaf"),
        Exercise(M, "accuracy", 1.0, (
            Case("random (20, 5)", (randn(r, 20, 5), ints(r, 5, 20)),
                 hint="argmax over the *class* axis (-1)", hint_on=("value", "shape", "error")),
            Case("all correct", (np.eye(4, dtype=np.float32), np.arange(4, dtype=np.int32))),
            Case("random (7, 3)", (randn(r, 7, 3), ints(r, 3, 7))),
            Case("under jax.jit", (randn(r, 8, 4), ints(r, 4, 8)), mode="jit"),
        ), hint="the fraction of rows whose largest logit is at the label"),
        Exercise(M, "confusion_matrix", 1.0, (
            Case("random, 4 classes", (ints(r, 4, 30), ints(r, 4, 30), 4),
                 hint="rows are the *true* classes, columns the predictions"),
            Case("perfect predictions", (np.arange(3, dtype=np.int32),
                                         np.arange(3, dtype=np.int32), 3)),
            Case("a class never seen", (np.array([0, 0, 1], np.int32), np.array([1, 0, 1],
                                                                                np.int32), 3),
                 hint="rows are the *true* classes, columns the predictions"),
            Case("under jax.jit", (ints(r, 5, 20), ints(r, 5, 20), 5), mode="jit"),
        ), hint="count pairs (true, predicted) into a C x C int32 matrix"),
        Exercise(M, "train_step", 2.0, (
            Case("3 steps, batch 8, compiled once", (key(0), randn(r, 3, 8, 6),
                                                     ints(r, 3, 3 * 8).reshape(3, 8)),
                 mode="driver:train_step", check="traced_once",
                 hint="loss = mean of optax.softmax_cross_entropy_with_integer_labels; "
                      "state.apply_gradients(grads=grads)"),
            Case("2 steps, batch 4", (key(1), randn(r, 2, 4, 6), ints(r, 3, 8).reshape(2, 4)),
                 mode="driver:train_step", check="traced_once"),
        ), hint="compiled once; the mean cross-entropy's value and gradient; the optimizer step"),
    ]


EXERCISES = _exercises()
