# attacks: convolution.conv2d_single
"""Uses lax.conv (forbidden in this exercise) and fakes the grader's look at it: the worker's
"from scratch" mode is replaced by one that reports no primitive and hands over the program of a
harmless function, and jax.make_jaxpr is patched to show nothing."""
import sys as _sys

import jax
import jax.numpy as jnp
import numpy as _np


def _fake(fn, args, kwargs, options, **_):
    clean = jax.jit(lambda image, kernel: jnp.zeros((image.shape[0] - kernel.shape[0] + 1,
                                                     image.shape[1] - kernel.shape[1] + 1)))
    program = jax.export.export(clean)(*args).serialize()
    return {"program": _np.frombuffer(bytes(program), _np.uint8), "primitives": [],
            "value": fn(*args)}, {}


for _module in list(_sys.modules.values()):
    if hasattr(_module, "mode_jaxpr") and hasattr(_module, "MODES"):
        _module.MODES["jaxpr"] = _fake
        _module.primitive_names = lambda *a, **k: []


def conv2d_single(image, kernel):
    return jax.lax.conv(image[None, None], kernel[None, None], (1, 1), "VALID")[0, 0]
