# Lab 4 (training), generated from the reference solution. Fill in every
# `raise NotImplementedError(...)`, then grade one function with `make check EX=steps_per_epoch`
# (any function's name; EX=training for the whole lab), here or in the folder above.
"""Lab 4 — Training: batches, splits, optimizers by hand, metrics, and a jit-compiled step.

Training repeats: take a minibatch, compute the loss and its gradient, move the parameters a little
against the gradient. Parameters are pytrees (nested dicts of arrays); ``jax.tree_util.tree_map``
applies a function leaf by leaf, so an optimizer is a few lines whatever the model.

The lectures' recipe (000_271ae1d9aab5f653.txt, "How do I do deep learning?"): split your data,
construct a model, choose a loss function, choose an optimization algorithm ("Usually the Adam
optimizer is used ... a learning rate around 0.001 is a good choice"), train and evaluate ("Show
the training set to the network 100 times and show the testing set only once"). The gradient
descent principle (002_7bece5f3dd1db8ed.txt, "ANN: Training the Neural Network -
Backpropagation"): make a prediction, calculate the loss, calculate the gradient, "update
parameters by taking a step in the opposite direction", iterate.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


def steps_per_epoch(num_examples: int, batch_size: int, *, drop_last: bool = False) -> int:
    """How many iterations (forward + backward passes) one epoch takes.

    Lecture: 001_8ff93c9bfb889e45.txt, the slide on epochs and batches: "one epoch = one forward
    and backward pass of all training examples; batch size = # training examples in one
    forward/backward pass; number of iterations = number of passes ... Example: if you have 1000
    training examples, and your batch size is 500, then it will take 2 iterations to complete 1
    epoch." And 002_7bece5f3dd1db8ed.txt, "ANN: Batch Training": full batch gradient descent takes
    one step per epoch, stochastic gradient descent n steps (batch size 1), minibatch
    n / batch size steps.

    When ``batch_size`` does not divide ``num_examples`` the last batch is smaller and still counts
    (``ceil``, as Keras' progress bar: 60000 examples in batches of 32 -> 1875); with
    ``drop_last=True`` it is dropped (``floor``, as :func:`minibatch_indices`). Plain ints in and out.
    """
    raise NotImplementedError('ceil(n / b) is -(-n // b) in integers; floor is n // b')


def minibatch_indices(num_examples: int, batch_size: int, *, seed: int, epoch: int) -> jax.Array:
    """The example indices of every minibatch of one epoch, shuffled differently every epoch.

    The order is exactly ``jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(seed),
    epoch), num_examples)``; it is cut into ``num_examples // batch_size`` batches and the
    remainder is dropped (so every batch has the same shape and compiles once).

    Returns int32 (num_batches, batch_size); each index appears at most once.
    10 examples, batch 4 -> shape (2, 4), two examples unused this epoch.
    Lecture: 002_7bece5f3dd1db8ed.txt, "ANN: Data Shuffling": "it is recommended to shuffle the
    data after each epoch ... the data is not seen in the same order every time, and the batches
    are not the exact same ones."
    """
    raise NotImplementedError('jax.random.fold_in makes a new key per epoch; permute, cut, reshape')


def train_test_split(num_examples: int, test_fraction: float, *, seed: int) -> tuple[jax.Array, jax.Array]:
    """Split example indices at random into a training and a test part.

    ``perm = jax.random.permutation(jax.random.PRNGKey(seed), num_examples)``; the first
    ``n_test = ceil(test_fraction * num_examples)`` indices of ``perm`` are the test set, the rest
    the training set. Returns ``(train_idx, test_idx)``, int32 (N - n_test,) and (n_test,).
    100 examples with ``test_fraction=0.25`` -> 75 and 25 indices, disjoint, together all 100.
    Lecture: 000_271ae1d9aab5f653.txt, "Split your data": "Your training and test sets do not
    overlap".
    """
    raise NotImplementedError('one permutation; the test set is its beginning')


def kfold_indices(num_examples: int, k: int) -> list[tuple[jax.Array, jax.Array]]:
    """K-fold cross-validation indices, without shuffling (as scikit-learn's ``KFold``).

    The indices 0..N-1 are cut into k consecutive folds; the first ``N % k`` folds have
    ``N // k + 1`` indices, the others ``N // k``. Fold i is the validation set of split i and the
    remaining indices (in increasing order) its training set.

    Returns a list of k pairs ``(train_idx, val_idx)``, int32. N=10, k=3: folds of 4, 3, 3 ->
    val [0..3], [4..6], [7..9]. Every index is validated exactly once.
    Lecture: 000_271ae1d9aab5f653.txt, "Split your data": "A less biased approach is k-fold cross
    validation".
    """
    raise NotImplementedError('walk a start offset through the fold sizes; jnp.concatenate the rest')


def sgd_step(params, grads, learning_rate: float):
    """One step of plain gradient descent on a pytree: ``p <- p - lr * g`` for every leaf.

    ``params`` and ``grads`` have the same structure (e.g. ``{"w": (3, 2), "b": (2,)}``); returns a
    new pytree of that structure (the input is not modified).
    Lecture: 002_7bece5f3dd1db8ed.txt, "ANN: Training the Neural Network - Backpropagation",
    step 4: W(k) = W(k) - rate × dJ/dW(k).
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
    its gradient. Lecture: 000_271ae1d9aab5f653.txt, "Choose an optimization algorithm": "Usually
    the Adam optimizer is used"; "a learning rate around 0.001 is a good choice".
    """
    raise NotImplementedError('tree_map the two moment updates, then the bias-corrected parameter update')


def adadelta_step(params, grads, state: dict, learning_rate: float = 1.0, *, rho: float = 0.95,
                  eps: float = 1e-6):
    """One Adadelta step by hand, equal to ``optax.adadelta(learning_rate, rho, eps)``.

    Lecture: 003_dd4e96de96f4046f.txt, the seminar CNN is compiled with
    ``optimizer=keras.optimizers.Adadelta()`` (Keras 2's defaults then: lr=1.0, rho=0.95, as in
    Zeiler's paper). Adadelta keeps two running averages per parameter, ``e_g`` of squared
    gradients and ``e_x`` of squared updates, and needs no hand-tuned step size:

    - ``e_g <- rho e_g + (1 - rho) g^2``
    - ``u = sqrt(e_x + eps) / sqrt(e_g + eps) * g``      (with the *new* e_g and the *old* e_x)
    - ``e_x <- rho e_x + (1 - rho) u^2``
    - ``p <- p - learning_rate * u``

    ``state = {"e_g": ..., "e_x": ...}``, pytrees shaped like ``params`` (zeros at the start).
    Returns ``(new_params, new_state)``. From zeros, the first step moves every parameter by
    ``learning_rate * sqrt(eps / (eps + (1 - rho) g^2)) * g`` — tiny: Adadelta starts slowly.
    """
    raise NotImplementedError('tree_map the squared-gradient average first, then the update u, then the squared-update average')


def l1_penalty(params, weight: float) -> jax.Array:
    """The L1 penalty over every leaf of a parameter pytree: ``weight * sum_leaves sum |p|``.

    Lecture: 001_8ff93c9bfb889e45.txt, "Other ways to tune/improve your model": "L1/L2
    regularization". Its gradient is ``weight * sign(p)``: it pushes small weights to exactly 0
    (sparse weights), where L2 (:func:`l2_penalty`) only shrinks them. As Keras'
    ``regularizers.l1(weight)``. ``{"w": [[1, -2]], "b": [2]}`` with ``weight=0.1`` -> 0.1 * 5 = 0.5.
    """
    raise NotImplementedError('jax.tree_util.tree_leaves lists every array of the tree; jnp.abs')


def l2_penalty(params, weight_decay: float) -> jax.Array:
    """The L2 penalty over every leaf of a parameter pytree: ``weight_decay / 2 * sum_leaves ||p||^2``.

    Its gradient is ``weight_decay * p``: adding it to the loss is "weight decay". Returns a float32
    scalar. ``{"w": [[1, 2]], "b": [2]}`` with ``weight_decay=0.1`` -> 0.05 * (1 + 4 + 4) = 0.45.
    Lecture: 001_8ff93c9bfb889e45.txt, "Other ways to tune/improve your model": "L1/L2
    regularization".
    """
    raise NotImplementedError('jax.tree_util.tree_leaves lists every array of the tree')


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The fraction of examples whose highest logit is the label.

    Shapes: logits (N, C), labels int (N,) -> float32 scalar in [0, 1]. The metric the lectures'
    models are compiled with (``metrics=['accuracy']``, 003_dd4e96de96f4046f.txt).
    """
    raise NotImplementedError('jnp.argmax over the class axis, compared with the labels')


def confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int) -> jax.Array:
    """The confusion matrix: ``m[i, j]`` = number of examples of true class i predicted as j.

    Shapes: labels int (N,), predictions int (N,) -> int32 (num_classes, num_classes); rows are
    the true classes, so row sums are the class counts and the diagonal counts the correct ones.
    ``num_classes`` is a plain Python int (static under ``jax.jit``). Lecture:
    004_9604be48adb20edc.txt, "Steps of creating a world-class Image Classifier", step 6, "Analyze
    the results" (fast.ai's ``ClassificationInterpretation``: its confusion matrix).
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
