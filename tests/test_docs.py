"""Docs that run (issue 17, point 6): the ``>>>`` examples of the library are doctests, and the
public functions of train, loop, data (dataset, loading, pipeline, feeding: all that ``cnnlab.data``
exports), transfer, distributed and checkpoints say ``Args:`` and ``Returns:`` (optax style)."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

DOCTESTED = ["cnnlab.config", "cnnlab.configs", "cnnlab.workdir", "cnnlab.loop", "cnnlab.train",
             "cnnlab.transfer", "cnnlab.distributed", "cnnlab.checkpoints", "cnnlab.models",
             "cnnlab.data", "cnnlab.data.pipeline", "cnnlab.data.feeding"]
DOCUMENTED = ["cnnlab.train", "cnnlab.loop", "cnnlab.transfer", "cnnlab.distributed",
              "cnnlab.checkpoints", "cnnlab.data.dataset", "cnnlab.data.loading",
              "cnnlab.data.pipeline", "cnnlab.data.feeding"]


@pytest.mark.parametrize("name", DOCTESTED)
def test_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"


def public_functions(module):
    for name, obj in vars(module).items():
        if name.startswith("_") or not inspect.isfunction(obj):
            continue
        if obj.__module__ == module.__name__:
            yield name, obj


@pytest.mark.parametrize("name", DOCUMENTED)
def test_public_functions_say_args_and_returns(name):
    module = importlib.import_module(name)
    missing = []
    for fname, fn in public_functions(module):
        doc = inspect.getdoc(fn) or ""
        sig = inspect.signature(fn)
        if [p for p in sig.parameters if p not in ("self", "cls")] and "Args:" not in doc:
            missing.append(f"{fname}: Args")
        returns = sig.return_annotation
        if returns not in (None, "None", inspect.Signature.empty) and not (
                "Returns:" in doc or "Yields:" in doc):
            missing.append(f"{fname}: Returns")
    assert not missing, missing
