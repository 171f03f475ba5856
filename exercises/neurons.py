# Lab 1 (neurons), generated from the reference solution. Fill in every
# `raise NotImplementedError(...)`, then grade one function with `make check EX=sigmoid`
# (any function's name; EX=neurons for the whole lab), here or in the folder above.
"""Lab 1 — Neurons and backprop.

A neuron computes a weighted sum of its inputs plus a bias and passes it through an activation
(lecture 002_7bece5f3dd1db8ed.txt, slide "ANN: Basic Neuron Visualization – In Vector Notation"):

    z = b + sum_i x_i w_i = b + x^T w        a = f(z)

With the sigmoid as ``f`` "a neuron is simply a 'unit' of logistic regression" (slide "ANN: Relation
to Logistic Regression"). A layer of neurons is :func:`dense`; a network is a composition of
layers; training needs the gradient of a loss with respect to every weight, which backpropagation
computes with the chain rule, one layer at a time, from the output back to the input.

The activations the lectures list: sigmoid, tanh and ReLU (001_8ff93c9bfb889e45.txt, "Activation
Functions"), leaky ReLU (002_7bece5f3dd1db8ed.txt, "ANN: Other Activation Functions"), PReLU and
softmax (003_dd4e96de96f4046f.txt, "Activation function"), maxout and ELU
(004_9604be48adb20edc.txt, "Activation function"). The losses: cross-entropy for classification,
mean squared error for regression (000_271ae1d9aab5f653.txt, "Choose a loss function").

Conventions for the whole course: arrays are ``jax.Array`` (use ``jax.numpy as jnp``, never
``numpy``, inside functions so that ``jax.jit``, ``jax.vmap`` and ``jax.grad`` work), float32, the
batch axis first. Nothing modifies its inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


# --- activations -------------------------------------------------------------------------------

def sigmoid(x: jax.Array) -> jax.Array:
    """The logistic sigmoid, elementwise: ``s(x) = 1 / (1 + exp(-x))``.

    Any shape -> the same shape, values in [0, 1]. ``s(0) = 0.5``, ``s(2) ≈ 0.8808``.
    Lecture: 001_8ff93c9bfb889e45.txt, "Sigmoid": σ(x) = 1 / (1 + e^-x).
    Write it from the formula (``jax.nn.sigmoid`` is not allowed). Large inputs such as
    ``x = ±1000`` must give 0 and 1, not NaN, and the gradient must stay finite there: the
    naive ``1 / (1 + exp(-x))`` has the right value at ``x = -100``, but ``exp(100) = inf`` makes
    its gradient ``inf / inf = NaN``.
    """
    raise NotImplementedError('exp(-|x|) never overflows: use it for both signs of x')


def tanh(x: jax.Array) -> jax.Array:
    """The hyperbolic tangent, elementwise: ``tanh(x) = (e^x - e^-x) / (e^x + e^-x)``.

    Any shape -> the same shape, values in [-1, 1]; ``tanh(x) = 2 s(2x) - 1``. Write it from the
    formula (``jnp.tanh`` is not allowed). ``x = ±100`` must give ±1, not ``inf / inf = NaN``,
    and a finite gradient.
    Lecture: 002_7bece5f3dd1db8ed.txt, "ANN: Other Activation Functions":
    tanh(z) = sinh(z) / cosh(z) = (e^2z - 1) / (e^2z + 1).
    """
    raise NotImplementedError('write it with exp(-2|x|) and the sign of x')


def relu(x: jax.Array) -> jax.Array:
    """Rectified linear unit, elementwise: ``relu(x) = max(0, x)``. Any shape -> same shape.

    Lecture: 001_8ff93c9bfb889e45.txt, "ReLU": max(0, x); 002_7bece5f3dd1db8ed.txt, "ANN: Other
    Activation Functions": ReLU(z) = 0 for z < 0, z for z >= 0.
    """
    raise NotImplementedError('jnp.where picks elementwise between two arrays')


def leaky_relu(x: jax.Array, negative_slope: float = 0.1) -> jax.Array:
    """Leaky ReLU, elementwise: ``x`` for ``x >= 0``, ``negative_slope * x`` otherwise.

    Lecture: 004_9604be48adb20edc.txt, "Leaky ReLU": max(0.1x, x) (hence the default slope 0.1);
    002_7bece5f3dd1db8ed.txt, "ANN: Other Activation Functions": LReLU(z) = αz for z < 0.
    ``leaky_relu(-2.0) = -0.2``; ``leaky_relu(-2.0, 0.01) = -0.02``; ``leaky_relu(3.0) = 3.0``.
    Any shape -> same shape.
    """
    raise NotImplementedError('jnp.where, with the negative_slope argument')


def prelu(x: jax.Array, alpha: jax.Array) -> jax.Array:
    """Parametric ReLU: a leaky ReLU whose negative slope is *learned*, one per channel.

    ``prelu(x, alpha) = x`` for ``x >= 0``, ``alpha * x`` otherwise, with ``alpha`` broadcast
    along the last (channel) axis. Lecture: 003_dd4e96de96f4046f.txt, "Activation function"
    (PRELU). Shapes: x (..., C), alpha (C,) -> (..., C). Because alpha is a parameter, the
    gradient with respect to ``alpha`` must be right too: ``d prelu / d alpha = x`` where
    ``x < 0``, else 0. ``prelu([-2, 3], [0.25, 0.25]) = [-0.5, 3]``.
    """
    raise NotImplementedError('jnp.where, with alpha broadcast against the last axis')


def elu(x: jax.Array, alpha: float = 1.0) -> jax.Array:
    """Exponential linear unit, elementwise: ``x`` for ``x > 0``, ``alpha (e^x - 1)`` otherwise.

    Lecture: 004_9604be48adb20edc.txt, "ELU": x for x >= 0, α(e^x - 1) for x < 0.

    ``elu(-1.0) ≈ -0.6321``. Any shape -> same shape. Its gradient must be finite everywhere, also
    at ``x = 100``: ``jnp.where`` differentiates *both* branches, and ``exp(100) = inf`` in the
    branch you do not use still turns the gradient into ``0 * inf = NaN``.
    """
    raise NotImplementedError('jnp.where; clamp the input of the exponential so the unused branch stays finite')


def maxout(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """A maxout layer: each of the M units is the max of K linear pieces.

    ``out[n, m] = max_k (sum_d x[n, d] w[d, m, k] + b[m, k])``.

    Shapes: x (N, D), w (D, M, K), b (M, K) -> (N, M).
    With K = 2, w[..., 1] = 0 and b = 0 this is ``relu(x w[..., 0])``.
    Lecture: 004_9604be48adb20edc.txt, "Maxout": max(w1^T x + b1, w2^T x + b2) (K = 2).
    """
    raise NotImplementedError('jnp.einsum can form all M*K linear pieces at once')


# --- layers and losses ---------------------------------------------------------------------------

def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """Softmax along ``axis``: ``softmax(x)_i = exp(x_i) / sum_j exp(x_j)``.

    Any shape -> the same shape; the values along ``axis`` are positive and sum to 1.
    ``softmax([1, 2, 3]) ≈ [0.0900, 0.2447, 0.6652]``.
    Stable: ``softmax(x) = softmax(x - max(x))``, so subtract the max along ``axis`` first;
    otherwise ``x = [1000, 1000]`` overflows to ``inf / inf = NaN`` instead of ``[0.5, 0.5]``.
    (``jax.nn.softmax`` is not allowed.) Lecture: 003_dd4e96de96f4046f.txt, "Activation function"
    ("SoftMax (normalized exponential function)"); the output layer of 002_7bece5f3dd1db8ed.txt,
    "ANN: Feedforward Neural Network – Calculations".
    """
    raise NotImplementedError('subtract the max along `axis` (keepdims=True) before exponentiating')


def dense(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """A fully connected layer without activation: ``z = x W + b``.

    Shapes: x (N, D_in), W (D_in, D_out), b (D_out,) -> z (N, D_out). Every column of W is one
    neuron's weights ``w``: with D_out = 1 this is the lecture's single neuron ``z = b + x^T w``
    (002_7bece5f3dd1db8ed.txt, "ANN: Basic Neuron Visualization – In Vector Notation"); the
    linear classifier ``f(x, W) = Wx + b`` of 004_9604be48adb20edc.txt, "NNs trained for CIFAR10
    dataset", is this layer with 3072 inputs and 10 outputs.
    """
    raise NotImplementedError('a matrix product and a broadcast addition')


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of integer labels.

    ``loss = mean_n [ -log softmax(logits_n)[labels_n] ]
           = mean_n [ logsumexp(logits_n) - logits_n[labels_n] ]``.

    Shapes: logits float (N, C), labels int (N,) with values in [0, C) -> scalar ().
    Uniform logits give ``log C`` (2.3026 for C = 10). Must stay finite for logits of 1000.
    Lecture: 000_271ae1d9aab5f653.txt, "Choose a loss function": for classification
    "Cross-entropy is preferred".
    """
    raise NotImplementedError("logsumexp with the max subtracted; jnp.take_along_axis picks each row's label")


def mean_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error, the regression loss: ``mean((predictions - targets)^2)`` over every
    element.

    Lecture: 000_271ae1d9aab5f653.txt, "Choose a loss function": for a regression problem ("you
    want to predict a continuous number") "Mean squared error is preferred".
    Shapes: any two equal shapes -> float32 scalar (). ``[1, 2, 3]`` vs ``[1, 0, 0]`` gives
    (0 + 4 + 9) / 3 = 13/3 ≈ 4.3333 (as Keras' ``mean_squared_error`` averaged over the batch).
    """
    raise NotImplementedError('one jnp.mean of the squared difference')


# --- gradients by hand ---------------------------------------------------------------------------

def sigmoid_derivative(x: jax.Array) -> jax.Array:
    """The derivative of the sigmoid, elementwise: ``s'(x) = s(x) (1 - s(x))``.

    Any shape -> same shape; ``s'(0) = 0.25`` (its maximum: a sigmoid layer scales gradients by at
    most 1/4, the root of the vanishing gradient). Lecture: 002_7bece5f3dd1db8ed.txt, "ANN: Issue
    with ANN and Sigmoid": "It is known that σ'(z) = σ(z)(1 - σ(z)) <= .25".
    """
    raise NotImplementedError('reuse sigmoid')


def softmax_jvp(logits: jax.Array, tangent: jax.Array) -> jax.Array:
    """The softmax Jacobian times a vector, along the last axis.

    With ``p = softmax(z)`` the Jacobian is ``J = diag(p) - p p^T``, so
    ``J v = p * (v - sum_j p_j v_j)``: no C x C matrix needed.

    Shapes: logits (..., C), tangent (..., C) -> (..., C). Equals
    ``jax.jvp(softmax, (logits,), (tangent,))[1]``.
    """
    raise NotImplementedError('only elementwise products and one sum along the last axis are needed')


def softmax_cross_entropy_grad(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The gradient of :func:`cross_entropy` (the mean over N) with respect to the logits.

    ``d loss / d logits = (softmax(logits) - onehot(labels)) / N``: the famous ``p - y``, the
    lecture's ``(ŷ - y)`` (002_7bece5f3dd1db8ed.txt, "ANN: Training the Neural Network -
    Backpropagation", step 3).

    Shapes: logits (N, C), labels int (N,) -> (N, C). Each row sums to 0.
    """
    raise NotImplementedError('jax.nn.one_hot turns labels into y')


def add_multiply_backward(x: float, y: float, z: float) -> dict:
    """Forward and backward pass through the lecture's circuit ``f = (x + y) z``.

    With ``q = x + y`` and ``f = q z``: ``df/dz = q``, ``df/dq = z``, and the add gate passes the
    gradient on unchanged: ``df/dx = df/dy = z``.

    Returns ``{"f": f, "dx": df/dx, "dy": df/dy, "dz": df/dz}``.
    Lecture: 004_9604be48adb20edc.txt, "Backpropagation: a simple example":
    f(x, y, z) = (x + y)z, e.g. x = -2, y = 5, z = -4; q = x + y, dq/dx = 1, dq/dy = 1;
    f = qz, df/dq = z, df/dz = q; chain rule df/dy = df/dq dq/dy. So f = -12, df/dx = -4,
    df/dy = -4, df/dz = 3.
    """
    raise NotImplementedError('forward: q = x + y, f = q z; backward: what does each gate do to the gradient?')


def mlp3_loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """The lecture's feedforward network and its cross-entropy loss.

    Lecture: 002_7bece5f3dd1db8ed.txt, "ANN: Feedforward Neural Network – Calculations":
    z2 = a1 W1, a2 = σ(z2); z3 = a2 W2, a3 = σ(z3); z4 = a3 W3, a4 = softmax(z4) — two sigmoid
    hidden layers and a softmax output (here every layer also has a bias):

    ``h1 = s(x W1 + b1)``, ``h2 = s(h1 W2 + b2)``, ``p = softmax(h2 W3 + b3)``,
    ``loss = -sum(y * log p) / N`` (cross-entropy, averaged over the N examples).

    params: {"w1": (D, H1), "b1": (H1,), "w2": (H1, H2), "b2": (H2,), "w3": (H2, C), "b3": (C,)};
    x (N, D), y (N, C) one-hot targets (rows of probabilities work too) -> scalar ().
    Stable: take ``log p`` as ``z - logsumexp(z)`` with the max subtracted, never ``log(softmax)``.
    """
    raise NotImplementedError('two sigmoid layers, then log-softmax of the last layer (max subtracted) and the mean cross-entropy')


def mlp3_backward(params: dict, x: jax.Array, y: jax.Array) -> dict:
    """The gradient of :func:`mlp3_loss` with respect to every parameter, written by hand.

    Lecture: 002_7bece5f3dd1db8ed.txt, "ANN: Training the Neural Network - Backpropagation"
    (step 3, "Using Chain Rule and Calculus"):

        dJ/dW(3) = (ŷ - y) · a(3)
        dJ/dW(2) = (ŷ - y) · W(3) · σ'(z(3)) · a(2)
        dJ/dW(1) = (ŷ - y) · W(3) · σ'(z(3)) · W(2) · σ'(z(2)) · X      with σ'(z) = σ(z)(1 - σ(z))

    In matrix form, with ``delta`` the gradient of the loss w.r.t. a layer's pre-activation:

    - ``delta3 = (p - y) / N``  (softmax + cross-entropy: the lecture's ŷ - y, averaged)
    - ``dW3 = h2^T delta3``, ``db3 = sum_n delta3``
    - ``delta2 = (delta3 W3^T) * h2 (1 - h2)``; ``dW2 = h1^T delta2``, ``db2 = sum_n delta2``
    - ``delta1 = (delta2 W2^T) * h1 (1 - h1)``; ``dW1 = x^T delta1``, ``db1 = sum_n delta1``

    Returns a dict with the same keys and shapes as ``params``. Must equal
    ``jax.grad(mlp3_loss)(params, x, y)`` for one-hot ``y`` — but do not call
    ``jax.grad``/``jax.vjp`` here.
    """
    raise NotImplementedError('redo the forward pass keeping h1, h2 and p = softmax(z3); then the deltas from the docstring, last layer first')


def layer_gradient_norms(params: list, x: jax.Array, y: jax.Array) -> jax.Array:
    """Measure the vanishing gradient: the norm of the loss gradient for each layer's weights.

    The network applies ``h = s(h W_l + b_l)`` for every layer ``l`` (the sigmoid also on the last
    one) and the loss is the squared error ``0.5 * sum((out - y)^2) / N``.
    Lecture: 002_7bece5f3dd1db8ed.txt, "ANN: Issue with ANN and Sigmoid": "with many layers,
    multiple multiplication of σ'(z) results in a very small value, close to 0" — the
    "Vanishing gradient" problem.

    params: a list of L dicts ``{"w": (D_l, D_{l+1}), "b": (D_{l+1},)}``; x (N, D_0), y (N, D_L)
    -> float32 (L,) with ``||d loss / d W_l||`` (Frobenius norm), first layer first. In a deep
    sigmoid network the first entries are orders of magnitude smaller than the last.
    Use ``jax.grad`` here.
    """
    raise NotImplementedError('write the loss as a function of the parameter list, take jax.grad, then a norm per layer')
