"""Hidden cases of lab 2."""

from grader.spec import Case, randn, rng

_r = rng(2001)

HIDDEN = {
    "conv_output_size": [
        Case("hidden: W=224 K=7 S=2 P=3", (224, 7, 2, 3)),
        Case("hidden: per axis with a tuple stride", ((9, 12), (3, 4), (2, 4), 0)),
        Case("hidden: W=10 K=4 S=4 raises", (10, 4, 4, 0)),
    ],
    "conv2d": [
        Case("hidden: (12, 10, 4) * 5x3x4x6 stride 3 pad 2",
             (randn(_r, 12, 10, 4), randn(_r, 5, 3, 4, 6), randn(_r, 6)),
             {"stride": 3, "padding": 2}),
    ],
}
