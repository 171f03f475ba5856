"""Results of grading: per case, per exercise, per submission; and the Gradescope JSON.

Scores: an exercise's points are shared among its cases by weight; a case scores when its check
passes (partial credit). Hidden cases count only when the grading included them; student-facing
text shows them only as counts.
"""

from __future__ import annotations

import dataclasses

STATUSES = ("passed", "failed", "not attempted", "missing", "error", "timeout")


@dataclasses.dataclass
class CaseResult:
    name: str
    passed: bool
    weight: float = 1.0
    hidden: bool = False
    message: str | None = None       # why it failed, for the student
    not_attempted: bool = False


@dataclasses.dataclass
class ExerciseResult:
    module: str
    name: str
    lab: str
    points: float
    cases: list[CaseResult]
    status: str = "failed"
    reason: str | None = None        # exercise-level failure (import error, crash, timeout, ...)
    hint: str = ""                   # the spec's general hint

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def _weights(self, hidden: bool | None):
        cs = [c for c in self.cases if hidden is None or c.hidden == hidden]
        return sum(c.weight for c in cs), sum(c.weight for c in cs if c.passed)

    def _part(self, hidden: bool | None) -> tuple[float, float]:
        """(score, max) of the public (False), hidden (True) or all (None) cases."""
        total, _ = self._weights(None)
        w, p = self._weights(hidden)
        if total == 0:
            return (0.0, self.points if hidden is not True else 0.0)
        return (self.points * p / total, self.points * w / total)

    @property
    def score(self) -> float:
        return round(self._part(None)[0], 4)

    @property
    def max_score(self) -> float:
        return self.points

    @property
    def public(self) -> tuple[float, float]:
        return tuple(round(v, 4) for v in self._part(False))

    @property
    def hidden(self) -> tuple[float, float]:
        return tuple(round(v, 4) for v in self._part(True))

    @property
    def has_hidden(self) -> bool:
        return any(c.hidden for c in self.cases)

    def first_hint(self) -> str:
        """The first thing to fix: the exercise-level reason, else the first failed public case."""
        if self.reason:
            return self.reason
        for c in self.cases:
            if not c.passed and not c.hidden:
                return f"{c.name}: {c.message}" if c.message else c.name
        if any(not c.passed for c in self.cases):
            return "some hidden cases fail: test edge cases (empty, large, negative values)"
        return ""

    def output_text(self, *, max_cases: int = 8, hidden: bool = True) -> str:
        """What the student reads about this exercise (hidden cases only as counts, and not at
        all with ``hidden=False``)."""
        lines = []
        if self.reason:
            lines.append(self.reason)
        pub = [c for c in self.cases if not c.hidden]
        hid = [c for c in self.cases if c.hidden]
        if pub:
            lines.append(f"{sum(c.passed for c in pub)}/{len(pub)} cases passed")
        failed = [c for c in pub if not c.passed]
        if failed and not all(c.not_attempted for c in failed):
            for c in failed[:max_cases]:
                lines.append(f"- {c.name}: {c.message}")
            if len(failed) > max_cases:
                lines.append(f"- ... and {len(failed) - max_cases} more failed cases")
        elif failed and not self.reason:
            lines.append(failed[0].message or "not attempted")
        if hid and hidden:
            lines.append(f"hidden cases: {sum(c.passed for c in hid)}/{len(hid)} passed")
        if self.status not in ("passed", "not attempted", "missing") and self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


@dataclasses.dataclass
class SubmissionResult:
    submission: str
    exercises: list[ExerciseResult]
    execution_time: float = 0.0
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def score(self) -> float:
        return round(sum(e.score for e in self.exercises), 4)

    @property
    def max_score(self) -> float:
        return round(sum(e.points for e in self.exercises), 4)

    @property
    def percent(self) -> float:
        return 100.0 * self.score / self.max_score if self.max_score else 0.0

    def by_name(self, name: str) -> ExerciseResult:
        for e in self.exercises:
            if name in (e.name, e.qualname):
                return e
        raise KeyError(name)

    def to_gradescope(self, *, split_hidden: bool = True) -> dict:
        """Gradescope's autograder ``results.json``.

        One test per exercise named ``module.function`` (visibility "visible") scored on the
        public cases, whose output says nothing of hidden ones; when hidden cases were graded,
        one more test per exercise named ``module.function (hidden)`` with visibility
        "after_due_date" holds their points. The top-level score includes them (Gradescope hides
        a total from students while any test is hidden); the top-level output, always shown,
        counts the public points only. With ``split_hidden=False`` each exercise is a single test
        and hidden cases count there.
        """
        tests = []
        split = split_hidden and any(e.has_hidden for e in self.exercises)
        for e in self.exercises:
            if split and e.has_hidden:
                ps, pm = e.public
                hs, hm = e.hidden
                tests.append(_test(e, e.qualname, ps, pm, e.output_text(hidden=False),
                                   "visible"))
                hid = [c for c in e.cases if c.hidden]
                tests.append(_test(e, f"{e.qualname} (hidden)", hs, hm,
                                   f"hidden cases: {sum(c.passed for c in hid)}/{len(hid)} passed",
                                   "after_due_date"))
            else:
                tests.append(_test(e, e.qualname, e.score, e.points, e.output_text(), "visible"))
        return {
            "score": self.score,
            "max_score": self.max_score,
            "execution_time": round(self.execution_time, 2),
            "output": points_line(tests) + "".join(f"\nwarning: {w}" for w in self.warnings),
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": tests,
        }


def points_line(tests: list[dict]) -> str:
    """The first line of a results.json's top-level output, always shown to the student: the
    points of Gradescope ``tests``, and only the public ones when some test is not visible yet."""
    visible = [t for t in tests if t["visibility"] == "visible"]
    score = round(sum(t["score"] for t in visible), 4)
    max_score = round(sum(t["max_score"] for t in visible), 4)
    if len(visible) < len(tests):
        return (f"{score:g} / {max_score:g} points on the public cases; hidden cases were graded "
                "too and show after the due date")
    return f"{score:g} / {max_score:g} points ({100 * score / max_score if max_score else 0:.0f}%)"


def _test(e: ExerciseResult, name: str, score: float, max_score: float, output: str,
          visibility: str) -> dict:
    return {"name": name, "score": round(score, 4), "max_score": round(max_score, 4),
            "status": "passed" if score >= max_score - 1e-9 else "failed",
            "output": output[:8000], "visibility": visibility}
