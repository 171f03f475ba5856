"""cnnlab.models: shapes, hand-counted parameters, summary, dropout and batch norm, registry."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import models
from cnnlab.errors import CnnlabError

BUILTIN = ["mlp", "workshop_cnn", "keras_cnn", "lenet5", "flax_cnn", "resnet_small"]


def conv(k, c_in, c_out, bias=True):
    """Parameters of a k x k conv: k*k*c_in*c_out weights (+ c_out biases)."""
    return k * k * c_in * c_out + (c_out if bias else 0)


def dense(n_in, n_out):
    return n_in * n_out + n_out


def bn(c):
    """Trainable BN parameters (scale, bias); the running mean/var are batch_stats."""
    return 2 * c


def resnet_small_count(widths=(24, 48, 96), blocks=(0, 0, 0), hidden=128, classes=10, hw=28):
    """Stages of conv3x3 (no bias) + BN, residual blocks of two such, 2x2 pools in between."""
    total, c_in = 0, 1
    for i, (w, n) in enumerate(zip(widths, blocks)):
        if i > 0:
            hw //= 2
        total += conv(3, c_in, w, bias=False) + bn(w)
        total += n * 2 * (conv(3, w, w, bias=False) + bn(w))
        c_in = w
    return total + dense(hw * hw * c_in, hidden) + dense(hidden, classes)


HAND_COUNTS = {
    # flatten 28*28 = 784 -> 16 -> 10
    "mlp": dense(784, 16) + dense(16, 10),  # 12,730
    # SAME, stride 2: 28 -> 14 -> 7 -> 4, so 4*4*64 = 1,024 features
    "workshop_cnn": conv(3, 1, 16) + conv(3, 16, 32) + conv(3, 32, 64) + dense(4 * 4 * 64, 10),
    # VALID 5x5 + pool 2: 28 -> 24 -> 12 -> 8 -> 4, so 4*4*12 = 192 features
    "keras_cnn": conv(5, 1, 4) + conv(5, 4, 12) + dense(4 * 4 * 12, 512) + dense(512, 10),
    # 28 (SAME) -> 14 -> 10 (VALID) -> 5, so 5*5*16 = 400 features
    "lenet5": conv(5, 1, 6) + conv(5, 6, 16) + dense(400, 120) + dense(120, 84) + dense(84, 10),
    # SAME + avg pool 2 twice: 28 -> 14 -> 7, so 7*7*64 = 3,136 features
    "flax_cnn": conv(3, 1, 32) + conv(3, 32, 64) + dense(7 * 7 * 64, 256) + dense(256, 10),
    # 28 -> 14 -> 7: 7*7*96 = 4,704 features -> 128 -> 10
    "resnet_small": resnet_small_count(),
}


def init(model, shape=(2, 28, 28, 1), seed=0):
    """Variables of ``model`` for inputs of ``shape``; one compiled init per (model, shape).

    "rbg" keys: XLA:CPU compiles a threefry init of these models in ~3 s, an rbg one in ~0.5 s.
    """
    return _init_fn(model, shape)(jax.random.key(seed, impl="rbg"))


@functools.lru_cache(maxsize=None)
def _init_fn(model, shape):
    # A compiled init instead of op-by-op dispatch keeps this file within its time budget.
    return jax.jit(lambda key: model.init(key, jnp.zeros(shape, jnp.float32), train=False))


def apply(model, variables, x, **kwargs):
    """Jitted ``model.apply`` (keyword arguments other than rngs are static)."""
    rngs = kwargs.pop("rngs", None)
    return _apply_fn(model, tuple(sorted((k, _freeze(v)) for k, v in kwargs.items())))(
        variables, x, rngs)


def _freeze(v):
    return tuple(v) if isinstance(v, list) else v


@functools.lru_cache(maxsize=None)
def _apply_fn(model, kwargs):
    kwargs = {k: (list(v) if k == "mutable" else v) for k, v in kwargs}
    return jax.jit(lambda v, x, rngs: model.apply(v, x, rngs=rngs, **kwargs))


def test_known_numbers():
    assert HAND_COUNTS["mlp"] == 12_730
    assert HAND_COUNTS["workshop_cnn"] == 33_546
    assert HAND_COUNTS["keras_cnn"] == 105_262
    assert HAND_COUNTS["lenet5"] == 61_706
    assert HAND_COUNTS["flax_cnn"] == 824_458
    # 3*3*1*24 + 2*24 + 3*3*24*48 + 2*48 + 3*3*48*96 + 2*96 + (4704*128 + 128) + (128*10 + 10)
    assert HAND_COUNTS["resnet_small"] == 655_922


def test_names_include_builtins():
    assert set(BUILTIN) <= set(models.names())


@pytest.mark.parametrize("name", BUILTIN)
def test_param_count_matches_hand_count(name):
    model = models.get(name, num_classes=10)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)),
                                                  train=False))
    assert models.param_count(variables["params"]) == HAND_COUNTS[name]


@pytest.mark.parametrize("name", BUILTIN)
def test_output_shapes(name):
    model = models.get(name, num_classes=10)
    x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
    variables = init(model)
    y = apply(model, variables, x, train=False)
    assert y.shape == (2, 10) and y.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y)))
    # Train mode gives the same shape (dropout key and mutable batch_stats supplied).
    y, _ = apply(model, variables, x, train=True, rngs={"dropout": jax.random.key(2)},
                 mutable=["batch_stats"])
    assert y.shape == (2, 10)
    # Another number of classes and batch size (shapes only: nothing to compile).
    model = models.get(name, num_classes=7)
    out = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x, train=False),
                                             jnp.zeros((5, 28, 28, 1)), train=False))
    assert out.shape == (5, 7)


@pytest.mark.parametrize("name", ["workshop_cnn", "flax_cnn", "resnet_small", "mlp"])
def test_other_input_sizes(name):
    model = models.get(name, num_classes=5)
    x = jnp.ones((2, 32, 32, 3))
    out = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x, train=False), x,
                                             train=False))
    assert out.shape == (2, 5)


def test_summary_lists_layers_shapes_and_total():
    text = models.summary(models.get("workshop_cnn", num_classes=10), (28, 28, 1))
    assert "Total params: 33,546" in text
    assert "(None, 14, 14, 16)" in text and "(None, 4, 4, 64)" in text
    assert text.index("Conv_0") < text.index("Conv_2") < text.index("Dense_0")
    text = models.summary(models.get("resnet_small", num_classes=10), (28, 28, 1))
    assert f"Trainable params: {HAND_COUNTS['resnet_small']:,}" in text
    # Batch-norm statistics (mean, var): 2 x (24 + 48 + 96).
    assert "Non-trainable params: 336" in text and "(ConvBN)" in text
    assert text.index("stage1") < text.index("stage2") < text.index("hidden") < text.index("head")
    text = models.summary(models.get("resnet_small", num_classes=10, blocks=(0, 1, 0)),
                          (28, 28, 1))
    assert f"Trainable params: {resnet_small_count(blocks=(0, 1, 0)):,}" in text
    assert "stage2_block1 (ResidualBlock)" in text


def test_dropout_needs_key_and_depends_on_it():
    model = models.get("resnet_small", num_classes=10)
    variables = init(model)
    x = jax.random.uniform(jax.random.key(3), (4, 28, 28, 1))
    with pytest.raises(Exception, match="dropout"):
        jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)

    def run(seed):
        y, _ = apply(model, variables, x, train=True, rngs={"dropout": jax.random.key(seed)},
                           mutable=["batch_stats"])
        return y

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.allclose(run(0), run(1))
    # Evaluation needs no key and is deterministic.
    np.testing.assert_array_equal(apply(model, variables, x, train=False),
                                  apply(model, variables, x, train=False))


def test_batch_stats_update_only_in_train_mode():
    model = models.get("resnet_small", num_classes=10)
    variables = init(model)
    x = 3.0 + jax.random.uniform(jax.random.key(4), (4, 28, 28, 1))
    _, updates = apply(model, variables, x, train=True, rngs={"dropout": jax.random.key(0)},
                             mutable=["batch_stats"])
    before = variables["batch_stats"]["stage1"]["BatchNorm_0"]["mean"]
    after = updates["batch_stats"]["stage1"]["BatchNorm_0"]["mean"]
    assert before.shape == after.shape
    assert not np.allclose(before, after)
    # The input variables are untouched (pure), and eval mode mutates nothing.
    np.testing.assert_array_equal(variables["batch_stats"]["stage1"]["BatchNorm_0"]["mean"], before)
    _, state = apply(model, variables, x, train=False, mutable=["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, state["batch_stats"], variables["batch_stats"])


@pytest.mark.parametrize("name", BUILTIN)
def test_init_is_deterministic_and_seed_dependent(name):
    model = models.get(name, num_classes=10)
    a, b, c = init(model, seed=0), init(model, seed=0), init(model, seed=1)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    leaves_a, leaves_c = jax.tree.leaves(a["params"]), jax.tree.leaves(c["params"])
    assert any(not np.array_equal(p, q) for p, q in zip(leaves_a, leaves_c))


def test_unknown_name_lists_valid_ones():
    with pytest.raises(CnnlabError, match="unknown model 'resnet9000'.*workshop_cnn"):
        models.get("resnet9000", num_classes=10)


def test_bad_options_are_user_errors():
    with pytest.raises(CnnlabError, match="activation"):
        models.get("mlp", num_classes=10, activation="swishy")
    with pytest.raises(CnnlabError, match="does not accept"):
        models.get("workshop_cnn", num_classes=10, depth=4)
    with pytest.raises(CnnlabError, match="num_classes"):
        models.get("workshop_cnn", num_classes=0)


@pytest.mark.parametrize("act", ["sigmoid", "relu", "tanh"])
def test_mlp_activation_is_selectable(act):
    model = models.get("mlp", num_classes=10, activation=act)
    variables = init(model)
    x = jax.random.uniform(jax.random.key(5), (2, 28, 28, 1))
    p = variables["params"]
    h = x.reshape(2, -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    h = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "tanh": jnp.tanh}[act](h)
    expected = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    np.testing.assert_allclose(apply(model, variables, x, train=False), expected, rtol=1e-5,
                               atol=1e-6)


def test_register_adds_a_model():
    class Tiny(nn.Module):
        num_classes: int

        @nn.compact
        def __call__(self, x, *, train):
            return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))

    models.register("tiny_test_model", Tiny)
    try:
        assert "tiny_test_model" in models.names()
        model = models.get("tiny_test_model", num_classes=3)
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.ones((2, 28, 28, 1)),
                                                      train=False))
        assert models.param_count(variables) == 28 * 28 * 3 + 3
    finally:
        models._REGISTRY.pop("tiny_test_model")


def test_train_step_compiles_once_per_shape():
    """cnnlab.train.train_step traces (a Python side effect counts it) once per batch shape."""
    import optax

    from cnnlab import train

    model = models.get("workshop_cnn", num_classes=10, features=(4, 8, 8))
    state = train.create_train_state(model, optax.adam(1e-3), jax.random.key(0, impl="rbg"),
                                     (28, 28, 1))
    key = jax.random.key(1)
    rng = np.random.default_rng(0)

    def batch(n):
        return (jnp.asarray(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)),
                jnp.asarray(rng.integers(0, 10, (n,), dtype=np.int32)))

    before = train.TRACE_COUNTS["train_step"]
    for _ in range(3):
        state, metrics = train.train_step(state, *batch(8), key)
    assert train.TRACE_COUNTS["train_step"] - before == 1
    state, metrics = train.train_step(state, *batch(4), key)  # a new shape: one more
    for _ in range(2):
        state, metrics = train.train_step(state, *batch(8), key)
    assert train.TRACE_COUNTS["train_step"] - before == 2
    assert bool(jnp.isfinite(metrics["loss"]))
