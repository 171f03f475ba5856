"""Results of grading: per case, per exercise, per submission; and the Gradescope JSON.

Scores: an exercise's points are shared among its cases by weight; a case scores when its check
passes (partial credit). Hidden cases count only when the grading included them; student-facing
text shows them only as counts.

What a student reads about an exercise (:meth:`ExerciseResult.output_text`): the exercise-level
reason if any, how many cases passed, the single most useful hint, then every failed case with
what the grader found, the hint of that case when it is the first of its kind of failure
(:meth:`ExerciseResult.hints`), and what the student's code printed during it (head and tail,
every line marked ``│``, so that it can never pass for one of the grader's own lines).
"""

from __future__ import annotations

import dataclasses
import re
import textwrap

from grader.capture import CUT_RE

STATUSES = ("passed", "failed", "not attempted", "missing", "error", "timeout")
# Failures for which the exercise's general hint helps (the code ran and computed something else);
# an error or a tracer error is explained by its own message.
GENERAL_HINT_KINDS = ("value", "shape", "type", "nonfinite", "raises")
PRINTED_LINES = 10            # lines of a case's printed output shown at its head and at its tail
PRINTED_WIDTH = 200           # characters per printed line shown
PRINTED_BUDGET = 3000         # characters of printed output in one exercise's text (Gradescope)
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TRACER = re.compile(r"Traced<|\b[A-Z]\w*Tracer\(")  # how JAX prints an array being traced


@dataclasses.dataclass
class CaseResult:
    name: str
    passed: bool
    weight: float = 1.0
    hidden: bool = False
    message: str | None = None       # why it failed: what the grader found, for the student
    not_attempted: bool = False
    kind: str | None = None          # the failure's kind (see grader.diagnose)
    hint: str | None = None          # the case's hint, only when it addresses this kind of failure
    printed: str | None = None       # what the student's code printed during the case


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut at a word boundary to at most ``width`` characters."""
    return textwrap.shorten(text, width=width, placeholder=" …") if width > 0 else ""


def printed_block(text: str, *, indent: str = "  ") -> list[str]:
    """What a case printed, as lines marked ``│``: control characters and terminal escapes
    removed, long lines cut, and only the first and last :data:`PRINTED_LINES` of a long output."""
    clean = _CONTROL.sub("?", _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))
    cut = CUT_RE.search(clean)  # the worker kept only the head and the tail of a long output
    if cut:
        head, tail = clean[:cut.start()], clean[cut.end():]
        first = head.split("\n")[:PRINTED_LINES]
        last = tail.rstrip("\n").split("\n")[-PRINTED_LINES:]
        total = len(head) + int(cut.group(1)) + len(tail)
        shown = sum(len(ln) + 1 for ln in first + last)
        lines = first + [f"… {total - shown:,} characters not shown …"] + last
        size = f"{total:,} characters"
    else:
        lines = clean.rstrip("\n").split("\n")
        n = len(lines)
        if n > 2 * PRINTED_LINES + 1:
            lines = lines[:PRINTED_LINES] + [f"… {n - 2 * PRINTED_LINES} lines not shown …"] \
                + lines[-PRINTED_LINES:]
        size = f"{n} line{'s' if n != 1 else ''}"
    lines = [ln if len(ln) <= PRINTED_WIDTH else ln[:PRINTED_WIDTH - 1] + "…" for ln in lines]
    note = ""
    if _TRACER.search(clean):
        note = " — printed while JAX traced your function: arrays are tracers then, without " \
               "values; jax.debug.print shows the values"
    return [f"{indent}your code printed ({size}){note}:"] + [f"{indent}│ {ln}" for ln in lines]


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

    def hints(self) -> list[tuple[CaseResult | None, str]]:
        """The hints shown, the most useful first, each with the case it belongs to.

        Of the failed public cases, in spec order (simple cases first), the first hint of each
        kind of failure: a later case's hint for the same symptom usually explains a mistake the
        student has not made (an output size off by one fails the padded cases too, but is not a
        padding mistake). Each text once; a hint about raising on bad input after the others.
        Without any, the exercise's general hint (case None) when the code ran and computed
        something else.
        """
        shown: list[tuple[CaseResult | None, str]] = []
        kinds: set[str | None] = set()
        failed = [c for c in self.cases if not c.passed and not c.hidden]
        for c in failed:
            if c.hint and c.kind not in kinds and c.hint not in {h for _, h in shown}:
                shown.append((c, c.hint))
                kinds.add(c.kind)
        if not shown and self.hint and any(c.kind in GENERAL_HINT_KINDS for c in failed):
            shown.append((None, self.hint))
        # wrong results on ordinary inputs before a missing check of bad input
        return sorted(shown, key=lambda ch: ch[0] is not None and ch[0].kind == "raises")

    def first_hint(self, width: int | None = None) -> str:
        """The first thing to fix, on one line: the exercise-level reason, or the most useful hint
        followed by the case it comes from; ``width`` cuts it at a word boundary, the hint kept
        whole where it fits."""
        if self.reason:
            return shorten(self.reason, width) if width else self.reason
        failed = [c for c in self.cases if not c.passed and not c.hidden]
        if not failed:
            if any(not c.passed for c in self.cases):
                return "some hidden cases fail: test edge cases (empty, large, negative values)"
            return ""
        if all(c.not_attempted for c in failed):
            text = failed[0].message or "not attempted"
            return shorten(text, width) if width else text
        hints = self.hints()
        case = hints[0][0] if hints and hints[0][0] is not None else failed[0]
        finding = f"{case.name}: {case.message}" if case.message else case.name
        if not hints:
            return shorten(finding, width) if width else finding
        hint = hints[0][1]
        if width is None:
            return f"{hint} — {finding}"
        if len(hint) + 10 >= width:
            return shorten(hint, width)
        return f"{hint} — {shorten(finding, width - len(hint) - 3)}"

    def output_text(self, *, max_cases: int = 8, hidden: bool = True, verbose: bool = False,
                    printed_budget: int | None = PRINTED_BUDGET) -> str:
        """What the student reads about this exercise (hidden cases only as counts, and not at
        all with ``hidden=False``). ``verbose``: also the passed cases that printed something.
        ``printed_budget``: characters of printed output at most (None: no limit)."""
        lines = []
        if self.reason:
            lines.append(self.reason)
        pub = [c for c in self.cases if not c.hidden]
        hid = [c for c in self.cases if c.hidden]
        if pub:
            lines.append(f"{sum(c.passed for c in pub)}/{len(pub)} cases passed")
        hints = self.hints()
        if hints:
            lines.append(f"hint: {hints[0][1]}")
        hint_of = {id(c): h for c, h in hints[1:] if c is not None}
        failed = [c for c in pub if not c.passed]
        budget = [printed_budget]

        def printed(c: CaseResult) -> list[str]:
            if not c.printed:
                return []
            block = printed_block(c.printed)
            size = sum(len(ln) for ln in block)
            if budget[0] is not None:
                if size > budget[0]:
                    return ["  (what your code printed here is left out: the output is long)"]
                budget[0] -= size
            return block

        if failed and not all(c.not_attempted for c in failed):
            entries = _grouped(failed, hint_of)
            for names, c in entries[:max_cases]:
                label = c.name if len(names) == 1 else \
                    f"{len(names)} cases ({shorten(', '.join(names), 100)})"
                lines.append(f"- {label}: {c.message}")
                if id(c) in hint_of:
                    lines.append(f"  hint: {hint_of[id(c)]}")
                lines += printed(c)
            if len(entries) > max_cases:
                lines.append(f"- ... and {len(entries) - max_cases} more failed cases")
        elif failed and not self.reason:
            lines.append(failed[0].message or "not attempted")
        if verbose:
            for c in pub:
                if c.passed and c.printed:
                    lines.append(f"+ {c.name}: passed")
                    lines += printed(c)
        if hid and hidden:
            lines.append(f"hidden cases: {sum(c.passed for c in hid)}/{len(hid)} passed")
        return "\n".join(lines)


def _grouped(failed: list[CaseResult], hint_of: dict) -> list[tuple[list[str], CaseResult]]:
    """Failed cases with the same message (and nothing else to show) as one entry, at the place
    of the first of them: an error raised by every case is listed once."""
    entries: list[tuple[list[str], CaseResult]] = []
    by_message: dict[str, list[str]] = {}
    for c in failed:
        alone = c.printed or id(c) in hint_of or not c.message
        if not alone and c.message in by_message:
            by_message[c.message].append(c.name)
            continue
        names = [c.name]
        if not alone:
            by_message[c.message] = names
        entries.append((names, c))
    return entries


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
