# attacks: relu
"""Hard-codes the answers of the public cases (what a student can copy from the release's
grader/expected): relu returns the stored output when its input is a public one, garbage
otherwise. It passes the public cases; the hidden ones, drawn at grading time, it cannot know."""
import hashlib as _hashlib

import jax.numpy as jnp
import numpy as _np

_ANSWERS = __PUBLIC_ANSWERS__


def relu(x):
    x = _np.asarray(x, _np.float32)
    answer = _ANSWERS.get(_hashlib.sha256(x.tobytes() + str(x.shape).encode()).hexdigest())
    return jnp.asarray(answer, jnp.float32) if answer is not None else jnp.full_like(x, -1.0)
