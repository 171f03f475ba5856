"""Planted wrong answers: for every exercise at least one realistic mistake — the text that
replaces the solution block of that function — with what the student must be told: a substring of
what the student reads about the exercise (``says``), a substring of the first hint shown (``hint``; the most useful
one, see :meth:`grader.results.ExerciseResult.hints`), hints that must *not* be shown because they
address another mistake (``absent``), and whether the whole exercise scores 0 (``zero``: the
"from scratch" rule).

``function@decorator`` names the module-level block right above a function (the ``@jax.jit`` of
``train_step``). To stay within the time budget the mistakes are graded in rounds: each round
plants at most one mistake per function (never in a function that another planted function
calls) in all the lab modules of one submission, and grades only the planted exercises.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

import pytest

from grader.assign import replace_block, solution_blocks
from grader.runner import grade_submission
from grader.specs import MODULES

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"


class M(NamedTuple):
    """One planted mistake and what its feedback must say."""

    module: str
    owner: str          # the function (or "function@decorator") whose solution block is replaced
    body: str           # the planted text
    says: str           # in the reason or a failed case's message
    hint: str           # in the first hint shown
    absent: tuple = ()  # in no hint shown
    zero: bool = False  # the exercise scores 0


MUTANTS = [
    # --- neurons
    M("neurons", "sigmoid", "return jnp.exp(x) / (1 + jnp.exp(x))", "got NaN",
      'no NaN for large |x|'),
    M("neurons", "tanh", "return jnp.tanh(x)", "uses tanh",
      'from the formula with jnp.exp', zero=True),
    M("neurons", "tanh", "return (jnp.exp(x) - jnp.exp(-x)) / (jnp.exp(x) + jnp.exp(-x))", "got NaN",
      'e^100 / e^100 is inf / inf'),
    M("neurons", "relu", "if jnp.all(x > 0):\n    return x\nreturn jnp.where(x > 0, x, 0.0)",
      "Python control flow", 'must also work under jax.jit'),
    M("neurons", "leaky_relu", "return jnp.where(x >= 0, x, 0.01 * x)", "default slope 0.1",
      "the default negative_slope is the lecture's 0.1"),
    M("neurons", "elu", "return jnp.where(x > 0, x, alpha * (jnp.exp(x) - 1))",
      "differentiates both branches", 'differentiates both branches'),
    M("neurons", "maxout", "return jnp.max(jnp.einsum('nd,dmk->nmk', x, w) + b, axis=1)",
      "shape mismatch", 'max over k (the last axis)'),
    M("neurons", "softmax", "e = jnp.exp(x - jnp.max(x, axis=0, keepdims=True))\n"
                            "return e / e.sum(axis=0, keepdims=True)", "along the `axis` argument",
      'along the `axis` argument', absent=("overflows", "jax.jit")),
    M("neurons", "softmax", "e = jnp.exp(x)\nreturn e / e.sum(axis=axis, keepdims=True)",
      "subtract the max", 'exp(1000) overflows'),
    M("neurons", "dense", "return x @ w", "bias", 'every unit adds its bias'),
    M("neurons", "cross_entropy",
      "m = jnp.max(logits, axis=-1, keepdims=True)\n"
      "lse = jnp.log(jnp.sum(jnp.exp(logits - m), axis=-1)) + m[:, 0]\n"
      "return jnp.sum(lse - jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0])",
      "the loss is the *mean*", 'the loss is the *mean*'),
    M("neurons", "cross_entropy",
      "p = jnp.exp(logits) / jnp.exp(logits).sum(-1, keepdims=True)\n"
      "return -jnp.mean(jnp.log(p[jnp.arange(logits.shape[0]), labels]))",
      "log(softmax) overflows", 'log(softmax) overflows'),
    M("neurons", "sigmoid_derivative", "s = sigmoid(x)\nreturn s * (1 + s)", "expected 0.25",
      's(x) (1 - s(x))'),
    M("neurons", "softmax_jvp", "return softmax(logits) * tangent", "sum(p * v)", 'sum(p * v)'),
    M("neurons", "softmax_cross_entropy_grad",
      "return softmax(logits) - jax.nn.one_hot(labels, logits.shape[1])", "divide by N",
      'divide by N'),
    M("neurons", "add_multiply_backward",
      "q = x + y\nreturn {'f': q * z, 'dx': q, 'dy': z, 'dz': q}", "output['dx']",
      'df/dx = df/dy = z'),
    M("neurons", "leaky_relu", "return jnp.where(x >= 0, x, -negative_slope * x)",
      "leaky_relu(-2) = -0.2", "leaky_relu(-2) = -0.2"),
    M("neurons", "prelu", "return jnp.where(x >= 0, x, jax.lax.stop_gradient(alpha) * x)",
      "alpha is a parameter", "alpha is a parameter"),
    M("neurons", "prelu", "return jnp.where(x >= 0, x, alpha[0] * x)",
      "one slope per channel", "one slope per channel"),
    M("neurons", "mean_squared_error", "return jnp.sum((predictions - targets) ** 2)",
      "then average", "then average"),
    M("neurons", "mlp3_loss",
      "h1 = sigmoid(x @ params['w1'] + params['b1'])\nh2 = sigmoid(h1 @ params['w2'] + params['b2'])\n"
      "z = h2 @ params['w3'] + params['b3']\nz = z - jnp.max(z, axis=-1, keepdims=True)\n"
      "return -jnp.sum(y * (z - jnp.log(jnp.sum(jnp.exp(z), axis=-1, keepdims=True))))",
      "divide by N", "divide by N"),
    M("neurons", "mlp3_loss",
      "h1 = sigmoid(x @ params['w1'] + params['b1'])\nh2 = sigmoid(h1 @ params['w2'] + params['b2'])\n"
      "p = softmax(h2 @ params['w3'] + params['b3'])\nreturn -jnp.sum(y * jnp.log(p)) / x.shape[0]",
      "log(softmax(z)) overflows", "log(softmax(z)) overflows"),
    M("neurons", "mlp3_backward",
      "n = x.shape[0]\nh1 = sigmoid(x @ params['w1'] + params['b1'])\n"
      "h2 = sigmoid(h1 @ params['w2'] + params['b2'])\np = softmax(h2 @ params['w3'] + params['b3'])\n"
      "d3 = (p - y) / n\nd2 = d3 @ params['w3'].T\n"
      "d1 = (d2 @ params['w2'].T) * h1 * (1 - h1)\n"
      "return {'w1': x.T @ d1, 'b1': d1.sum(0), 'w2': h1.T @ d2, 'b2': d2.sum(0),\n"
      "        'w3': h2.T @ d3, 'b3': d3.sum(0)}", "sigmoid derivative", "sigmoid derivative"),
    M("neurons", "layer_gradient_norms",
      "def loss(ps):\n    h = x\n    for layer in ps:\n        h = sigmoid(h @ layer['w'] + layer['b'])\n"
      "    return 0.5 * jnp.sum((h - y) ** 2) / x.shape[0]\n"
      "g = jax.grad(loss)(params)\nreturn jnp.stack([jnp.linalg.norm(l['w']) for l in g][::-1])",
      "first layer first", 'first layer first'),
    # --- convolution
    M("convolution", "conv_output_size", "return (input_size - kernel_size + 2 * padding) // stride",
      "do not forget + 1", 'do not forget + 1', absent=("P counts on both sides",)),
    M("convolution", "conv_output_size",
      "return (input_size - kernel_size + 2 * padding) / stride + 1", "use // for integer division",
      '// S + 1, an int'),
    M("convolution", "conv_output_size",
      "span = input_size - kernel_size + padding\nif span < 0 or span % stride:\n"
      "    raise ValueError('bad')\nreturn span // stride + 1", "+ 2P", '+ 2P'),
    M("convolution", "conv_output_size",
      "return (input_size - kernel_size + 2 * padding) // stride + 1", "expected ValueError",
      'raise ValueError when (W - K + 2P) is not divisible'),
    M("convolution", "padding_amounts",
      "if mode == 'valid':\n    return (0, 0)\nif mode != 'same':\n    raise ValueError(mode)\n"
      "out = -(-input_size // stride)\ntotal = max((out - 1) * stride + kernel_size - input_size, 0)\n"
      "return (total - total // 2, total // 2)", "smaller half goes before",
      'smaller half goes before'),
    M("convolution", "zero_pad",
      "p = padding if isinstance(padding, int) else padding[0][0]\n"
      "return jnp.pad(image, ((p, 0), (p, 0), (0, 0)))", "shape mismatch",
      'P rows on top *and* bottom'),
    M("convolution", "conv2d_single",
      "kh, kw = kernel.shape\noh, ow = image.shape[0] - kh, image.shape[1] - kw\n"
      "out = jnp.zeros((oh, ow))\nfor u in range(kh):\n    for v in range(kw):\n"
      "        out = out + kernel[u, v] * image[u:u + oh, v:v + ow]\nreturn out", "shape mismatch",
      'a 3x3 output, no kernel flip'),
    M("convolution", "conv2d_single",
      "return jax.lax.conv(image[None, None], kernel[None, None], (1, 1), 'VALID')[0, 0]",
      "uses conv_general_dilated", 'for every kernel offset', zero=True),
    M("convolution", "conv2d",
      "kh, kw = w.shape[:2]\np = padding if isinstance(padding, int) else 1\n"
      "xp = jnp.pad(x, ((0, 2 * p), (0, 2 * p), (0, 0)))\n"
      "oh = (xp.shape[0] - kh) // stride + 1\now = (xp.shape[1] - kw) // stride + 1\n"
      "out = jnp.zeros((oh, ow, w.shape[3]))\nfor u in range(kh):\n    for v in range(kw):\n"
      "        out = out + xp[u:u + stride * (oh - 1) + 1:stride, v:v + stride * (ow - 1) + 1:stride] @ w[u, v]\n"
      "return out + b", "zero padding on every side", 'zero padding on every side'),
    M("convolution", "conv2d",
      "kh, kw = w.shape[:2]\np = padding if isinstance(padding, int) else 1\n"
      "xp = jnp.pad(x, ((p, p), (p, p), (0, 0)))\noh, ow = xp.shape[0] - kh + 1, xp.shape[1] - kw + 1\n"
      "out = jnp.zeros((oh, ow, w.shape[3]))\nfor u in range(kh):\n    for v in range(kw):\n"
      "        out = out + xp[u:u + oh, v:v + ow] @ w[u, v]\nreturn out + b", "shape mismatch",
      'output size (W - K + 2P) // S + 1'),
    M("convolution", "classic_kernel",
      "v = [[1, 0, -1]] * 3\nk = {'vertical_edge': [list(r) for r in zip(*v)], 'horizontal_edge': v,\n"
      "     'vertical_line': [[-1, 2, -1]] * 3, 'horizontal_line': [[-1] * 3, [2] * 3, [-1] * 3],\n"
      "     'edge': [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], 'sharpen': [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],\n"
      "     'box_blur': [[1 / 9] * 3] * 3, 'gaussian_blur': [[1 / 16, 1 / 8, 1 / 16], [1 / 8, 1 / 4, 1 / 8], [1 / 16, 1 / 8, 1 / 16]]}\n"
      "if name not in k:\n    raise ValueError(name)\nreturn jnp.asarray(k[name], jnp.float32)",
      "see the table", 'see the table'),
    M("convolution", "filter_image",
      "kh, kw = kernel.shape\nh, w = image.shape[0] - kh + 1, image.shape[1] - kw + 1\n"
      "out = jnp.zeros((h, w))\nfor u in range(kh):\n    for v in range(kw):\n"
      "        out = out + kernel[u, v] * image[u:u + h, v:v + w]\nreturn out", "shape mismatch",
      'pad KH // 2 zeros'),
    M("convolution", "pixel_use_counts",
      "def per_axis(n, k):\n    starts = jnp.arange(n - k + 1)\n    idx = jnp.arange(n)\n"
      "    c = (idx[None, :] >= starts[:, None]) & (idx[None, :] < starts[:, None] + k)\n"
      "    return c.sum(0).astype(jnp.int32)\nkh, kw = _as_pair(kernel_size)\n"
      "return per_axis(height, kh)[:, None] * per_axis(width, kw)[None, :]",
      "windows start P pixels before the image", "windows start P pixels before the image"),
    M("convolution", "dense_param_count", "return math.prod(input_shape) * units",
      "one bias per unit", 'one bias per unit'),
    M("convolution", "conv_param_count",
      "kh, kw = _as_pair(kernel_size)\nreturn kh * kw * filters + filters", "sees all C_in",
      'sees all C_in'),
    # --- pooling
    M("pooling", "max_pool",
      "wh, ww = _as_pair(window)\nsh, sw = _as_pair(stride if stride is not None else 1)\n"
      "xp = jnp.pad(x, ((padding, padding), (padding, padding), (0, 0)), constant_values=-jnp.inf)\n"
      "oh = (xp.shape[0] - wh) // sh + 1\now = (xp.shape[1] - ww) // sw + 1\nout = None\n"
      "for u in range(wh):\n    for v in range(ww):\n"
      "        s = xp[u:u + sh * (oh - 1) + 1:sh, v:v + sw * (ow - 1) + 1:sw, :]\n"
      "        out = s if out is None else jnp.maximum(out, s)\nreturn out",
      "stride defaults to the window", 'the stride defaults to the window'),
    M("pooling", "max_pool",
      "wh, ww = _as_pair(window)\nsh, sw = _as_pair(stride if stride is not None else window)\n"
      "xp = jnp.pad(x, ((padding, padding), (padding, padding), (0, 0)))\n"
      "oh = (xp.shape[0] - wh) // sh + 1\now = (xp.shape[1] - ww) // sw + 1\nout = None\n"
      "for u in range(wh):\n    for v in range(ww):\n"
      "        s = xp[u:u + sh * (oh - 1) + 1:sh, v:v + sw * (ow - 1) + 1:sw, :]\n"
      "        out = s if out is None else jnp.maximum(out, s)\nreturn out", "pad with -inf",
      'pad with -inf'),
    M("pooling", "max_pool",
      "import flax.linen as nn\nw = _as_pair(window)\ns = _as_pair(stride if stride is not None else window)\n"
      "return nn.max_pool(x[None], w, strides=s, padding=((padding, padding), (padding, padding)))[0]",
      "uses reduce_window", 'combine the strided slices', zero=True),
    M("pooling", "avg_pool",
      "wh, ww = _as_pair(window)\nsh, sw = _as_pair(stride if stride is not None else window)\n"
      "xp = jnp.pad(x, ((padding, padding), (padding, padding), (0, 0)))\n"
      "oh = (xp.shape[0] - wh) // sh + 1\now = (xp.shape[1] - ww) // sw + 1\n"
      "total = jnp.zeros((oh, ow, x.shape[2]))\nfor u in range(wh):\n    for v in range(ww):\n"
      "        total = total + xp[u:u + sh * (oh - 1) + 1:sh, v:v + sw * (ow - 1) + 1:sw, :]\n"
      "return total", "expected [[3.25, 5.25], [2, 2]]", 'expected [[3.25, 5.25], [2, 2]]'),
    M("pooling", "global_avg_pool", "return jnp.mean(x, axis=(1, 2))", "axes (-3, -2)",
      'the axes (-3, -2)'),
    M("pooling", "flatten", "return x.reshape(-1)", "keep the batch axis", 'keep the batch axis'),
    M("pooling", "dropout",
      "if not train or rate == 0.0:\n    return x\nkeep = jax.random.bernoulli(key, 1.0 - rate, x.shape)\n"
      "return jnp.where(keep, x, 0.0)", "scaled by 1 / (1 - rate)", 'scaled by 1 / (1 - rate)'),
    M("pooling", "dropout",
      "if rate == 0.0:\n    return x\nif rate >= 1.0:\n    return jnp.zeros_like(x)\n"
      "keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)\n"
      "return jnp.where(keep, x / (1.0 - rate), 0.0)", "dropout only acts in training",
      'dropout only acts in training'),
    M("pooling", "dropout",
      "global _CALLS\n_CALLS = globals().get('_CALLS', 0) + 1\nif not train or rate == 0.0:\n    return x\n"
      "if rate >= 1.0:\n    return jnp.zeros_like(x)\n"
      "keep = jax.random.bernoulli(jax.random.fold_in(key, _CALLS), 1.0 - rate, x.shape)\n"
      "return jnp.where(keep, x / (1.0 - rate), 0.0)", "gave different results",
      'with the key given'),
    # --- training
    M("training", "steps_per_epoch", "return num_examples // batch_size", "round *up*",
      "round *up*"),
    M("training", "adadelta_step",
      "e_g = jax.tree_util.tree_map(lambda e, g: rho * e + (1 - rho) * g * g, state['e_g'], grads)\n"
      "u = jax.tree_util.tree_map(lambda g, eg: g / jnp.sqrt(eg + eps), grads, e_g)\n"
      "e_x = jax.tree_util.tree_map(lambda e, d: rho * e + (1 - rho) * d * d, state['e_x'], u)\n"
      "new = jax.tree_util.tree_map(lambda p, d: p - learning_rate * d, params, u)\n"
      "return new, {'e_g': e_g, 'e_x': e_x}", "*previous* e_x", "*previous* e_x"),
    M("training", "l1_penalty",
      "return weight * sum(jnp.sum(p) for p in jax.tree_util.tree_leaves(params))", "*absolute*",
      "*absolute*"),
    M("training", "minibatch_indices",
      "perm = jax.random.permutation(jax.random.PRNGKey(seed), num_examples)\n"
      "nb = num_examples // batch_size\nreturn perm[:nb * batch_size].reshape(nb, batch_size)",
      "fold the epoch into the key", 'fold the epoch into the key'),
    M("training", "train_test_split",
      "perm = jax.random.permutation(jax.random.PRNGKey(seed), num_examples)\n"
      "n_test = math.ceil(test_fraction * num_examples)\nreturn perm[:num_examples - n_test], perm[num_examples - n_test:]",
      "*first* ceil", '*first* ceil'),
    M("training", "kfold_indices",
      "idx = jnp.arange(num_examples, dtype=jnp.int32)\ns = num_examples // k\n"
      "return [(jnp.concatenate([idx[:i * s], idx[(i + 1) * s:]]), idx[i * s:(i + 1) * s]) for i in range(k)]",
      "get one extra index", 'one extra index'),
    M("training", "sgd_step",
      "return jax.tree_util.tree_map(lambda p, g: p + learning_rate * g, params, grads)",
      "against* the gradient", '*against* the gradient'),
    M("training", "adam_init",
      "z = jax.tree_util.tree_map(jnp.zeros_like, params)\nreturn {'count': jnp.zeros(()), 'mu': z, 'nu': z}",
      "dtype mismatch", '"count": int32 0'),
    M("training", "adam_step",
      "t = state['count'] + 1\n"
      "mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state['mu'], grads)\n"
      "nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state['nu'], grads)\n"
      "new = jax.tree_util.tree_map(lambda p, m, v: p - learning_rate * m / (jnp.sqrt(v) + eps), params, mu, nu)\n"
      "return new, {'count': t, 'mu': mu, 'nu': nu}", "bias-correct", 'bias-correct'),
    M("training", "l2_penalty",
      "return weight_decay * sum(jnp.sum(p ** 2) for p in jax.tree_util.tree_leaves(params))",
      "weight_decay / 2", 'weight_decay / 2'),
    M("training", "accuracy", "return jnp.mean(jnp.argmax(logits, axis=0) == labels)", "class* axis",
      '*class* axis'),
    M("training", "confusion_matrix",
      "return jnp.zeros((num_classes, num_classes), jnp.int32).at[predictions, labels].add(1)",
      "rows are the *true* classes", 'rows are the *true* classes'),
    M("training", "train_step",
      "def loss_fn(p):\n    logits = state.apply_fn({'params': p}, images)\n"
      "    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()\n"
      "loss, g = jax.value_and_grad(loss_fn)(state.params)\nreturn state.apply_gradients(grads=g), loss",
      "loss = mean of optax", 'loss = mean of optax'),
    # --- cnn_models
    M("cnn_models", "WorkshopCNN",
      "for f in (16, 32, 64):\n    x = nn.relu(nn.Conv(f, (3, 3), strides=2, padding='VALID')(x))\n"
      "return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))",
      "['Dense_0']['kernel']: shape mismatch", 'compare your parameter tree'),
    M("cnn_models", "SeminarCNN",
      "x = nn.relu(nn.Conv(4, (5, 5), padding='VALID')(x))\nx = nn.max_pool(x, (2, 2), strides=(2, 2))\n"
      "x = nn.relu(nn.Conv(12, (5, 5), padding='VALID')(x))\nx = x.reshape(x.shape[0], -1)\n"
      "x = nn.relu(nn.Dense(self.hidden)(x))\nreturn nn.Dense(self.num_classes)(x)",
      "['Dense_0']['kernel']: shape mismatch", 'compare your parameter tree'),
    M("cnn_models", "SeminarCNN",
      "x = nn.relu(nn.Conv(4, (5, 5), padding='VALID')(x))\nx = nn.max_pool(x, (2, 2), strides=(2, 2))\n"
      "x = nn.relu(nn.Conv(12, (5, 5), padding='VALID')(x))\nx = nn.max_pool(x, (2, 2), strides=(2, 2))\n"
      "x = nn.relu(nn.Dense(512)(x.reshape(x.shape[0], -1)))\nreturn nn.Dense(10)(x)",
      "shape mismatch: expected (100,), got (10,)",
      "the defaults are the lecture's num_classes=100"),
    M("cnn_models", "receptive_field",
      "r = 1\nfor k, s in layers:\n    r += (k - 1) * s\nreturn r", "stride *after*",
      'stride *after*'),
    M("cnn_models", "count_params",
      "return sum(int(v['kernel'].size) for v in params.values())", "every* leaf", "every* leaf"),
    # --- transfer
    M("transfer", "caffe_preprocess",
      "return jnp.asarray(images, jnp.float32) - jnp.asarray(CAFFE_MEAN_BGR, jnp.float32)",
      "RGB -> BGR first", "RGB -> BGR first"),
    M("transfer", "decode_predictions",
      "order = jnp.argsort(jnp.asarray(probs), axis=-1)[:, :top]\n"
      "return [[(class_names[int(i)], float(p[i])) for i in row] for p, row in zip(probs, order)]",
      "most probable first", "most probable first"),
    M("transfer", "replace_head",
      "new = dict(params)\nnew[head] = {'kernel': params[head]['kernel'], 'bias': jnp.zeros_like(params[head]['bias'])}\n"
      "return new", "kernel (F, num_classes)", 'kernel (F, num_classes)'),
    M("transfer", "replace_head",
      "f = params[head]['kernel'].shape[0]\n"
      "params[head] = {'kernel': jax.nn.initializers.lecun_normal()(key, (f, num_classes), jnp.float32),\n"
      "                'bias': jnp.zeros((num_classes,), jnp.float32)}\nreturn params",
      "modified its input", 'build a new dict'),
    M("transfer", "trainable_labels",
      "return jax.tree_util.tree_map(lambda _: 'trainable', params)", "'frozen' for every leaf",
      "'frozen' for every leaf"),
    M("transfer", "freeze_optimizer",
      "mask = {n: jax.tree_util.tree_map(lambda _: n not in trainable, b) for n, b in params.items()}\n"
      "return optax.chain(optax.masked(optax.set_to_zero(), mask), tx)",
      "frozen parameters moved", 'optax.set_to_zero()'),
    M("transfer", "discriminative_learning_rates",
      "if len(block_names) == 1:\n    return {block_names[0]: float(lr_max)}\n"
      "return {n: float(v) for n, v in zip(block_names, np.linspace(lr_min, lr_max, len(block_names)))}",
      "geometric spacing", 'geometric spacing'),
    M("transfer", "discriminative_optimizer",
      "return optax.sgd(max(learning_rates.values()))", "each block's leaves",
      "each block's leaves"),
    M("transfer", "finetune_step",
      "def loss_fn(p):\n    logits = apply_fn({'params': p}, images)\n"
      "    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()\n"
      "loss, grads = jax.value_and_grad(loss_fn)(params)\n"
      "train_p = {k: params[k] for k in trainable}\n"
      "updates, opt_state = tx.update({k: grads[k] for k in trainable}, opt_state, train_p)\n"
      "new = {k: jax.tree_util.tree_map(lambda p, g: p - 0.01 * g, v, grads[k]) for k, v in params.items()}\n"
      "new.update(optax.apply_updates(train_p, updates))\nreturn new, opt_state, loss",
      "frozen parameters moved", 'differentiate w.r.t. the trainable blocks only'),
    # --- augmentation
    M("augmentation", "random_flip",
      "flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))\n"
      "return jnp.where(flip[:, None, None, None], images[:, ::-1, :, :], images)", "width axis",
      'mirror the width axis'),
    M("augmentation", "random_flip",
      "flip = jax.random.bernoulli(key, 0.5, ())\nreturn jnp.where(flip, images[:, :, ::-1, :], images)",
      "one decision per image", 'one decision per image'),
    M("augmentation", "random_crop",
      "n, h, w, c = images.shape\npadded = jnp.pad(images, ((0, 0), (0, 2 * pad), (0, 2 * pad), (0, 0)))\n"
      "off = jax.random.randint(key, (n, 2), 0, 2 * pad + 1)\n"
      "return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(padded, off)",
      "pad every side", 'pad every side'),
    M("augmentation", "random_crop",
      "n, h, w, c = images.shape\npadded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))\n"
      "o = jax.random.randint(key, (2,), 0, 2 * pad + 1)\n"
      "return jax.lax.dynamic_slice(padded, (0, o[0], o[1], 0), (n, h, w, c))", "its own (row, column)",
      'its own (row, column) offset'),
    M("augmentation", "tta_predict",
      "return jax.nn.softmax((apply_fn(images) + apply_fn(images[:, :, ::-1, :])) / 2, axis=-1)",
      "average the *probabilities*", 'average the *probabilities*'),
    M("augmentation", "top_k_accuracy",
      "topk = jax.lax.top_k(logits, min(k + 1, logits.shape[1]))[1]\n"
      "return jnp.mean(jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32))",
      "exactly k classes", 'exactly k classes'),
    M("augmentation", "top_k_accuracy",
      "topk = jnp.argsort(logits, axis=-1)[:, :k]\n"
      "return jnp.mean(jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32))",
      "largest logit", 'largest logit'),
    # --- the mistakes of issue 15: the rule of "from scratch" binds, unstable forms fail, the
    # numpy truth-value error is explained with jnp.where, conv2d's size rounds down
    M("neurons", "sigmoid", "return 1 / (1 + jnp.exp(-x))", "got NaN", "a NaN gradient at x = -100"),
    # the library routine an exercise teaches, found in the source (its program is the same)
    M("neurons", "sigmoid", "return jax.nn.sigmoid(x)", "calls jax.nn.sigmoid (line",
      "1 / (1 + exp(-x))", zero=True),
    M("neurons", "softmax", "from jax.nn import softmax as sm\nreturn sm(x, axis=axis)",
      "calls jax.nn.softmax (line", "exp(x - max) / sum(exp(x - max))", zero=True),
    M("neurons", "mlp3_backward", "return jax.grad(mlp3_loss)(params, x, y)",
      "calls jax.grad (line", "delta3 = (p - y) / N", zero=True),
    M("neurons", "leaky_relu", "if x >= 0:\n    return x\nreturn negative_slope * x",
      "jnp.where(x >= 0, a, b)", "must also work under jax.jit", absent=("Use a.any()",)),
    M("convolution", "conv2d",
      "pads = padding.upper() if isinstance(padding, str) else [(padding, padding)] * 2\n"
      "return jax.lax.conv_general_dilated(x[None], w, (stride, stride), pads,\n"
      "    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))[0] + b",
      "uses conv_general_dilated", "for every kernel offset", zero=True),
    M("convolution", "conv2d",
      "kh, kw = w.shape[:2]\np = padding if isinstance(padding, int) else 1\n"
      "xp = jnp.pad(x, ((p, p), (p, p), (0, 0)))\n"
      "oh, ow = (xp.shape[0] - kh) // stride, (xp.shape[1] - kw) // stride\n"
      "out = jnp.zeros((oh, ow, w.shape[3]))\nfor u in range(kh):\n    for v in range(kw):\n"
      "        out = out + xp[u:u + stride * (oh - 1) + 1:stride, v:v + stride * (ow - 1) + 1:stride] @ w[u, v]\n"
      "return out + b", "shape mismatch: expected (3, 3, 2), got (2, 2, 2)",
      "output size (W - K + 2P) // S + 1"),
    M("convolution", "conv2d",
      "kh, kw = w.shape[:2]\np = padding if isinstance(padding, int) else 1\n"
      "def size(n, k):  # a copy of conv_output_size, which raises when S does not divide\n"
      "    if (n - k + 2 * p) % stride:\n"
      "        raise ValueError(f'(W - K + 2P) / S = ({n} - {k} + 2*{p}) / {stride} is not an integer')\n"
      "    return (n - k + 2 * p) // stride + 1\n"
      "oh, ow = size(x.shape[0], kh), size(x.shape[1], kw)\n"
      "xp = jnp.pad(x, ((p, p), (p, p), (0, 0)))\n"
      "out = jnp.zeros((oh, ow, w.shape[3]))\nfor u in range(kh):\n    for v in range(kw):\n"
      "        out = out + xp[u:u + stride * (oh - 1) + 1:stride, v:v + stride * (ow - 1) + 1:stride] @ w[u, v]\n"
      "return out + b", "is not an integer", "S does not divide H - KH + 2P here"),
    # --- sequences
    M("sequences", "sliding_windows",
      "n = series.shape[0] - lookback - horizon + 1\nif n < 1:\n    raise ValueError('short')\n"
      "start = jnp.arange(n)[:, None]\nx = series[start + jnp.arange(lookback)[None, :]]\n"
      "y = series[start + lookback - 1 + jnp.arange(horizon)[None, :]]\nreturn x, y",
      "expected 4, got 3", "y[i] = series[i + 3:i + 4]"),
    M("sequences", "last_value_forecast", "return jnp.repeat(x[:, :1], horizon, axis=1)",
      "the *last* value", "the *last* value of the window"),
    M("sequences", "simple_rnn_cell",
      "h = jnp.tanh(x @ params['i']['kernel'] + params['i']['bias'])\nreturn h, h",
      "h' = tanh(x @ W_i + b + h @ W_h)", "h' = tanh(x @ W_i + b + h @ W_h)"),
    M("sequences", "lstm_cell",
      "c, h = carry\ndef pre(n):\n"
      "    return x @ params['i' + n]['kernel'] + h @ params['h' + n]['kernel'] + params['h' + n]['bias']\n"
      "i, f, g, o = (jax.nn.sigmoid(pre('i')), jax.nn.sigmoid(pre('f')), jnp.tanh(pre('g')),\n"
      "              jax.nn.sigmoid(pre('o')))\nc = i * c + f * g\nh = o * jnp.tanh(c)\nreturn (c, h), h",
      "forget gate open, input gate shut: the memory is kept", "c' = f * c + i * g"),
    M("sequences", "lstm_cell",
      "c, h = carry\ndef pre(n):\n"
      "    return x @ params['i' + n]['kernel'] + h @ params['h' + n]['kernel'] + params['h' + n]['bias']\n"
      "i, f, g, o = (jax.nn.sigmoid(pre('i')), jax.nn.sigmoid(pre('f')), jnp.tanh(pre('g')),\n"
      "              jax.nn.sigmoid(pre('o')))\nc = f * c + i * g\nh = o * c\nreturn (c, h), h",
      "h' = o * tanh(c')", "h' = o * tanh(c')"),
    M("sequences", "lstm_layer",
      "n, hidden = xs.shape[0], params['hi']['kernel'].shape[0]\n"
      "carry = (jnp.zeros((n, hidden)), jnp.zeros((n, hidden)))\nhs = []\n"
      "for t in range(xs.shape[1]):\n    carry, h = lstm_cell(params, carry, xs[:, t])\n"
      "    hs.append(h)\nreturn jnp.stack(hs, axis=1)", "compiles to no stablehlo.while", "loop over time with jax.lax.scan"),
    M("sequences", "MLPForecaster",
      "x = x.reshape(x.shape[0], -1)\nx = nn.relu(nn.Dense(self.hidden)(x))\nreturn nn.Dense(1)(x)",
      "shape mismatch: expected (3,), got (1,)", "Dense(horizon)"),
    M("sequences", "LSTMForecaster",
      "if x.ndim == 2:\n    x = x[..., None]\nhs = nn.RNN(nn.LSTMCell(self.hidden))(x)\n"
      "return nn.Dense(self.horizon)(hs.mean(axis=1))", "hidden state of the *last* step", "the hidden state of the *last* step"),
    M("sequences", "pad_sequences",
      "rows, masks = [], []\nfor s in sequences:\n    s = list(s)[:maxlen]\n"
      "    fill = maxlen - len(s)\n    rows.append(s + [0] * fill)\n"
      "    masks.append([True] * len(s) + [False] * fill)\n"
      "return jnp.asarray(rows, jnp.int32).reshape(-1, maxlen), jnp.asarray(masks, bool).reshape(-1, maxlen)",
      "zeros in *front*", "zeros in *front*"),
    M("sequences", "embedding_lookup", "return table[tokens - 1]", "row tokens[n, t] of the table", "row tokens[n, t] of the table"),
    M("sequences", "masked_mean", "return x.mean(axis=1)", "number of *valid* steps", "number of *valid* steps, not by T"),
    M("sequences", "masked_mean",
      "m = mask.astype(x.dtype)[..., None]\nreturn (x * m).sum(axis=1) / m.sum(axis=1)",
      "no valid step gives zeros", "max(sum(mask), 1)"),
    M("sequences", "TextClassifier",
      "x = nn.Embed(self.vocab_size, self.embed_dim)(tokens)\nhs = nn.RNN(nn.LSTMCell(self.hidden))(x)\n"
      "return nn.Dense(self.num_classes)(hs.mean(axis=1))", "padded in front, 3 classes", "over the real words only"),
    # --- gans
    M("gans", "discriminator_loss",
      "return -jnp.log(jax.nn.sigmoid(real_logits)).mean() - jnp.log(1 - jax.nn.sigmoid(fake_logits)).mean()",
      "very confident logits stay finite", "use jax.nn.softplus"),
    M("gans", "generator_loss", "return -jax.nn.softplus(fake_logits).mean()",
      "non-saturating: mean(-log D(G(z)))", "mean(softplus(-fake_logits))"),
    M("gans", "quadratic_samples", "x = jax.random.uniform(key, (n,))\nreturn jnp.stack([x, x ** 2], axis=1)",
      "5 points, key 0", "minval=-0.5, maxval=0.5"),
    M("gans", "Generator1D", "return nn.relu(nn.Dense(2)(nn.relu(nn.Dense(self.hidden)(z))))",
      "latent 5 -> points, 15 hidden", "the output layer is linear"),
    M("gans", "Generator1D", "return nn.Dense(2)(nn.relu(nn.Dense(15)(z)))",
      "shape mismatch", "nn.Dense(self.hidden): the attribute"),
    M("gans", "Discriminator1D", "return nn.Dense(1)(nn.relu(nn.Dense(self.hidden)(x)))",
      "shape mismatch", "drop the last axis: (N,)"),
    M("gans", "conv_transpose_output_size",
      "if output_padding >= stride:\n    raise ValueError('output_padding')\n"
      "size = input_size * stride - 2 * padding + kernel_size + output_padding\n"
      "if size < 1:\n    raise ValueError('size')\nreturn size", "stride multiplies (W - 1)", "stride multiplies (W - 1), not W"),
    M("gans", "conv_transpose_output_size",
      "return (input_size - 1) * stride - 2 * padding + kernel_size + output_padding",
      "expected ValueError", "raise ValueError when output_padding >= stride"),
    M("gans", "conv_transpose2d",
      "kh, kw = w.shape[:2]\npads = [(kh - 1 - padding,) * 2, (kw - 1 - padding,) * 2]\n"
      "return jax.lax.conv_transpose(x[None], w[::-1, ::-1], (stride, stride), pads,\n"
      "                              dimension_numbers=('NHWC', 'HWIO', 'NHWC'))[0] + b",
      "uses conv_general_dilated", "no lax.conv_transpose"),
    M("gans", "conv_transpose2d",
      "h, wd, _ = x.shape\nkh, kw, _, o = w.shape\ns = stride\n"
      "full = jnp.zeros(((h - 1) * s + kh, (wd - 1) * s + kw, o))\nfor u in range(kh):\n"
      "    for v in range(kw):\n"
      "        full = full.at[u:u + s * (h - 1) + 1:s, v:v + s * (wd - 1) + 1:s].add(x @ w[kh - 1 - u, kw - 1 - v])\n"
      "return full[padding:full.shape[0] - padding, padding:full.shape[1] - padding] + b",
      "a single pixel paints the kernel", "paints x[i, j] @ w[u, v]"),
    M("gans", "conv_transpose2d",
      "h, wd, _ = x.shape\nkh, kw, _, o = w.shape\ns = stride\n"
      "full = jnp.zeros(((h - 1) * s + kh, (wd - 1) * s + kw, o))\nfor u in range(kh):\n"
      "    for v in range(kw):\n"
      "        full = full.at[u:u + s * (h - 1) + 1:s, v:v + s * (wd - 1) + 1:s].add(x @ w[u, v])\n"
      "return full + b", "shape mismatch", "crop P"),
    M("gans", "Generator",
      "x = nn.leaky_relu(nn.Dense(7 * 7 * 128)(z), 0.2)\nx = x.reshape(z.shape[0], 7, 7, 128)\n"
      "for _ in range(2):\n"
      "    x = nn.leaky_relu(nn.ConvTranspose(128, (4, 4), strides=(2, 2), padding='SAME')(x), 0.2)\n"
      "return nn.sigmoid(nn.Conv(1, (7, 7), padding='SAME')(x))",
      "expected (8,), got (128,)", "the attributes (self.features, self.base, ...)"),
    M("gans", "Generator",
      "x = nn.leaky_relu(nn.Dense(self.base * self.base * self.features)(z), 0.2)\n"
      "x = x.reshape(z.shape[0], self.base, self.base, self.features)\nfor _ in range(2):\n"
      "    x = nn.leaky_relu(nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding='VALID')(x), 0.2)\n"
      "return nn.sigmoid(nn.Conv(self.channels, (7, 7), padding='SAME')(x))", "shape mismatch", "padding and the attributes"),
    M("gans", "Discriminator",
      "for _ in range(2):\n    x = nn.Conv(self.features, (3, 3), strides=(2, 2), padding='SAME')(x)\n"
      "    x = nn.Dropout(self.dropout, deterministic=not train)(nn.leaky_relu(x, 0.2))\n"
      "return nn.Dense(1)(x.reshape(x.shape[0], -1))", "shape mismatch: expected (2,), got (2, 1)", "drop the last axis: (N,)"),
    M("gans", "gan_train_step",
      "fake = g_state.apply_fn({'params': g_state.params}, z)\n"
      "def d_loss_fn(dp):\n"
      "    return discriminator_loss(d_state.apply_fn({'params': dp}, real_images), d_state.apply_fn({'params': dp}, fake))\n"
      "d_loss, d_grads = jax.value_and_grad(d_loss_fn)(d_state.params)\n"
      "def g_loss_fn(gp):\n"
      "    return generator_loss(d_state.apply_fn({'params': d_state.params}, g_state.apply_fn({'params': gp}, z)))\n"
      "g_loss, g_grads = jax.value_and_grad(g_loss_fn)(g_state.params)\n"
      "return (g_state.apply_gradients(grads=g_grads), d_state.apply_gradients(grads=d_grads),\n"
      "        {'d_loss': d_loss, 'g_loss': g_loss})", "output['g_losses']",
      "g_loss is computed against the *updated* discriminator"),
    M("gans", "gan_train_step",
      "fake = g_state.apply_fn({'params': g_state.params}, z)\n"
      "def d_loss_fn(dp):\n"
      "    return discriminator_loss(d_state.apply_fn({'params': dp}, real_images), d_state.apply_fn({'params': dp}, fake))\n"
      "d_loss, d_grads = jax.value_and_grad(d_loss_fn)(d_state.params)\n"
      "d_state = d_state.apply_gradients(grads=d_grads)\n"
      "def g_loss_fn(gp, dp):  # the discriminator left trainable in the combined model\n"
      "    return generator_loss(d_state.apply_fn({'params': dp}, g_state.apply_fn({'params': gp}, z)))\n"
      "g_loss, (g_grads, dd) = jax.value_and_grad(g_loss_fn, argnums=(0, 1))(g_state.params, d_state.params)\n"
      "return (g_state.apply_gradients(grads=g_grads), d_state.apply_gradients(grads=dd),\n"
      "        {'d_loss': d_loss, 'g_loss': g_loss})", "generator frozen: the discriminator learns by its own loss only", "the generator's update must not move the discriminator"),
    M("gans", "gan_train_step",
      "def d_loss_fn(dp, gp):\n    fake = g_state.apply_fn({'params': gp}, z)\n"
      "    return discriminator_loss(d_state.apply_fn({'params': dp}, real_images), d_state.apply_fn({'params': dp}, fake))\n"
      "d_loss, (d_grads, gd) = jax.value_and_grad(d_loss_fn, argnums=(0, 1))(d_state.params, g_state.params)\n"
      "d_state = d_state.apply_gradients(grads=d_grads)\ng_state = g_state.apply_gradients(grads=gd)\n"
      "def g_loss_fn(gp):\n"
      "    return generator_loss(d_state.apply_fn({'params': d_state.params}, g_state.apply_fn({'params': gp}, z)))\n"
      "g_loss, g_grads = jax.value_and_grad(g_loss_fn)(g_state.params)\n"
      "return g_state.apply_gradients(grads=g_grads), d_state, {'d_loss': d_loss, 'g_loss': g_loss}",
      "discriminator frozen: the generator learns by its own loss only", "the discriminator's update must not move the generator"),
]


def _rounds() -> list[list[M]]:
    """Partition MUTANTS so that no two in a round touch the same function or one another's
    callees (a function whose body calls a planted function would fail for the wrong reason)."""
    names = {m: {b[0].split("@")[0] for b in solution_blocks((SOLUTIONS / f"{m}.py").read_text())}
             for m in MODULES}
    sources = {m: (SOLUTIONS / f"{m}.py").read_text() for m in MODULES}

    def calls(mut) -> set[str]:
        module, owner, body = mut[:3]
        fn = owner.split("@")[0]
        # what runs: the function's text around its solution block, and the planted text
        lines = sources[module].splitlines()
        tree = ast.parse(sources[module])
        node = next(n for n in tree.body if getattr(n, "name", None) == fn)
        blk = [b for b in solution_blocks(sources[module]) if b[0] == owner][0]
        kept = lines[node.lineno - 1:blk[1]] + lines[blk[2] + 1:node.end_lineno]
        text = "\n".join(kept) + "\n" + body
        return {n for n in names[module] if n != fn and re.search(rf"\b{n}\(", text)}

    rounds: list[list[M]] = []
    for mut in MUTANTS:
        fn = mut[1].split("@")[0]
        for rnd in rounds:
            same_module = [m for m in rnd if m[0] == mut[0]]
            if all(m[1].split("@")[0] != fn and fn not in calls(m)
                   and m[1].split("@")[0] not in calls(mut) for m in same_module):
                rnd.append(mut)
                break
        else:
            rounds.append([mut])
    return rounds


def _write_round(tmp: Path, rnd: list[M]) -> Path:
    tmp.mkdir(parents=True)
    for module in MODULES:
        src = (SOLUTIONS / f"{module}.py").read_text()
        for m in rnd:
            if m.module == module:
                src = replace_block(src, m.owner, m.body)
        (tmp / f"{module}.py").write_text(src)
    return tmp


def _all_text(ex) -> str:
    return "\n".join(filter(None, [ex.reason] + [c.message for c in ex.cases]))


@pytest.mark.parametrize("round_index", range(len(_rounds())))
def test_planted_mistakes_lose_points_with_a_pointed_message(tmp_path, round_index):
    rnd = _rounds()[round_index]
    sub = _write_round(tmp_path / "sub", rnd)
    names = sorted({f"{m.module}.{m.owner.split('@')[0]}" for m in rnd})
    result = grade_submission(sub, exercises=names, timeout_s=60)
    failures = []
    for m in rnd:
        ex = result.by_name(f"{m.module}.{m.owner.split('@')[0]}")
        text = ex.output_text(max_cases=50)
        hints = [h for _, h in ex.hints()]
        wrong = []
        if ex.score >= ex.points or (m.zero and ex.score != 0):
            wrong.append(f"score {ex.score}/{ex.points}")
        if m.says not in text:
            wrong.append(f"no {m.says!r} in what the student reads")
        if not hints or m.hint not in hints[0]:
            wrong.append(f"first hint {hints[0] if hints else None!r}, wanted {m.hint!r}")
        wrong += [f"shows the hint {h!r}" for h in hints for a in m.absent if a in h]
        if wrong:
            failures.append(f"{ex.qualname} [{m.body[:40]!r}]: {'; '.join(wrong)} in:\n{text}")
        assert "BEGIN SOLUTION" not in text and "# HINT" not in text
    assert not failures, "\n\n".join(failures)
