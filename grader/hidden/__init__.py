"""Hidden cases (instructor only): ``<module>.py`` defines ``hidden_cases(r) -> {exercise: [Case]}``.

The inputs are drawn at grading time with ``r``, a generator seeded from :func:`seed`, a number
students never see: a table of the public cases' answers scores none of these. :func:`draw` adds
to a lab's own drawn cases its public cases again with fresh values (:func:`fresh_values`). A
student release leaves this package out; grading with ``include_hidden=True`` (``--hidden``, class
grading, the Gradescope bundle) merges the cases in (:func:`grader.specs.load`), marked hidden:
students see neither their inputs nor, before the due date, their results. Case names never
depend on the draw (the Gradescope bundle stores the drawn inputs under them).

The public specs hand their exercises in (this package never imports :mod:`grader.specs`), so
the dependency points one way: ``grader.specs`` -> ``grader.hidden`` -> ``grader.spec``.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import secrets
from collections.abc import Sequence

import numpy as np

from grader.commands import cache_dir
from grader.spec import Case, Exercise


def seed() -> int:
    """``$CNNLAB_HIDDEN_SEED`` when set (e.g. one per term), else a random seed kept in the
    reference cache folder (created on first use, owner-only), so that every grading run on this
    machine draws the same inputs and an interrupted batch resumes with the same cases."""
    if os.environ.get("CNNLAB_HIDDEN_SEED"):
        return int(os.environ["CNNLAB_HIDDEN_SEED"])
    path = cache_dir() / "hidden-seed"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.randbits(62)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{value}\n")
        os.replace(path.with_suffix(".tmp"), path)
        return value


def generator(module: str) -> np.random.Generator:
    """The hidden-case generator of one lab (its own stream: labs do not shift each other)."""
    return np.random.default_rng([seed(), sum(map(ord, module))])


def draw(module: str, exercises: Sequence[Exercise]) -> dict[str, list[Case]]:
    """The hidden cases of one lab, by exercise name: those ``grader.hidden.<module>`` draws, then
    the lab's public ``exercises`` with fresh values (but those the module lists in
    ``NO_FRESH_VALUES``); none for a lab without such a module."""
    try:
        lab = importlib.import_module(f"grader.hidden.{module}")
    except ModuleNotFoundError:
        return {}
    r = generator(module)
    return merge(lab.hidden_cases(r),
                 fresh_values(exercises, r, skip=getattr(lab, "NO_FRESH_VALUES", ())))


def _redraw(x, r: np.random.Generator):
    """``x`` with every array replaced by fresh values of the same shape, dtype and range."""
    if isinstance(x, dict):
        return {k: _redraw(v, r) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_redraw(v, r) for v in x)
    if not isinstance(x, np.ndarray) or x.size == 0:
        return x
    if x.dtype == np.uint32 and x.shape == (2,):  # a raw PRNG key
        return np.array([0, r.integers(0, 2**31)], np.uint32)
    if x.dtype == bool:
        return r.random(x.shape) < 0.5
    if np.issubdtype(x.dtype, np.integer):
        return r.integers(x.min(), x.max() + 1, x.shape).astype(x.dtype)
    scale = float(np.std(x)) or 1.0
    return (float(np.mean(x)) + scale * r.standard_normal(x.shape)).astype(x.dtype)


def fresh_values(exercises: Sequence[Exercise], r: np.random.Generator,
                 skip: Sequence[str] = ()) -> dict[str, list[Case]]:
    """For every exercise (but ``skip``) whose cases take arrays: its first such case again with
    freshly drawn values, named "hidden: fresh values"."""
    out = {}
    for ex in exercises:
        base = next((c for c in ex.cases if c.mode != "jaxpr" and _has_array(c.args)), None)
        if base is not None and ex.name not in skip:
            out[ex.name] = [dataclasses.replace(base, name="hidden: fresh values",
                                                args=_redraw(base.args, r), hint=None)]
    return out


def _has_array(x) -> bool:
    if isinstance(x, dict):
        return any(_has_array(v) for v in x.values())
    if isinstance(x, list | tuple):
        return any(_has_array(v) for v in x)
    return isinstance(x, np.ndarray)


def merge(*parts: dict[str, list[Case]]) -> dict[str, list[Case]]:
    out: dict[str, list[Case]] = {}
    for part in parts:
        for name, cases in part.items():
            out.setdefault(name, []).extend(cases)
    return out


def shape(r: np.random.Generator, ndim: int, low: int = 1, high: int = 6) -> tuple[int, ...]:
    return tuple(int(d) for d in r.integers(low, high + 1, ndim))
