"""How a case's outcome is judged: the registry of checks a :class:`grader.spec.Case` names.

``CHECKS`` maps each name to a function ``(case, expected, out, info, context) -> Difference |
None``: ``expected`` is the reference outcome (``{"ok", "out" | "error"}``), ``out`` and
``info`` the student's result and the worker's notes about it, ``context`` what else a check may
need (:class:`Context`: the case's inputs, what :mod:`grader.verify` found). ``None`` means the
case passed; a :class:`~grader.compare.Difference` says what is wrong and its failure kind
(:data:`grader.diagnose.FAILURE_KINDS`), which decides the hints that fit. A new kind of check is
one function here and one entry in ``CHECKS``; ``Case`` accepts exactly these names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from grader.compare import Difference, compare, difference, exactly_equal
from grader.verify import OPAQUE_OPS, STABLEHLO_OPS

PRIMITIVE_SOURCES = {  # what a student wrote that shows up as a forbidden jaxpr primitive
    "logistic": "jax.nn.sigmoid", "tanh": "jnp.tanh",
    "conv_general_dilated": "lax.conv, jnp.convolve, jax.scipy.signal",
    "reduce_window_max": "lax.reduce_window, flax.linen.max_pool",
    "reduce_window_sum": "lax.reduce_window, flax.linen.avg_pool",
}
OWN_PROCESS = "counted in your own process, which could report anything: feedback worth no points"
NOT_DECIDABLE = ("it compiles to the same operations as the formula, so only your own process "
                 "can tell, and such a check is feedback worth no points")


@dataclasses.dataclass(frozen=True)
class Context:
    """What a check may need besides the outcomes.

    Attributes:
      inputs: returns the case's ``(args, kwargs)``.
      verified: what the grader's verifier found in the program of a "from scratch" case.
    """

    inputs: Callable[[], tuple]
    verified: dict | None = None


def _short(out) -> str:
    s = repr(out) if not isinstance(out, np.ndarray) else f"an array of shape {out.shape}"
    return s[:80]


def _uses(used) -> str:
    def source(u: str) -> str:  # "conv_general_dilated (from lax.conv, ... or jax.scipy.signal)"
        where = PRIMITIVE_SOURCES[u].rsplit(", ", 1)
        return f"{u} (from {' or '.join(where)})"
    return "uses " + ", ".join(source(u) if u in PRIMITIVE_SOURCES else u for u in used)


def decidable(case) -> list[str]:
    """The forbidden (and required) primitives of a "from scratch" case that a program shows."""
    return [f for f in (*case.options.get("forbidden", ()), *case.options.get("required", ()))
            if f in STABLEHLO_OPS]


def check_match(case, expected: dict, out, info: dict, context: Context) -> Difference | None:
    """The same values as the reference, within the dtype's tolerance."""
    if not expected["ok"]:
        return Difference("raises", f"expected {expected['error'].get('kind')} to be raised, but "
                                    f"it returned {_short(out)}")
    return difference(expected["out"], out, rtol=case.rtol, atol=case.atol)


def check_from_scratch(case, expected: dict, out, info: dict,
                       context: Context) -> Difference | None:
    """:func:`from_scratch_problem` as a failure of kind ``from_scratch``."""
    problem = from_scratch_problem(case, expected, out, context)
    return Difference("from_scratch", problem) if problem else None


def from_scratch_problem(case, expected: dict, out, context: Context) -> str | None:
    """Why a "from scratch" case fails, or None. Decided by the grader from the program it ran
    itself (:mod:`grader.verify`): no forbidden operation in it, no opaque one, and the
    reference's values on this case's inputs. A forbidden primitive the program cannot show
    (:data:`grader.verify.STABLEHLO_OPS`) is judged from the student process's own report (such a
    case has weight 0)."""
    forbidden, shows = list(case.options.get("forbidden", ())), decidable(case)
    if not shows:
        reported = out.get("primitives") if isinstance(out, dict) else None
        used = [f for f in forbidden if isinstance(reported, list) and f in reported]
        return f"{_uses(used)}: this exercise is from scratch ({NOT_DECIDABLE})" if used else None
    verified = context.verified
    if not verified or not verified.get("ok"):
        why = (verified or {}).get("error") or "no program came back from your function"
        return (f"the grader could not run the program your function compiles to ({why}), so it "
                "cannot confirm that it is from scratch")
    ops = set(verified["ops"])
    shown = {STABLEHLO_OPS[f]: f for f in reversed(shows) if f in forbidden}  # one name per op
    used = [name for op, name in shown.items() if op in ops]
    if used:
        return f"{_uses(used)}: this exercise is from scratch"
    # options["required"]: primitives the program must contain (e.g. "scan": a compiled loop)
    missing = [f for f in case.options.get("required", ()) if STABLEHLO_OPS.get(f) not in ops]
    if missing:
        return (f"compiles to no {STABLEHLO_OPS[missing[0]]}: this exercise asks for "
                f"jax.lax.{missing[0]} (a Python loop copies its body into the program once per "
                f"step)")
    opaque = sorted(ops & set(OPAQUE_OPS))
    if opaque:
        return (f"compiles to {', '.join(opaque)}, a call whose work the grader cannot see: "
                "write it with jnp operations")
    reference = expected["out"]
    value = reference.get("value") if isinstance(reference, dict) else None
    diff = compare(value, verified["out"], rtol=case.rtol, atol=case.atol)
    if diff:
        return ("the program your function compiles to, run by the grader, does not give the "
                f"expected values ({diff})")
    return None


def check_pure(case, expected: dict, out, info: dict, context: Context) -> Difference | None:
    """Two calls with the same inputs agree exactly, and with the reference."""
    if not isinstance(out, dict) or set(out) != {"first", "second"}:
        return Difference("value", "malformed purity outcome")
    if not exactly_equal(out["first"], out["second"]):
        return Difference("impure", "two calls with the same inputs (and key) gave different "
                                    "results: depend only on the arguments (no global state or "
                                    "counters, no new PRNG keys)")
    return difference(expected["out"]["first"], out["first"], rtol=case.rtol, atol=case.atol)


def check_grads(case, expected: dict, out, info: dict, context: Context) -> Difference | None:
    """``jax.test_util.check_grads`` passed in the student's process (feedback only)."""
    if isinstance(out, dict) and out.get("ok") is True:
        return None
    message = out.get("message", "") if isinstance(out, dict) else ""
    return Difference("grads", f"jax.test_util.check_grads: your backward pass is not the "
                               f"derivative of your loss: {str(message)[:300]} ({OWN_PROCESS})")


def check_traced_once(case, expected: dict, out, info: dict,
                      context: Context) -> Difference | None:
    """The reference's values (whether it compiled once is a separate note of the runner)."""
    return difference(expected["out"], out, rtol=case.rtol, atol=case.atol)


def check_unchanged(case, expected: dict, out, info: dict, context: Context) -> Difference | None:
    """The blocks named in ``options["frozen"]`` are bit for bit the input's, and the rest
    matches the reference."""
    args, _ = context.inputs()
    before = args[0]
    after = out.get("params") if isinstance(out, dict) else None
    if not isinstance(after, dict):
        return Difference("value", "the result holds no parameter dict")
    for block in case.options.get("frozen", ()):
        if block not in after:
            return Difference("value", f"block {block!r} is missing from the parameters")
        msg = compare(before[block], after[block], path=f"params[{block!r}]", rtol=0.0, atol=0.0)
        if msg:
            return Difference("value", f"frozen parameters moved — {msg}")
    return difference(expected["out"], out, rtol=case.rtol, atol=case.atol)


CHECKS: dict[str, Callable[..., Difference | None]] = {
    "match": check_match,
    "no_primitives": check_from_scratch,
    "pure": check_pure,
    "check_grads": check_grads,
    "traced_once": check_traced_once,
    "unchanged": check_unchanged,
}


def judge(case, expected: dict, out: Any, info: dict, context: Context) -> Difference | None:
    """Run the check ``case.check`` names (see :data:`CHECKS`); a function that modified its
    input fails whatever the check (kind ``mutated``)."""
    if info.get("mutated"):
        return Difference("mutated", f"your function modified its input at {info['mutated']}: "
                                     f"build new arrays/dicts instead (e.g. new = dict(params))")
    return CHECKS[case.check](case, expected, out, info, context)
