# attacks: relu
"""Hunts the reference's compiled programs: the JAX compilation cache that the sandbox shows
read-only at /cnnlab-jax-cache (filled by the reference's worker) and the same folder where the
grader keeps it (__COMPILED__). Lists it (listdir, scandir, glob, walk), reads the folder itself,
and tries to write an entry into it (a poisoned program for the next submission). A name listed,
or a write that sticks, is "exploited" (relu returns the right answer); otherwise relu is wrong.
It also opens one entry by its exact name (__ENTRY__, filled in by the test: a student who knows
the hash of a program), which the sandbox allows: it prints whether that worked."""
import glob as _glob
import os as _os

import jax.numpy as jnp

_FOLDERS = ["/cnnlab-jax-cache", __COMPILED__]


def _found():
    for folder in [f for f in _FOLDERS if f]:
        for listing in (lambda: _os.listdir(folder), lambda: [e.name for e in _os.scandir(folder)],
                        lambda: _glob.glob(folder + "/*"), lambda: _glob.glob(folder + "/jit_*"),
                        lambda: [n for _, _, names in _os.walk(folder) for n in names]):
            try:
                names = listing()
            except OSError:
                continue
            if names:
                yield f"listed {folder}: {len(names)} names"
        try:
            with open(folder, "rb") as f:
                if f.read(1):
                    yield f"read the folder {folder}"
        except OSError:
            pass
        try:
            with open(_os.path.join(folder, "jit_relu-poisoned-cache"), "wb") as f:
                f.write(b"poison")
            yield f"wrote into {folder}"
        except OSError:
            pass


def _opened_by_name() -> bool:
    try:
        with open(_os.path.join("/cnnlab-jax-cache", __ENTRY__), "rb") as f:
            return len(f.read()) > 0
    except (OSError, TypeError):
        return False


def relu(x):
    found = list(_found())
    print("FOUND:", found)
    print("OPENED BY NAME:", _opened_by_name())
    if found:
        return jnp.maximum(x, 0)  # stands for using what was listed or written
    return jnp.full_like(x, -1.0)
