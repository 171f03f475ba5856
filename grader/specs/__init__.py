"""The exercise specs, one module per lab, in course order.

Each ``grader/specs/<module>.py`` defines ``EXERCISES: list[Exercise]`` (public cases only).
Hidden cases live apart, in ``grader/hidden/<module>.py`` as ``hidden_cases(rng) -> {exercise
name: [Case]}`` drawn at grading time from a secret seed (:mod:`grader.hidden`), so that a student
release can leave that folder out; they are merged in only when asked for (``include_hidden=True``)
and always marked hidden. The hidden package never imports this one (it is handed the public
exercises), so that it may be left out and the two form no import cycle.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util

from grader.spec import Exercise

LABS: list[tuple[str, str]] = [
    ("neurons", "1 Neurons"),
    ("convolution", "2 Convolution"),
    ("pooling", "3 Pooling"),
    ("training", "4 Training"),
    ("cnn_models", "5 CNN models"),
    ("transfer", "6 Transfer"),
    ("augmentation", "7 Augmentation"),
    ("sequences", "8 Sequences"),
    ("gans", "9 GANs"),
]
MODULES = [m for m, _ in LABS]
LAB_TITLES = dict(LABS)


def hidden_available() -> bool:
    return importlib.util.find_spec("grader.hidden") is not None


def load(module: str, *, include_hidden: bool = False) -> list[Exercise]:
    """The exercises of one lab module, with hidden cases appended when asked and available."""
    exercises = list(importlib.import_module(f"grader.specs.{module}").EXERCISES)
    if include_hidden and hidden_available():
        from grader.hidden import draw  # noqa: PLC0415 - a student release has no grader/hidden/

        hidden = draw(module, exercises)
        merged = []
        for ex in exercises:
            extra = tuple(dataclasses.replace(c, hidden=True) for c in hidden.get(ex.name, ()))
            merged.append(dataclasses.replace(ex, cases=ex.cases + extra) if extra else ex)
        exercises = merged
    return exercises


def load_all(*, include_hidden: bool = False) -> list[Exercise]:
    return [ex for m in MODULES for ex in load(m, include_hidden=include_hidden)]
