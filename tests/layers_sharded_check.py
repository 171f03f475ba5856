"""cnnlab.layers with the batch sharded over 1, 2, 4 and 8 devices = Flax/lax sharded alike.

Run by ``tests/test_layers.py`` in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (``CNNLAB_SHARDED_EXAMPLES`` examples);
prints "N examples passed" or fails with hypothesis's falsifying example.

Each example is a small network in the shape of resnet_small's stages, where the bug of issue 11
lived: conv (stride 1 or 2) -> batch-statistics normalisation (a cross-device reduction once the
batch is sharded) -> ReLU -> max pool -> conv -> normalisation -> avg pool -> a weighted sum. Its
value, its gradients (input and both kernels) and a forward-mode derivative are computed under
``jax.jit`` with the batch split over d devices (``NamedSharding(mesh, P("data"))``), with
cnnlab's layers and with lax's convolution and Flax's pools; they must agree within 1e-5 of the
largest entry. (Against the reference on one device the reference itself can be 1.2e-5 off on 4
devices: batch-norm gradients of tiny batches cancel; ``tests/test_models_devices.py`` compares
whole models across device counts.) Batch sizes leave each device 1, 2, 3 or 5 rows (and pass
the 16-image chunk of the weight gradient); values are either continuous or small integers,
which make windows with several equal maxima (ties) and, the convolutions being exact on them,
no near-ties whose winner would depend on rounding.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import pooling as flax_pooling
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jax import lax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from cnnlab import layers

DN = ("NHWC", "HWIO", "NHWC")


def normalise(h):
    """Batch norm in training mode without parameters: statistics over batch and space."""
    mean = h.mean(axis=(0, 1, 2))
    var = ((h - mean) ** 2).mean(axis=(0, 1, 2))
    return (h - mean) * lax.rsqrt(var + 1e-5)


def network(ops, window, padding, stride):
    conv, max_pool, avg_pool = ops

    def f(x, k1, k2, w):
        h = jax.nn.relu(normalise(conv(x, k1, stride)))
        h = max_pool(h, window, window, padding)
        h = jax.nn.relu(normalise(conv(h, k2, 1)))
        if h.shape[1] >= 2 and h.shape[2] >= 2:
            h = avg_pool(h, (2, 2), (2, 2), "VALID")
        return jnp.sum(h * w[: h.shape[1], : h.shape[2]]), h
    return f


OURS = (lambda x, k, s: layers.conv2d(x, k, s, "SAME"), layers.max_pool, layers.avg_pool)
REFERENCE = (lambda x, k, s: lax.conv_general_dilated(x, k, (s, s), "SAME", dimension_numbers=DN),
             flax_pooling.max_pool, flax_pooling.avg_pool)


def derivatives(f, x, k1, k2, w, t1):
    """The network's last activations, the gradients of the weighted sum with respect to
    (x, k1, k2), and the derivative of the activations along the tangent t1 of k1."""
    (_, h), grads = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(x, k1, k2, w)
    return h, grads, jax.jvp(lambda k: f(x, k, k2, w)[1], (k1,), (t1,))[1]


def close(actual, expected, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    worst = float(np.max(np.abs(actual - expected))) / scale
    assert worst <= 1e-5, f"{what}: relative difference {worst:.2e}"


@st.composite
def cases(draw):
    stride = draw(st.sampled_from([1, 1, 2]))   # of the first convolution
    return dict(devices=draw(st.sampled_from([1, 2, 4, 8])),
                rows=draw(st.sampled_from([1, 2, 3, 5])), stride=stride,
                hw=(draw(st.integers(4 * stride, 10 * stride)),
                    draw(st.integers(4 * stride, 10 * stride))),
                channels=tuple(draw(st.integers(1, 5)) for _ in range(3)),
                window=draw(st.sampled_from([(2, 2), (2, 2), (3, 3), (2, 3)])),
                padding=draw(st.sampled_from(["VALID", "SAME"])),
                ties=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def arrays(devices, rows, hw, channels, ties, seed, **_):
    """x (devices * rows, H, W, c1), kernels (3, 3, c1, c2) and (3, 3, c2, c3), output weights
    (H, W, c3) and a tangent for the first kernel."""
    rng = np.random.default_rng(seed)
    (h, w), (c1, c2, c3) = hw, channels

    def values(*shape):
        if ties:
            return rng.integers(-2, 3, shape).astype(np.float32)
        return rng.standard_normal(shape).astype(np.float32)

    return (values(devices * rows, h, w, c1), values(3, 3, c1, c2), values(3, 3, c2, c3),
            values(h, w, c3), values(3, 3, c1, c2))


EXAMPLES = int(os.environ.get("CNNLAB_SHARDED_EXAMPLES", "8"))
# Cases the old gradient (comparing x with the saved maximum) got wrong, kept as fixed
# examples: it failed on about 1 in 8 random cases, so random draws alone could miss it.
KNOWN_BAD = [dict(devices=4, rows=2, hw=(8, 8), channels=(1, 1, 1), ties=False),
             dict(devices=8, rows=5, hw=(7, 9), channels=(5, 5, 5), ties=True),
             dict(devices=2, rows=3, hw=(10, 10), channels=(1, 1, 1), ties=False)]


def with_known_bad(test):
    for case in KNOWN_BAD:
        test = example(case=dict(case, window=(2, 2), padding="VALID", stride=1, seed=0))(test)
    return test


# derandomize: the same examples on every run, so that CI's verdict is the code's, not the draw's
# (float32 batch-norm gradients of tiny batches cancel to within a few 1e-6 of the bound, and an
# unlucky continuous draw can put two window entries within rounding of each other).
@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
@with_known_bad
def check(case):
    devices, window, padding = case["devices"], case["window"], case["padding"]
    x, k1, k2, w, t1 = arrays(**case)
    mesh = jax.make_mesh((devices,), ("data",), devices=jax.devices()[:devices],
                         axis_types=(AxisType.Auto,))
    ours = jax.jit(lambda *a: derivatives(network(OURS, window, padding, case["stride"]), *a))
    ref = jax.jit(lambda *a: derivatives(network(REFERENCE, window, padding, case["stride"]), *a))
    args = (jax.device_put(x, NamedSharding(mesh, P("data"))),
            *jax.device_put((k1, k2, w, t1), NamedSharding(mesh, P())))
    got, expected = ours(*args), ref(*args)
    what = (f"{devices} devices, batch {x.shape[0]}, conv stride {case['stride']}, "
            f"window {window} {padding}")
    close(got[0], expected[0], f"value, {what}")
    for name, a, b in zip(("dx", "dk1", "dk2"), got[1], expected[1]):
        close(a, b, f"{name}, {what}")
    # At tied maxima JAX's own max pool is not consistent with itself: its forward mode takes
    # the tangent of whichever tied entry XLA's reduce_window ends on, its reverse mode the
    # first one (tests/test_layers.py shows it). So with ties cnnlab's forward mode is checked
    # against its own reverse mode: <J t1, w> = <t1, J^T w>, J = d(activations)/d(k1).
    if not case["ties"]:
        close(got[2], expected[2], f"jvp, {what}")
    h_tangent = np.asarray(got[2], np.float64)
    terms = (h_tangent * np.asarray(w, np.float64)[: h_tangent.shape[1], : h_tangent.shape[2]],
             np.asarray(got[1][1], np.float64) * np.asarray(t1, np.float64))
    forward, reverse = (float(t.sum()) for t in terms)
    assert abs(forward - reverse) <= 1e-5 * sum(float(np.abs(t).sum()) for t in terms), \
        f"jvp is not the transpose of the gradient, {what}: {forward} vs {reverse}"


if __name__ == "__main__":
    assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
    check()
    print(f"{EXAMPLES} examples passed (and {len(KNOWN_BAD)} fixed ones)")
    sys.exit(0)
