"""Hidden cases of lab 3, drawn at grading time (see :mod:`grader.hidden`)."""

from grader.spec import NO_WINDOW, Case, randn


def hidden_cases(r):
    drawn = {}
    for name in ("max_pool", "avg_pool"):
        win, s, p = int(r.integers(2, 4)), int(r.integers(1, 4)), int(r.integers(0, 2))
        h, w, c = (int(v) for v in r.integers(win + 1, 9, 3))
        drawn[name] = [
            Case("hidden: random shape, window, stride and padding", (randn(r, h, w, c % 3 + 1),),
                 {"window": win, "stride": s, "padding": p}),
            Case("hidden: from scratch", (randn(r, h, w, 2),), {"window": win, "stride": s},
                 mode="jaxpr", check="no_primitives", options={"forbidden": NO_WINDOW})]
    return drawn
