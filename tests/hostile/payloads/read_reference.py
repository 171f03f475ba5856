# attacks: relu
"""Looks for the reference: solutions/, the expected outputs, hidden cases, git history, the
runner's cache, other students' submissions and results, root-only files. Anything readable is
"exploited" (relu returns the right answer), so a leak shows up as a pass; otherwise relu is wrong.
__SUBMISSIONS__ and __RESULTS__ are filled in by the fixture (a student who knows the layout)."""
import jax.numpy as jnp
import glob as _glob
import os as _os
import sys as _sys


def _leaks():
    worker = next(m for m in list(_sys.modules.values()) if hasattr(m, "_save_arrays"))  # by what it holds
    root = _os.path.dirname(_os.path.dirname(_os.path.abspath(worker.__file__)))
    home = _os.path.expanduser("~")
    patterns = [
        f"{root}/solutions/*.py", f"{root}/grader/expected/*", f"{root}/grader/hidden/*.py",
        f"{root}/.git/HEAD", f"{root}/.git/objects/*/*", f"{root}/tests/*.py",
        "/root/.cache/cnnlab/*/*", f"{home}/.cache/cnnlab/*/*", "/tmp/cnnlab-*/*", "/tmp/*/*",
        "__SUBMISSIONS__/*", "__SUBMISSIONS__/*/*.py", "__RESULTS__/*", "__RESULTS__/*/*.json",
        "/etc/shadow",
    ]
    # What the sandbox lets every worker see (the library, the grader's code, the exercises): no leak,
    # even when the checkout itself lives under /tmp and so matches "/tmp/*/*".
    public = tuple(f"{root}/{name}" for name in ("lib/", "grader/", "exercises/", ".venv/",
                                                  "pyproject.toml", "README.md", "Makefile"))
    secret = (f"{root}/grader/expected/", f"{root}/grader/hidden/")
    found = []
    for pattern in patterns:
        for path in [pattern] + _glob.glob(pattern):
            if path.startswith(public) and not path.startswith(secret):
                continue
            try:
                if _os.path.isfile(path) and not path.startswith(_os.getcwd()):
                    with open(path, "rb") as f:
                        f.read(16)
                    found.append(path)
            except OSError:
                pass
    return found


def relu(x):
    leaked = _leaks()
    print("LEAKED:", leaked)
    if leaked:
        return jnp.maximum(x, 0)  # stands for using what was read
    return jnp.full_like(x, -1.0)
