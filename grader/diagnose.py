"""Turn a failure into a message that teaches, and decide which hint fits it.

An error record from the worker holds the exception's kind, module, message and the last line of
the student's own files in the traceback (never a line of the reference: the reference is not in
the worker). :func:`describe_error` turns it into one or two lines; :func:`error_kind` says what
kind of failure it is.

Failure kinds (``CaseResult.kind``), the vocabulary of ``Case.hint_on``:

===============  ==================================================================================
``value``        the result has the right form but other values (:mod:`grader.compare`)
``shape``        the result's form differs: array shape, missing keys, list length
``type``         int where a float was expected, float64 instead of float32, ...
``nonfinite``    NaN or inf where the reference is finite
``raises``       the reference raises here (bad input) and the student's code did not, or raised
                 another exception
``tracer``       Python control flow or numpy on an array: ``if x > 0:``, ``int(x)``, ``np.asarray``
                 (under ``jax.jit``/``vmap``/``grad``, or numpy's truth-value error on a real array)
``error``        any other exception raised by the student's code
``mutated``      the function modified its input
``impure``       two calls with the same inputs gave different results
``from_scratch`` a primitive the exercise forbids
``grads``        the hand-written backward pass is not the derivative
===============  ==================================================================================

A case's hint is shown only for the kinds it addresses (:func:`hint_applies`): an overflow hint
on NaN, a shape hint on a shape mismatch, a jit hint on a tracer error; never on a failure of
another kind, where it would send the student the wrong way. ``error:ValueError`` in ``hint_on``
addresses that one exception only.
"""

from __future__ import annotations

TRACER_KINDS = {"TracerBoolConversionError", "ConcretizationTypeError",
                "TracerIntegerConversionError", "TracerArrayConversionError"}

TRACER_HINT = ("Python control flow on a traced array: under jax.jit/vmap/grad an array has no "
               "concrete value, so `if x > 0:`, `while`, `int(x)`, `bool(x)` or `np.asarray(x)` "
               "cannot work. Use jnp.where(cond, a, b) or jax.lax.cond for choices, "
               "jax.lax.fori_loop for loops, or keep sizes in plain Python ints.")

TRUTH_VALUE_HINT = ("`if`, `and`, `or` or `while` on an array: a comparison such as `x >= 0` "
                    "gives one True/False per element, and Python needs a single one (numpy's "
                    "advice, a.any() or a.all(), would pick one branch for the whole array). "
                    "Choose per element with jnp.where(x >= 0, a, b); under jax.jit even a "
                    "one-element array has no value to test.")

FAILURE_KINDS = ("value", "shape", "type", "nonfinite", "raises", "tracer", "error", "mutated",
               "impure", "from_scratch", "grads")
TRANSFORMS = ("jit", "vmap")


def _first_lines(message: str, n: int = 2, width: int = 300) -> str:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    text = " ".join(lines[:n])
    return text[:width] + ("..." if len(text) > width else "")


def _is_truth_value_error(err: dict) -> bool:
    return err.get("kind") == "ValueError" and "truth value of an array" in err.get("message", "")


def error_kind(err: dict) -> str:
    """The failure kind of an error record (see the module docstring); ``not_attempted`` and
    ``timeout`` for those two, which no case hint addresses."""
    kind = err.get("kind", "Exception")
    if kind == "NotImplementedError":
        return "not_attempted"
    if kind == "Timeout":
        return "timeout"
    if kind in TRACER_KINDS or _is_truth_value_error(err):
        return "tracer"
    return "error"


def describe_error(err: dict) -> str:
    """One or two lines: what went wrong, where in the student's file, and what to do."""
    kind = err.get("kind", "Exception")
    msg = err.get("message", "")
    where = err.get("where")
    loc = ""
    if isinstance(where, dict):
        loc = f" (at {str(where.get('file'))[:100]}:{str(where.get('line'))[:10]}: " \
              f"`{str(where.get('code', ''))[:200]}`)"
    if kind == "NotImplementedError":
        return f"not attempted: {_first_lines(msg, 1) or 'the body still raises NotImplementedError'}"
    if kind == "Timeout":
        return f"{msg} — an infinite loop, or a Python loop over every pixel/example?"
    if kind == "MissingFunction":
        return f"{msg} (keep the names and signatures of the exercise file)"
    if kind == "BadReturn":
        return f"bad return value: {msg}"
    if kind in TRACER_KINDS:
        return f"{kind}{loc}: {TRACER_HINT}"
    if _is_truth_value_error(err):
        return f"ValueError{loc}: {TRUTH_VALUE_HINT}"
    if kind == "TypeError" and ("immutable" in msg or "does not support item assignment" in msg):
        return f"TypeError{loc}: JAX arrays are immutable — instead of x[i] = v write " \
               f"x = x.at[i].set(v)."
    if kind == "SystemExit":
        return f"the code called sys.exit(){loc}; a function must return its result"
    if kind == "UnexpectedTracerError":
        return f"UnexpectedTracerError{loc}: a traced value escaped its jax.jit/grad (saved in " \
               f"a global or on self?); return values instead of storing them."
    if kind in ("IndexError",) and "out of bounds" in msg:
        return f"IndexError{loc}: {_first_lines(msg)} — check the output size formula"
    return f"{kind}{loc}: {_first_lines(msg)}"


def default_hint_on(mode: str, check: str, reference_raises: bool) -> tuple[str, ...]:
    """The failure kinds a case's hint addresses when the spec does not say (``Case.hint_on``).

    A transformation case's hint (``under jax.jit``) is about the transformation: tracer errors
    only. A "from scratch", purity or check_grads case's hint is about that check. A case whose
    reference raises is about raising. A gradient case's hint about errors in differentiating.
    Any other hint is about the values.
    """
    if check == "no_primitives":
        return ("from_scratch",)
    if check == "pure":
        return ("impure",)
    if check == "check_grads":
        return ("grads",)
    if reference_raises:
        return ("raises",)
    if mode in TRANSFORMS:
        return ("tracer",)
    if mode == "grad":
        return ("tracer", "error")
    return ("value",)


def valid_hint_on(entry: str) -> bool:
    """A failure kind, or ``error:<ExceptionName>``."""
    kind, _, exception = entry.partition(":")
    return kind in FAILURE_KINDS and (not exception or kind == "error" and exception.isidentifier())


def hint_applies(hint_on: tuple[str, ...], kind: str | None, exception: str | None = None) -> bool:
    return kind is not None and (kind in hint_on or f"{kind}:{exception}" in hint_on)


def case_hint(case, kind: str | None, *, reference_raises: bool,
              exception: str | None = None) -> str | None:
    """``case.hint`` when it addresses a failure of this ``kind`` (``case.hint_on``, else
    :func:`default_hint_on`) raised as ``exception`` (an error's class name), else None."""
    if not case.hint:
        return None
    hint_on = case.hint_on or default_hint_on(case.mode, case.check, reference_raises)
    return case.hint if hint_applies(hint_on, kind, exception) else None
