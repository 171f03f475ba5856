"""XLA:CPU speed settings: an explicit, one-call opt-in (importing cnnlab never changes them).

    from cnnlab import xla_cpu
    xla_cpu.use_multithreaded_convolutions()    # first thing, before JAX computes anything

``cnnlab`` commands (``cnnlab train``, ``evaluate``, ...) and the training benchmarks call it;
``CNNLAB_XLA_FLAGS=off`` turns it off for them. Light on purpose (no JAX import at module level):
the CLI calls it before anything else.
"""

from __future__ import annotations

import os
import warnings

# XLA:CPU hands convolutions to YNNPACK by default; this flag sends them to Eigen's convolution
# on the intra-op thread pool instead. Measured on this project's 2-core CPU:
# - jaxlib 0.10, where YNNPACK runs each convolution on one thread: 14x14x32->64 at batch 128,
#   forward 4.1 -> 2.1 ms and input gradient 4.0 -> 2.4 ms;
# - jaxlib 0.12, where YNNPACK convolutions use both cores (forward about the same as Eigen's):
#   the workshop CNN's train step 1.25x faster, the Flax-example CNN's 1.1x (the weight gradients
#   and strided convolutions gain), in two interleaved runs of benchmarks/train_throughput.py.
# Only for the jaxlib versions it was verified on: an unknown flag in XLA_FLAGS aborts XLA.
CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
VERIFIED_JAXLIB = ("0.10.", "0.12.")


def use_multithreaded_convolutions() -> bool:
    """Opt in to XLA:CPU's multi-threaded (Eigen) convolutions for this process: appends
    :data:`CONV_FLAG` to ``XLA_FLAGS``. Call it before JAX computes anything (XLA reads the flag
    when JAX starts its CPU backend).

    Leaves ``XLA_FLAGS`` alone when ``CNNLAB_XLA_FLAGS=off``, when ``XLA_FLAGS`` already sets
    the YNN fusion type (yours wins), on a jaxlib it was not verified on (:data:`VERIFIED_JAXLIB`)
    and, with a warning, when JAX's backend has already started. Returns whether the flag is in
    ``XLA_FLAGS`` afterwards; :func:`convolutions_are_multithreaded` says whether it took effect.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return CONV_FLAG in flags
    if os.environ.get("CNNLAB_XLA_FLAGS", "").lower() in ("off", "0", "no", "false"):
        return False
    import jaxlib
    if not jaxlib.__version__.startswith(VERIFIED_JAXLIB):
        return False
    from jax._src import xla_bridge  # no public way to ask whether the backend has started
    if getattr(xla_bridge, "backends_are_initialized", lambda: False)():
        warnings.warn("cnnlab.xla_cpu.use_multithreaded_convolutions() came after JAX started "
                      "its backend: XLA_FLAGS left unchanged; call it before the first JAX "
                      "computation", stacklevel=2)
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {CONV_FLAG}".strip()
    return True


def convolutions_are_multithreaded() -> bool:
    """Whether XLA:CPU compiles convolutions to its multi-threaded Eigen path in this process
    rather than to YNNPACK (compiles one tiny convolution to find out; False off CPU)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    if jax.default_backend() != "cpu":
        return False
    x = jnp.zeros((2, 8, 8, 32))  # tiny convolutions never go to YNNPACK: this one would
    conv = jax.jit(lambda x, k: lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    return "ynn_fusion" not in conv.lower(x, jnp.zeros((3, 3, 32, 32))).compile().as_text()
