"""Shared test settings.

The full Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` (the README's optional set-up step,
which ``.ci/run`` performs). Tests that need it use the ``requires_full_data`` marker: on a student's
machine without the package they are skipped with the reason, but under CI (``CI=true``) a missing
package is a failure, so CI can never go green by skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FULL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_full_data: needs Debian's dataset-fashion-mnist (mandatory under CI)")


def pytest_runtest_setup(item):
    if item.get_closest_marker("requires_full_data") and not FULL_FASHION_MNIST.is_dir():
        message = (f"needs the full Fashion-MNIST in {FULL_FASHION_MNIST} "
                   "(apt-get install dataset-fashion-mnist)")
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it (see .ci/run)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    """The environment of a ``cnnlab`` subprocess: one device (no XLA flags of the caller) and
    the session's persistent compilation cache, which this process uses too (runs of the same
    shapes compile once per session)."""
    from cnnlab import train  # imported when a test asks for it: the grader tests need no JAX
    cache = tmp_path_factory.getbasetemp() / "jax-cache"
    cache.mkdir(exist_ok=True)
    train.enable_compilation_cache(str(cache))
    e = dict(os.environ, CNNLAB_CACHE_DIR=str(cache))
    e.pop("XLA_FLAGS", None)
    return e


@pytest.fixture(scope="session")
def write_config(tmp_path_factory):
    """``write_config(name, text)``: a ``--config FILE.py`` with ``text``, in a folder of its own."""
    def write(name: str, text: str) -> Path:
        path = tmp_path_factory.mktemp("config") / name
        path.write_text(text)
        return path
    return write
