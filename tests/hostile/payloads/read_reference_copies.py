# attacks: relu
"""Looks for other copies of the reference wherever a real machine keeps them: the places the
test planted them (__COPIES__: a sibling clone, the home folder, /tmp, the folder above the
checkout) and a walk of the usual places. Any readable copy is used (relu returns its answer), so a
leak shows up as a pass; otherwise relu is wrong. The paths are spelled so that no reader of the
source sees them (reversed): only the sandbox's view stands in the way."""
import glob as _glob
import os as _os

import jax.numpy as jnp

_SOL = "snoitulos"[::-1]


def _copies():
    here = _os.path.abspath(__file__)
    places = [p[::-1] for p in __COPIES__] + [p for up in range(1, 5) for p in _glob.glob(
        _os.path.join(here, *[".."] * up, "*", _SOL, "neurons.py"))]
    for home in (_os.path.expanduser("~"), "/root", "/home", "/tmp", "/work", "/autograder"):
        places += _glob.glob(f"{home}/*/{_SOL}/neurons.py") + \
            _glob.glob(f"{home}/*/*/{_SOL}/neurons.py")
    for path in places:
        try:
            with open(path) as f:
                source = f.read()
        except OSError:
            continue
        if "def relu" in source:
            yield path, source


def relu(x):
    for path, source in _copies():
        print("LEAKED:", path)
        namespace = {}
        exec(compile(source, path, "exec"), namespace)
        return namespace["relu"](x)
    return jnp.full_like(x, -1.0)
