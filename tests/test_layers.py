"""cnnlab.layers: the same values and derivatives as Flax's / lax's layers, in every mode.

Property tests (hypothesis) over shapes, strides, paddings and values with ties, each comparing
cnnlab's op with its reference under ``jax.jit``: values, ``jax.vjp`` (what ``jax.grad`` runs),
``jax.jvp`` (forward mode) and ``jax.vmap``. The batch sharded over 1, 2, 4 and 8 devices is
in ``tests/layers_sharded_check.py`` (a subprocess with 8 CPU devices). Flax's own tests run
against these layers in ``tests/test_flax_dropin.py``.
"""

import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import pooling as flax_pooling
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax

from cnnlab import layers, xla_cpu

HERE = Path(__file__).parent
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def property_tests(check, cases, examples: int, exhaustive: int):
    """``check(case)`` over hypothesis's ``cases``: a test with ``examples`` examples for
    ``make test`` and one with ``exhaustive`` examples for ``make test-exhaustive``."""
    def run(n):
        return settings(max_examples=n, **SETTINGS)(given(case=cases)(check))
    return run(examples), pytest.mark.exhaustive(run(exhaustive))


def reference(x, kernel, strides, pads):
    return lax.conv_general_dilated(x, kernel, strides, pads,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def close(actual, expected, what, rtol=1e-5):
    """Within float32 rounding of the reference: 1e-5 relative to its largest entry."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def draw_values(draw, shape, ties: bool) -> np.ndarray:
    """Random normal values, or (ties) small integers: many windows hold several maxima."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if ties:
        return rng.integers(-2, 3, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


@st.composite
def conv_cases(draw):
    n = draw(st.integers(1, 3))
    c, o = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kind = draw(st.sampled_from(["SAME", "VALID", "explicit"]))
    if kind == "explicit":
        padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    else:
        padding = kind
    extra_h = sum(padding[0]) if kind == "explicit" else 0
    extra_w = sum(padding[1]) if kind == "explicit" else 0
    # The padded input must hold at least one kernel window.
    h = draw(st.integers(max(1, kh - extra_h), 9))
    w = draw(st.integers(max(1, kw - extra_w), 9))
    ties = draw(st.booleans())
    x = draw_values(draw, (n, h, w, c), ties)
    kernel = draw_values(draw, (kh, kw, c, o), ties)
    return x, kernel, strides, padding


METHODS = [("chunks", "xla"), ("taps", "taps"), ("im2col", "xla"), ("xla", "taps")]


def check_conv2d(case):
    x, kernel, strides, padding = case
    pads = layers.explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
    rng = np.random.default_rng(0)
    cot = rng.standard_normal(reference(x, kernel, strides, pads).shape).astype(np.float32)
    tx, tk = rng.standard_normal(x.shape), rng.standard_normal(kernel.shape)
    tx, tk = tx.astype(np.float32), tk.astype(np.float32)

    @jax.jit  # one compilation per example: the reference and every method
    def everything(x, kernel, cot, tx, tk):
        out = {}
        for name, method in [("reference", None)] + [(str(m), m) for m in METHODS]:
            if method is None:
                f = lambda x, k: reference(x, k, strides, pads)  # noqa: E731
            else:
                f = lambda x, k, m=method: layers.conv2d(x, k, strides, padding,  # noqa: E731
                                                          backward=m)
            y, pull = jax.vjp(f, x, kernel)
            out[name] = dict(y=y, grads=pull(cot), jvp=jax.jvp(f, (x, kernel), (tx, tk))[1],
                             vmap=jax.vmap(f, in_axes=(None, 3), out_axes=3)(
                                 x, jnp.stack([kernel, -kernel], axis=3)))
        # The linear forms, transposed as jax.grad does: chunks of 1 and 2 images too.
        for chunk in (1, 2):
            form = lambda k, c=chunk: layers.conv_chunks(x, k, strides, pads, chunk=c)  # noqa
            out[f"chunks of {chunk}"] = dict(y=form(kernel), grads=(
                out["reference"]["grads"][0], jax.linear_transpose(form, kernel)(cot)[0]))
        return out

    out = everything(x, kernel, cot, tx, tk)
    ref = out.pop("reference")
    for name, got in out.items():
        for what in got:
            jax.tree.map(lambda a, b, w=f"{name} {what}": close(a, b, w), got[what], ref[what])


test_conv2d_matches_lax, test_conv2d_matches_lax_exhaustive = property_tests(
    check_conv2d, conv_cases(), 6, 60)


def test_conv2d_derivatives_of_higher_order_and_under_vmap_of_grad():
    x = jax.random.normal(jax.random.key(0), (20, 6, 6, 3))  # 20 > CHUNK: the chunked form
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))

    def loss(f, k, x):
        return jnp.sum(jnp.tanh(f(x, k)) ** 2)

    ours = lambda x, k: layers.conv2d(x, k, 2, "SAME")  # noqa: E731
    theirs = lambda x, k: reference(x, k, (2, 2), ((0, 1), (0, 1)))  # noqa: E731
    for transform in (jax.hessian, jax.jacfwd, jax.jacrev):
        close(jax.jit(transform(lambda k: loss(ours, k, x[:2])))(kernel),
              jax.jit(transform(lambda k: loss(theirs, k, x[:2])))(kernel), transform.__name__)
    # per-example gradients (vmap of grad), the usual differential-privacy pattern
    per_example = lambda f: jax.jit(jax.vmap(jax.grad(  # noqa: E731
        lambda k, xi: loss(f, k, xi[None])), in_axes=(None, 0)))(kernel, x)
    close(per_example(ours), per_example(theirs), "vmap of grad")


@pytest.mark.parametrize("backward", [("chunks", "xla"), ("taps", "taps"), ("im2col", "xla")])
def test_float64_stays_float64_in_every_method(backward):
    """The per-tap forward of a 1-channel layer and the matmul methods sum in the input's
    precision when it is above float32 (they summed float64 in float32, a 1e-7 error that
    ResNet50's conditioning amplifies to percents)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(20, 9, 9, 1)))
        k = jnp.asarray(rng.normal(size=(3, 3, 1, 4)))
        g = jnp.asarray(rng.normal(size=(20, 9, 9, 4)))

        def loss(k, x, mode):
            return jnp.sum(layers.conv2d(x, k, 1, "SAME", backward=mode) * g)

        ref = jax.value_and_grad(loss, argnums=(0, 1))(k, x, "xla")
        got = jax.value_and_grad(loss, argnums=(0, 1))(k, x, backward)
        assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(got))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_cpu_uses_the_custom_derivative_and_env_turns_it_off(monkeypatch):
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


# --------------------------------------------------------------------------------------------
# Conv: the module against nn.Conv, fast path and fallbacks
# --------------------------------------------------------------------------------------------

@st.composite
def conv_module_cases(draw):
    rank = draw(st.sampled_from([2, 2, 2, 1]))  # mostly the fast path's 2-D
    batch = draw(st.sampled_from([(), (2,), (1, 2), (20,)]))   # 20 > CHUNK
    spatial = tuple(draw(st.integers(3, 7)) for _ in range(rank))
    c = draw(st.integers(1, 6))
    groups = draw(st.sampled_from([1, 1, 1, 2])) if c % 2 == 0 else 1
    kwargs = dict(
        features=draw(st.integers(1, 3)) * groups,
        kernel_size=tuple(draw(st.integers(1, 3)) for _ in range(rank)),
        strides=draw(st.sampled_from([1, 2, None, (1, 2)[:rank]])),
        padding=draw(st.sampled_from(["SAME", "VALID", 1, "CIRCULAR", "REFLECT",
                                      ((1, 0),) * rank] + (["CAUSAL"] if rank == 1 else []))),
        kernel_dilation=draw(st.sampled_from([1, 1, 1, 2])),
        feature_group_count=groups,
        use_bias=draw(st.booleans()))
    if rank == 1 and kwargs["padding"] == "REFLECT":
        kwargs["padding"] = "SAME"
    x = draw_values(draw, (*batch, *spatial, c), draw(st.booleans()))
    return kwargs, x


def check_conv_module(case):
    kwargs, x = case
    ours, theirs = layers.Conv(**kwargs), nn.Conv(**kwargs)
    key = jax.random.key(0)
    v = ours.init(key, x)
    assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, theirs.init(key, x))
    jax.tree.map(np.testing.assert_array_equal, v, theirs.init(key, x))

    @jax.jit
    def run(v, x):
        def loss(module, v, x):
            return jnp.sum(jnp.tanh(module.apply(v, x)))
        tangent = jax.tree.map(jnp.ones_like, v)
        return {name: (m.apply(v, x), jax.grad(loss, argnums=(1, 2))(m, v, x),
                       jax.jvp(lambda v: m.apply(v, x), (v,), (tangent,))[1])
                for name, m in (("ours", ours), ("theirs", theirs))}

    out = run(v, x)
    jax.tree.map(lambda a, b: close(a, b, str(kwargs)), out["ours"], out["theirs"])


test_conv_module_is_flax_conv, test_conv_module_is_flax_conv_exhaustive = property_tests(
    check_conv_module, conv_module_cases(), 8, 60)


def primitives(f, *args) -> set[str]:
    """Names of the primitives of ``f``'s jaxpr, nested ones included."""
    def walk(jaxpr):
        for e in jaxpr.eqns:
            yield e.primitive.name
            for value in e.params.values():
                for sub in (value if isinstance(value, (list, tuple)) else [value]):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        yield from walk(inner)
    return set(walk(jax.make_jaxpr(f)(*args).jaxpr))


def test_conv_module_takes_the_fast_path_where_it_should():
    x = jnp.ones((32, 8, 8, 3))   # batches up to CHUNK are XLA's convolution anyway

    def fast(module):
        v = module.init(jax.random.key(0), x)
        return "custom_jvp_call" in primitives(module.apply, v, x)

    assert fast(layers.Conv(8, (3, 3)))
    assert fast(layers.Conv(8, (3, 3), strides=2, padding=((1, 0), (0, 2)), use_bias=False))
    assert not fast(layers.Conv(8, (3, 3), kernel_dilation=2))    # Flax's own
    assert fast(layers.Conv(8, (3, 3), padding="CIRCULAR"))
    with pytest.raises(ValueError, match="Causal padding is only implemented for 1D"):
        fast(layers.Conv(8, (3, 3), padding="CAUSAL"))                # Flax's own error
    assert not fast(layers.Conv(6, (3, 3), feature_group_count=3))
    assert not fast(layers.Conv(8, (3,)))                           # 1-D


# --------------------------------------------------------------------------------------------
# Pools against nn.max_pool / nn.avg_pool
# --------------------------------------------------------------------------------------------

@st.composite
def pool_cases(draw):
    batch = draw(st.sampled_from([(), (1,), (3,), (2, 2)]))
    h, w, c = draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 3))
    window = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    strides = draw(st.sampled_from(["window", "window", None, (1, 2), (2, 1)]))
    strides = window if strides == "window" else strides
    padding = draw(st.sampled_from(["VALID", "SAME", ((1, 0), (0, 1))]))
    if len(batch) > 1 and not isinstance(padding, str):
        padding = "SAME"  # Flax's pool pads only one batch axis (its reduce_window then fails)
    if padding == "VALID" or not isinstance(padding, str):
        # Flax needs at least one window
        extra = (0, 0) if padding == "VALID" else (1, 1)
        h, w = max(h, window[0] - extra[0]), max(w, window[1] - extra[1])
    x = draw_values(draw, (*batch, h, w, c), draw(st.booleans()))
    return x, window, strides, padding, draw(st.booleans())


def check_pools(case):
    x, window, strides, padding, count_include_pad = case
    pools = {
        "max": (lambda x: layers.max_pool(x, window, strides, padding),
                lambda x: flax_pooling.max_pool(x, window, strides, padding)),
        "avg": (lambda x: layers.avg_pool(x, window, strides, padding, count_include_pad),
                lambda x: flax_pooling.avg_pool(x, window, strides, padding, count_include_pad)),
    }

    @jax.jit
    def run(x, cot, tangent):
        out = {}
        for name, fns in pools.items():
            for who, f in zip(("ours", "theirs"), fns):
                y, pull = jax.vjp(f, x)
                out[name, who] = (y, pull(cot)[0], jax.jvp(f, (x,), (tangent,))[1],
                                  jax.vmap(f)(jnp.stack([x, -x])))
        return out

    shape = jax.eval_shape(pools["max"][1], x).shape
    rng = np.random.default_rng(1)
    tangent = rng.standard_normal(x.shape).astype(np.float32)
    out = run(x, rng.standard_normal(shape).astype(np.float32), tangent)
    # At tied maxima JAX's own max pool is not consistent with itself: jax.jvp takes the
    # tangent of whichever tied entry XLA's reduce_window ends on (not always the first), the
    # VJP (select_and_scatter) the first one. On its own path cnnlab's forward mode is the
    # transpose of its reverse mode, so there it is compared with the Jacobian of Flax's reverse
    # mode; where it falls back to Flax's function, with Flax's forward mode.
    if "reduce_window_max" not in primitives(pools["max"][0], x):
        jacobian = jax.jit(jax.jacrev(pools["max"][1]))(x)
        max_jvp = jnp.tensordot(jacobian, tangent, axes=x.ndim)
        out["max", "theirs"] = (*out["max", "theirs"][:2], max_jvp, out["max", "theirs"][3])
    for name in pools:
        for what, a, b in zip(("value", "vjp", "jvp", "vmap"), out[name, "ours"],
                              out[name, "theirs"]):
            close(a, b, f"{name} pool {what}: window {window} strides {strides} {padding}")


test_pools_are_flax_pools, test_pools_are_flax_pools_exhaustive = property_tests(
    check_pools, pool_cases(), 15, 200)


def test_max_pool_forward_mode_is_the_transpose_of_reverse_mode_at_ties():
    """A window holding two equal maxima (found by layers_sharded_check). Here jax.jacfwd of
    nn.max_pool takes entry (1, 2) and jax.jacrev entry (0, 3) (jax 0.10 and 0.12), which is
    why the test above compares forward mode with the reverse-mode Jacobian; cnnlab's two
    modes agree, on the first maximum."""
    h = jnp.array([[0.0, 1.25], [1.25, 0.75]]).reshape(1, 2, 2, 1)
    h = jnp.pad(h, ((0, 0), (0, 2), (2, 1), (0, 0)))     # a 4x5 input, as found
    pool_flax = lambda x: flax_pooling.max_pool(x, (2, 2), (2, 2), "SAME")  # noqa: E731
    pool_ours = lambda x: layers.max_pool(x, (2, 2), (2, 2), "SAME")  # noqa: E731
    for pool in (pool_flax, pool_ours):
        forward, reverse = jax.jacfwd(pool)(h), jax.jacrev(pool)(h)
        if pool is pool_ours:
            np.testing.assert_array_equal(forward, reverse)
        # the reverse mode (what training uses) takes the first maximum in both
        np.testing.assert_array_equal(np.argwhere(np.asarray(reverse[0, 0, 1, 0]))[0],
                                      [0, 0, 3, 0])


def test_pool_fast_path_is_taken_and_defaults_mean_what_they_mean_in_flax():
    x = jnp.arange(2 * 6 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 6, 1)
    # Flax's default stride is 1: overlapping windows, Flax's own reduce_window
    assert layers.max_pool(x, (2, 2)).shape == (2, 5, 5, 1)
    assert layers.avg_pool(x, (2, 2)).shape == (2, 5, 5, 1)

    def grad_primitives(f):
        return primitives(jax.grad(lambda x: f(x).sum()), x)

    assert "select_and_scatter_add" in grad_primitives(lambda x: layers.max_pool(x, (2, 2)))
    assert "select_and_scatter_add" not in grad_primitives(
        lambda x: layers.max_pool(x, (2, 2), (2, 2)))
    assert "reduce_window_sum" in grad_primitives(lambda x: layers.avg_pool(x, (2, 2)))
    assert "reduce_window_sum" not in grad_primitives(
        lambda x: layers.avg_pool(x, (2, 2), (2, 2)))


# --------------------------------------------------------------------------------------------
# The batch sharded over 1, 2, 4 and 8 devices (a subprocess with 8 CPU devices)
# --------------------------------------------------------------------------------------------

def run_sharded_check(examples: int):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               CNNLAB_SHARDED_EXAMPLES=str(examples))
    r = subprocess.run([sys.executable, str(HERE / "layers_sharded_check.py")], env=env,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert f"{examples} examples passed" in r.stdout, r.stdout[-2000:]


def test_sharded_batch_gives_the_same_values_and_gradients():
    run_sharded_check(examples=8)


@pytest.mark.exhaustive
def test_sharded_batch_gives_the_same_values_and_gradients_exhaustive():
    run_sharded_check(examples=60)


# --------------------------------------------------------------------------------------------
# XLA:CPU flags: an explicit opt-in, never a side effect of importing cnnlab
# --------------------------------------------------------------------------------------------

def run_fresh(code: str, **env) -> list[str]:
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()


def test_importing_cnnlab_leaves_the_jax_configuration_alone():
    code = ("import os, jax; before = dict(os.environ); jax_config = jax.config.values.copy()\n"
            "import cnnlab, cnnlab.layers, cnnlab.models, cnnlab.train, cnnlab.cli, "
            "cnnlab.data, cnnlab.transfer, cnnlab.xla_cpu\n"
            "changed = {k for k in set(before) | set(os.environ) "
            "if before.get(k) != os.environ.get(k)}\n"
            "config = {k for k, v in jax.config.values.items() if jax_config.get(k) != v}\n"
            "print(sorted(changed)); print(sorted(config)); "
            "print(cnnlab.xla_cpu.convolutions_are_multithreaded())")
    changed, config, multithreaded = run_fresh(code, XLA_FLAGS=None, CNNLAB_XLA_FLAGS=None)
    assert changed == "[]" and config == "[]", (changed, config)
    assert multithreaded == "False"   # XLA's default (YNNPACK) stays


def test_multithreaded_convolutions_are_one_explicit_call():
    opt_in = ("from cnnlab import xla_cpu; print(xla_cpu.use_multithreaded_convolutions()); "
              "print(xla_cpu.convolutions_are_multithreaded())")
    # On a jaxlib the flag was not verified on (an unknown flag aborts XLA) the call does nothing
    unverified = "import jaxlib; jaxlib.__version__ = '0.0.1'\n" + opt_in + \
        "\nimport os; print(os.environ.get('XLA_FLAGS'))"
    assert run_fresh(unverified, XLA_FLAGS=None, CNNLAB_XLA_FLAGS=None) == [
        "False", "False", "None"]
    if not __import__("jaxlib").__version__.startswith(xla_cpu.VERIFIED_JAXLIB):
        # this jaxlib is one of those: the opt-in must be verified on it and added to the list
        assert run_fresh(opt_in, XLA_FLAGS=None, CNNLAB_XLA_FLAGS=None) == ["False", "False"]
        return
    assert run_fresh(opt_in, XLA_FLAGS=None, CNNLAB_XLA_FLAGS=None) == ["True", "True"]
    assert run_fresh(opt_in, XLA_FLAGS=None, CNNLAB_XLA_FLAGS="off") == ["False", "False"]
    # too late (JAX already computed): a warning, and XLA_FLAGS unchanged
    late = ("import warnings, os, jax; from cnnlab import xla_cpu\n"
            "jax.numpy.ones(1).block_until_ready()\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always'); print(xla_cpu.use_multithreaded_convolutions())\n"
            "print(len(w), 'XLA_FLAGS' in os.environ)")
    assert run_fresh(late, XLA_FLAGS=None, CNNLAB_XLA_FLAGS=None) == ["False", "1 False"]
    # `cnnlab train` opts in before anything compiles (here it stops at a bad model name)
    cli = ("import cnnlab.cli; from cnnlab import xla_cpu\n"
           "print(cnnlab.cli.main(['train', '--model', 'no_such_model'])); "
           "print(xla_cpu.convolutions_are_multithreaded())")
    assert run_fresh(cli, XLA_FLAGS=None, CNNLAB_XLA_FLAGS=None, CNNLAB_CACHE_DIR="off") == [
        "2", "True"]
