"""Hidden cases of lab 9, drawn at grading time (see :mod:`grader.hidden`)."""

from grader.spec import NO_CONV, Case, randn


def hidden_cases(r):
    w, k, s, p = (int(r.integers(1, 10)), int(r.integers(1, 6)), int(r.integers(1, 4)),
                  int(r.integers(0, 2)))
    h, wd, c, o = (int(v) for v in r.integers(1, 4, 4))
    kh, kw = (int(v) for v in r.integers(1, 5, 2))
    pad = int(min(p, (kh - 1) // 2, (kw - 1) // 2))
    drawn = {
        "conv_transpose_output_size": [
            Case("hidden: random sizes", (w, k, s, p)),
            Case("hidden: with output padding", (w, k, s + 1, 0, s))],
        "conv_transpose2d": [
            Case("hidden: random shapes, stride and padding",
                 (randn(r, h, wd, c), randn(r, kh, kw, c, o), randn(r, o)),
                 {"stride": s, "padding": pad}),
            Case("hidden: from scratch", (randn(r, h + 1, wd + 1, c), randn(r, kh, kw, c, o),
                                          randn(r, o)), {"stride": s, "padding": pad},
                 mode="jaxpr", check="no_primitives", options={"forbidden": NO_CONV})],
    }
    return drawn
