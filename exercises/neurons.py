# Lab 1 (neurons), generated from the reference solution. Fill in every
# `raise NotImplementedError(...)`, then grade one function with `make check EX=sigmoid`
# (any function's name; EX=neurons for the whole lab), here or in the folder above.
"""Lab 1 — Neurons and backprop.

A neuron computes a weighted sum ``z = x W + b`` and passes it through an activation ``a = f(z)``.
A network is a composition of such layers; training needs the gradient of a loss with respect to
every weight, which backpropagation computes with the chain rule, one layer at a time, from the
output back to the input.

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
    """
    raise NotImplementedError('write it with exp(-2|x|) and the sign of x')


def relu(x: jax.Array) -> jax.Array:
    """Rectified linear unit, elementwise: ``relu(x) = max(0, x)``. Any shape -> same shape."""
    raise NotImplementedError('jnp.where picks elementwise between two arrays')


def leaky_relu(x: jax.Array, negative_slope: float = 0.01) -> jax.Array:
    """Leaky ReLU, elementwise: ``x`` for ``x >= 0``, ``negative_slope * x`` otherwise.

    ``leaky_relu(-2.0) = -0.02``; ``leaky_relu(3.0) = 3.0``. Any shape -> same shape.
    """
    raise NotImplementedError('jnp.where, with the negative_slope argument')


def elu(x: jax.Array, alpha: float = 1.0) -> jax.Array:
    """Exponential linear unit, elementwise: ``x`` for ``x > 0``, ``alpha (e^x - 1)`` otherwise.

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
    """
    raise NotImplementedError('jnp.einsum can form all M*K linear pieces at once')


# --- layers and losses ---------------------------------------------------------------------------

def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """Softmax along ``axis``: ``softmax(x)_i = exp(x_i) / sum_j exp(x_j)``.

    Any shape -> the same shape; the values along ``axis`` are positive and sum to 1.
    ``softmax([1, 2, 3]) ≈ [0.0900, 0.2447, 0.6652]``.
    Stable: ``softmax(x) = softmax(x - max(x))``, so subtract the max along ``axis`` first;
    otherwise ``x = [1000, 1000]`` overflows to ``inf / inf = NaN`` instead of ``[0.5, 0.5]``.
    (``jax.nn.softmax`` is not allowed.)
    """
    raise NotImplementedError('subtract the max along `axis` (keepdims=True) before exponentiating')


def dense(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """A fully connected layer without activation: ``z = x W + b``.

    Shapes: x (N, D_in), W (D_in, D_out), b (D_out,) -> z (N, D_out).
    """
    raise NotImplementedError('a matrix product and a broadcast addition')


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of integer labels.

    ``loss = mean_n [ -log softmax(logits_n)[labels_n] ]
           = mean_n [ logsumexp(logits_n) - logits_n[labels_n] ]``.

    Shapes: logits float (N, C), labels int (N,) with values in [0, C) -> scalar ().
    Uniform logits give ``log C`` (2.3026 for C = 10). Must stay finite for logits of 1000.
    """
    raise NotImplementedError("logsumexp with the max subtracted; jnp.take_along_axis picks each row's label")


# --- gradients by hand ---------------------------------------------------------------------------

def sigmoid_derivative(x: jax.Array) -> jax.Array:
    """The derivative of the sigmoid, elementwise: ``s'(x) = s(x) (1 - s(x))``.

    Any shape -> same shape; ``s'(0) = 0.25`` (its maximum: a sigmoid layer scales gradients by at
    most 1/4, the root of the vanishing gradient).
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

    ``d loss / d logits = (softmax(logits) - onehot(labels)) / N``: the famous ``p - y``.

    Shapes: logits (N, C), labels int (N,) -> (N, C). Each row sums to 0.
    """
    raise NotImplementedError('jax.nn.one_hot turns labels into y')


def add_multiply_backward(x: float, y: float, z: float) -> dict:
    """Forward and backward pass through the lecture's circuit ``f = (x + y) z``.

    With ``q = x + y`` and ``f = q z``: ``df/dz = q``, ``df/dq = z``, and the add gate passes the
    gradient on unchanged: ``df/dx = df/dy = z``.

    Returns ``{"f": f, "dx": df/dx, "dy": df/dy, "dz": df/dz}``. Lecture example:
    x = -2, y = 5, z = -4 gives f = -12, dx = -4, dy = -4, dz = 3.
    """
    raise NotImplementedError('forward: q = x + y, f = q z; backward: what does each gate do to the gradient?')


def mlp3_loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """The lecture's 3-layer sigmoid network and its squared-error loss.

    ``h1 = s(x W1 + b1)``, ``h2 = s(h1 W2 + b2)``, ``out = s(h2 W3 + b3)``,
    ``loss = 0.5 * sum((out - y)^2) / N``.

    params: {"w1": (D, H1), "b1": (H1,), "w2": (H1, H2), "b2": (H2,), "w3": (H2, O), "b3": (O,)};
    x (N, D), y (N, O) -> scalar ().
    """
    raise NotImplementedError('three sigmoid layers, then the squared error summed over outputs and averaged over examples')


def mlp3_backward(params: dict, x: jax.Array, y: jax.Array) -> dict:
    """The gradient of :func:`mlp3_loss` with respect to every parameter, written by hand.

    Backward, with ``delta`` the gradient of the loss w.r.t. a layer's pre-activation ``z``:

    - ``delta3 = (out - y) / N * out (1 - out)``
    - ``dW3 = h2^T delta3``, ``db3 = sum_n delta3``
    - ``delta2 = (delta3 W3^T) * h2 (1 - h2)``; ``dW2 = h1^T delta2``, ``db2 = sum_n delta2``
    - ``delta1 = (delta2 W2^T) * h1 (1 - h1)``; ``dW1 = x^T delta1``, ``db1 = sum_n delta1``

    Returns a dict with the same keys and shapes as ``params``. Must equal
    ``jax.grad(mlp3_loss)(params, x, y)`` — but do not call ``jax.grad``/``jax.vjp`` here.
    """
    raise NotImplementedError('redo the forward pass keeping h1, h2, out; then the deltas from the docstring, last layer first')


def layer_gradient_norms(params: list, x: jax.Array, y: jax.Array) -> jax.Array:
    """Measure the vanishing gradient: the norm of the loss gradient for each layer's weights.

    The network applies ``h = s(h W_l + b_l)`` for every layer ``l`` (the sigmoid also on the last
    one) and the loss is ``0.5 * sum((out - y)^2) / N`` as in :func:`mlp3_loss`.

    params: a list of L dicts ``{"w": (D_l, D_{l+1}), "b": (D_{l+1},)}``; x (N, D_0), y (N, D_L)
    -> float32 (L,) with ``||d loss / d W_l||`` (Frobenius norm), first layer first. In a deep
    sigmoid network the first entries are orders of magnitude smaller than the last.
    Use ``jax.grad`` here.
    """
    raise NotImplementedError('write the loss as a function of the parameter list, take jax.grad, then a norm per layer')
