"""Grade a whole class: ``python -m grader grade-class SUBMISSIONS --out RESULTS [--jobs N] [--force]``.

Each entry of SUBMISSIONS is one student's submission and its name is the student id:

- a folder holding the lab modules (``alice/convolution.py`` ...; a single sub-folder level, as a
  zip of a folder often has, is looked through),
- a ``.zip`` of such a folder (extracted safely: no absolute paths, no ``..``, no links, bounded
  sizes and file counts), or
- a single module file ``alice.py``: which lab it is comes from ``--module`` or, failing that,
  from the names of the functions it defines (read with ``ast``, never executed).

Student code runs only in sandboxed worker processes (:mod:`grader.sandbox`), launched by the
course runner (``grader.runner.grade_submission(..., launcher=sandbox)``). Per submission the
grader writes ``RESULTS/<id>/junit.xml`` and then ``RESULTS/<id>/results.json`` (Gradescope
format), each atomically; ``results.json`` marks a submission as done, so a re-run skips it unless
``--force`` and an interrupted batch resumes where it stopped. At the end: ``RESULTS/grades.csv``,
``summary.json``, ``summary.txt`` and ``histogram.png`` (see :mod:`grader.reports`).
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import stat
import sys
import threading
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

from cnnlab.errors import CnnlabError
from grader import reports, runner, specs
from grader.sandbox import Limits, Sandbox, warn_protections_off

# Course modules in order (the runner's own list wins when it exposes one).
COURSE_MODULES = ("neurons", "convolution", "pooling", "training", "cnn_models", "transfer",
                  "augmentation")
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
ZIP_MAX_FILES = 500
ZIP_MAX_FILE_BYTES = 5 * 2**20
ZIP_MAX_TOTAL_BYTES = 50 * 2**20
COPY_MAX_TOTAL_BYTES = 50 * 2**20
WORK_DIR = ".work"


class SubmissionProblem(Exception):
    """The submission itself is unusable (bad zip, no module found): graded 0 with this reason."""


# -- finding and unpacking submissions ---------------------------------------------------------


def discover(submissions: Path) -> list[tuple[str, Path]]:
    """``(student_id, path)`` for each entry of the submissions folder, sorted by id."""
    if not submissions.is_dir():
        raise CnnlabError(f"submissions folder {submissions} does not exist; pass the folder "
                          "holding one folder, .zip or .py file per student")
    entries: dict[str, Path] = {}
    for path in sorted(submissions.iterdir()):
        if path.name.startswith((".", "_")):
            continue
        if path.is_dir() and not path.is_symlink():
            sid = path.name
        elif path.is_file() and not path.is_symlink() and path.suffix.lower() in (".zip", ".py"):
            sid = path.stem
        else:
            continue
        if not STUDENT_ID.match(sid):
            raise CnnlabError(f"{path.name}: a student id may hold only letters, digits and ._@+- "
                              "(rename the entry)")
        if sid in entries:
            raise CnnlabError(f"two entries for student {sid!r}: {entries[sid].name} and "
                              f"{path.name}; keep one")
        entries[sid] = path
    if not entries:
        raise CnnlabError(f"no submissions in {submissions}: expected one folder, .zip or .py "
                          "file per student")
    return sorted(entries.items())


def _safe_member_path(name: str) -> Path | None:
    """The relative path of a zip member, or None when it must be skipped (dirs, metadata)."""
    name = name.replace("\\", "/")
    if name.endswith("/"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise SubmissionProblem(f"the zip holds an unsafe path {name!r}")
    if not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
        return None
    return Path(*parts)


def extract_zip(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` refusing path traversal, links and oversized content.

    Sizes are enforced on the bytes actually written, not on what the zip declares."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SubmissionProblem(f"not a readable zip file ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > ZIP_MAX_FILES:
            raise SubmissionProblem(f"the zip holds more than {ZIP_MAX_FILES} entries")
        total = 0
        for info in infos:
            rel = _safe_member_path(info.filename)
            if rel is None:
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise SubmissionProblem(f"the zip holds a symbolic link {info.filename!r}")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 16):
                        written += len(chunk)
                        total += len(chunk)
                        if written > ZIP_MAX_FILE_BYTES:
                            raise SubmissionProblem(f"{info.filename} unpacks to more than "
                                                    f"{ZIP_MAX_FILE_BYTES >> 20} MB")
                        if total > ZIP_MAX_TOTAL_BYTES:
                            raise SubmissionProblem(f"the zip unpacks to more than "
                                                    f"{ZIP_MAX_TOTAL_BYTES >> 20} MB")
                        out.write(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError,
                    NotImplementedError, RuntimeError) as exc:
                raise SubmissionProblem(f"cannot extract {info.filename!r}: {exc}") from None


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy regular files and folders only (no links, devices or FIFOs), bounded in size."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        rel = Path(dirpath).relative_to(src)
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"
                       and not os.path.islink(os.path.join(dirpath, d))]
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if name.startswith(".") or not stat.S_ISREG(st.st_mode):
                continue
            total += st.st_size
            if total > COPY_MAX_TOTAL_BYTES:
                raise SubmissionProblem(f"the submission is larger than "
                                        f"{COPY_MAX_TOTAL_BYTES >> 20} MB")
            shutil.copyfile(path, dest / rel / name, follow_symlinks=False)


def _module_root(folder: Path, modules: Sequence[str]) -> Path:
    """The folder holding the lab modules: ``folder`` itself or the one sub-folder holding them
    (zips of a folder, or ``exercises/`` inside a repository)."""
    names = {f"{m}.py" for m in modules}
    frontier = [folder]
    for _ in range(3):
        hits = [d for d in frontier if any((d / n).is_file() for n in names)]
        if hits:
            return hits[0]
        frontier = [c for d in frontier for c in sorted(d.iterdir()) if c.is_dir()]
    raise SubmissionProblem("no lab module found (expected files such as "
                            + ", ".join(f"{m}.py" for m in modules[:3]) + ")")


def guess_module(source: bytes, exercises_by_module: dict[str, set[str]]) -> str | None:
    """The lab a single file belongs to: the module whose exercise names it defines most of."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    defined = {n.name for n in tree.body
               if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    best = max(exercises_by_module.items(), key=lambda kv: len(kv[1] & defined), default=None)
    return best[0] if best and best[1] & defined else None


def materialize(entry: Path, dest: Path, *, modules: Sequence[str],
                exercises_by_module: dict[str, set[str]], module: str | None = None) -> Path:
    """Make a plain folder of the lab modules at ``dest`` from a folder, zip or single file."""
    dest.mkdir(parents=True)
    if entry.is_dir():
        raw = dest.parent / (dest.name + ".raw")
        _copy_tree(entry, raw)
    elif entry.suffix.lower() == ".zip":
        raw = dest.parent / (dest.name + ".raw")
        raw.mkdir()
        extract_zip(entry, raw)
    else:
        data = entry.read_bytes()[: COPY_MAX_TOTAL_BYTES + 1]
        if len(data) > ZIP_MAX_FILE_BYTES:
            raise SubmissionProblem(f"{entry.name} is larger than {ZIP_MAX_FILE_BYTES >> 20} MB")
        lab = module or guess_module(data, exercises_by_module)
        if lab is None:
            raise SubmissionProblem(f"cannot tell which lab {entry.name} is (no known exercise "
                                    "function defined); grade it with --module NAME")
        (dest / f"{lab}.py").write_bytes(data)
        return dest
    root = _module_root(raw, modules)
    for item in root.iterdir():  # every top-level .py and package: helpers may be imported
        if item.name.startswith((".", "_")) and item.name != "__init__.py":
            continue
        shutil.move(str(item), dest / item.name)
    shutil.rmtree(raw)
    return dest


# -- the course runner ---------------------------------------------------------------------------


def course_layout() -> tuple[list[str], dict[str, set[str]]]:
    """Modules in course order and the exercise names of each (from the specs)."""
    return list(specs.MODULES), {m: {e.name for e in specs.load(m)} for m in specs.MODULES}


def select(exercises: Sequence[str] | None) -> list:
    """The chosen exercises (names, ``module.function``, modules or lab numbers); CnnlabError
    naming the valid ones when a name is unknown."""
    try:
        return runner.select_exercises(exercises)
    except runner.GraderError as exc:
        raise CnnlabError(str(exc)) from None


def failed_results(reason: str, max_scores: dict[str, float]) -> dict:
    """Results for a submission that could not be graded at all (bad zip, no module): all 0."""
    return {"score": 0.0, "execution_time": 0.0, "output": f"Submission not graded: {reason}",
            "tests": [{"name": name, "score": 0.0, "max_score": points, "status": "failed",
                       "output": reason, "visibility": "visible"}
                      for name, points in max_scores.items()]}


def worker_heartbeat(exercise_timeout_s: float) -> dict:
    """Sandbox limits that end a worker whose progress file is older than one exercise's time
    plus a margin (a hang that defeats the worker's own alarm; see ``Limits.heartbeat_file``)."""
    return {"heartbeat_file": "out/progress.json", "heartbeat_s": exercise_timeout_s + 15.0}


# -- the batch --------------------------------------------------------------------------------


class ClassGrader:
    """Grades every entry of ``submissions`` into ``out`` (see the module docstring)."""

    def __init__(self, submissions: Path, out: Path, *, jobs: int = 2, force: bool = False,
                 exercises: Sequence[str] | None = None, module: str | None = None,
                 limits: Limits | None = None, timeout_s: float | None = None, stream=None):
        self.submissions = Path(submissions).resolve()
        self.out = Path(out).resolve()
        if self.out == self.submissions or self.submissions in self.out.parents:
            raise CnnlabError("--out must not be inside the submissions folder")
        if jobs < 1:
            raise CnnlabError("--jobs must be at least 1")
        self.jobs, self.force = jobs, force
        self.exercises = list(exercises) if exercises else None
        self.module = module
        self.timeout_s = timeout_s or runner.DEFAULT_EXERCISE_TIMEOUT_S
        self.hidden = specs.hidden_available()  # the instructor grades hidden cases when present
        self.stream = stream or sys.stdout
        base = limits or Limits()
        # The sandbox must see neither the class's submissions, nor anyone's results, nor the
        # runner's cache of reference outputs.
        hide = tuple(dict.fromkeys((*base.hide, str(self.submissions), str(self.out),
                                    str(runner.cache_dir()))))
        self.sandbox = Sandbox(dataclasses.replace(base, hide=hide,
                                                   **worker_heartbeat(self.timeout_s)))
        self._lock = threading.Lock()

    def log(self, line: str) -> None:
        with self._lock:
            print(line, file=self.stream, flush=True)

    def run(self) -> dict:
        entries = discover(self.submissions)
        modules, by_module = course_layout()
        self.chosen = select(self.exercises)
        try:  # one reference store for the batch: computed (or read from cache) once per module
            self.reference = runner.open_reference()
        except runner.GraderError as exc:
            raise CnnlabError(str(exc)) from None
        if self.module is not None and self.module not in modules:
            raise CnnlabError(f"unknown module {self.module!r}; choose one of {', '.join(modules)}")
        self.out.mkdir(parents=True, exist_ok=True)
        os.chmod(self.out, 0o700)  # results are the instructor's
        work = self.out / WORK_DIR
        shutil.rmtree(work, ignore_errors=True)  # leftovers of an interrupted run
        work.mkdir(mode=0o700)
        warn_protections_off(self.sandbox)
        self.log(self.sandbox.describe())
        todo = [(sid, path) for sid, path in entries
                if self.force or not (self.out / sid / "results.json").is_file()]
        self.log(f"grading {len(todo)} of {len(entries)} submissions with {self.jobs} jobs "
                 f"({len(entries) - len(todo)} already graded)")
        errors: dict[str, str] = {}
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(self.jobs) as pool:
            futures = {pool.submit(self._grade_entry, sid, path, modules, by_module): sid
                       for sid, path in todo}
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                sid = futures[future]
                try:
                    data, seconds = future.result()
                    self.log(f"[{done}/{len(todo)}] {sid}: {data['score']:g}/{data['max_score']:g}"
                             f" points in {seconds:.1f} s")
                except Exception as exc:  # noqa: BLE001 - a grader bug: keep going, report
                    errors[sid] = f"{type(exc).__name__}: {exc}"
                    self.log(f"[{done}/{len(todo)}] {sid}: NOT GRADED ({errors[sid]}); re-run "
                             "grade-class to retry")
        shutil.rmtree(work, ignore_errors=True)
        table = {}
        for sid, _ in entries:
            path = self.out / sid / "results.json"
            if path.is_file():
                table[sid] = json.loads(path.read_text())
        order = self._exercise_order(table, modules)
        summary = reports.write_class_reports(self.out, table, order)
        summary["errors"] = errors
        summary["seconds"] = time.monotonic() - start
        self.log(reports.format_summary(summary).rstrip())
        self.log(f"wrote {self.out / 'grades.csv'}, summary.txt, summary.json, histogram.png "
                 f"and <id>/results.json + junit.xml ({summary['seconds']:.0f} s)")
        return summary

    @staticmethod
    def _exercise_order(table: dict, modules: list[str]) -> list[str]:
        names = reports.exercise_names(table[s] for s in sorted(table))
        rank = {m: i for i, m in enumerate(modules)}
        # stable: course module order first, then the runner's order within a module
        return sorted(names, key=lambda n: rank.get(n.split(".", 1)[0], len(rank)))

    def _grade_entry(self, sid: str, path: Path, modules, by_module) -> tuple[dict, float]:
        start = time.monotonic()
        stage = self.out / WORK_DIR / sid
        shutil.rmtree(stage, ignore_errors=True)
        try:
            try:
                submission = materialize(path, stage / "submission", modules=modules,
                                         exercises_by_module=by_module, module=self.module)
                exercises = self.exercises
                if path.suffix.lower() == ".py" and exercises is None:
                    exercises = [p.stem for p in submission.glob("*.py")]  # its lab only
                # jobs=1: --jobs submissions at once, each in one worker (its modules in turn)
                result = runner.grade_submission(
                    submission, exercises=exercises, include_hidden=self.hidden,
                    launcher=self.sandbox, reference=self.reference, jobs=1,
                    timeout_s=self.timeout_s)
                data = result.to_gradescope()
            except SubmissionProblem as problem:
                data = failed_results(str(problem), {e.qualname: e.points for e in self.chosen})
            data["execution_time"] = time.monotonic() - start
            written = self._write(sid, data)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return written, time.monotonic() - start

    def _write(self, sid: str, data: dict) -> dict:
        folder = self.out / sid
        folder.mkdir(exist_ok=True)
        reports.write_junit(folder / "junit.xml", data, suite=sid)
        return reports.write_results_json(folder / "results.json", data)  # last: marks "done"


def grade_class(submissions, out, **kwargs) -> dict:
    """Library entry point of ``grade-class``; returns the class summary."""
    return ClassGrader(Path(submissions), Path(out), **kwargs).run()


# -- CLI ---------------------------------------------------------------------------------------


def register_cli(subparsers) -> None:
    """Add ``grade-class`` to the grader's CLI (``grader.cli`` calls this for each plugin)."""
    p = subparsers.add_parser(
        "grade-class", help="grade a whole class in the sandbox (instructor)",
        description="Grade every submission (a folder, .zip or .py named after the student) in "
                    "SUBMISSIONS; write RESULTS/<id>/results.json + junit.xml, RESULTS/grades.csv "
                    "and a summary (summary.txt, summary.json, histogram.png).")
    p.add_argument("submissions", type=Path, metavar="SUBMISSIONS")
    p.add_argument("--out", type=Path, required=True, metavar="RESULTS")
    p.add_argument("--jobs", type=int, default=2,
                   help="submissions graded at once, one worker process each (default 2)")
    p.add_argument("--force", action="store_true", help="re-grade submissions already graded")
    p.add_argument("--exercises", default=None, metavar="NAMES",
                   help="comma-separated exercises, modules or lab numbers (default: all)")
    p.add_argument("--module", default=None,
                   help="the lab of single-file submissions (default: guessed from its functions)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds per exercise (default: the runner's, 30)")
    p.add_argument("--memory-gb", type=float, default=4.0,
                   help="address-space limit per worker in GB (default 4; JAX needs >= 2)")
    p.set_defaults(func=_cmd_grade_class)


add_subcommands = register_cli


def _cmd_grade_class(args: argparse.Namespace) -> int:
    exercises = [e.strip() for e in args.exercises.split(",") if e.strip()] if args.exercises \
        else None
    try:
        if args.memory_gb < 2:
            raise CnnlabError("--memory-gb must be at least 2 (JAX needs about 1.6 GB of address "
                              "space to import)")
        summary = grade_class(args.submissions, args.out, jobs=args.jobs, force=args.force,
                              exercises=exercises, module=args.module, timeout_s=args.timeout,
                              limits=Limits(address_space_bytes=int(args.memory_gb * 2**30)))
    except CnnlabError as exc:
        print(f"grader: error: {exc}", file=sys.stderr)
        return 2
    return 1 if summary["errors"] else 0
