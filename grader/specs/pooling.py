"""Specs of lab 3: pooling, flatten and dropout."""

from __future__ import annotations

import numpy as np

from grader.spec import Case, Exercise, f32, key, randn, rng

M = "pooling"
LECTURE = [[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]
NO_WINDOW = ["reduce_window_max", "reduce_window_sum", "reduce_window", "reduce_window_min"]


def _pool_cases(kind: str) -> tuple[Case, ...]:
    r = rng(31 if kind == "max" else 32)
    lecture = f32(LECTURE)[:, :, None]
    first = ("expected [[6, 8], [3, 4]]" if kind == "max" else "expected [[3.25, 5.25], [2, 2]]")
    cases = [Case("the lecture's 4x4 example, 2x2 stride 2", (lecture,),
                  hint=f"{first}; the stride defaults to the window", hint_on=("shape", "value"))]
    combos = [((6, 6, 2), 2, None, 0), ((7, 5, 3), 3, 2, 0), ((5, 5, 1), 2, 1, 0),
              ((6, 8, 2), (2, 3), (2, 3), 0), ((5, 7, 2), 3, 2, 1), ((4, 4, 1), 2, 2, 1)]
    for i, (shape, w, s, p) in enumerate(combos):
        cases.append(Case(f"random #{i} {shape} window {w} stride {s} pad {p}",
                          (randn(r, *shape),), {"window": w, "stride": s, "padding": p},
                          hint="OH = (H + 2P - WH) // S + 1; windows start every S pixels",
                          hint_on=("shape",)))
    neg_hint = ("pad with -inf so that padding never wins the max" if kind == "max"
                else "pad with zeros and divide by the full window size WH * WW")
    cases += [
        Case("negative values with padding 1", (-np.abs(randn(r, 4, 4, 2)) - 1,),
             {"window": 2, "stride": 2, "padding": 1}, hint=neg_hint),
        Case("under jax.jit", (randn(r, 6, 6, 2),), {"window": 2, "stride": 2, "padding": 0},
             mode="jit"),
        Case("under jax.vmap over a batch", (randn(r, 3, 6, 6, 2),), {"window": 2},
             mode="vmap", options={"in_axes": [0]}),
        Case("gradient", (randn(r, 4, 4, 2),), mode="grad"),
        Case("from scratch (no reduce_window)", (randn(r, 4, 4, 2),), mode="jaxpr",
             check="no_primitives", options={"forbidden": NO_WINDOW},
             hint="combine the strided slices of each window offset with jnp.maximum / +"),
    ]
    return tuple(cases)


def _exercises() -> list[Exercise]:
    r = rng(3)
    x = randn(r, 6, 5)
    ones = np.ones((40, 50), np.float32)
    return [
        Exercise(M, "max_pool", 2.0, _pool_cases("max"),
                 hint="max over strided slices xp[u::S, v::S] for every window offset (u, v)"),
        Exercise(M, "avg_pool", 1.0, _pool_cases("avg"),
                 hint="sum the strided slices of every window offset, divide by WH * WW"),
        Exercise(M, "global_avg_pool", 1.0, (
            Case("batch (2, 7, 7, 5)", (randn(r, 2, 7, 7, 5),)),
            Case("one image (4, 3, 6)", (randn(r, 4, 3, 6),),
                 hint="average over H and W, the axes (-3, -2), whatever comes before",
                 hint_on=("shape", "value")),
            Case("(1, 1, 1, 3)", (randn(r, 1, 1, 1, 3),)),
            Case("under jax.jit", (randn(r, 2, 4, 4, 3),), mode="jit"),
        ), hint="average over the two spatial axes, whatever comes before them"),
        Exercise(M, "flatten", 1.0, (
            Case("(32, 7, 7, 64)", (randn(r, 32, 7, 7, 64),),
                 hint="keep the batch axis: (N, ...) -> (N, -1)", hint_on=("shape",)),
            Case("(2, 3, 4)", (randn(r, 2, 3, 4),), hint="keep the batch axis",
                 hint_on=("shape",)),
            Case("(1, 5)", (randn(r, 1, 5),)),
            Case("under jax.jit", (randn(r, 4, 2, 2, 3),), mode="jit"),
        ), hint="(N, d1, d2, ...) -> (N, d1 * d2 * ...)"),
        Exercise(M, "dropout", 2.0, (
            Case("rate 0.5, train", (key(0), x, 0.5), {"train": True},
                 hint="the mask is exactly jax.random.bernoulli(key, 1 - rate, x.shape), with the "
                      "key given; kept units are scaled by 1 / (1 - rate) so that the expected "
                      "activation stays the same"),
            Case("rate 0.2, train, 3-D", (key(1), randn(r, 3, 4, 5), 0.2), {"train": True},
                 hint="keep = jax.random.bernoulli(key, 1 - rate, x.shape)"),
            Case("train=False returns x unchanged", (key(2), x, 0.5), {"train": False},
                 hint="dropout only acts in training"),
            Case("rate 0 returns x", (key(3), x, 0.0), {"train": True}),
            Case("rate 1 gives zeros", (key(4), x, 1.0), {"train": True},
                 hint="rate 1 drops everything (and must not divide by zero)"),
            Case("the mean is preserved (40x50 ones, rate 0.5)", (key(5), ones, 0.5),
                 {"train": True}, hint="scale the kept units by 1 / (1 - rate)"),
            Case("same key, same mask", (key(6), x, 0.3), {"train": True}, mode="purity",
                 check="pure"),
            Case("under jax.jit", (key(7), x, 0.5), {"train": True}, mode="jit"),
        ), hint="keep with probability 1 - rate, scale the kept units by 1 / (1 - rate)"),
    ]


EXERCISES = _exercises()
