"""``python -m grader``: grade exercises and print a scoreboard (students: ``make grade``).

    python -m grader                         grade every exercise in exercises/
    python -m grader check conv_output_size  one exercise (or a lab: `check convolution`, `check 2`)
                                             (students: `make check EX=conv_output_size`)
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


def _grading_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    p.add_argument("--submission", metavar="DIR", default=d if suppress else None,
                   help="folder holding the lab modules (default: the exercises/ folder of the "
                        "repository you are in)")
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
                   help="details of every exercise, passed cases and what they printed too")


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
    a = sub.add_parser("assign", help="regenerate exercises/ from solutions/ (instructor)")
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


def _grade(args, names) -> int:
    from grader.commands import default_submission
    from grader.runner import grade_submission
    from grader.scoreboard import print_results

    submission = args.submission if args.submission is not None else default_submission()
    result = grade_submission(submission, exercises=names, include_hidden=args.hidden,
                              jobs=getattr(args, "jobs", None), timeout_s=args.timeout)
    print_results(result, detailed=bool(names) or args.verbose, verbose=args.verbose,
                  own_submission=args.submission is not None)
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
                    print(f"exercises/ is stale for: {', '.join(changed)} "
                          f"(run python -m grader assign)", file=sys.stderr)
                    return 1
                print("exercises/ is up to date")
            else:
                print(f"wrote exercises/ ({len(changed)} file(s) changed)")
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

