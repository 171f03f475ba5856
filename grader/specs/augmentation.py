"""Specs of lab 7: augmentation and evaluation."""

from __future__ import annotations

import numpy as np

from grader.spec import Case, Exercise, ints, key, randn, rng

M = "augmentation"


def _exercises() -> list[Exercise]:
    r = rng(7)
    imgs = randn(r, 8, 4, 5, 1)
    logits = randn(r, 12, 6)
    labels = ints(r, 6, 12)
    return [
        Exercise(M, "random_flip", 1.0, (
            Case("8 images 4x5x1", (key(0), imgs),
                 hint="one decision per image: bernoulli(key, 0.5, (N,)); mirror the width axis"),
            Case("16 images 3x3x2", (key(1), randn(r, 16, 3, 3, 2)),
                 hint="mirror left-right: images[:, :, ::-1, :]"),
            Case("same key, same flips", (key(2), imgs), mode="purity", check="pure"),
            Case("under jax.jit", (key(3), imgs), mode="jit"),
        ), hint="one bernoulli(key, 0.5, (N,)) decision per image; mirror the width axis"),
        Exercise(M, "random_crop", 1.0, (
            Case("8 images, pad 2", (key(0), imgs), {"pad": 2},
                 hint="pad every side by `pad`; each image gets its own (row, column) offset: "
                      "randint(key, (N, 2), 0, 2 pad + 1)"),
            Case("6 images 5x5x3, pad 1", (key(1), randn(r, 6, 5, 5, 3)), {"pad": 1},
                 hint="each image gets its own (row, column) offset"),
            Case("pad 0 is the identity", (key(2), imgs), {"pad": 0}),
            Case("same key, same crops", (key(3), imgs), {"pad": 2}, mode="purity", check="pure"),
            Case("under jax.jit", (key(4), imgs), {"pad": 1}, mode="jit"),
        ), hint="pad all four sides, one (row, column) offset per image from randint, crop H x W"),
        Exercise(M, "tta_predict", 1.0, (
            Case("a linear model on 6 images 4x5x1", (randn(r, 20, 3), randn(r, 3), randn(r, 6, 4, 5, 1)),
                 mode="driver:tta",
                 hint="average the *probabilities* (softmax of each), over the images and their "
                      "left-right mirrors"),
            Case("2 images 3x3x2, 4 classes", (randn(r, 18, 4), randn(r, 4), randn(r, 2, 3, 3, 2)),
                 mode="driver:tta"),
        ), hint="(softmax(f(x)) + softmax(f(x[:, :, ::-1]))) / 2"),
        Exercise(M, "top_k_accuracy", 1.0, (
            Case("k=1 is the accuracy", (logits, labels, 1),
                 hint="k = 1: the label must be the class of the largest logit, and only that "
                      "one (exactly k classes count)"),
            Case("k=3", (logits, labels, 3), hint="the label is among the k *largest* logits"),
            Case("k=C gives 1", (logits, labels, 6)),
            Case("k=2 on (30, 10)", (randn(r, 30, 10), ints(r, 10, 30), 2),
                 hint="exactly k classes: jax.lax.top_k(logits, k)"),
            Case("under jax.jit", (logits, labels, 2), mode="jit"),
            Case("one example", (np.array([[0.1, 0.5, 0.2]], np.float32),
                                 np.array([2], np.int32), 2)),
        ), hint="is the label among the indices of the k largest logits? averaged over examples"),
    ]


EXERCISES = _exercises()
