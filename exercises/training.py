# Lab 4 (training), generated from the reference solution. Fill in every
# `raise NotImplementedError(...)`, then grade one function with `make check EX=minibatch_indices`
# (any function's name; EX=training for the whole lab), here or in the folder above.
"""Lab 4 — Training: batches, splits, optimizers by hand, metrics, and a jit-compiled step.

Training repeats: take a minibatch, compute the loss and its gradient, move the parameters a little
against the gradient. Parameters are pytrees (nested dicts of arrays); ``jax.tree_util.tree_map``
applies a function leaf by leaf, so an optimizer is a few lines whatever the model.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


def minibatch_indices(num_examples: int, batch_size: int, *, seed: int, epoch: int) -> jax.Array:
    """The example indices of every minibatch of one epoch, shuffled differently every epoch.

    The order is exactly ``jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(seed),
    epoch), num_examples)``; it is cut into ``num_examples // batch_size`` batches and the
    remainder is dropped (so every batch has the same shape and compiles once).

    Returns int32 (num_batches, batch_size); each index appears at most once.
    10 examples, batch 4 -> shape (2, 4), two examples unused this epoch.
    """
    raise NotImplementedError('jax.random.fold_in makes a new key per epoch; permute, cut, reshape')


def train_test_split(num_examples: int, test_fraction: float, *, seed: int) -> tuple[jax.Array, jax.Array]:
    """Split example indices at random into a training and a test part.

    ``perm = jax.random.permutation(jax.random.PRNGKey(seed), num_examples)``; the first
    ``n_test = ceil(test_fraction * num_examples)`` indices of ``perm`` are the test set, the rest
    the training set. Returns ``(train_idx, test_idx)``, int32 (N - n_test,) and (n_test,).
    100 examples with ``test_fraction=0.25`` -> 75 and 25 indices, disjoint, together all 100.
    """
    raise NotImplementedError('one permutation; the test set is its beginning')


def kfold_indices(num_examples: int, k: int) -> list[tuple[jax.Array, jax.Array]]:
    """K-fold cross-validation indices, without shuffling (as scikit-learn's ``KFold``).

    The indices 0..N-1 are cut into k consecutive folds; the first ``N % k`` folds have
    ``N // k + 1`` indices, the others ``N // k``. Fold i is the validation set of split i and the
    remaining indices (in increasing order) its training set.

    Returns a list of k pairs ``(train_idx, val_idx)``, int32. N=10, k=3: folds of 4, 3, 3 ->
    val [0..3], [4..6], [7..9]. Every index is validated exactly once.
    """
    raise NotImplementedError('walk a start offset through the fold sizes; jnp.concatenate the rest')


def sgd_step(params, grads, learning_rate: float):
    """One step of plain gradient descent on a pytree: ``p <- p - lr * g`` for every leaf.

    ``params`` and ``grads`` have the same structure (e.g. ``{"w": (3, 2), "b": (2,)}``); returns a
    new pytree of that structure (the input is not modified).
    """
    raise NotImplementedError('jax.tree_util.tree_map works on two trees at once')


def adam_init(params) -> dict:
    """The initial Adam state: ``{"count": int32 0, "mu": zeros like params, "nu": zeros like params}``.

    ``mu`` and ``nu`` are pytrees of the same structure, shapes and dtypes as ``params``.
    """
    raise NotImplementedError('jax.tree_util.tree_map with jnp.zeros_like')


def adam_step(params, grads, state: dict, learning_rate: float, *, b1: float = 0.9,
              b2: float = 0.999, eps: float = 1e-8):
    """One Adam step by hand, equal to ``optax.adam(learning_rate, b1, b2, eps)``.

    With ``t = count + 1``, for every leaf:

    - ``mu <- b1 mu + (1 - b1) g``          (first moment: momentum)
    - ``nu <- b2 nu + (1 - b2) g^2``        (second moment)
    - ``mu_hat = mu / (1 - b1^t)``, ``nu_hat = nu / (1 - b2^t)``   (bias correction)
    - ``p <- p - lr * mu_hat / (sqrt(nu_hat) + eps)``

    Returns ``(new_params, new_state)`` with ``new_state = {"count": t, "mu": ..., "nu": ...}``
    (``count`` int32). On the first step every parameter moves by about ``lr`` against the sign of
    its gradient.
    """
    raise NotImplementedError('tree_map the two moment updates, then the bias-corrected parameter update')


def l2_penalty(params, weight_decay: float) -> jax.Array:
    """The L2 penalty over every leaf of a parameter pytree: ``weight_decay / 2 * sum_leaves ||p||^2``.

    Its gradient is ``weight_decay * p``: adding it to the loss is "weight decay". Returns a float32
    scalar. ``{"w": [[1, 2]], "b": [2]}`` with ``weight_decay=0.1`` -> 0.05 * (1 + 4 + 4) = 0.45.
    """
    raise NotImplementedError('jax.tree_util.tree_leaves lists every array of the tree')


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The fraction of examples whose highest logit is the label.

    Shapes: logits (N, C), labels int (N,) -> float32 scalar in [0, 1].
    """
    raise NotImplementedError('jnp.argmax over the class axis, compared with the labels')


def confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int) -> jax.Array:
    """The confusion matrix: ``m[i, j]`` = number of examples of true class i predicted as j.

    Shapes: labels int (N,), predictions int (N,) -> int32 (num_classes, num_classes); rows are
    the true classes, so row sums are the class counts and the diagonal counts the correct ones.
    ``num_classes`` is a plain Python int (static under ``jax.jit``).
    """
    raise NotImplementedError('scatter-add ones: .at[rows, cols].add(1)')


# ``train_state.TrainState`` holds step, params, apply_fn (model.apply), tx (the optax optimizer)
# and opt_state; ``state.apply_gradients(grads=g)`` runs the optimizer and returns a new state.
TrainState = train_state.TrainState


# TODO: compile the step: put @jax.jit on the line above `def train_step`
def train_step(state: TrainState, images: jax.Array, labels: jax.Array) -> tuple[TrainState, jax.Array]:
    """One jit-compiled training step with optax.

    ``loss(params) = mean softmax cross-entropy of state.apply_fn({"params": params}, images)``
    against the integer ``labels`` (``optax.softmax_cross_entropy_with_integer_labels``); compute it
    and its gradient with ``jax.value_and_grad``, then ``state.apply_gradients(grads=grads)``.

    Returns ``(new_state, loss)``. Shapes: images (N, ...), labels int (N,). Decorate the function
    with ``@jax.jit`` so that the step is compiled once and reused: the grader calls it several
    times with the same shapes and counts how often it is traced.
    """
    raise NotImplementedError('a loss function of the params, jax.value_and_grad, then state.apply_gradients')
