"""Losses and metrics as pure functions of logits and labels.

Shapes: ``logits`` float (N, C), ``labels`` int (N,) in [0, C), ``mask`` (N,) 0/1 (0 marks padding
rows of a fixed-shape last batch); a regression's targets are float (N, ...) instead of labels
(:func:`squared_error`). Evaluation works with *sums* (:func:`batch_sums`) so that batches
of any split — and shards on any number of devices — add up exactly; :func:`finalize` turns the
totals into means.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, *,
                  label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy, (N, C), (N,) -> (N,).

    With smoothing ``a`` the target is ``(1 - a) * one_hot(y) + a / C`` (Szegedy et al. 2016), so
    ``loss_i = -sum_c target_ic * log_softmax(logits_i)_c``.
    """
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-example squared error of a regression, (N, ...), (N, ...) -> (N,).

    ``sum over the trailing axes of (prediction - target)^2`` (a horizon-1 forecast (N, 1): the
    plain squared error).
    """
    d = (predictions - targets.astype(predictions.dtype)).reshape(predictions.shape[0], -1)
    return jnp.sum(d * d, axis=-1)


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where ``argmax(logits) == label``, (N, C), (N,) -> (N,) float32."""
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the true class is among the ``k`` largest logits, (N, C), (N,) -> (N,) float32.

    The rank of the true class is the number of logits strictly larger than its own; it is in the
    top k when that rank is < k (ties count in the example's favour, as ``tf.math.in_top_k``).
    """
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    rank = jnp.sum(logits > true_logit, axis=-1)
    return (rank < k).astype(jnp.float32)


def confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int,
                     mask: jax.Array | None = None) -> jax.Array:
    """Counts ``M[true, predicted]``, (N,), (N,) -> (C, C) float32; rows with mask 0 are ignored.

    Computed as ``one_hot(labels).T @ (mask * one_hot(predictions))``: a matmul, so a batch sharded
    over devices reduces with one all-reduce.
    """
    t = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    p = jax.nn.one_hot(predictions, num_classes, dtype=jnp.float32)
    if mask is not None:
        p = p * mask[:, None]
    return t.T @ p


def batch_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None, *,
               top_k: int = 5) -> dict[str, jax.Array]:
    """Sums over one batch: ``count``, ``loss_sum``, ``correct``, ``top_k_correct``, ``confusion``.

    ``loss`` is the plain (unsmoothed) cross-entropy; ``k`` is clipped to the number of classes.
    """
    logits = logits.astype(jnp.float32)
    if mask is None:
        mask = jnp.ones(labels.shape, jnp.float32)
    mask = mask.astype(jnp.float32)
    num_classes = logits.shape[-1]
    return {
        "count": jnp.sum(mask),
        "loss_sum": jnp.sum(cross_entropy(logits, labels) * mask),
        "correct": jnp.sum(correct(logits, labels) * mask),
        "top_k_correct": jnp.sum(top_k_correct(logits, labels, min(top_k, num_classes)) * mask),
        "confusion": confusion_matrix(labels, jnp.argmax(logits, axis=-1), num_classes, mask),
    }


def add_sums(a: dict | None, b: dict) -> dict:
    """Sum of two :func:`batch_sums` results on the host (float64); ``a`` may be None."""
    b = {k: np.asarray(v, np.float64) for k, v in b.items()}
    if a is None:
        return b
    return {k: a[k] + b[k] for k in b}


def finalize(sums: dict, *, top_k: int = 5) -> dict:
    """Totals -> ``loss``, ``accuracy``, ``top{k}_accuracy`` (floats), ``confusion_matrix`` (int
    lists, rows = true class, columns = predicted class) and ``count``."""
    n = float(sums["count"])
    return {
        "loss": float(sums["loss_sum"]) / n,
        "accuracy": float(sums["correct"]) / n,
        f"top{top_k}_accuracy": float(sums["top_k_correct"]) / n,
        "count": int(round(n)),
        "confusion_matrix": np.rint(np.asarray(sums["confusion"])).astype(int).tolist(),
    }
