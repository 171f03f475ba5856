"""Cases of one function compiled together (grading throughput, issue 18): one XLA compilation
for all the cases of a function instead of one per case, with every outcome what the case gives
on its own, and every case that cannot join the batch (Python control flow on values, a case
that raises, a function that prints) decided alone exactly as before.

In-process: the worker's own functions (:func:`grader.worker.run_exercises`) on a module built
here, the compilations counted with JAX's public monitoring events.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grader import drivers, specs, worker
from grader.codec import encode, load_arrays

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def counted_compilations():
    """``n["compiles"]``: XLA compilations while the block runs."""
    n = {"compiles": 0}

    def on_event(event, duration, **_):
        if event == COMPILE_EVENT:
            n["compiles"] += 1

    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
        yield n
    finally:
        jax.monitoring.unregister_event_duration_listener(on_event)


def _cases(fn_seed: int):
    """Four cases of every batchable mode, shapes all different (each alone: its own program)."""
    r = np.random.default_rng(fn_seed)
    x = [jnp.asarray(r.standard_normal(s), jnp.float32) for s in [(3,), (2, 5), (7,), (4, 3)]]
    return [("call", [x[0], 2.0], {}, {}),
            ("jit", [x[1]], {"scale": 3.0}, {}),
            ("vmap", [x[1], 0.5], {}, {"in_axes": [0, None]}),
            ("grad", [x[2], 1.5], {}, {"argnums": [0]}),
            ("call", [x[3]], {}, {})]


def scaled_tanh(x, scale=1.0):
    return jnp.tanh(x) * scale + jnp.sin(x * x)


def test_every_case_of_a_function_compiles_once_with_its_own_outcome():
    cases = _cases(0)
    alone = []
    with counted_compilations() as each:
        for mode, args, kwargs, options in cases:
            alone.append(drivers.run(mode, scaled_tanh, args, kwargs, options, module=None,
                                     fresh_inputs=None)[0])
    with counted_compilations() as batch:
        together = drivers.run_batch(scaled_tanh, cases)
    assert together is not None and batch["compiles"] == 1
    assert each["compiles"] >= len(cases)
    for a, b in zip(alone, together):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6)


def _module(source: str) -> types.ModuleType:
    module = types.ModuleType("student")
    exec(compile(source, "student.py", "exec"), module.__dict__)  # noqa: S102 - test's own code
    return module


STUDENT = """
import jax.numpy as jnp

def fine(x):
    return jnp.exp(x) - 1.0

def branchy(x):                     # Python control flow on a value: only runs eagerly
    if float(x.sum()) > 0:
        return x * 2.0
    return -x

def picky(x):                       # raises on one case only
    if x.shape[0] == 4:
        raise ValueError("four is not allowed")
    return x + 1.0

def chatty(x):                      # prints: runs eagerly, what it prints is shown
    print("chatty sees", x.shape)
    return x - 1.0
"""


def _exercise(name, inputs):
    """One exercise of plain calls of ``name``, one per input, and its input arrays."""
    arrays: dict = {}
    calls = [{"id": f"{name}/{i}", "fn": name, "mode": "call", "options": {},
              "args": encode([x], arrays, prefix=f"x{i}_"), "kwargs": encode({}, arrays)}
             for i, x in enumerate(inputs)]
    return {"name": name, "calls": calls}, arrays


@pytest.mark.parametrize("name", ["fine", "branchy", "picky", "chatty"])
def test_every_outcome_is_the_one_the_case_gives_alone(tmp_path, name):
    inputs = [np.arange(n, dtype=np.float32) - 1.5 for n in (2, 3, 4, 5)]
    module = _module(STUDENT)
    exercise, arrays = _exercise(name, inputs)
    ready = worker.batched_outputs(module, exercise["calls"], arrays)
    assert sorted(ready) == ([0, 1, 2, 3] if name == "fine" else [])  # the others decline

    out = tmp_path / "out"
    out.mkdir()
    worker.run_exercises(module, [exercise], arrays, out, lambda *a: None, 60.0, str(tmp_path))
    outcomes = json.loads((out / f"{name}.json").read_text())["outcomes"]
    values = load_arrays(out / f"{name}.npz")
    fn = getattr(module, name)
    for i, x in enumerate(inputs):
        outcome = outcomes[f"{name}/{i}"]
        try:
            expected = fn(jnp.asarray(x))
        except ValueError as e:
            assert not outcome["ok"] and outcome["error"]["message"] == str(e)
            continue
        assert outcome["ok"], outcome
        np.testing.assert_allclose(values[outcome["out"]["k"]], np.asarray(expected), rtol=1e-6)
        if name == "chatty":
            assert f"chatty sees ({len(x)},)" in outcome["printed"]
        else:
            assert not outcome.get("printed")


def _solution(module: str) -> types.ModuleType:
    path = drivers.__file__.rsplit("/grader/", 1)[0] + f"/solutions/{module}.py"
    spec = importlib.util.spec_from_file_location(f"solution_{module}_harness", path)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded  # Flax's dataclasses look their module up there
    spec.loader.exec_module(loaded)
    return loaded


@pytest.mark.parametrize("module, name, most", [("gans", "gan_train_step", 4),
                                                ("training", "train_step", 3)])
def test_a_harness_compiles_the_programs_it_needs_not_its_bookkeeping(module, name, most):
    """Per case, whatever the number of steps: the inits, the optimizer's zero state and the
    student's step (gan_step: the pair's init, two optimizer states, the step; train_step: the
    model's init, the optimizer state, the step). Slicing a step, stacking the losses, comparing
    parameters eagerly compiled a program each (before: 22 and 10 at two steps)."""
    fn = getattr(_solution(module), name)
    case = next(c for c in specs.load(module) if c.name == name).cases[0]
    r = np.random.default_rng(3)
    for steps, batch in [(2, 5), (4, 6)]:  # new shapes: nothing compiled before can be reused
        key, first, second = case.args
        args = [jax.device_put(key)] + [jax.device_put(np.asarray(
            r.standard_normal((steps, batch, *a.shape[2:])) if a.dtype.kind == "f"
            else r.integers(0, 3, (steps, batch)), a.dtype)) for a in (first, second)]
        if module == "gans":
            args[1] = jnp.clip(jnp.abs(args[1]), 0, 1)
        with counted_compilations() as n:
            out, _ = drivers.run(case.mode, fn, args, dict(case.kwargs), case.options,
                                 module=None, fresh_inputs=None)
        assert n["compiles"] <= most, (steps, n["compiles"])
        losses = out["losses"] if module == "training" else out["d_losses"]
        assert losses.shape == (steps,) and np.isfinite(np.asarray(losses)).all()
