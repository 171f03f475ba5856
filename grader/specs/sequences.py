"""Specs of lab 8: sequences (windows, recurrent cells, text classification)."""

from __future__ import annotations

import numpy as np

from grader.spec import SCAN, Case, Exercise, f32, key, lstm_params, randn, rng, tokens

M = "sequences"
TREE_HINT = ("compare your parameter tree with the docstring: layer order, sizes and the "
             "attributes (self.hidden, self.horizon, ...) decide every shape")


def simple_params(r, d: int, h: int, scale: float = 0.5) -> dict:
    """Parameters of ``flax.linen.SimpleCell`` (input size d, state size h)."""
    return {"i": {"kernel": randn(r, d, h, scale=scale), "bias": randn(r, h, scale=scale)},
            "h": {"kernel": randn(r, h, h, scale=scale)}}




def _cell_exercises(r) -> list[Exercise]:
    p4 = lstm_params(r, 3, 4)
    keep = lstm_params(r, 3, 4, scale=0.1)
    keep["hf"]["bias"] = np.full(4, 30.0, np.float32)    # forget gate ~1: keep the memory
    keep["hi"]["bias"] = np.full(4, -30.0, np.float32)   # input gate ~0: write nothing
    zero = simple_params(r, 3, 4)
    zero["i"]["kernel"] = np.zeros((3, 4), np.float32)
    zero["h"]["kernel"] = np.zeros((4, 4), np.float32)
    return [
        Exercise(M, "simple_rnn_cell", 1.0, (
            Case("D=3, H=4, batch 2", (simple_params(r, 3, 4), randn(r, 2, 4), randn(r, 2, 3)),
                 hint="h' = tanh(x @ W_i + b + h @ W_h); return (h', h')"),
            Case("zero kernels give tanh(bias)", (zero, randn(r, 5, 4), randn(r, 5, 3)),
                 hint="the bias is params['i']['bias']"),
            Case("D=1, H=6, batch 3", (simple_params(r, 1, 6), randn(r, 3, 6), randn(r, 3, 1))),
            Case("under jax.jit", (simple_params(r, 2, 3), randn(r, 4, 3), randn(r, 4, 2)),
                 mode="jit"),
            Case("gradient w.r.t. the parameters", (simple_params(r, 2, 3), randn(r, 2, 3),
                                                    randn(r, 2, 2)),
                 mode="grad", options={"argnums": [0]}),
        ), hint="tanh of the input product plus the recurrent product plus the bias; (h', h')"),
        Exercise(M, "lstm_cell", 2.0, (
            Case("D=3, H=4, batch 2", (p4, (randn(r, 2, 4), randn(r, 2, 4)), randn(r, 2, 3)),
                 hint="i, f, o are sigmoids, g a tanh; c' = f * c + i * g; h' = o * tanh(c')"),
            Case("forget gate open, input gate shut: the memory is kept",
                 (keep, (randn(r, 3, 4), randn(r, 3, 4)), randn(r, 3, 3)),
                 hint="c' = f * c + i * g: the *forget* gate multiplies the old memory c"),
            Case("D=2, H=5, batch 1", (lstm_params(r, 2, 5), (randn(r, 1, 5), randn(r, 1, 5)),
                                       randn(r, 1, 2)),
                 hint="every gate has its own input kernel 'i?' and recurrent kernel 'h?' "
                      "with bias"),
            Case("under jax.jit", (lstm_params(r, 3, 2), (randn(r, 4, 2), randn(r, 4, 2)),
                                   randn(r, 4, 3)), mode="jit"),
            Case("gradient w.r.t. the parameters", (lstm_params(r, 2, 3), (randn(r, 2, 3),
                                                                           randn(r, 2, 3)),
                                                    randn(r, 2, 2)),
                 mode="grad", options={"argnums": [0]}),
        ), hint="four gates from x and h; c' = f c + i g; h' = o tanh(c'); return ((c', h'), h')"),
        Exercise(M, "lstm_layer", 2.0, (
            Case("batch 2, 5 steps, D=3, H=4", (p4, randn(r, 2, 5, 3)),
                 hint="start from zeros (N, H); scan over time: swap axes 0 and 1 before and "
                      "after jax.lax.scan"),
            Case("one step", (lstm_params(r, 2, 3), randn(r, 3, 1, 2))),
            Case("batch 1, 7 steps, D=1, H=2", (lstm_params(r, 1, 2), randn(r, 1, 7, 1)),
                 hint="the output has every step's hidden state: (N, T, H)"),
            Case("under jax.jit", (lstm_params(r, 2, 3), randn(r, 2, 4, 2)), mode="jit"),
            Case("gradient w.r.t. the inputs", (lstm_params(r, 2, 3), randn(r, 2, 4, 2)),
                 mode="grad", options={"argnums": [1]}),
            Case("written with jax.lax.scan", (lstm_params(r, 2, 3), randn(r, 2, 6, 2)),
                 mode="jaxpr", check="no_primitives", options=SCAN,
                 hint="loop over time with jax.lax.scan(step, carry, xs) on time-major inputs: "
                      "a Python for loop puts one copy of the cell per step into the program"),
        ), hint="lstm_cell scanned over the time axis with jax.lax.scan; (N, T, H) out"),
    ]


def _forecast_exercises(r) -> list[Exercise]:
    series = randn(r, 20)
    return [
        Exercise(M, "sliding_windows", 1.0, (
            Case("[1..6], lookback 3, horizon 1", (f32([1, 2, 3, 4, 5, 6]), 3, 1),
                 hint="x[i] = series[i:i + 3], y[i] = series[i + 3:i + 4]: 3 examples"),
            Case("20 values, lookback 5, horizon 3", (series, 5, 3),
                 hint="the target starts right after the window: series[i + lookback:i + "
                      "lookback + horizon]; N = T - lookback - horizon + 1"),
            Case("exactly one window", (randn(r, 6), 4, 2)),
            Case("too short raises ValueError", (randn(r, 4), 3, 2),
                 hint="raise ValueError when T < lookback + horizon"),
            Case("under jax.jit", (series, 4, 2), mode="jit",
                 hint="lookback and horizon are Python ints: sizes must not depend on values"),
        ), hint="N = T - lookback - horizon + 1 windows; x (N, lookback), y (N, horizon)"),
        Exercise(M, "last_value_forecast", 1.0, (
            Case("(5, 4), horizon 1", (randn(r, 5, 4), 1), hint="the *last* value of the window"),
            Case("(6, 3), horizon 4", (randn(r, 6, 3), 4),
                 hint="the same value for every future step: shape (N, horizon)"),
            Case("under jax.jit", (randn(r, 3, 7), 2), mode="jit"),
        ), hint="x[:, -1] repeated horizon times: (N, horizon)"),
        Exercise(M, "MLPForecaster", 1.0, (
            Case("lookback 6, hidden 8, horizon 1", (randn(r, 2, 6), key(0)),
                 {"hidden": 8, "horizon": 1}, mode="driver:flax_model", hint=TREE_HINT,
                 hint_on=("shape",)),
            Case("(N, 5, 1) windows, hidden 4, horizon 3", (randn(r, 3, 5, 1), key(1)),
                 {"hidden": 4, "horizon": 3}, mode="driver:flax_model",
                 hint="flatten the window first; the last layer has self.horizon outputs"),
        ), hint="flatten, Dense(hidden) + relu, Dense(horizon)"),
        Exercise(M, "LSTMForecaster", 2.0, (
            Case("lookback 6, hidden 5, horizon 1", (randn(r, 2, 6), key(0)),
                 {"hidden": 5, "horizon": 1}, mode="driver:flax_model",
                 hint="one feature per time step: x[..., None] makes (N, lookback, 1); the "
                      "head reads the hidden state of the *last* step"),
            Case("(N, 4, 1) windows, hidden 3, horizon 2", (randn(r, 3, 4, 1), key(1)),
                 {"hidden": 3, "horizon": 2}, mode="driver:flax_model",
                 hint="a 3-D input already has its feature axis"),
        ), hint="nn.RNN(nn.LSTMCell(hidden)) over (N, T, 1), last step, Dense(horizon)"),
    ]


def _text_exercises(r) -> list[Exercise]:
    table = randn(r, 10, 4)
    tok = tokens(r, 10, 3, 5)
    x = randn(r, 3, 4, 2)
    mask = np.array([[True, True, False, False], [True, True, True, True],
                     [True, False, False, False]])
    return [
        Exercise(M, "pad_sequences", 1.0, (
            Case("the docstring example (Keras defaults: pre)", ([[5, 6], [1, 2, 3, 4]], 3),
                 hint="the defaults are Keras's: zeros in *front*, and a long sequence keeps "
                      "its *last* maxlen tokens"),
            Case("post padding, post truncating", ([[5, 6], [1, 2, 3, 4]], 3),
                 {"padding": "post", "truncating": "post"},
                 hint="'post': zeros behind, and a long sequence keeps its first tokens"),
            Case("pre padding, post truncating", ([[7], [1, 2, 3, 4, 5], [8, 9]], 4),
                 {"truncating": "post"},
                 hint="padding and truncating are two separate choices"),
            Case("an empty review", ([[], [3, 4]], 2)),
            Case("unknown padding raises ValueError", ([[1, 2]], 3), {"padding": "middle"},
                 hint="raise ValueError for anything but 'pre' and 'post'"),
        ), hint="cut each sequence to maxlen, fill with zeros; int32 (N, maxlen) and a bool mask"),
        Exercise(M, "embedding_lookup", 1.0, (
            Case("vocabulary 10, vectors of 4, (3, 5) tokens", (table, tok),
                 hint="row tokens[n, t] of the table: (N, T, E)"),
            Case("one token", (randn(r, 6, 3), np.array([[5]], np.int32))),
            Case("under jax.jit", (table, tok), mode="jit"),
            Case("gradient w.r.t. the table", (table, tok), mode="grad",
                 options={"argnums": [0]}),
        ), hint="table[tokens]"),
        Exercise(M, "masked_mean", 1.0, (
            Case("the docstring example", (f32([[[1.0], [3.0], [100.0]]]),
                                           np.array([[True, True, False]])),
                 hint="divide by the number of *valid* steps, not by T"),
            Case("(3, 4, 2), varied lengths", (x, mask),
                 hint="sum of mask * x over time / number of valid steps"),
            Case("no valid step gives zeros", (randn(r, 2, 3, 2),
                                               np.array([[False] * 3, [True] * 3])),
                 hint="clip the count at 1: 0 / 1 = 0, never 0 / 0 = NaN"),
            Case("under jax.jit", (x, mask), mode="jit"),
            Case("gradient w.r.t. x", (x, mask), mode="grad", options={"argnums": [0]}),
        ), hint="sum(mask * x) / max(sum(mask), 1) over the time axis"),
        Exercise(M, "TextClassifier", 2.0, (
            Case("vocabulary 20, padded at the end", (tokens(r, 20, 3, 6), key(0)),
                 {"vocab_size": 20, "embed_dim": 4, "hidden": 5, "num_classes": 2},
                 mode="driver:flax_model", hint=TREE_HINT,
                 hint_on=("shape",)),
            Case("padded in front, 3 classes", (tokens(r, 12, 4, 5, pad_front=True), key(1)),
                 {"vocab_size": 12, "embed_dim": 3, "hidden": 4, "num_classes": 3},
                 mode="driver:flax_model",
                 hint="average the LSTM outputs over the real words only: masked_mean with "
                      "tokens != 0"),
        ), hint="nn.Embed, nn.RNN(nn.LSTMCell), masked_mean over tokens != 0, nn.Dense"),
    ]


ORDER = ["sliding_windows", "last_value_forecast", "simple_rnn_cell", "lstm_cell", "lstm_layer",
         "MLPForecaster", "LSTMForecaster", "pad_sequences", "embedding_lookup", "masked_mean",
         "TextClassifier"]  # the order of the lab module


def _exercises() -> list[Exercise]:
    r = rng(8)
    every = _forecast_exercises(r) + _cell_exercises(r) + _text_exercises(r)
    return sorted(every, key=lambda ex: ORDER.index(ex.name))


EXERCISES = _exercises()
