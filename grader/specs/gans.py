"""Specs of lab 9: generative adversarial networks."""

from __future__ import annotations

import numpy as np

from grader.spec import NO_CONV, Case, Exercise, f32, key, randn, rng

M = "gans"
SIZE_HINT = "output size (W - 1) S - 2P + K per axis"
TREE_HINT = ("compare your parameter tree with the docstring: layer order, kernel sizes, strides, "
             "padding and the attributes (self.features, self.base, ...) decide every shape")


def _size_cases() -> tuple[Case, ...]:
    cases = [
        Case("the DCGAN step: W=7 K=4 S=2 P=1 -> 14", (7, 4, 2, 1),
             hint="(W - 1) S - 2P + K: stride multiplies (W - 1), not W"),
        Case("W=3 K=3 S=1 -> 5", (3, 3), hint="(W - 1) S - 2P + K: the kernel adds K - 1 pixels"),
        Case("W=14 K=4 S=2 P=1 -> 28", (14, 4, 2, 1), hint="P is cropped from *both* sides: - 2P"),
        Case("output_padding 1: W=5 K=3 S=2 -> 12", (5, 3, 2, 0, 1),
             hint="output_padding is added at the end"),
        Case("output_padding >= stride raises ValueError", (5, 3, 2, 0, 2),
             hint="raise ValueError when output_padding >= stride"),
        Case("nothing left raises ValueError", (1, 1, 1, 1),
             hint="raise ValueError when the size would be < 1"),
    ]
    r = rng(91)
    for i in range(4):
        w, k, s, p = (int(r.integers(1, 12)), int(r.integers(1, 6)), int(r.integers(1, 4)),
                      int(r.integers(0, 2)))
        cases.append(Case(f"random #{i} W={w} K={k} S={s} P={p}", (w, k, s, p),
                          hint=f"{SIZE_HINT}, an int"))
    return tuple(cases)


def _conv_transpose_cases(r) -> tuple[Case, ...]:
    combos = [(3, 3, 1, 3, 3, 2, 1, 0), (3, 4, 2, 4, 4, 3, 2, 1), (4, 4, 3, 3, 3, 2, 2, 0),
              (2, 3, 2, 2, 3, 1, 3, 0), (5, 5, 1, 4, 4, 2, 2, 1)]
    cases = [Case(f"random #{i} x ({h}, {w}, {c}) kernel {kh}x{kw}x{o} stride {s} pad {p}",
                  (randn(r, h, w, c), randn(r, kh, kw, c, o), randn(r, o)),
                  {"stride": s, "padding": p},
                  hint=f"{SIZE_HINT}; pixel (i, j) paints x[i, j] @ w[u, v] at (S i + u, "
                       f"S j + v); crop P from each side, then add b")
             for i, (h, w, c, kh, kw, o, s, p) in enumerate(combos)]
    cases += [
        Case("a single pixel paints the kernel", (f32([[[2.0]]]), randn(r, 3, 3, 1, 1),
                                                  f32([0.0])), {"stride": 2},
             hint="one input pixel: the output is x * w, not flipped"),
        Case("under jax.jit", (randn(r, 3, 3, 2), randn(r, 4, 4, 2, 3), randn(r, 3)),
             {"stride": 2, "padding": 1}, mode="jit",
             hint="stride and padding are Python ints: sizes must not depend on values"),
        Case("under jax.vmap over a batch", (randn(r, 2, 3, 3, 1), randn(r, 3, 3, 1, 2),
                                             randn(r, 2)), {"stride": 2, "padding": 0},
             mode="vmap", options={"in_axes": [0, None, None]}),
        Case("gradient w.r.t. the kernel", (randn(r, 3, 3, 2), randn(r, 3, 3, 2, 2),
                                            randn(r, 2)), {"stride": 2, "padding": 1},
             mode="grad", options={"argnums": [1]}),
        Case("from scratch (no lax.conv_transpose)", (randn(r, 3, 3, 2), randn(r, 4, 4, 2, 2),
                                                      randn(r, 2)), {"stride": 2, "padding": 1},
             mode="jaxpr", check="no_primitives", options={"forbidden": NO_CONV},
             hint="write it yourself: zeros of size (W - 1) S + K per axis, then for every kernel "
                  "offset (u, v) add x @ w[u, v] on the grid of stride S; crop P; no "
                  "lax.conv_transpose"),
    ]
    return tuple(cases)


def _loss_exercises(r) -> list[Exercise]:
    real, fake = randn(r, 8, scale=2.0), randn(r, 8, scale=2.0)
    extreme = f32([100.0, -100.0, 30.0, -30.0])
    return [
        Exercise(M, "discriminator_loss", 1.0, (
            Case("random logits", (real, fake),
                 hint="real images are labelled 1: softplus(-real); fakes 0: softplus(fake)"),
            Case("an undecided discriminator: 2 log 2", (np.zeros(5, np.float32),
                                                         np.zeros(5, np.float32))),
            Case("very confident logits stay finite", (extreme, -extreme),
                 hint="log(sigmoid(l)) gives -inf for l << 0: use jax.nn.softplus",
                 hint_on=("nonfinite", "value")),
            Case("(N, 1) logits", (randn(r, 6, 1), randn(r, 6, 1)),
                 hint="the *mean* over each batch"),
            Case("under jax.jit", (real, fake), mode="jit"),
            Case("gradient w.r.t. both", (real, fake), mode="grad",
                 options={"argnums": [0, 1]}),
        ), hint="mean(softplus(-real_logits)) + mean(softplus(fake_logits))"),
        Exercise(M, "generator_loss", 1.0, (
            Case("non-saturating, random logits", (fake,),
                 hint="non-saturating: mean(-log D(G(z))) = mean(softplus(-fake_logits))"),
            Case("saturating (minimax), random logits", (fake,), {"non_saturating": False},
                 hint="saturating: mean(log(1 - D(G(z)))) = -mean(softplus(fake_logits))"),
            Case("confidently rejected fakes stay finite", (-extreme,),
                 hint="use jax.nn.softplus, never log(sigmoid(.))", hint_on=("nonfinite", "value")),
            Case("gradient of the saturating loss", (randn(r, 6, scale=3.0),),
                 {"non_saturating": False}, mode="grad", options={"argnums": [0]}),
            Case("under jax.jit", (fake,), mode="jit"),
        ), hint="non-saturating mean(softplus(-l)); saturating -mean(softplus(l))"),
    ]


def _model_exercises(r) -> list[Exercise]:
    return [
        Exercise(M, "Generator", 2.0, (
            Case("latent 10 -> 28x28x1, 8 features", (randn(r, 2, 10), key(0)),
                 {"features": 8}, mode="driver:flax_model", hint=TREE_HINT, hint_on=("shape",)),
            Case("base 2 -> 8x8x3, 4 features", (randn(r, 3, 6), key(1)),
                 {"features": 4, "base": 2, "channels": 3}, mode="driver:flax_model",
                 hint="reshape to (N, self.base, self.base, self.features); the last conv has "
                      "self.channels filters"),
        ), hint="Dense, leaky relu, reshape, 2 x (ConvTranspose 4x4/2 SAME + leaky relu), Conv "
                "7x7 SAME, sigmoid"),
        Exercise(M, "Discriminator", 2.0, (
            Case("28x28x1, 8 features", (randn(r, 2, 28, 28, 1), key(0)), {"features": 8},
                 mode="driver:flax_model", hint_on=("shape",),
                 hint="self.features filters in both convs; one logit per image: Dense(1), then "
                      "drop the last axis: (N,)"),
            Case("8x8x3, 4 features", (randn(r, 3, 8, 8, 3), key(1)), {"features": 4},
                 mode="driver:flax_model",
                 hint="one logit per image: Dense(1), then drop the last axis: (N,)"),
        ), hint="2 x (Conv 3x3/2 SAME + leaky relu 0.2 + dropout), flatten, Dense(1), (N,)"),
    ]


def _one_d_exercises(r) -> list[Exercise]:
    return [
        Exercise(M, "quadratic_samples", 1.0, (
            Case("5 points, key 0", (key(0), 5),
                 hint="x = jax.random.uniform(key, (n,), minval=-0.5, maxval=0.5): exactly that "
                      "call, so that the same key gives the same x"),
            Case("one point, key 7", (key(7), 1), hint="rows [x, x ** 2]: shape (n, 2)"),
            Case("64 points, key 3", (key(3), 64)),
        ), hint="jax.random.uniform(key, (n,), minval=-0.5, maxval=0.5); rows [x, x ** 2]"),
        Exercise(M, "Generator1D", 1.0, (
            Case("latent 5 -> points, 15 hidden", (randn(r, 4, 5), key(0)), {},
                 mode="driver:flax_model", hint="the output layer is linear: nn.Dense(2) with no "
                 "activation after it (points can be negative)"),
            Case("latent 3, 7 hidden", (randn(r, 6, 3), key(1)), {"hidden": 7},
                 mode="driver:flax_model", hint="nn.Dense(self.hidden): the attribute, not 15",
                 hint_on=("shape",)),
        ), hint="nn.Dense(hidden), relu, nn.Dense(2)"),
        Exercise(M, "Discriminator1D", 1.0, (
            Case("points -> logits, 25 hidden", (randn(r, 6, 2), key(0)), {},
                 mode="driver:flax_model", hint_on=("shape",),
                 hint="one logit per point: nn.Dense(1), then drop the last axis: (N,)"),
            Case("3 hidden", (randn(r, 5, 2), key(1)), {"hidden": 3}, mode="driver:flax_model",
                 hint="nn.Dense(self.hidden): the attribute, not 25", hint_on=("shape",)),
        ), hint="nn.Dense(hidden), relu, nn.Dense(1), (N,)"),
    ]


def _step_exercise(r) -> Exercise:
    def inputs(seed, steps=2, n=4, latent=3):
        real = np.abs(randn(r, steps, n, 4, 4, 1)).clip(0, 1)
        return key(seed), real, randn(r, steps, n, latent)

    return Exercise(M, "gan_train_step", 3.0, (
        Case("generator frozen: the discriminator learns by its own loss only", inputs(1),
             mode="driver:gan_step", options={"frozen": "generator"}, atol=1e-4, rtol=1e-3,
             hint="the generator's update must not move the discriminator (differentiate the "
                  "generator's loss w.r.t. the generator's parameters only; apply d_state's "
                  "optimizer once, to d_loss's gradient), and g_loss is computed against the "
                  "*updated* discriminator"),
        Case("discriminator frozen: the generator learns by its own loss only", inputs(2),
             mode="driver:gan_step", options={"frozen": "discriminator"}, atol=1e-4, rtol=1e-3,
             hint="the discriminator's update must not move the generator: differentiate "
                  "d_loss w.r.t. d_params only and leave g_state to the generator's own step"),
        # last: the one-network cases above catch a network moved by its opponent's loss (and a
        # g_loss against the old discriminator); this one whatever is left
        Case("2 steps, both networks learning", inputs(0), mode="driver:gan_step",
             atol=1e-4, rtol=1e-3,
             hint="update the discriminator first; the generator's loss uses the *updated* "
                  "discriminator and the non-saturating generator_loss"),
    ), hint="D step: d_loss of d_params, apply_gradients; then G step against the new D")


def _exercises() -> list[Exercise]:
    r = rng(9)
    return (_loss_exercises(r) + _one_d_exercises(r)
            + [Exercise(M, "conv_transpose_output_size", 1.0, _size_cases(),
                        hint="(W - 1) S - 2P + K + output_padding; ValueError when "
                             "output_padding >= S or the size < 1"),
               Exercise(M, "conv_transpose2d", 3.0, _conv_transpose_cases(r),
                        hint="zeros of the full size; per kernel offset (u, v) add x @ w[u, v] "
                             "on the strided grid; crop P; + b")]
            + _model_exercises(r) + [_step_exercise(r)])


EXERCISES = _exercises()
