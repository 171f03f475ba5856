"""What an exercise spec is: cases (inputs + how to call + how to check), points, hints.

Every case is one call in the worker, run the same way on the student's module and on the
reference; the grader compares the two outcomes (``check="match"``: same values within the dtype's
tolerance, or the same exception type when the reference raises) or inspects the student's outcome
alone (``"no_primitives"``, ``"pure"``, ``"check_grads"``, ``"traced_once"``, ``"unchanged"``).

Modes (how the worker calls ``fn``; see :mod:`grader.worker`):

- ``"call"``: ``fn(*args, **kwargs)``.
- ``"jit"``: ``jax.jit(fn)`` with the non-array arguments static.
- ``"vmap"``: ``jax.vmap(fn, in_axes=options["in_axes"])`` over batched array arguments.
- ``"grad"``: the VJP of ``fn`` w.r.t. ``options["argnums"]`` with a fixed random cotangent.
- ``"purity"``: two calls with the same inputs, output ``{"first", "second"}``.
- ``"jaxpr"``: the sorted primitive names of ``jax.make_jaxpr(fn)`` (sub-jaxprs included).
- ``"driver:<name>"``: a harness in :mod:`grader.drivers` (Flax models, train steps, optimizers).

Inputs are numpy arrays and Python scalars (PRNG keys are raw uint32 ``(2,)`` arrays, see
:func:`key`); the worker hands arrays to the student as ``jax.Array``.

Hints: a case's ``hint`` is shown only when the case fails in a way the hint is about, its
``hint_on`` kinds (``("nonfinite",)`` for an overflow hint, ``("shape",)`` for an output-size
hint; the default follows the mode and check, see :func:`grader.diagnose.default_hint_on`), and
only the first hint for each kind of failure (:meth:`grader.results.ExerciseResult.hints`): order
the cases from simple to special, and write a hint for the mistake its case is the first to catch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from grader.checks import CHECKS
from grader.diagnose import valid_hint_on


@dataclasses.dataclass(frozen=True)
class Case:
    """One graded call. ``name`` is unique within its exercise and shown to the student."""

    name: str
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    mode: str = "call"
    options: dict = dataclasses.field(default_factory=dict)
    check: str = "match"
    hint: str | None = None          # shown when this case fails in a way of ``hint_on``
    hidden: bool = False
    weight: float = 1.0
    rtol: float | None = None
    atol: float | None = None
    fn: str | None = None            # defaults to the exercise's name
    hint_on: tuple[str, ...] = ()    # failure kinds the hint addresses (grader.diagnose); ()
                                     # for the default of the case's mode and check

    def __post_init__(self):
        if self.check not in CHECKS:
            raise ValueError(f"unknown check {self.check!r}; checks: {', '.join(CHECKS)}")
        unknown = [k for k in self.hint_on if not valid_hint_on(k)]
        if unknown:
            raise ValueError(f"unknown failure kinds in hint_on: {sorted(unknown)}")


@dataclasses.dataclass(frozen=True)
class Exercise:
    """A graded function (or class) of one lab module."""

    module: str
    name: str
    points: float
    cases: tuple[Case, ...]
    hint: str = ""                   # the general hint when something fails without a case hint
    # library routines (dotted names) it must not call: found in the source by the grader, and
    # the exercise scores 0 (grader.delegation.library_calls)
    not_allowed: tuple[str, ...] = ()

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


# --- options shared by a lab's public cases (grader/specs) and hidden ones (grader/hidden) --------

NO_CONV = ["conv_general_dilated", "conv"]   # what a convolution "from scratch" must not call
NO_WINDOW = ["reduce_window_max", "reduce_window_sum", "reduce_window", "reduce_window_min"]
FAST = {"jit_static": True}   # only Python ints in: compile the whole function once
SCAN = {"required": ["scan"]}   # a recurrent layer must unroll with jax.lax.scan


def lstm_params(r, d: int, h: int, scale: float = 0.5) -> dict:
    """Parameters of ``flax.linen.LSTMCell`` (input size d, state size h)."""
    p = {f"i{g}": {"kernel": randn(r, d, h, scale=scale)} for g in "ifgo"}
    p.update({f"h{g}": {"kernel": randn(r, h, h, scale=scale), "bias": randn(r, h, scale=scale)}
              for g in "ifgo"})
    return p


def tokens(r, vocab: int, n: int, t: int, pad_front: bool = False) -> np.ndarray:
    """Word indices in 1..vocab-1 with a random number of padding zeros per row (at the end,
    or at the front)."""
    out = r.integers(1, vocab, (n, t)).astype(np.int32)
    for i, k in enumerate(r.integers(0, t, n)):
        if pad_front:
            out[i, :k] = 0
        else:
            out[i, t - k:] = 0
    return out


# --- small builders for case inputs (numpy only; deterministic) -----------------------------------

def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def key(seed: int) -> np.ndarray:
    """The raw PRNG key ``jax.random.PRNGKey(seed)``: uint32 ``[0, seed]``."""
    return np.array([0, seed], dtype=np.uint32)


def randn(r: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (scale * r.standard_normal(shape)).astype(np.float32)


def ints(r: np.random.Generator, high: int, *shape: int) -> np.ndarray:
    return r.integers(0, high, shape).astype(np.int32)


def f32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def random_shapes(seed: int, count: int, *, ndim_range=(1, 3), max_dim: int = 6) -> list[tuple]:
    """``count`` seeded random shapes (each dim in 1..max_dim) for elementwise cases."""
    r = rng(seed)
    out = []
    for _ in range(count):
        nd = int(r.integers(ndim_range[0], ndim_range[1] + 1))
        out.append(tuple(int(d) for d in r.integers(1, max_dim + 1, nd)))
    return out
