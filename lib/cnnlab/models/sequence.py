"""Sequence models of the workshop's second day: two forecasters and a text classifier.

All are pure Flax linen modules called as ``model.apply(variables, x, train=...)`` (``train``
changes nothing: none has dropout or batch norm).

- :class:`MLPForecaster`: a window of the last ``lookback`` values (N, lookback) or (N,
  lookback, F) -> flatten -> Dense(hidden) ReLU -> Dense(horizon) -> (N, horizon).
- :class:`LSTMForecaster`: the same window read one step at a time by an LSTM
  (``nn.RNN(nn.LSTMCell(hidden))``, scanned by ``jax.lax.scan``); the last step's hidden state
  -> Dense(horizon).
- :class:`TextClassifier`: word indices (N, T) with 0 for padding -> Embed(vocab_size,
  embed_dim) -> LSTM -> mean of the hidden states over the real words (``tokens != 0``) ->
  Dense(num_classes) logits.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def _as_steps(x: jax.Array) -> jax.Array:
    """(N, T) -> (N, T, 1): one feature per time step; (N, T, F) unchanged."""
    return x[..., None] if x.ndim == 2 else x


class MLPForecaster(nn.Module):
    """Dense network on the flattened window: (N, lookback[, F]) -> (N, horizon).

    Parameters: lookback*F*hidden + hidden + hidden*horizon + horizon (lookback 12, F 1, hidden
    32, horizon 1: 449).
    """

    hidden: int = 32
    horizon: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = _as_steps(x).reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.horizon)(x)


class LSTMForecaster(nn.Module):
    """LSTM over the window, dense head on the last hidden state: (N, lookback[, F]) ->
    (N, horizon).

    Parameters: 4 * (F*hidden + hidden*hidden + hidden) + hidden*horizon + horizon (F 1,
    hidden 32, horizon 1: 4,385).
    """

    hidden: int = 32
    horizon: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        hs = nn.RNN(nn.LSTMCell(self.hidden))(_as_steps(x))
        return nn.Dense(self.horizon)(hs[:, -1])


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of x (N, T, F) over the steps where mask (N, T) is True -> (N, F); zeros for a row
    without a valid step: ``sum_t mask x / max(sum_t mask, 1)``."""
    m = mask.astype(x.dtype)[..., None]
    return (x * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)


class TextClassifier(nn.Module):
    """Embedding, LSTM, mean over the real words, dense logits: int (N, T) -> (N, num_classes).

    Index 0 is padding (Keras's ``pad_sequences`` and ``imdb.load_data`` convention), so the
    pooled mean ignores it wherever it is (front or back). The default is the workshop's IMDB
    model (a 5,000-word vocabulary, 32-dimensional embeddings) with a 32-unit LSTM.
    """

    num_classes: int = 2
    vocab_size: int = 5000
    embed_dim: int = 32
    hidden: int = 32

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
        tokens = tokens.astype(jnp.int32)
        x = nn.Embed(self.vocab_size, self.embed_dim)(tokens)
        hs = nn.RNN(nn.LSTMCell(self.hidden))(x)
        return nn.Dense(self.num_classes)(masked_mean(hs, tokens != 0))


FORECASTERS = {"mlp": MLPForecaster, "lstm": LSTMForecaster}
