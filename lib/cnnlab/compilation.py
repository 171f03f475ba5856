"""Compiling once: JAX's persistent compilation cache, and trace counters that prove it.

:data:`TRACE_COUNTS` counts how often the Python body of a jitted function ran (it runs once
per compilation): the tests that say "each shape compiles exactly once" read it.
"""

from __future__ import annotations

import collections
import os
import warnings

import jax
from jax.experimental.compilation_cache import compilation_cache

# Python-side trace counts of the jitted functions, by name ("train_step", "eval_step",
# "gather"): the body runs once per compilation.
TRACE_COUNTS: collections.Counter = collections.Counter()


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Keep compiled XLA programs on disk so the next run with the same shapes skips compiling.

    On a small CPU compiling dominates short runs (seconds per program: the init and the train
    step each take several); this is JAX's persistent compilation cache, keyed by the program,
    the compiler version and the devices. Entries are a few hundred kB each; delete the
    directory any time.

    Args:
      path: the cache directory; default ``$CNNLAB_CACHE_DIR`` or ``~/.cache/cnnlab/jax``.
        ``"off"`` (or ``CNNLAB_CACHE_DIR=off``) disables the cache.

    Returns:
      The directory used, or None when the cache is off or cannot be created.
    """
    path = path or os.environ.get("CNNLAB_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "cnnlab", "jax")
    if path.lower() in ("off", "0", "none", ""):
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None  # a cache is an optimisation: never fail a run over it
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    # A failed cache write (e.g. two processes racing on one entry) only costs a recompile.
    warnings.filterwarnings("ignore", message=".*persistent compilation cache.*")
    compilation_cache.reset_cache()  # in case something compiled before the directory was set
    return path
