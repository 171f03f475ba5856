"""cnnlab.layers: the custom-VJP convolution equals XLA's convolution in value and gradients."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax

from cnnlab import layers

def reference(x, kernel, strides, pads):
    return lax.conv_general_dilated(x, kernel, strides, pads,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


@st.composite
def conv_cases(draw):
    n = draw(st.integers(1, 3))
    c, o = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kind = draw(st.sampled_from(["SAME", "VALID", "explicit"]))
    if kind == "explicit":
        padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    else:
        padding = kind
    lo_h = 0 if kind != "explicit" else sum(padding[0])
    lo_w = 0 if kind != "explicit" else sum(padding[1])
    # The padded input must hold at least one kernel window.
    h = draw(st.integers(max(1, kh - lo_h), 9))
    w = draw(st.integers(max(1, kw - lo_w), 9))
    return (n, h, w, c), (kh, kw, c, o), strides, padding


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases(), seed=st.integers(0, 2**16))
def test_value_and_gradients_match_xla(case, seed):
    x_shape, k_shape, strides, padding = case
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal(k_shape), jnp.float32)
    pads = layers.explicit_padding(padding, x_shape[1:3], k_shape[:2], strides)
    y_ref = reference(x, kernel, strides, pads)
    cot = jnp.asarray(rng.standard_normal(y_ref.shape), jnp.float32)

    @jax.jit  # one compilation per example: the reference and every method
    def everything(x, kernel, cot):
        y, pull = jax.vjp(lambda x, k: reference(x, k, strides, pads), x, kernel)
        dx, dk = pull(cot)
        y_c, pull_c = jax.vjp(lambda x, k: layers.conv2d(x, k, strides, padding,
                                                         backward=("taps", "taps")), x, kernel)
        dx_c, dk_c = pull_c(cot)
        y_k, pull_k = jax.vjp(lambda x, k: layers.conv2d(x, k, strides, padding,
                                                         backward=("chunks", "xla")), x, kernel)
        dx_k, dk_k = pull_k(cot)
        return dict(
            y=(y, y_c, y_k, layers.conv_taps(x, kernel, strides, pads)),
            dx=(dx, dx_c, dx_k, layers.input_grad_taps(cot, kernel, x.shape, strides, pads)),
            dk=(dk, dk_c, dk_k, layers.weight_grad_taps(x, cot, k_shape[:2], strides, pads),
                layers.weight_grad_im2col(x, cot, k_shape[:2], strides, pads),
                layers.weight_grad_chunks(x, cot, k_shape[:2], strides, pads, chunk=1),
                layers.weight_grad_chunks(x, cot, k_shape[:2], strides, pads, chunk=2)))

    out = everything(x, kernel, cot)
    scale = 1 + float(jnp.max(jnp.abs(out["dk"][0])))
    for what, (ref, *ours) in out.items():
        for i, value in enumerate(ours):
            assert value.shape == ref.shape, (what, i)
            np.testing.assert_allclose(value, ref, rtol=1e-5, atol=1e-5 * scale,
                                       err_msg=f"{what} variant {i}")


def test_cpu_uses_the_custom_vjp_and_env_turns_it_off(monkeypatch):
    x, k = jnp.ones((32, 8, 8, 8)), jnp.ones((3, 3, 8, 4))

    def wgrad_convs():  # new functions each time: traces are cached per function, not per env
        grad = jax.jit(lambda x, k: jax.grad(lambda k: layers.conv2d(x, k, 2).sum())(k))
        return grad.lower(x, k).compile().as_text().count(" convolution(")  # after XLA's DCE

    assert jax.default_backend() == "cpu"
    assert layers.conv_backward_mode() == "fast"
    # Batch 32 = two chunks of 16: two weight-gradient convolutions, summed ...
    assert wgrad_convs() == 2
    monkeypatch.setenv("CNNLAB_CONV_BACKWARD", "xla")
    assert layers.conv_backward_mode() == "xla"
    # ... and XLA's single transposed convolution when turned off.
    assert wgrad_convs() == 1


def test_choose_backward_rules():
    # Batches larger than a chunk: XLA's weight gradient summed over chunks.
    assert layers.choose_backward((128, 14, 14, 64), (3, 3, 64, 64), (128, 14, 14, 64),
                                  (1, 1)) == ("chunks", "xla")
    assert layers.choose_backward((8, 14, 14, 64), (3, 3, 64, 64), (8, 14, 14, 64),
                                  (1, 1)) == ("xla", "xla")
    with pytest.raises(ValueError, match="backward"):
        layers.conv2d(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), backward=("fft", "xla"))


def test_conv_module_is_a_drop_in_for_flax_conv():
    x = jax.random.normal(jax.random.key(6), (2, 9, 9, 3))
    key = jax.random.key(0, impl="rbg")
    for kwargs in [dict(features=5, kernel_size=(3, 3), strides=2),
                   dict(features=4, kernel_size=(5, 5), padding="VALID"),
                   dict(features=3, kernel_size=(2, 3), padding=((1, 0), (2, 1)), use_bias=False)]:
        ours, theirs = layers.Conv(**kwargs), nn.Conv(**kwargs)
        v = ours.init(key, x)
        assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, theirs.init(key, x))

        @jax.jit
        def values_and_grads(v):
            def loss(v, module):
                return jnp.sum(jnp.tanh(module.apply(v, x)))
            return (ours.apply(v, x), theirs.apply(v, x),
                    jax.grad(loss)(v, ours), jax.grad(loss)(v, theirs))

        y_ours, y_theirs, g_ours, g_theirs = values_and_grads(v)
        np.testing.assert_allclose(y_ours, y_theirs, rtol=1e-5, atol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                     g_ours, g_theirs)


@pytest.mark.parametrize("shape,window,padding", [
    ((2, 7, 9, 2), (2, 2), "VALID"), ((1, 7, 5, 2), (2, 2), "SAME"),
    ((2, 9, 8, 1), (3, 2), "SAME")])
def test_max_pool_matches_flax(shape, window, padding):
    x = jax.random.normal(jax.random.key(1), shape)
    # Rounded: few distinct values, so windows with several maxima (the first one must get the
    # gradient, as in nn.max_pool).
    xs = jnp.stack([x, jnp.round(x)])

    @jax.jit
    def both(xs, cot):
        ours = lambda x: layers.max_pool(x, window, padding=padding)  # noqa: E731
        theirs = lambda x: nn.max_pool(x, window, window, padding=padding)  # noqa: E731
        out = []
        for x in xs:
            (y1, pull1), (y2, pull2) = jax.vjp(ours, x), jax.vjp(theirs, x)
            out.append((y1, y2, pull1(cot)[0], pull2(cot)[0]))
        return out, layers.max_pool(xs[0], (2, 2), (1, 1)), nn.max_pool(xs[0], (2, 2), (1, 1))

    cot = jax.random.normal(jax.random.key(2), layers.max_pool(x, window, padding=padding).shape)
    pairs, overlap_ours, overlap_flax = both(xs, cot)
    for y1, y2, g1, g2 in pairs:
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(overlap_ours, overlap_flax)  # overlapping windows: flax's


@pytest.mark.parametrize("shape,window,padding", [
    ((2, 7, 9, 2), (2, 2), "VALID"), ((1, 7, 5, 2), (3, 2), "SAME")])
def test_avg_pool_matches_flax(shape, window, padding):
    x = jax.random.normal(jax.random.key(3), shape)
    ours = lambda x: layers.avg_pool(x, window, padding=padding)  # noqa: E731
    theirs = lambda x: nn.avg_pool(x, window, window, padding=padding)  # noqa: E731
    cot = jax.random.normal(jax.random.key(4), ours(x).shape)

    @jax.jit
    def both(x, cot):
        (y1, pull1), (y2, pull2) = jax.vjp(ours, x), jax.vjp(theirs, x)
        return y1, y2, pull1(cot)[0], pull2(cot)[0]

    y1, y2, g1, g2 = both(x, cot)
    np.testing.assert_allclose(y1, y2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g1, g2, rtol=1e-6, atol=1e-6)


def test_import_makes_cpu_convolutions_multithreaded():
    """Importing cnnlab.layers adds the XLA flag that takes convolutions off the single-threaded
    YNNPACK path, unless CNNLAB_XLA_FLAGS=off (fresh processes: the flag only counts before the
    first compile)."""
    code = "import cnnlab.layers as L; print(L.multithreaded_cpu_convolutions())"

    def run(**env):
        env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip().splitlines()[-1]

    assert run(XLA_FLAGS=None, CNNLAB_XLA_FLAGS=None) == "True"
    assert run(XLA_FLAGS=None, CNNLAB_XLA_FLAGS="off") == "False"
