"""Hidden cases of lab 1."""

from grader.spec import Case, f32, ints, randn, rng

_r = rng(1001)

HIDDEN = {
    "softmax": [
        Case("hidden: axis=-2 of (3, 4, 2)", (randn(_r, 3, 4, 2, scale=5.0),), {"axis": -2}),
        Case("hidden: mixed huge logits", (f32([[3000.0, -3000.0, 0.0]]),)),
    ],
    "cross_entropy": [
        Case("hidden: 32 x 100", (randn(_r, 32, 100, scale=4.0), ints(_r, 100, 32))),
    ],
    "tanh": [Case("hidden: tiny values", (f32([1e-8, -1e-8, 1e-4]),))],
}
