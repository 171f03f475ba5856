"""Which exercises a name means: ``conv2d``, ``Conv2D``, ``convolution.conv2d``, a lab by module
(``convolution``, ``exercises/convolution.py``) or number (``2``, ``lab 2``). Case does not matter.

A name that means nothing raises :class:`UnknownName` with one line that helps: the closest names
(standard library ``difflib``) and the labs with their numbers, never the whole list of exercises.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from grader.spec import Exercise


class UnknownName(ValueError):
    """A name that is no exercise, lab module or lab number (the message says what is)."""


def _normalise(name: str) -> str:
    n = name.strip().lower().replace("\\", "/")
    n = re.sub(r"^(\./)?(exercises|solutions)/", "", n)
    n = re.sub(r"\.py$", "", n)
    m = re.fullmatch(r"lab\s*0*(\d+)", n)
    return m.group(1) if m else n


def labs_line(modules: Sequence[str]) -> str:
    """``1 neurons, 2 convolution, ...``"""
    return ", ".join(f"{i} {m}" for i, m in enumerate(modules, 1))


def select_exercises(names: Sequence[str] | None, every: Sequence[Exercise],
                     modules: Sequence[str]) -> list[Exercise]:
    """The exercises of ``every`` (in their order) that ``names`` mean; all without names."""
    if not names:
        return list(every)
    index: dict[str, list[Exercise]] = {}
    for i, module in enumerate(modules, 1):
        in_lab = [e for e in every if e.module == module]
        index[module] = index[str(i)] = in_lab
    for e in every:
        index.setdefault(e.name.lower(), []).append(e)
        index[e.qualname.lower()] = [e]
    chosen: list[Exercise] = []
    for name in names:
        hits = index.get(_normalise(name))
        if not hits:
            raise UnknownName(unknown_message(name, every, modules))
        chosen += [h for h in hits if h not in chosen]
    return [e for e in every if e in chosen]


def unknown_message(name: str, every: Sequence[Exercise], modules: Sequence[str]) -> str:
    """One line: the name is unknown, the closest names, and how labs are named."""
    canonical = {e.name.lower(): e.name for e in every}
    canonical.update({m: f"{m} (lab {i})" for i, m in enumerate(modules, 1)})
    n = _normalise(name)
    close = difflib.get_close_matches(n, list(canonical), n=4, cutoff=0.6)
    close += [c for c in canonical if n and c.startswith(n) and c not in close]  # "conv", "pool"
    close = [canonical[c] for c in close[:4]]
    guess = f"did you mean {', '.join(close[:-1])} or {close[-1]}? " if len(close) > 1 else \
        f"did you mean {close[0]}? " if close else ""
    return (f"unknown exercise {name!r}: {guess}Name an exercise (the function's name, e.g. "
            f"{every[0].name if every else 'sigmoid'}) or a lab by module or number: "
            f"{labs_line(modules)}")
