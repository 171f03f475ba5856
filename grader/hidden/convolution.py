"""Hidden cases of lab 2, drawn at grading time (see :mod:`grader.hidden`)."""

from grader.spec import NO_CONV, Case, randn


def hidden_cases(r):
    s, k, p, out = (int(r.integers(1, 4)), int(r.integers(1, 7)), int(r.integers(0, 3)),
                    int(r.integers(1, 16)))
    w = max((out - 1) * s + k - 2 * p, k)
    h, wd, c, o = (int(v) for v in r.integers(2, 5, 4))
    kh, kw = int(r.integers(1, 4)), int(r.integers(1, 4))
    drawn = {
        "conv_output_size": [
            Case("hidden: W=224 K=7 S=2 P=3", (224, 7, 2, 3)),
            Case("hidden: random sizes", ((out - 1) * s + k, k, s, 0)),
            Case("hidden: W=10 K=4 S=4 raises", (10, 4, 4, 0))],
        "padding_amounts": [Case("hidden: random same", (w, k, s, "same"))],
        "conv2d_single": [
            Case("hidden: random shapes", (randn(r, kh + h, kw + wd), randn(r, kh, kw))),
            Case("hidden: from scratch", (randn(r, kh + h, kw + wd), randn(r, kh, kw)),
                 mode="jaxpr", check="no_primitives", options={"forbidden": NO_CONV})],
        "conv2d": [
            Case("hidden: random shapes, stride and padding",
                 (randn(r, h + 4, wd + 4, c), randn(r, kh, kw, c, o), randn(r, o)),
                 {"stride": s, "padding": p}),
            Case("hidden: from scratch", (randn(r, h + 3, wd + 3, c), randn(r, kh, kw, c, o),
                                          randn(r, o)), {"stride": s, "padding": p},
                 mode="jaxpr", check="no_primitives", options={"forbidden": NO_CONV})],
        "dense_param_count": [Case("hidden: random", ((h, wd, c), o * 7))],
        "conv_param_count": [Case("hidden: random", ((kh, kw), c * 5, o * 3))],
    }
    return drawn
