"""A pytest plugin that puts cnnlab's layers in the place of Flax's: ``nn.Conv``,
``nn.max_pool`` and ``nn.avg_pool`` on ``flax.linen`` become ``cnnlab.layers.Conv``,
``max_pool`` and ``avg_pool`` before any test module is imported (Flax's tests parametrize over
``nn.Conv`` at import time).

Used by ``tests/test_flax_dropin.py`` to run Flax's own tests (``pytest -p flax_dropin_plugin``).
It counts how often cnnlab's layers were called and how often they took their own CPU path
rather than falling back to Flax's code, and writes the counts as JSON to
``$CNNLAB_DROPIN_REPORT`` at the end, so the caller can check the swap really happened.
"""

from __future__ import annotations

import collections
import functools
import json
import os

import flax.linen as nn

from cnnlab import layers

COUNTS: collections.Counter = collections.Counter()


def counted(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        COUNTS[name] += 1
        return fn(*args, **kwargs)
    return wrapper


# Calls of the public layers ...
layers.Conv._fast_padding = counted("Conv calls", layers.Conv._fast_padding)
nn.Conv = layers.Conv
nn.max_pool = counted("max_pool calls", layers.max_pool)
nn.avg_pool = counted("avg_pool calls", layers.avg_pool)
# ... and of cnnlab's own computations (module globals, looked up when called).
layers.conv2d = counted("Conv on cnnlab's path", layers.conv2d)
layers._window_max = counted("max_pool on cnnlab's path", layers._window_max)
layers._window_mean = counted("avg_pool on cnnlab's path", layers._window_mean)


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("CNNLAB_DROPIN_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(dict(COUNTS), f)
