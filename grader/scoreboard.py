"""What ``make grade`` and ``make check`` print: the scoreboard, the details, the next command.

The scoreboard has a row per exercise, except for a lab not started yet, which is one row (a
first run is seven rows, not a hundred). Below it: what to run next, as a command that works in the
folder the grader was run from (:mod:`grader.commands`). ``check`` (and ``-v``) add every
exercise's details (:meth:`grader.results.ExerciseResult.output_text`). Text from the grader or
the student is never read as rich markup: ``[rows, cols]`` stays as it is.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from grader.commands import check_command, show_path
from grader.results import ExerciseResult, SubmissionResult

STATUS_STYLE = {"passed": "green", "failed": "red", "not attempted": "yellow",
                "missing": "magenta", "error": "red", "timeout": "red"}
HINT_WIDTH = 160          # characters of the "First hint" column (cut at a word; details show all)
UNSTARTED = ("not attempted", "missing")


def _labs(result: SubmissionResult) -> list[list[ExerciseResult]]:
    labs: list[list[ExerciseResult]] = []
    for e in result.exercises:
        if labs and labs[-1][0].lab == e.lab:
            labs[-1].append(e)
        else:
            labs.append([e])
    return labs


def _unstarted(lab: list[ExerciseResult]) -> str | None:
    """The status shared by every exercise of a lab nobody started, else None."""
    statuses = {e.status for e in lab}
    return statuses.pop() if len(statuses) == 1 and statuses <= set(UNSTARTED) else None


def _table(result: SubmissionResult, *, collapse: bool) -> Table:
    where = show_path(result.submission)
    where = Path(result.submission).name if where == "." else where
    table = Table(title=f"cnnlab grades — {where}", show_lines=False)
    table.add_column("Lab", no_wrap=True)
    table.add_column("Exercise", no_wrap=True)
    table.add_column("Points", justify="right", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("First hint", overflow="fold")
    for lab in _labs(result):
        status = _unstarted(lab) if collapse and len(lab) > 1 else None
        if status:
            module = lab[0].module
            where = show_path(Path(result.submission) / f"{module}.py")
            note = lab[0].reason if status == "missing" else where
            table.add_row(Text(lab[0].lab), Text(f"{len(lab)} exercises"),
                          f"0/{sum(e.points for e in lab):g}",
                          Text(status, style=STATUS_STYLE[status]), Text(note or ""))
            continue
        for i, e in enumerate(lab):
            hint = "" if e.status == "passed" else e.first_hint(HINT_WIDTH)
            table.add_row(Text(e.lab if i == 0 else ""), Text(e.name), f"{e.score:g}/{e.points:g}",
                          Text(e.status, style=STATUS_STYLE.get(e.status, "")), Text(hint))
    table.add_section()
    table.add_row("", Text("total", style="bold"),
                  Text(f"{result.score:g}/{result.max_score:g}", style="bold"),
                  Text(f"{result.percent:.0f}%", style="bold"), f"{result.execution_time:.1f} s")
    return table


def next_step(result: SubmissionResult, *, own_submission: bool) -> str | None:
    """One line: what to run next, as a command that works in the current folder."""
    sub = result.submission if own_submission else None
    if all(e.status in UNSTARTED for e in result.exercises):
        first = next((e for e in result.exercises if e.status == "not attempted"), None)
        if first is None:
            return None
        where = show_path(Path(result.submission) / f"{first.module}.py")
        return f"start with {where}: `{check_command([first.name], submission=sub)}`"
    failing = [e for e in result.exercises if e.status not in ("passed", *UNSTARTED)]
    if failing:
        return f"details of {failing[0].name}: `{check_command([failing[0].name], submission=sub)}`"
    todo = [e for e in result.exercises if e.status == "not attempted"]
    if todo:
        where = show_path(Path(result.submission) / f"{todo[0].module}.py")
        return f"next: {todo[0].name} in {where}: `{check_command([todo[0].name], submission=sub)}`"
    return None


def print_results(result: SubmissionResult, *, detailed: bool, verbose: bool,
                  own_submission: bool = False, console: Console | None = None) -> None:
    """The scoreboard; with ``detailed`` (check, -v) every exercise's details; with ``verbose``
    also passed cases and the output they printed. ``own_submission``: graded with
    ``--submission`` (the next command names it)."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or captured: wide enough for the hint column
            console = Console(width=120)
    console.print(_table(result, collapse=not detailed))
    if detailed:
        for e in result.exercises:
            text = e.output_text(max_cases=50, verbose=verbose, printed_budget=None)
            if e.status == "passed" and not (verbose and any(c.printed for c in e.cases)):
                continue
            console.rule(Text(f"{e.qualname}  {e.score:g}/{e.points:g}  {e.status}"))
            console.print(Text(text))
    for w in result.warnings:
        console.print(Text.assemble(("warning:", "yellow"), f" {w}"))
    step = None if detailed else next_step(result, own_submission=own_submission)
    if step:
        console.print(Text(step))
