"""How a case's outcome is judged: the registry of checks a :class:`grader.spec.Case` names.

``CHECKS`` maps each name to a function ``(case, expected, out, info, inputs) -> message | None``:
``expected`` is the reference outcome (``{"ok", "out" | "error"}``), ``out`` and ``info`` the
student's result and the worker's notes about it (traces, calls), ``inputs()`` returns the case's
``(args, kwargs)``. ``None`` means the case passed; a message says what is wrong. A new kind of
check is one function here and one entry in ``CHECKS``; ``Case`` accepts exactly these names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from grader.compare import compare, exactly_equal

PRIMITIVE_SOURCES = {  # what a student wrote that shows up as a forbidden jaxpr primitive
    "logistic": "jax.nn.sigmoid", "tanh": "jnp.tanh",
    "conv_general_dilated": "lax.conv, jnp.convolve, jax.scipy.signal",
    "reduce_window_max": "lax.reduce_window, flax.linen.max_pool",
    "reduce_window_sum": "lax.reduce_window, flax.linen.avg_pool",
}


def _short(out) -> str:
    s = repr(out) if not isinstance(out, np.ndarray) else f"an array of shape {out.shape}"
    return s[:80]


def check_match(case, expected: dict, out, info: dict, inputs) -> str | None:
    """The same values as the reference, within the dtype's tolerance."""
    if not expected["ok"]:
        return f"expected {expected['error'].get('kind')} to be raised, but it returned {_short(out)}"
    return compare(expected["out"], out, rtol=case.rtol, atol=case.atol)


def check_no_primitives(case, expected: dict, out, info: dict, inputs) -> str | None:
    """The jaxpr uses none of ``options["forbidden"]`` (exercises written from scratch)."""
    forbidden = set(case.options.get("forbidden", ()))
    used = sorted(forbidden & set(out)) if isinstance(out, list) else ["?"]
    if not used:
        return None
    return ("uses " + ", ".join(f"{u} ({PRIMITIVE_SOURCES[u]})" if u in PRIMITIVE_SOURCES else u
                                for u in used) + ": this exercise is from scratch")


def check_pure(case, expected: dict, out, info: dict, inputs) -> str | None:
    """Two calls with the same inputs agree exactly, and with the reference."""
    if not isinstance(out, dict) or set(out) != {"first", "second"}:
        return "malformed purity outcome"
    if not exactly_equal(out["first"], out["second"]):
        return "two calls with the same inputs (and key) gave different results: depend only " \
               "on the arguments (no global state or counters, no new PRNG keys)"
    return compare(expected["out"]["first"], out["first"], rtol=case.rtol, atol=case.atol)


def check_grads(case, expected: dict, out, info: dict, inputs) -> str | None:
    """``jax.test_util.check_grads`` passed in the worker."""
    if isinstance(out, dict) and out.get("ok") is True:
        return None
    return f"jax.test_util.check_grads: your backward pass is not the derivative of your loss: " \
           f"{str(out.get('message', '') if isinstance(out, dict) else out)[:300]}"


def check_traced_once(case, expected: dict, out, info: dict, inputs) -> str | None:
    """The reference's values, and the step's Python body ran once (compiled once)."""
    n, calls = info.get("traces"), info.get("calls")
    msg = compare(expected["out"], out, rtol=case.rtol, atol=case.atol)
    if msg is None and n != 1:
        msg = f"the step's Python code ran {n} times in {calls} calls: it is not compiled " \
              f"once (decorate it with @jax.jit, at module level)"
    return msg


def check_unchanged(case, expected: dict, out, info: dict, inputs) -> str | None:
    """The blocks named in ``options["frozen"]`` are bit for bit the input's, and the rest
    matches the reference."""
    args, _ = inputs()
    before = args[0]
    after = out.get("params") if isinstance(out, dict) else None
    if not isinstance(after, dict):
        return "the result holds no parameter dict"
    for block in case.options.get("frozen", ()):
        if block not in after:
            return f"block {block!r} is missing from the parameters"
        msg = compare(before[block], after[block], path=f"params[{block!r}]", rtol=0.0, atol=0.0)
        if msg:
            return f"frozen parameters moved — {msg}"
    return compare(expected["out"], out, rtol=case.rtol, atol=case.atol)


CHECKS: dict[str, Callable[..., str | None]] = {
    "match": check_match,
    "no_primitives": check_no_primitives,
    "pure": check_pure,
    "check_grads": check_grads,
    "traced_once": check_traced_once,
    "unchanged": check_unchanged,
}


def judge(case, expected: dict, out: Any, info: dict, inputs) -> str | None:
    """Run the check ``case.check`` names (see :data:`CHECKS`)."""
    return CHECKS[case.check](case, expected, out, info, inputs)
