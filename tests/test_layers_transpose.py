"""cnnlab.conv_transpose.ConvTranspose: a drop-in for flax.linen.ConvTranspose (same parameters, values
and gradients) computed as stride-1 convolutions per output phase."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from cnnlab import conv_transpose
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@st.composite
def transpose_cases(draw):
    n = draw(st.sampled_from([1, 2, 20]))     # 20 > 16: conv2d's chunked weight gradient too
    c, o = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kind = draw(st.sampled_from(["SAME", "VALID", "explicit", "int"]))
    if kind == "explicit":
        padding = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1)))
                        for k in (kh, kw))
    elif kind == "int":
        padding = draw(st.integers(0, min(kh, kw) - 1))
    else:
        padding = kind
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    return (n, h, w, c), o, (kh, kw), strides, padding


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=transpose_cases(), seed=st.integers(0, 2**16))
def test_conv_transpose_equals_flax_in_value_and_gradients(case, seed):
    x_shape, features, kernel_size, strides, padding = case
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    ref = nn.ConvTranspose(features, kernel_size, strides=strides, padding=padding)
    mine = conv_transpose.ConvTranspose(features, kernel_size, strides=strides, padding=padding)
    variables = ref.init(jax.random.PRNGKey(seed), x)
    assert jax.tree_util.tree_map(jnp.shape, mine.init(jax.random.PRNGKey(seed), x)) == \
        jax.tree_util.tree_map(jnp.shape, variables)
    y_ref = ref.apply(variables, x)
    if y_ref.size == 0:
        return
    cot = jnp.asarray(rng.standard_normal(y_ref.shape), jnp.float32)

    @jax.jit
    def both(variables, x, cot):
        outs = []
        for model in (ref, mine):
            y, pull = jax.vjp(model.apply, variables, x)
            outs.append((y, *pull(cot)))
        return outs

    (want, *want_grads), (got, *got_grads) = both(variables, x, cot)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(got_grads), jax.tree_util.tree_leaves(want_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_dcgan_upsampling_shapes_and_xla_switch(monkeypatch):
    """stride 2 + "SAME" doubles the image (7 -> 14 -> 28), with or without the fast path."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 7, 7, 4)), jnp.float32)
    kernel = jnp.asarray(np.random.default_rng(1).standard_normal((4, 4, 4, 2)), jnp.float32)
    fast = conv_transpose.conv_transpose2d(x, kernel, 2, "SAME")
    assert fast.shape == (3, 14, 14, 2)
    jaxpr = str(jax.make_jaxpr(lambda x, k: conv_transpose.conv_transpose2d(x, k, 2, "SAME"))(x, kernel))
    assert "lhs_dilation=(2, 2)" not in jaxpr        # no zero-dilated input on the fast path
    monkeypatch.setenv("CNNLAB_CONV_BACKWARD", "xla")
    jaxpr = str(jax.make_jaxpr(lambda x, k: conv_transpose.conv_transpose2d(x, k, 2, "SAME"))(x, kernel))
    assert "lhs_dilation=(2, 2)" in jaxpr
    np.testing.assert_allclose(conv_transpose.conv_transpose2d(x, kernel, 2, "SAME"), fast,
                               rtol=1e-5, atol=1e-5)
