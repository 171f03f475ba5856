"""Hidden cases of lab 8, drawn at grading time (see :mod:`grader.hidden`)."""

from grader.spec import SCAN, Case, lstm_params, randn, tokens

# Its public cases feed word indices as arrays, which fresh values would turn into any integers.
NO_FRESH_VALUES = ("embedding_lookup",)


def hidden_cases(r):
    t, lookback, horizon = int(r.integers(8, 30)), int(r.integers(1, 6)), int(r.integers(1, 4))
    d, h, steps = (int(v) for v in r.integers(1, 5, 3))
    maxlen = int(r.integers(1, 7))
    reviews = [[int(v) for v in r.integers(1, 50, int(n))] for n in r.integers(0, 9, 4)]
    drawn = {
        "sliding_windows": [Case("hidden: random sizes", (randn(r, t), lookback, horizon))],
        "last_value_forecast": [Case("hidden: random sizes", (randn(r, d + 1, lookback),
                                                              horizon))],
        "lstm_layer": [
            Case("hidden: random sizes", (lstm_params(r, d, h), randn(r, 2, steps, d))),
            Case("hidden: written with jax.lax.scan", (lstm_params(r, d, h),
                                                       randn(r, 1, steps + 1, d)),
                 mode="jaxpr", check="no_primitives", options=SCAN)],
        "pad_sequences": [
            Case("hidden: random reviews, pre", (reviews, maxlen)),
            Case("hidden: random reviews, post", (reviews, maxlen),
                 {"padding": "post", "truncating": "post"})],
        "embedding_lookup": [Case("hidden: random sizes",
                                  (randn(r, 9, d), tokens(r, 9, 2, steps + 1)))],
    }
    return drawn
