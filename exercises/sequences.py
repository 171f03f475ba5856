# Lab 8 (sequences), generated from the reference solution. Fill in every
# `raise NotImplementedError(...)`, then grade one function with `make check EX=sliding_windows`
# (any function's name; EX=sequences for the whole lab), here or in the folder above.
"""Lab 8 — Sequences: time-series windows, recurrent cells by hand, and text classification.

A recurrent network reads a sequence one step at a time and carries a state from step to step.
A *cell* is the function of one step, ``cell(params, carry, x_t) -> (new_carry, y_t)``: the
simple RNN carries the hidden state ``h``, the LSTM carries a pair ``(c, h)`` (cell memory and
hidden state). That signature is exactly what ``jax.lax.scan`` loops over, so a whole sequence
is one compiled loop whatever its length.

Parameters use Flax's names (``flax.linen.SimpleCell`` and ``flax.linen.LSTMCell``): your cells
give the same numbers as Flax's cells with the same weights. Batches are batch-major, as in
Keras and ``flax.linen.RNN``: a sequence batch is ``(N, T, D)`` (examples, time steps, features).

The workshop's activities: forecast a series with an MLP and with an LSTM (a window of the last
``lookback`` values in, the next value out), then classify movie reviews (padded word-index
sequences -> embedding -> LSTM -> one prediction).
Lecture: 002_7bece5f3dd1db8ed.txt, "Programmes" (day 2): "Lecture 1 – Recurrent Neural Network &
Long Short-Term Memory Network", "Activity 1 – Time Series Prediction with MLP", "Activity 2 –
Time Series Prediction with LSTM", "Activity 3 – Sequence Classification of Movie Review"; "Deep
Learning": "Recurrent Neural Network (RNN)", "Long-Short Term Memory (LSTM)".
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def sliding_windows(series: jax.Array, lookback: int,
                    horizon: int = 1) -> tuple[jax.Array, jax.Array]:
    """Cut a series into supervised examples: ``lookback`` past values -> the next ``horizon``.

    Example i is ``x[i] = series[i : i + lookback]`` and ``y[i] = series[i + lookback :
    i + lookback + horizon]``, for every i with a complete target: N = T - lookback - horizon + 1
    examples. ``series`` float (T,); returns ``(x (N, lookback), y (N, horizon))``.
    ``lookback`` and ``horizon`` are plain Python ints.

    Example: ``[1, 2, 3, 4, 5, 6]`` with lookback 3, horizon 1 -> x ``[[1, 2, 3], [2, 3, 4],
    [3, 4, 5]]``, y ``[[4], [5], [6]]``. Raises ``ValueError`` when no window fits
    (T < lookback + horizon).
    """
    raise NotImplementedError('N = T - lookback - horizon + 1 start positions; index series with start[:, None] + offsets')


def last_value_forecast(x: jax.Array, horizon: int = 1) -> jax.Array:
    """The naive baseline every forecaster must beat: tomorrow equals today.

    Predicts the last value of each window for every one of the ``horizon`` future steps:
    ``x`` (N, lookback) -> (N, horizon) with ``out[i, k] = x[i, -1]``. A model whose test error
    is not clearly below this one's has learned nothing about the series.
    """
    raise NotImplementedError('take the last column, keep it 2-D, repeat it horizon times')


def simple_rnn_cell(params: dict, carry: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step of the simple (Elman) RNN: ``h' = tanh(x W_i + b + h W_h)``; returns ``(h', h')``.

    ``params = {"i": {"kernel": (D, H), "bias": (H,)}, "h": {"kernel": (H, H)}}`` (the names of
    ``flax.linen.SimpleCell``: one bias is enough since the two products are summed).
    ``carry`` h (N, H), ``x`` (N, D). The new state is both the carry and the output, so the cell
    fits ``jax.lax.scan``. With all kernels zero and bias b the state is ``tanh(b)`` at every step.
    """
    raise NotImplementedError('two matrix products and the bias, then jnp.tanh; return the state twice')


def lstm_cell(params: dict, carry: tuple[jax.Array, jax.Array],
              x: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """One step of an LSTM; ``carry = (c, h)``; returns ``((c', h'), h')``.

    Four gates, each from the input and the previous hidden state (``s`` = sigmoid):

    - input gate   ``i = s(x W_ii + h W_hi + b_hi)``    how much new content to write
    - forget gate  ``f = s(x W_if + h W_hf + b_hf)``    how much of the memory to keep
    - candidate    ``g = tanh(x W_ig + h W_hg + b_hg)`` the new content
    - output gate  ``o = s(x W_io + h W_ho + b_ho)``    how much of the memory to show

    then ``c' = f * c + i * g`` (the memory: a sum, so gradients flow through many steps) and
    ``h' = o * tanh(c')``.

    ``params`` has Flax's ``LSTMCell`` names: ``"ii", "if", "ig", "io"`` each ``{"kernel": (D,
    H)}`` and ``"hi", "hf", "hg", "ho"`` each ``{"kernel": (H, H), "bias": (H,)}``. Shapes: c, h
    (N, H), x (N, D). Use ``jax.nn.sigmoid`` and ``jnp.tanh``.
    """
    raise NotImplementedError('a helper gate(name) = x @ params["i" + name]["kernel"] + h @ params["h" + name]["kernel"] + params["h" + name]["bias"]')


def lstm_layer(params: dict, xs: jax.Array) -> jax.Array:
    """Run :func:`lstm_cell` over a whole batch of sequences with ``jax.lax.scan``; all the
    hidden states.

    ``xs`` (N, T, D) -> (N, T, H), H = ``params["hi"]["kernel"].shape[0]``, starting from
    ``c = h = 0`` (N, H). ``jax.lax.scan(f, init, seq)`` loops over the *first* axis of ``seq``
    and needs ``f(carry, x_t) -> (carry, y_t)``: move time to the front (``jnp.swapaxes``), scan
    ``lambda carry, x: lstm_cell(params, carry, x)``, and move it back. This is what
    ``flax.linen.RNN(flax.linen.LSTMCell(H))`` computes.

    Write it with ``jax.lax.scan``, not a Python loop: the grader checks the compiled program
    for a loop. (A Python loop copies the cell T times into the program: compiling it then takes
    longer the longer the sequences.)
    """
    raise NotImplementedError('zeros (N, H) for c and h; jax.lax.scan over jnp.swapaxes(xs, 0, 1); swap the outputs back')


class MLPForecaster(nn.Module):
    """The workshop's MLP forecaster: a window of past values in, the next ``horizon`` out.

    ``x`` (N, lookback) or (N, lookback, 1) -> flatten to (N, lookback) -> ``nn.Dense(hidden)``
    + ReLU -> ``nn.Dense(horizon)`` -> (N, horizon). Parameter tree: Dense_0 kernel (lookback,
    hidden) bias (hidden,), Dense_1 kernel (hidden, horizon) bias (horizon,). ``train`` changes
    nothing here.
    """

    hidden: int = 8
    horizon: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        raise NotImplementedError('x.reshape(x.shape[0], -1), nn.Dense + nn.relu, nn.Dense(self.horizon)')


class LSTMForecaster(nn.Module):
    """The workshop's LSTM forecaster: the window read one value at a time.

    ``x`` (N, lookback) -> (N, lookback, 1) (one feature per time step; a 3-D input is used as
    it is) -> ``nn.RNN(nn.LSTMCell(hidden))`` -> the hidden state of the *last* step (N, hidden)
    -> ``nn.Dense(horizon)`` -> (N, horizon). Parameter tree: LSTMCell_0 (ii/if/ig/io kernels
    (1, hidden), hi/hf/hg/ho kernels (hidden, hidden) and biases), Dense_0 kernel (hidden,
    horizon) bias (horizon,).
    """

    hidden: int = 8
    horizon: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        raise NotImplementedError('add a feature axis when x is 2-D (x[..., None]); nn.RNN returns every step: keep [:, -1]')


def pad_sequences(sequences: Sequence[Sequence[int]], maxlen: int, *, padding: str = "pre",
                  truncating: str = "pre") -> tuple[jax.Array, jax.Array]:
    """Word-index sequences of different lengths -> one int32 (N, maxlen) array and its mask,
    as Keras's ``pad_sequences`` (its defaults: pad *and* cut at the front).

    A sequence longer than ``maxlen`` keeps its last ``maxlen`` tokens (``truncating="pre"``) or
    its first ones ("post"); a shorter one gets zeros in front (``padding="pre"``) or behind
    ("post"). Index 0 is reserved for padding. The mask is bool (N, maxlen): True where a real
    token is.

    Example, maxlen 3: ``[[5, 6], [1, 2, 3, 4]]`` -> ``[[0, 5, 6], [2, 3, 4]]``, mask ``[[False,
    True, True], [True, True, True]]``; with ``padding="post", truncating="post"``: ``[[5, 6, 0],
    [1, 2, 3]]``. Any other value of ``padding`` or ``truncating`` raises ``ValueError``.
    (Python lists in, arrays out: not for ``jax.jit``.)
    """
    raise NotImplementedError('per sequence: cut to maxlen (s[-maxlen:] or s[:maxlen]), then put the zeros before or after')


def embedding_lookup(table: jax.Array, tokens: jax.Array) -> jax.Array:
    """Word vectors for word indices: row ``tokens[n, t]`` of ``table``.

    ``table`` (V, E) (one E-vector per word of a V-word vocabulary), ``tokens`` int (N, T) ->
    (N, T, E). This is what ``flax.linen.Embed`` does; it equals ``one_hot(tokens, V) @ table``
    (which is why the gradient of the table is zero in every row no token used).
    """
    raise NotImplementedError('integer-array indexing picks rows: table[tokens]')


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """The mean of ``x`` over the valid time steps only: padding must not dilute it.

    ``x`` (N, T, F), ``mask`` bool (N, T) -> (N, F) with ``out[n] = sum_t mask[n, t] x[n, t] /
    max(sum_t mask[n, t], 1)``: a sequence with no valid step gives zeros (never NaN).
    Example: x[0] = [[1], [3], [100]], mask[0] = [True, True, False] -> [2].
    """
    raise NotImplementedError('multiply by mask[..., None], sum over time, divide by the count clipped at 1')


class TextClassifier(nn.Module):
    """The movie-review classifier: embedding -> LSTM -> mean over the words -> logits.

    ``tokens`` int (N, T) with 0 for padding -> ``nn.Embed(vocab_size, embed_dim)`` (N, T, E)
    -> ``nn.RNN(nn.LSTMCell(hidden))`` (N, T, hidden) -> :func:`masked_mean` over the steps
    where ``tokens != 0`` (N, hidden) -> ``nn.Dense(num_classes)`` -> logits (N, num_classes).
    Parameter tree: Embed_0 embedding (vocab_size, embed_dim); LSTMCell_0 (kernels (embed_dim,
    hidden) and (hidden, hidden), biases (hidden,)); Dense_0 kernel (hidden, num_classes).
    """

    vocab_size: int = 5000
    embed_dim: int = 32
    hidden: int = 32
    num_classes: int = 2

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool) -> jax.Array:
        raise NotImplementedError('nn.Embed, then nn.RNN(nn.LSTMCell(...)), then masked_mean with tokens != 0, then nn.Dense')
