"""``python -m grader``: grade exercises and print a scoreboard.

    python -m grader                         grade every exercise in exercises/
    python -m grader check conv_output_size  one exercise (or a lab: `check convolution`, `check 2`)
    python -m grader --submission solutions  grade another folder with the same modules
    python -m grader --json results.json     also write Gradescope's results.json
    python -m grader --fail-under 80         exit 1 when the score is below 80 % (for CI)
    python -m grader assign [--check]        regenerate exercises/ from solutions/ (instructor)
    python -m grader expected OUTDIR         write expected outputs of the public cases (instructor)

Exit status: 0 whenever grading ran (whatever the score), 1 only for --fail-under, 2 when grading
could not run (one line on stderr saying why).

Other modules add subcommands by defining ``register_cli(subparsers)`` (see ``PLUGINS``); each
registered parser sets ``func=handler`` with ``handler(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from grader.codec import write_json

PLUGINS = ("grader.release", "grader.classroom", "grader.gradescope")
ROOT = Path(__file__).resolve().parent.parent

STATUS_STYLE = {"passed": "green", "failed": "red", "not attempted": "yellow",
                "missing": "magenta", "error": "red", "timeout": "red"}


def _grading_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    p.add_argument("--submission", metavar="DIR", default=d if suppress else "exercises",
                   help="folder holding the lab modules (default: exercises)")
    p.add_argument("--json", metavar="FILE", default=d,
                   help="write the results as Gradescope results.json")
    p.add_argument("--fail-under", metavar="PCT", type=float, default=d,
                   help="exit with status 1 when the score is below PCT percent")
    p.add_argument("--hidden", action="store_true", default=d if suppress else False,
                   help="also grade hidden cases (instructor)")
    p.add_argument("--jobs", type=int, default=d, help="modules graded in parallel (default 2)")
    p.add_argument("--timeout", type=float, default=d if suppress else 30.0,
                   help="seconds per exercise (default 30)")
    p.add_argument("-v", "--verbose", action="store_true", default=d if suppress else False,
                   help="list every failed case")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _grading_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    g = sub.add_parser("grade", help="grade every exercise (the default)")
    _grading_options(g, suppress=True)
    c = sub.add_parser("check", help="grade one exercise or lab and show every case")
    c.add_argument("names", nargs="+", metavar="NAME",
                   help="exercise (conv2d, convolution.conv2d), lab module or lab number")
    _grading_options(c, suppress=True)
    a = sub.add_parser("assign", help="regenerate exercises/ (modules and notebooks) from "
                                      "solutions/ (instructor)")
    a.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    e = sub.add_parser("expected", help="write the expected outputs of public cases (instructor)")
    e.add_argument("outdir")
    e.add_argument("--hidden", action="store_true", help="include hidden cases too")
    for name in PLUGINS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        if hasattr(mod, "register_cli"):
            mod.register_cli(sub)
    return parser


def _print_results(result, *, detailed: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough for the hint column
        console = Console(width=120)
    table = Table(title=f"cnnlab grades — {result.submission}", show_lines=False)
    table.add_column("Lab", no_wrap=True)
    table.add_column("Exercise", no_wrap=True)
    table.add_column("Points", justify="right", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("First hint", overflow="fold")
    last_lab = None
    for e in result.exercises:
        style = STATUS_STYLE.get(e.status, "")
        hint = "" if e.status == "passed" else e.first_hint()
        if len(hint) > 160 and not detailed:
            hint = hint[:157] + "..."
        table.add_row(e.lab if e.lab != last_lab else "", e.name,
                      f"{e.score:g}/{e.points:g}", f"[{style}]{e.status}[/{style}]", hint,
                      end_section=False)
        last_lab = e.lab
    table.add_section()
    table.add_row("", "[bold]total[/bold]", f"[bold]{result.score:g}/{result.max_score:g}[/bold]",
                  f"[bold]{result.percent:.0f}%[/bold]", f"{result.execution_time:.1f} s")
    console.print(table)
    if detailed:
        for e in result.exercises:
            if e.status != "passed":
                console.rule(f"{e.qualname}  {e.score:g}/{e.points:g}  {e.status}")
                console.print(e.output_text(max_cases=50), markup=False, highlight=False)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    if not detailed and any(e.status != "passed" for e in result.exercises):
        console.print("details of one exercise: python -m grader check NAME", style="dim")


def _grade(args, names) -> int:
    from grader.runner import grade_submission

    result = grade_submission(args.submission, exercises=names, include_hidden=args.hidden,
                              jobs=getattr(args, "jobs", None), timeout_s=args.timeout)
    _print_results(result, detailed=bool(names) or args.verbose)
    if getattr(args, "json", None):
        write_json(Path(args.json), result.to_gradescope())
    fail_under = getattr(args, "fail_under", None)
    if fail_under is not None and result.percent < fail_under:
        print(f"score {result.percent:.1f}% is below --fail-under {fail_under:g}%",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from grader.runner import GraderError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "func"):
            return int(args.func(args) or 0)
        if args.command == "assign":
            from grader.assign import assign

            changed = assign(check=args.check)
            if args.check:
                if changed:
                    print(f"exercises/ is stale: {', '.join(changed)} "
                          f"(run python -m grader assign)", file=sys.stderr)
                    return 1
                print("exercises/ is up to date")
            else:
                print(f"wrote exercises/ ({len(changed)} file(s) changed: modules and notebooks)")
            return 0
        if args.command == "expected":
            from grader.runner import export_expected

            files = export_expected(args.outdir, include_hidden=args.hidden)
            print(f"wrote {len(files)} files to {args.outdir}")
            return 0
        return _grade(args, getattr(args, "names", None))
    except GraderError as e:
        print(f"grader: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grader: interrupted", file=sys.stderr)
        return 130

