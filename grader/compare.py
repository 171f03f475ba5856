"""Compare a student's output with the reference's, in the grader process (numpy only).

``compare(expected, actual)`` walks both trees together and returns ``None`` when they agree, or
one message about the *first* difference, naming where it is (``output['head']['kernel'][3, 1]``)
and what was expected: a structure difference (missing or extra keys, a tuple of the wrong
length), a type difference (int expected, float given), a shape or dtype difference (chex style,
both shown), NaN/inf where finite values were expected, or the first value outside the tolerance
with both values and how many values differ. :func:`difference` returns the same message with its
kind (:data:`KINDS`), which decides which hints fit the failure (:mod:`grader.diagnose`).

Tolerances depend on the expected dtype (float32: rtol 1e-4, atol 1e-5; float64 1e-9; float16 /
bfloat16 1e-2; ints and bools exact) and can be overridden per case.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

# What a difference is about: the form of the result (array shapes, keys, lengths), its type
# (int vs float, dtype), NaN/inf where finite values were expected, or other values.
KINDS = ("shape", "type", "nonfinite", "value")


@dataclasses.dataclass(frozen=True)
class Difference:
    """The first difference between two results: its kind (one of :data:`KINDS`) and the message."""

    kind: str
    text: str

    def __str__(self) -> str:
        return self.text


TOLERANCES = {  # dtype name -> (rtol, atol)
    "float64": (1e-9, 1e-10), "float32": (1e-4, 1e-5), "float16": (1e-2, 1e-3),
    "bfloat16": (1e-2, 1e-2), "complex64": (1e-4, 1e-5), "complex128": (1e-9, 1e-10),
}


def _fmt_index(idx) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _fmt_value(v) -> str:
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    return repr(v.item() if isinstance(v, np.generic) else v)


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _kind(x) -> str:
    """A short type name for messages: int, float, bool, str, array, dict, list, tuple, None."""
    if x is None:
        return "None"
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "int"
    if isinstance(x, float):
        return "float"
    if isinstance(x, str):
        return "str"
    if isinstance(x, np.ndarray):
        return "array"
    return type(x).__name__


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of shape {_fmt_shape(x.shape)} and dtype {x.dtype}"
    if isinstance(x, dict):
        return f"a dict with keys {sorted(map(str, x))}"
    if isinstance(x, list | tuple):
        return f"a {type(x).__name__} of length {len(x)}"
    return f"{_kind(x)} {_fmt_value(x)}"


def _scalar_kind(x) -> str | None:
    """'int', 'float' or 'bool' for Python scalars and 0-d arrays, else None."""
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "int"
    if isinstance(x, float):
        return "float"
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return {"b": "bool", "i": "int", "u": "int", "f": "float"}.get(x.dtype.kind)
    return None


def compare(expected: Any, actual: Any, *, path: str = "output", rtol: float | None = None,
            atol: float | None = None) -> str | None:
    """``None`` if ``actual`` matches ``expected``, else a message about the first difference."""
    found = difference(expected, actual, path=path, rtol=rtol, atol=atol)
    return found.text if found else None


def difference(expected: Any, actual: Any, *, path: str = "output", rtol: float | None = None,
               atol: float | None = None) -> Difference | None:
    """``None`` if ``actual`` matches ``expected``, else the first difference and its kind."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return Difference("shape", f"{path}: expected a dict, got {_describe(actual)}")
        missing = [k for k in expected if k not in actual]
        extra = [k for k in actual if k not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing key{'s' if len(missing) > 1 else ''} "
                             + ", ".join(repr(k) for k in missing))
            if extra:
                parts.append(f"unexpected key{'s' if len(extra) > 1 else ''} "
                             + ", ".join(repr(k) for k in extra))
            return Difference("shape", f"{path}: {'; '.join(parts)} "
                                       f"(expected keys {sorted(map(str, expected))})")
        for k in expected:
            msg = difference(expected[k], actual[k], path=f"{path}[{k!r}]", rtol=rtol, atol=atol)
            if msg:
                return msg
        return None
    if isinstance(expected, list | tuple):
        if not isinstance(actual, list | tuple):
            return Difference("shape", f"{path}: expected a {type(expected).__name__} of length "
                                       f"{len(expected)}, got {_describe(actual)}")
        if len(actual) != len(expected):
            return Difference("shape", f"{path}: expected {len(expected)} items, got {len(actual)}")
        for i, (e, a) in enumerate(zip(expected, actual)):
            msg = difference(e, a, path=f"{path}[{i}]", rtol=rtol, atol=atol)
            if msg:
                return msg
        return None
    if expected is None or isinstance(expected, str):
        if actual != expected or type(actual) is not type(expected):
            return Difference("value", f"{path}: expected {_fmt_value(expected)}, "
                                       f"got {_describe(actual)}")
        return None
    # numbers: Python scalars and arrays
    ek, ak = _scalar_kind(expected), _scalar_kind(actual)
    if ek is not None and not isinstance(expected, np.ndarray):
        # a Python scalar is expected: accept a 0-d array of the same kind
        if ak is None:
            return Difference("shape" if isinstance(actual, np.ndarray | list | tuple | dict)
                              else "type",
                              f"{path}: expected {ek} {_fmt_value(expected)}, "
                              f"got {_describe(actual)}")
        if ek != ak and not (ek == "float" and ak == "int"):
            hint = " (use // for integer division)" if ek == "int" and ak == "float" else ""
            return Difference("type", f"{path}: expected {ek} {_fmt_value(expected)}, got {ak} "
                                      f"{_fmt_value(np.asarray(actual).item())}{hint}")
        expected = np.asarray(expected)
        actual = np.asarray(actual)
        if expected.dtype.kind == "f":
            actual = actual.astype(expected.dtype)
    if not isinstance(actual, np.ndarray):
        if isinstance(actual, bool | int | float):
            actual = np.asarray(actual)
            if isinstance(expected, np.ndarray) and expected.ndim == 0:
                actual = actual.astype(expected.dtype) if actual.dtype.kind == expected.dtype.kind \
                    or (expected.dtype.kind == "f" and actual.dtype.kind in "iu") else actual
        else:
            return Difference("shape" if isinstance(actual, list | tuple | dict) else "type",
                              f"{path}: expected {_describe(expected)}, got {_describe(actual)}")
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        return Difference("shape", f"{path}: shape mismatch: expected "
                                   f"{_fmt_shape(expected.shape)}, got {_fmt_shape(actual.shape)}")
    if actual.dtype != expected.dtype:
        if actual.dtype.kind == expected.dtype.kind == "i" or \
                actual.dtype.kind == expected.dtype.kind == "u":
            pass  # int32 vs int64 of the same values: accepted
        else:
            hint = ""
            if actual.dtype == np.float64 and expected.dtype == np.float32:
                hint = " (computed with numpy instead of jax.numpy?)"
            elif expected.dtype.kind == "f" and actual.dtype.kind in "iub":
                hint = " (integer division or a comparison where a float was expected?)"
            return Difference("type", f"{path}: dtype mismatch: expected {expected.dtype}, "
                                      f"got {actual.dtype}{hint}")
    return _compare_values(expected, actual, path, rtol, atol)


def _compare_values(expected: np.ndarray, actual: np.ndarray, path: str, rtol,
                    atol) -> Difference | None:
    if expected.dtype.kind in "biu":
        bad = expected != actual
    else:
        d_rtol, d_atol = TOLERANCES.get(expected.dtype.name, (1e-4, 1e-5))
        rtol = d_rtol if rtol is None else rtol
        atol = d_atol if atol is None else atol
        e = expected.astype(np.complex128 if expected.dtype.kind == "c" else np.float64)
        a = actual.astype(e.dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            close = np.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
        bad = ~close
    if not bad.any():
        return None
    n_bad, n = int(bad.sum()), bad.size
    count = f" ({n_bad} of {n} values differ)" if n > 1 else ""
    if expected.dtype.kind in "fc":
        # NaN/inf where a finite value was expected tells more than any other difference: first
        broken = bad & ~np.isfinite(actual) & np.isfinite(expected)
        first = tuple(np.argwhere(broken if broken.any() else bad)[0]) if bad.ndim else ()
        where = f"{path}{_fmt_index(first)}" if first else path
        ev, av = expected[first], actual[first]
        fa = complex(av) if expected.dtype.kind == "c" else float(av)
        fe = complex(ev) if expected.dtype.kind == "c" else float(ev)
        if isinstance(fa, float) and math.isnan(fa) and not math.isnan(fe):
            return Difference("nonfinite", f"{where}: got NaN, expected {_fmt_value(fe)}{count} — "
                              "something overflowed (inf - inf, inf / inf, 0 * inf) or took "
                              "log/sqrt of a negative number")
        if isinstance(fa, float) and math.isinf(fa) and not math.isinf(fe):
            return Difference("nonfinite", f"{where}: got {fa}, expected {_fmt_value(fe)}{count} "
                                           "— an overflow (exp of a large number?)")
        diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        with np.errstate(invalid="ignore"):
            max_diff = float(np.nanmax(np.where(bad, diff, 0)))
        return Difference("value", f"{where}: expected {_fmt_value(fe)}, got {_fmt_value(fa)}"
                                   f"{count}; max abs difference {max_diff:.3g}")
    first = tuple(np.argwhere(bad)[0]) if bad.ndim else ()
    where = f"{path}{_fmt_index(first)}" if first else path
    ev, av = expected[first], actual[first]
    return Difference("value", f"{where}: expected {_fmt_value(ev)}, got {_fmt_value(av)}{count}")


def exactly_equal(a: Any, b: Any) -> bool:
    """Bit-for-bit equality of two decoded trees (for purity checks)."""
    return compare(a, b, rtol=0.0, atol=0.0) is None
