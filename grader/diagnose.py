"""Turn an error the worker recorded into a message that teaches.

The record holds the exception's kind, module, message and the last line of the student's own
files in the traceback (never a line of the reference: the reference is not in the worker).
"""

from __future__ import annotations

TRACER_KINDS = {"TracerBoolConversionError", "ConcretizationTypeError",
                "TracerIntegerConversionError", "TracerArrayConversionError"}

TRACER_HINT = ("Python control flow on a traced array: under jax.jit/vmap/grad an array has no "
               "concrete value, so `if x > 0:`, `while`, `int(x)`, `bool(x)` or `np.asarray(x)` "
               "cannot work. Use jnp.where(cond, a, b) or jax.lax.cond for choices, "
               "jax.lax.fori_loop for loops, or keep sizes in plain Python ints.")


def _first_lines(message: str, n: int = 2, width: int = 300) -> str:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    text = " ".join(lines[:n])
    return text[:width] + ("..." if len(text) > width else "")


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
