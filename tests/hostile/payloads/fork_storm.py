# attacks: relu
"""A fork storm, once per process: up to 300 children that each sleep 2 s and exit (never reaped).
Bounded: at most 300 processes, gone within seconds. If all 300 forks succeed (no process limit)
relu returns the right answer, so a missing limit shows up as a pass."""
import jax.numpy as jnp
import os as _os
import time as _time

_BORN = []


def relu(x):
    if not _BORN:
        for _ in range(300):
            try:
                pid = _os.fork()
            except OSError:
                continue
            if pid == 0:
                _time.sleep(2)
                _os._exit(0)
            _BORN.append(pid)
        _BORN.append(-1)
    if len(_BORN) > 300:
        return jnp.maximum(x, 0)
    raise RuntimeError(f"only {len(_BORN) - 1} of 300 forks succeeded")
