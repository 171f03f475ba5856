"""Specs of lab 2: convolution arithmetic."""

from __future__ import annotations

from grader.spec import Case, Exercise, f32, randn, rng

M = "convolution"
NO_CONV = ["conv_general_dilated", "conv"]
FIVE = [[3, 0, 6, 7, 5], [7, 3, 5, 0, 8], [2, 9, 4, 1, 9], [7, 1, 6, 7, 6], [4, 8, 4, 6, 4]]
VERTICAL = [[1, 0, -1], [1, 0, -1], [1, 0, -1]]
SIZE_HINT = "output size (W - K + 2P) // S + 1 per axis"
SCRATCH_HINT = ("write the sum yourself: for every kernel offset (u, v), add the input shifted by "
                "(u, v) times the kernel's weight there — a few slices and products, no lax.conv")


def _output_size_cases() -> tuple[Case, ...]:
    cases = [
        Case("W=5 K=3 (the 5x5 example)", (5, 3), hint="(W - K + 2P) / S + 1: do not forget + 1"),
        Case("W=28 K=4 S=2 P=1", (28, 4, 2, 1), hint="P counts on both sides: + 2P"),
        Case("AlexNet W=227 K=11 S=4", (227, 11, 4, 0)),
        Case("W=32 K=5 P=2 ('same')", (32, 5, 1, 2), hint="P counts on both sides: + 2P"),
        Case("per axis (28, 32), K=3, P=1", ((28, 32), 3, 1, 1)),
        Case("not an integer: W=6 K=3 S=2 raises ValueError", (6, 3, 2, 0),
             hint="raise ValueError when (W - K + 2P) is not divisible by S"),
        Case("kernel larger than input raises ValueError", (2, 5, 1, 0),
             hint="raise ValueError when the kernel does not fit the padded input"),
    ]
    r = rng(21)
    for i in range(6):
        s, k, p, out = (int(r.integers(1, 4)), int(r.integers(1, 8)), int(r.integers(0, 3)),
                        int(r.integers(1, 20)))
        w = (out - 1) * s + k - 2 * p
        if w < 1:
            w, p = (out - 1) * s + k, 0
        cases.append(Case(f"random #{i} W={w} K={k} S={s} P={p}", (w, k, s, p),
                          hint="(W - K + 2P) // S + 1, an int", hint_on=("value", "type")))
    return tuple(cases)


def _conv2d_cases() -> tuple[Case, ...]:
    r = rng(22)
    cases = []
    combos = [(5, 5, 1, 3, 3, 2, 1, 0), (7, 9, 3, 3, 3, 4, 2, 0), (8, 8, 2, 5, 5, 3, 1, 2),
              (6, 7, 3, 2, 3, 2, 2, 1), (9, 9, 1, 3, 3, 1, 3, 1), (4, 4, 2, 1, 1, 5, 1, 0)]
    for i, (h, w, c, kh, kw, o, s, p) in enumerate(combos):
        hint, hint_on = (f"{SIZE_HINT}; zero padding on every side; then sum over kernel "
                         f"offsets and input channels"), ("shape", "value")
        if (h - kh + 2 * p) % s or (w - kw + 2 * p) % s:  # the layer rounds down here
            hint = (f"S does not divide H - KH + 2P here: the {SIZE_HINT} rounds down "
                    f"(conv_output_size raises in this case: do not call it)")
            hint_on = ("shape", "value", "error:ValueError")
        cases.append(Case(f"random #{i} x ({h}, {w}, {c}) kernel {kh}x{kw}x{o} stride {s} pad {p}",
                          (randn(r, h, w, c), randn(r, kh, kw, c, o), randn(r, o)),
                          {"stride": s, "padding": p}, hint=hint, hint_on=hint_on))
    cases += [
        Case("padding='same', stride 1", (randn(r, 6, 6, 2), randn(r, 3, 3, 2, 3), randn(r, 3)),
             {"padding": "same"}, hint="'same' keeps H x W at stride 1 (see padding_amounts)",
             hint_on=("shape", "value")),
        Case("padding='same', stride 2, even size", (randn(r, 8, 8, 1), randn(r, 3, 3, 1, 2),
                                                      randn(r, 2)), {"stride": 2, "padding": "same"},
             hint="'same' at stride 2: ceil(W / S) outputs, the extra pad goes after",
             hint_on=("shape", "value")),
        Case("padding='valid'", (randn(r, 6, 5, 2), randn(r, 3, 3, 2, 2), randn(r, 2)),
             {"padding": "valid"}),
        Case("under jax.jit", (randn(r, 7, 9, 3), randn(r, 3, 3, 3, 4), randn(r, 4)),
             {"stride": 2, "padding": 0}, mode="jit",
             hint="stride and padding are Python ints: sizes must not depend on array values"),
        Case("under jax.vmap over a batch", (randn(r, 2, 5, 5, 1), randn(r, 3, 3, 1, 2),
                                             randn(r, 2)), {"stride": 1, "padding": 1},
             mode="vmap", options={"in_axes": [0, None, None]}),
        Case("gradient w.r.t. the kernel", (randn(r, 5, 5, 2), randn(r, 3, 3, 2, 2), randn(r, 2)),
             {"stride": 1, "padding": 1}, mode="grad", options={"argnums": [1]}),
        Case("from scratch (no lax.conv)", (randn(r, 5, 5, 2), randn(r, 3, 3, 2, 2), randn(r, 2)),
             {"stride": 1, "padding": 0}, mode="jaxpr", check="no_primitives",
             options={"forbidden": NO_CONV}, hint=SCRATCH_HINT),
    ]
    return tuple(cases)


def _exercises() -> list[Exercise]:
    r = rng(2)
    img = randn(r, 8, 8)
    return [
        Exercise(M, "conv_output_size", 1.0, _output_size_cases(),
                 hint="(W - K + 2P) // S + 1, after checking divisibility; ValueError otherwise"),
        Exercise(M, "padding_amounts", 1.0, (
            Case("W=5 K=3 same", (5, 3, 1, "same")),
            Case("W=5 K=4 same (odd total)", (5, 4, 1, "same"),
                 hint="the smaller half goes before: (total // 2, total - total // 2)"),
            Case("W=28 K=3 S=2 same", (28, 3, 2, "same"),
                 hint="out = ceil(W / S); total = max((out - 1) S + K - W, 0)"),
            Case("W=7 K=2 S=3 same", (7, 2, 3, "same")),
            Case("W=10 K=5 S=1 same", (10, 5, 1, "same")),
            Case("valid", (28, 3, 2, "valid")),
            Case("unknown mode raises ValueError", (5, 3, 1, "full"),
                 hint="raise ValueError for modes other than 'same' and 'valid'"),
        ), hint="'same': out = ceil(W/S), total = max((out-1) S + K - W, 0), before = total // 2"),
        Exercise(M, "zero_pad", 1.0, (
            Case("P=1 on a 2x2x1 image", (f32([[[1.0], [2.0]], [[3.0], [4.0]]]), 1),
                 hint="P rows on top *and* bottom, P columns left *and* right",
                 hint_on=("shape", "value")),
            Case("P=2 on (3, 4, 3)", (randn(r, 3, 4, 3), 2),
                 hint="P rows on top *and* bottom, P columns left *and* right",
                 hint_on=("shape", "value")),
            Case("((1, 2), (0, 3)) on (2, 3, 2)", (randn(r, 2, 3, 2), ((1, 2), (0, 3)))),
            Case("P=0", (randn(r, 3, 3, 1), 0)),
            Case("under jax.jit", (randn(r, 4, 4, 2), 1), mode="jit"),
        ), hint="pad rows and columns, never the channels"),
        Exercise(M, "conv2d_single", 2.0, (
            Case("the lecture's 5x5 vertical-edge example", (f32(FIVE), f32(VERTICAL)),
                 hint="expected [[-3, 4, -7], [1, 5, -8], [-1, 4, -5]]: a 3x3 output, "
                      "no kernel flip", hint_on=("shape", "value")),
            Case("random (6, 7) * (3, 3)", (randn(r, 6, 7), randn(r, 3, 3)), hint=SIZE_HINT,
                 hint_on=("shape",)),
            Case("random (5, 5) * (2, 4)", (randn(r, 5, 5), randn(r, 2, 4)), hint=SIZE_HINT,
                 hint_on=("shape",)),
            Case("random (4, 4) * (4, 4) gives 1x1", (randn(r, 4, 4), randn(r, 4, 4))),
            Case("1x1 kernel scales the image", (randn(r, 3, 5), f32([[2.0]]))),
            Case("under jax.jit", (randn(r, 6, 7), randn(r, 3, 3)), mode="jit"),
            Case("under jax.vmap", (randn(r, 3, 6, 6), randn(r, 3, 3)), mode="vmap",
                 options={"in_axes": [0, None]}),
            Case("gradient w.r.t. the kernel", (randn(r, 6, 6), randn(r, 3, 3)), mode="grad",
                 options={"argnums": [1]}),
            Case("from scratch (no lax.conv)", (randn(r, 6, 6), randn(r, 3, 3)), mode="jaxpr",
                 check="no_primitives", options={"forbidden": NO_CONV}, hint=SCRATCH_HINT),
        ), hint="out[i, j] = sum_{u,v} image[i+u, j+v] kernel[u, v]; H - KH + 1 rows"),
        Exercise(M, "conv2d", 3.0, _conv2d_cases(),
                 hint="pad, then out += xp[u::S, v::S] @ w[u, v] over kernel offsets, + b"),
        Exercise(M, "classic_kernel", 1.0, tuple(
            Case(name, (name,), hint="see the table in the docstring")
            for name in ["vertical_edge", "horizontal_edge", "vertical_line", "horizontal_line",
                         "edge", "sharpen", "box_blur", "gaussian_blur"])
            + (Case("unknown name raises ValueError", ("emboss",)),),
            hint="copy the table of the docstring; float32 (3, 3)"),
        Exercise(M, "filter_image", 1.0, (
            Case("sharpen an 8x8 image", (img, f32([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])),
                 hint="'same' output: pad KH // 2 zeros on each side", hint_on=("shape", "value")),
            Case("gaussian blur 7x5",
                 (randn(r, 7, 5), f32([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)),
            Case("edge kernel on a constant image", (f32([[2.0] * 6] * 6),
                                                     f32([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])),
                 hint="0 inside, non-zero only at the zero-padded border"),
            Case("5x5 kernel", (randn(r, 9, 9), randn(r, 5, 5))),
            Case("under jax.jit", (img, f32(VERTICAL)), mode="jit"),
        ), hint="zero-pad by K // 2, then cross-correlate: the output is H x W"),
        Exercise(M, "dense_param_count", 1.0, (
            Case("64x64x3 -> 128 (≈ 1.5 M)", ((64, 64, 3), 128),
                 hint="weights prod(shape) * units plus one bias per unit"),
            Case("784 -> 16", ((784,), 16)),
            Case("28x28x1 -> 10", ((28, 28, 1), 10)),
        ), hint="prod(input_shape) * units + units"),
        Exercise(M, "conv_param_count", 1.0, (
            Case("3x3, 3 -> 128", (3, 3, 128),
                 hint="K*K*C_in*filters + filters: each filter sees all C_in input channels, "
                      "plus one bias"),
            Case("5x5, 1 -> 6 (LeNet)", (5, 1, 6)),
            Case("(1, 7), 64 -> 32", ((1, 7), 64, 32), hint="kernel_size may be (KH, KW)",
                 hint_on=("value", "error")),
            Case("3x3, 16 -> 32", (3, 16, 32), hint="each filter sees all C_in input channels"),
        ), hint="KH * KW * C_in * filters + filters"),
    ]


EXERCISES = _exercises()
