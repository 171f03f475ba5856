"""Grade a whole class: ``python -m grader grade-class SUBMISSIONS --out RESULTS``, and combine
the outputs of several machines: ``python -m grader merge RESULTS_DIR... --out MERGED``.

Each entry of SUBMISSIONS is one student's submission and its name is the student id (any
Unicode, kept as given in every report; on disk the results go to a safe folder name,
:func:`folder_name`):

- a folder holding the lab modules (``alice/convolution.py`` ...; a repository or a zip's single
  top folder is looked through, down to three levels),
- a ``.zip`` of such a folder (extracted safely: no absolute paths, no ``..``, no links, bounded
  sizes and file counts), or
- a single module file ``alice.py``: which lab it is comes from ``--module`` or, failing that,
  from the names of the functions it defines (read with ``ast``, never executed); or
- a lab's notebook, in the folder (``notebooks/NN_<lab>.ipynb`` or ``NN_<lab>.ipynb``) or as a
  single file ``alice.ipynb`` (its lab found as for a module file): the grader takes its code
  as :mod:`grader.notebook` says.

An entry that cannot be used (a corrupt or unsafe zip, no lab module) is *rejected*: it is
reported as such, with the reason, in the console, ``grades.csv`` and the summary.

Re-grading is exact. Every results.json records (in Gradescope's free-form ``extra_data``, see
:func:`grader.reports.meta`) the SHA-256 of the files it was graded on and, per exercise, the hash
of the exercise's spec and reference (:func:`spec_digests`) and the grader's version
(:func:`grader_version`). A re-run grades exactly the (submission, exercise) pairs whose inputs
changed, says which and why, and merges the new results into the old ones (``--exercises X
--force`` re-grades X only, keeping every other exercise's points; ``--students a,b`` re-grades
those students). ``--shard I/N`` grades every N-th submission (in id order), so that N machines
(a CI matrix, a SLURM array) grade a class together; ``merge`` combines their outputs into the
reports a single machine would have written.

Student code runs only in sandboxed worker processes (:mod:`grader.sandbox`). SIGINT and SIGTERM
stop a batch cleanly: no new submission starts, the running workers and their sandboxes are
ended, nothing of an unfinished submission is written, and the class reports are written for
what is graded, with the number that remain. Per submission the grader writes
``RESULTS/<folder>/source.zip`` (the graded lab modules), ``junit.xml`` and then ``results.json``
(last: it marks the submission as graded), each atomically.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import signal
import stat
import sys
import threading
import time
import unicodedata
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.fileio import write_bytes, write_text
from grader import lms, reports, runner, specs
from grader import similarity as sim
from grader.commands import cache_dir
from grader.notebook import (NOTEBOOK_DIR, extract, find_notebook, notebook_name,
                             read_code_cells)
from grader.results import points_line
from grader.sandbox import Limits, Sandbox, warn_protections_off

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
# Files and folders of RESULTS that are the class's, never a student's.
RUN_FILE = "run.json"
CLASS_FILES = (RUN_FILE, "grades.csv", "summary.json", "summary.txt", "histogram.png",
               "similarity.csv")
CLASS_PREFIXES = ("similarity-", "lms-")
SOURCE_ZIP = "source.zip"
PREVIOUS_RESULTS = "previous-results.json"
ZIP_MAX_FILES = 500
ZIP_MAX_FILE_BYTES = 5 * 2**20
ZIP_MAX_TOTAL_BYTES = 50 * 2**20
COPY_MAX_TOTAL_BYTES = 50 * 2**20
WORK_DIR = ".work"
# Grader modules whose code decides a score: a change in any of them changes the grader version.
SCORING_MODULES = ("runner", "compare", "results", "drivers", "worker", "codec", "verify",
                   "delegation", "spec")


class SubmissionProblem(Exception):
    """The submission itself is unusable (bad zip, no module found): it is rejected with this
    reason."""


class Interrupted(BaseException):
    """Grading was stopped by SIGINT/SIGTERM (a BaseException, so no ``except Exception`` on the
    way out swallows it)."""


# -- finding and unpacking submissions ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    """One submission: the student id as given, its path, and its results folder name."""

    sid: str
    path: Path
    folder: str


def _reserved(name: str) -> bool:
    return name in CLASS_FILES or name.startswith(CLASS_PREFIXES) or name == WORK_DIR


def folder_name(sid: str) -> str:
    """The results folder of student ``sid``: the id itself when it is a plain ASCII name, else
    an ASCII transliteration followed by a hash of the id (``José Müller-李`` ->
    ``Jose_Muller-_<10 hex>``), so that any Unicode id maps to one safe, distinct folder."""
    if SAFE_ID.fullmatch(sid) and not _reserved(sid):
        return sid
    ascii_ = unicodedata.normalize("NFKD", sid).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9._@+-]+", "_", ascii_).strip("._-+@")[:48] or "student"
    return f"{slug}_{hashlib.sha256(sid.encode()).hexdigest()[:10]}"


def _entry_id(path: Path) -> str | None:
    """The student id of a submissions folder entry (None: not a submission)."""
    if path.name.startswith((".", "_")) or path.is_symlink():
        return None
    if path.is_dir():
        sid = path.name
    elif path.is_file() and path.suffix.lower() in (".zip", ".py", ".ipynb"):
        sid = path.stem
    else:
        return None
    if not sid.strip() or any(unicodedata.category(c)[0] == "C" for c in sid):
        raise CnnlabError(f"{path.name!r}: a student id may not be blank or hold control "
                          "characters (rename the entry)")
    return sid


def discover(submissions: Path) -> list[Entry]:
    """The submissions of the folder, sorted by student id."""
    if not submissions.is_dir():
        raise CnnlabError(f"submissions folder {submissions} does not exist; pass the folder "
                          "holding one folder, .zip or .py file per student")
    entries: dict[str, Path] = {}
    for path in sorted(submissions.iterdir()):
        sid = _entry_id(path)
        if sid is None:
            continue
        if sid in entries:
            raise CnnlabError(f"two entries for student {sid!r}: {entries[sid].name} and "
                              f"{path.name}; keep one")
        entries[sid] = path
    if not entries:
        raise CnnlabError(f"no submissions in {submissions}: expected one folder, .zip or .py "
                          "file per student")
    out = [Entry(sid, path, folder_name(sid)) for sid, path in sorted(entries.items())]
    folders: dict[str, str] = {}
    for e in out:
        other = folders.setdefault(e.folder.casefold(), e.sid)
        if other != e.sid:
            raise CnnlabError(f"students {other!r} and {e.sid!r} would share the results folder "
                              f"{e.folder!r}; rename one entry")
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: the second of four shards."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise CnnlabError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. --shard 2/4")
    return int(m.group(1)), int(m.group(2))


def shard_entries(entries: Sequence[Entry], shard: tuple[int, int]) -> list[Entry]:
    """Shard I of N: the I-th, (I+N)-th, ... submission in id order (deterministic, and every
    shard gets the same number of submissions, give or take one)."""
    i, n = shard
    return list(entries[i - 1::n])


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
            if stat.S_ISLNK(info.external_attr >> 16):
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
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__"
                             and not os.path.islink(os.path.join(dirpath, d)))
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for name in sorted(filenames):
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
    for _ in range(3):  # lab modules, or the labs' notebooks (grader.notebook)
        hits = [d for d in frontier if any((d / n).is_file() for n in names)
                or any(find_notebook(d, m) for m in modules)]
        if hits:
            return hits[0]
        frontier = [c for d in frontier for c in sorted(d.iterdir()) if c.is_dir()]
    raise SubmissionProblem("no lab module found (expected files such as "
                            + ", ".join(f"{m}.py" for m in modules[:3]) + " or their notebooks)")


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
        if entry.suffix.lower() == ".ipynb":  # one lab's notebook (grader.notebook)
            try:
                code = extract(read_code_cells(entry))
            except (OSError, ValueError) as exc:
                raise SubmissionProblem(f"{entry.name} could not be read: {exc}") from None
            defined = "".join(p.source for p in code.definitions.values()).encode()
            lab = module or guess_module(defined, exercises_by_module)
            if lab is None:
                raise SubmissionProblem(f"cannot tell which lab {entry.name} is (no known "
                                        "exercise function defined); grade it with --module NAME")
            (dest / NOTEBOOK_DIR).mkdir()
            (dest / NOTEBOOK_DIR / notebook_name(lab)).write_bytes(data)
            return dest
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


# -- what a grade depends on: the files, the specs, the grader --------------------------------


def tree_sha256(folder: Path) -> str:
    """SHA-256 over the relative paths and contents of every file under ``folder`` (links are
    not followed): what the submission's grade depends on."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not path.is_file() or path.is_symlink():
                continue
            rel = path.relative_to(folder).as_posix().encode()
            h.update(len(rel).to_bytes(4, "big") + rel)
            with open(path, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def entry_sha256(path: Path) -> str:
    """SHA-256 of an entry as submitted (a rejected one cannot be materialized)."""
    if path.is_dir():
        return tree_sha256(path)
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _feed(h, obj) -> None:
    """Hash ``obj`` canonically: nested dicts/lists/tuples, numpy arrays (dtype, shape, bytes)
    and scalars."""
    if isinstance(obj, np.ndarray | np.generic):
        a = np.ascontiguousarray(obj)
        h.update(f"a{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=str):
            _feed(h, str(k))
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, list | tuple):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(repr(obj).encode() + b";")


def _reference_files(reference, module: str) -> list[Path]:
    """The files the reference outcomes of ``module`` come from (solution or expected outputs)."""
    if isinstance(reference, runner.ReferenceStore):
        return [reference.solutions_dir / f"{module}.py"]
    folder = reference.expected_dir
    return [folder / f"{module}.json", folder / f"{module}.npz"]


def spec_digests(exercises, reference) -> dict[str, str]:
    """Per exercise (``module.function``) a hash of what its grading is defined by: its points,
    every case as graded (inputs, hidden cases drawn from the term's seed included, how it is
    called and checked, tolerances, weights), the library routines it may not call, and the
    reference it is compared with (the lab's solution source, or its saved expected outputs).
    The reference's *outputs* are left out on purpose: they differ in the last bits between
    CPUs, and grading compares them with a tolerance."""
    out = {}
    sources: dict[str, bytes] = {}
    for ex in exercises:
        if ex.module not in sources:
            h = hashlib.sha256()
            for path in _reference_files(reference, ex.module):
                h.update(path.read_bytes() if path.is_file() else b"<missing>")
            sources[ex.module] = h.digest()
        h = hashlib.sha256(sources[ex.module])
        _feed(h, [ex.qualname, float(ex.points)])
        if ex.not_allowed:  # library routines it may not call (left out when none: stable)
            _feed(h, list(ex.not_allowed))
        for case in ex.cases:
            _feed(h, {f.name: getattr(case, f.name) for f in dataclasses.fields(case)
                      if f.name != "hint"})
        out[ex.qualname] = h.hexdigest()[:16]
    return out


def grader_version() -> str:
    """The package version, a hash of the scoring code (:data:`SCORING_MODULES`) and the versions
    of the numerical libraries the worker runs on: a change in any of them may change a score."""
    h = hashlib.sha256(runner.package_versions().encode())
    here = Path(__file__).resolve().parent
    for name in SCORING_MODULES:
        path = here / f"{name}.py"
        h.update(name.encode() + (path.read_bytes() if path.is_file() else b""))
    return f"{cnnlab.__version__}+{h.hexdigest()[:12]}"


# -- the course runner ---------------------------------------------------------------------------


def course_layout() -> tuple[list[str], dict[str, set[str]]]:
    """Modules in course order and the exercise names of each (from the specs)."""
    return list(specs.MODULES), {m: {e.name for e in specs.load(m)} for m in specs.MODULES}


def course_order() -> list[str]:
    """Every exercise's ``module.function`` in course order (the columns of the reports)."""
    return [e.qualname for e in specs.load_all()]


def select(exercises: Sequence[str] | None) -> list:
    """The chosen exercises (names, ``module.function``, modules or lab numbers); CnnlabError
    naming the valid ones when a name is unknown."""
    try:
        return runner.select_exercises(exercises)
    except runner.GraderError as exc:
        raise CnnlabError(str(exc)) from None


def failed_results(reason: str, max_scores: dict[str, float]) -> dict:
    """Results for a submission that could not be graded at all (bad zip, no module), as
    Gradescope shows them to the student: every test 0 with the reason."""
    return {"score": 0.0, "execution_time": 0.0, "output": f"Submission not graded: {reason}",
            "tests": [{"name": name, "score": 0.0, "max_score": points, "status": "failed",
                       "output": reason, "visibility": "visible"}
                      for name, points in max_scores.items()]}


def rejected_results(sid: str, reason: str, sha: str) -> dict:
    """Results of a rejected submission: no test (nothing was graded), the reason, the mark."""
    return {"score": 0.0, "execution_time": 0.0, "output": f"Submission rejected: {reason}",
            "visibility": "visible", "stdout_visibility": "hidden", "tests": [],
            "extra_data": {"cnnlab": {"student": sid, "status": "rejected", "reason": reason,
                                      "submission": sha, "exercises": {}}}}


def worker_heartbeat(exercise_timeout_s: float) -> dict:
    """Sandbox limits that end a worker whose progress file is older than one exercise's time
    plus a margin (a hang that defeats the worker's own alarm; see ``Limits.heartbeat_file``)."""
    return {"heartbeat_file": "out/progress.json", "heartbeat_s": exercise_timeout_s + 15.0}


def merge_results(previous: dict | None, new: dict, graded: Sequence[str], record: dict,
                  order: Sequence[str]) -> dict:
    """``new`` (the Gradescope results of the exercises ``graded``) merged into ``previous``: the
    previous tests of every other exercise still in the course are kept, all in course order;
    ``record`` becomes ``extra_data["cnnlab"]``."""
    graded = set(graded)
    known = set(order)
    kept = [t for t in (previous or {}).get("tests", [])
            if reports.exercise_key(t["name"]) not in graded
            and reports.exercise_key(t["name"]) in known]
    rank = {n: i for i, n in enumerate(order)}
    tests = sorted(kept + list(new["tests"]), key=lambda t: (
        rank.get(reports.exercise_key(t["name"]), len(rank)), t["name"]))
    data = {k: v for k, v in new.items() if k not in ("tests", "extra_data", "max_score")}
    data["tests"] = tests
    data["score"] = round(sum(t["score"] for t in tests), 4)
    # the first line counts every exercise now (public points only while some are hidden)
    data["output"] = "\n".join([points_line(tests), *str(new.get("output", "")).splitlines()[1:]])
    data["extra_data"] = {"cnnlab": record}
    return data


def source_zip(folder: Path, sha: str) -> bytes:
    """A deterministic zip of the lab modules in ``folder`` (what similarity compares), with
    the submission's hash as its comment."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for module in specs.MODULES:
            path = folder / f"{module}.py"
            if path.is_file():
                info = zipfile.ZipInfo(f"{module}.py", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                zf.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
        zf.comment = sha.encode()
    return buf.getvalue()


# -- one run ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Task:
    """What one submission needs in this run: the exercises to grade and why."""

    entry: Entry
    sha: str
    stage: Path | None                 # the materialized submission (None: rejected)
    problem: str | None                # why it is rejected
    exercises: list[str]               # to grade, module.function
    why: dict[str, list[str]]          # reason -> exercises
    previous: dict | None


def read_manifest(out: Path) -> dict:
    """The ``run.json`` of a results folder (CnnlabError when absent or unreadable)."""
    try:
        data = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
        assert isinstance(data, dict) and isinstance(data["students"], dict)
        return data
    except (OSError, ValueError, KeyError, AssertionError):
        raise CnnlabError(f"{out} holds no readable {RUN_FILE}: is it a grade-class --out "
                          "folder?") from None


def class_sha256(entries: Sequence[Entry]) -> str:
    return hashlib.sha256("\0".join(e.sid for e in entries).encode()).hexdigest()


class ClassGrader:
    """Grades the entries of ``submissions`` into ``out`` (see the module docstring)."""

    def __init__(self, submissions: Path, out: Path, *, jobs: int = 2, force: bool = False,
                 exercises: Sequence[str] | None = None, students: Sequence[str] | None = None,
                 shard: tuple[int, int] = (1, 1), module: str | None = None,
                 limits: Limits | None = None, timeout_s: float | None = None, stream=None):
        self.submissions = Path(submissions).resolve()
        self.out = Path(out).resolve()
        if self.out == self.submissions or self.submissions in self.out.parents:
            raise CnnlabError("--out must not be inside the submissions folder")
        if jobs < 1:
            raise CnnlabError("--jobs must be at least 1")
        self.jobs, self.force, self.shard = jobs, force, shard
        self.exercises = list(exercises) if exercises else None
        self.students = list(students) if students else None
        self.module = module
        self.timeout_s = timeout_s or runner.DEFAULT_EXERCISE_TIMEOUT_S
        self.hidden = specs.hidden_available()  # the instructor grades hidden cases when present
        self.stream = stream or sys.stdout
        base = limits or Limits()
        # The sandbox must see neither the class's submissions, nor anyone's results, nor the
        # runner's cache of reference outputs.
        hide = tuple(dict.fromkeys((*base.hide, str(self.submissions), str(self.out),
                                    str(cache_dir()))))
        # ... but it may open the reference's compiled programs by exact name (a cache hit needs
        # the very program already: see Limits.compiled_cache).
        self.sandbox = Sandbox(dataclasses.replace(
            base, hide=hide, compiled_cache=base.compiled_cache or str(runner.compiled_cache_dir()),
            **worker_heartbeat(self.timeout_s)))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.signal: int | None = None

    def log(self, line: str) -> None:
        with self._lock:
            print(line, file=self.stream, flush=True)

    # -- interrupts --------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        """Stop: flag it and end the workers. Nothing is printed here (a handler that prints can
        interrupt a print of the main thread); the grading loop says what happens."""
        if self._stop.is_set():  # a second one: the user means it
            os.write(2, f"grader: {signal.Signals(signum).name} again: quitting now (every file "
                        "is written atomically: re-run the same command to resume)\n".encode())
            self._end_workers()
            os._exit(128 + signum)
        self.signal = signum
        self._stop.set()
        self._end_workers()

    @staticmethod
    def _end_workers() -> None:
        """SIGKILL every process this grader started (the sandboxes and what runs in them); the
        sandbox's own clean-up then runs in the threads that launched them."""
        for process in reversed(psutil.Process().children(recursive=True)):
            try:
                process.kill()
            except psutil.Error:
                pass

    def _launch(self, argv, **kwargs):
        """The sandbox as launcher, refusing to start (or to report) a worker once stopping."""
        if self._stop.is_set():
            raise Interrupted()
        result = self.sandbox(argv, **kwargs)
        if self._stop.is_set():
            raise Interrupted()
        return result

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> dict:
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {s: signal.signal(s, self._on_signal)
                        for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)

    def _run(self) -> dict:
        start = time.monotonic()
        everyone = discover(self.submissions)
        mine = shard_entries(everyone, self.shard)
        self.chosen = select(self.exercises)
        self.order = course_order()
        self._prepare_reference()
        forced = self._forced(mine)
        self.out.mkdir(parents=True, exist_ok=True)
        os.chmod(self.out, 0o700)  # results are the instructor's
        work = self.out / WORK_DIR
        shutil.rmtree(work, ignore_errors=True)  # leftovers of an interrupted run ...
        for torn in [*self.out.glob(".*.tmp"), *self.out.glob("*/.*.tmp")]:
            torn.unlink(missing_ok=True)  # ... and of atomic writes cut short by kill -9
        work.mkdir(mode=0o700)
        write_text(self.out / RUN_FILE, json.dumps({
            "version": 1, "shard": list(self.shard), "class_size": len(everyone),
            "class_sha256": class_sha256(everyone), "grader": self.version,
            "students": {e.sid: e.folder for e in mine}}, indent=2, ensure_ascii=False) + "\n")
        warn_protections_off(self.sandbox)
        self.log(self.sandbox.describe())
        if self.shard != (1, 1):
            self.log(f"shard {self.shard[0]}/{self.shard[1]}: {len(mine)} of the class's "
                     f"{len(everyone)} submissions")
        tasks, idle = [], {}
        for entry in mine:
            if self._stop.is_set() or (self.students and entry.sid not in forced):
                if self._stop.is_set() or not (self.out / entry.folder / "results.json").is_file():
                    idle[entry.sid] = "not graded yet" + " (interrupted)" * self._stop.is_set()
                continue  # stopped, or not one of --students
            task = self._plan(entry, entry.sid in forced)
            if task is not None:
                tasks.append(task)
            elif not (self.out / entry.folder / "results.json").is_file():
                idle[entry.sid] = "nothing to grade: no selected exercise is in its lab"
        self._announce(tasks, len(mine))
        done, errors = self._grade_all(tasks)
        shutil.rmtree(work, ignore_errors=True)
        pending = {t.entry.sid: "not graded yet (interrupted)" if self._stop.is_set()
                   else f"not graded: {errors.get(t.entry.sid, 'grader error')}"
                   for t in tasks if t.entry.sid not in done}
        pending.update(idle)
        summary = build_class_reports(self.out, {e.sid: e.folder for e in mine}, self.order,
                                      pending=pending)
        summary["errors"] = errors
        summary["seconds"] = time.monotonic() - start
        summary["graded_now"] = len(done)
        self.log(reports.format_summary(summary).rstrip())
        self.log(f"wrote {self.out / 'grades.csv'}, summary.txt, summary.json, histogram.png and "
                 f"<student>/results.json + junit.xml ({summary['seconds']:.0f} s)")
        if self._stop.is_set():
            self.log(f"interrupted by {signal.Signals(self.signal).name}: {len(done)} "
                     f"submission(s) graded in this run, {len(pending)} remain: run the same "
                     "command again to resume")
        return summary

    def _prepare_reference(self) -> None:
        try:  # one reference store for the batch: computed (or read from cache) once per module
            self.reference = runner.open_reference()
        except runner.GraderError as exc:
            raise CnnlabError(str(exc)) from None
        if self.module is not None and self.module not in specs.MODULES:
            raise CnnlabError(f"unknown module {self.module!r}; choose one of "
                              f"{', '.join(specs.MODULES)}")
        graded = [e for m in dict.fromkeys(e.module for e in self.chosen)
                  for e in specs.load(m, include_hidden=self.hidden)
                  if e.qualname in {c.qualname for c in self.chosen}]
        self.digests = spec_digests(graded, self.reference)
        self.version = grader_version()

    def _forced(self, mine: Sequence[Entry]) -> set[str]:
        """The ids re-graded whatever their state: those of --students (then only those), else
        all with --force."""
        if not self.students:
            return {e.sid for e in mine} if self.force else set()
        known = {unicodedata.normalize("NFC", e.sid): e.sid for e in mine}
        wanted = {unicodedata.normalize("NFC", s.strip()) for s in self.students if s.strip()}
        unknown = sorted(wanted - set(known))
        if unknown:
            where = "this shard of " if self.shard != (1, 1) else ""
            raise CnnlabError(f"--students: no submission in {where}{self.submissions} for "
                              + ", ".join(map(repr, unknown)))
        return {known[s] for s in wanted}

    def _plan(self, entry: Entry, forced: bool) -> Task | None:
        """What ``entry`` needs (None: its results are up to date)."""
        previous = reports.load_results(self.out / entry.folder / "results.json")
        record = reports.meta(previous) if previous else {}
        if record.get("student") != entry.sid:
            previous, record = None, {}  # absent, torn, foreign, or written by an older grader
        stage = self.out / WORK_DIR / entry.folder
        modules, by_module = course_layout()
        try:
            folder = materialize(entry.path, stage / "submission", modules=modules,
                                 exercises_by_module=by_module, module=self.module)
        except SubmissionProblem as problem:
            shutil.rmtree(stage, ignore_errors=True)
            sha = entry_sha256(entry.path)
            unchanged = record.get("status") == "rejected" and record.get("submission") == sha
            if unchanged and not forced:
                return None
            return Task(entry, sha, None, str(problem), [], {"rejected": []}, previous)
        sha = tree_sha256(folder)
        single = entry.path.is_file() and entry.path.suffix.lower() in (".py", ".ipynb")
        labs = ({p.stem for p in folder.glob("*.py")}
                | {m for m in modules if find_notebook(folder, m)}) if single else None
        done = (record.get("exercises") or {}) if record.get("status") == "graded" else {}
        why: dict[str, list[str]] = {}
        for ex in self.chosen:
            if labs is not None and ex.module not in labs:
                continue  # a single module: its own lab only
            r = done.get(ex.qualname) if isinstance(done.get(ex.qualname), dict) else None
            reason = ("forced" if forced else "new" if r is None
                      else "submission changed" if r.get("submission") != sha
                      else "spec changed" if r.get("spec") != self.digests[ex.qualname]
                      else "grader changed" if r.get("grader") != self.version else None)
            if reason:
                why.setdefault(reason, []).append(ex.qualname)
        if not why:
            shutil.rmtree(stage, ignore_errors=True)
            return None
        return Task(entry, sha, folder, None, [q for names in why.values() for q in names], why,
                    previous)

    def _announce(self, tasks: Sequence[Task], total: int) -> None:
        """Say what will be graded and why (names the students and exercises)."""
        self.log(f"grading {len(tasks)} of {total} submissions with {self.jobs} jobs "
                 f"({total - len(tasks)} up to date)")
        groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for t in tasks:
            for reason, names in t.why.items():
                shown = tuple(names) if reason not in ("new", "forced", "rejected") or \
                    set(names) != {e.qualname for e in self.chosen} else ()
                groups.setdefault((reason, shown), []).append(t.entry.sid)
        for (reason, names), sids in sorted(groups.items()):
            who = ", ".join(sids[:12]) + (f" and {len(sids) - 12} more" if len(sids) > 12 else "")
            what = f" ({', '.join(names[:8])}{' ...' if len(names) > 8 else ''})" if names else ""
            self.log(f"  {reason}{what}: {who}")

    def _grade_all(self, tasks: Sequence[Task]) -> tuple[set[str], dict[str, str]]:
        """Grade ``tasks`` on ``jobs`` threads; returns the ids done and the grader errors. Stops
        early (cancelling what has not started) when a signal arrives."""
        done: set[str] = set()
        errors: dict[str, str] = {}
        announced = False
        with concurrent.futures.ThreadPoolExecutor(self.jobs) as pool:
            futures = {pool.submit(self._grade_task, t): t.entry.sid for t in tasks}
            pending = set(futures)
            while pending:
                finished, pending = concurrent.futures.wait(
                    pending, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    line = self._outcome(futures[future], future, done, errors)
                    if line:
                        self.log(f"[{len(done) + len(errors)}/{len(tasks)}] {futures[future]}: "
                                 f"{line}")
                if self._stop.is_set():
                    if not announced:
                        announced = True
                        self.log(f"grader: {signal.Signals(self.signal).name} received: stopping "
                                 "(no new submission starts, the running workers are ended; "
                                 "press Ctrl-C again to quit at once)")
                    for future in pending:
                        future.cancel()
                    self._end_workers()  # also any worker launched while stopping
        return done, errors

    def _outcome(self, sid: str, future, done: set[str], errors: dict[str, str]) -> str | None:
        """Record how one submission ended (in ``done`` or ``errors``); its console line, or
        None when it was stopped."""
        if future.cancelled():
            return None
        try:
            line = future.result()
        except Interrupted:
            return None
        except Exception as exc:  # noqa: BLE001 - a grader bug: keep going, report
            if self._stop.is_set():
                return None  # a reference run or launch ended by the stop
            errors[sid] = f"{type(exc).__name__}: {exc}"
            return f"NOT GRADED ({errors[sid]}); re-run grade-class to retry"
        done.add(sid)
        return line

    def _grade_task(self, task: Task) -> str:
        """Grade one task and write its files; the console line."""
        if self._stop.is_set():
            raise Interrupted()
        start = time.monotonic()
        sid = task.entry.sid
        try:
            if task.problem is not None:
                data = rejected_results(sid, task.problem, task.sha)
            else:
                result = runner.grade_submission(
                    task.stage, exercises=task.exercises, include_hidden=self.hidden,
                    launcher=self._launch, reference=self.reference, jobs=1,
                    timeout_s=self.timeout_s)
                data = self._merged(task, result)
            if self._stop.is_set():
                raise Interrupted()
            data["execution_time"] = time.monotonic() - start
            self._write(task, data)
        finally:
            if task.stage is not None:
                shutil.rmtree(task.stage.parent, ignore_errors=True)
        seconds = time.monotonic() - start
        if task.problem is not None:
            return f"REJECTED: {task.problem}"
        again = "; ".join(f"{r}: {len(n)} exercise(s)" if len(n) < len(self.chosen) else r
                          for r, n in task.why.items() if r not in ("new", "forced"))
        return (f"{data['score']:g}/{sum(t['max_score'] for t in data['tests']):g} points in "
                f"{seconds:.1f} s" + (f" (re-graded: {again})" if again else ""))

    def _merged(self, task: Task, result) -> dict:
        previous = task.previous
        old = reports.meta(previous).get("exercises", {}) if previous else {}
        if reports.meta(previous or {}).get("status") != "graded":
            previous, old = None, {}
        record = {"student": task.entry.sid, "status": "graded", "reason": "",
                  "submission": task.sha,
                  "exercises": {k: v for k, v in old.items() if k in self.order}}
        for e in result.exercises:
            record["exercises"][e.qualname] = {"status": e.status, "spec": self.digests[e.qualname],
                                               "grader": self.version, "submission": task.sha}
        record["exercises"] = {k: record["exercises"][k] for k in
                               reports.order_exercises(record["exercises"], self.order)}
        graded = [e.qualname for e in result.exercises]
        return merge_results(previous, result.to_gradescope(), graded, record, self.order)

    def _write(self, task: Task, data: dict) -> None:
        """source.zip, junit.xml, then results.json (last: it marks the submission graded); the
        results of an earlier version of the submission are kept as previous-results.json."""
        folder = self.out / task.entry.folder
        folder.mkdir(exist_ok=True)
        old = reports.meta(task.previous or {}).get("submission")
        if task.previous is not None and old != task.sha:
            write_text(folder / PREVIOUS_RESULTS, reports.results_json_text(task.previous))
        if task.stage is not None:
            write_bytes(folder / SOURCE_ZIP, source_zip(task.stage, task.sha))
        else:
            (folder / SOURCE_ZIP).unlink(missing_ok=True)
        reports.write_junit(folder / "junit.xml", data, suite=task.entry.sid)
        reports.write_results_json(folder / "results.json", data)


# -- class reports, from a results folder alone --------------------------------------------------


def load_class(out: Path, students: dict[str, str]) -> dict[str, dict]:
    """``{id: results}`` of ``students`` (id -> folder) with a readable results.json of theirs."""
    table = {}
    for sid, folder in students.items():
        data = reports.load_results(out / folder / "results.json")
        if data is not None and reports.meta(data).get("student") == sid:
            table[sid] = data
    return table


def build_class_reports(out: Path, students: dict[str, str], order: Sequence[str], *,
                        pending: dict[str, str] | None = None,
                        similarity: dict | None = None) -> dict:
    """Write the class reports of ``out`` for ``students`` (id -> folder) from their results
    files alone, so that a merged folder and a single machine's give the same bytes. A student
    without results, or listed in ``pending`` (id -> why), is reported as pending."""
    pending = dict(pending or {})
    table = load_class(out, students)
    for sid in students:
        if sid not in table:
            pending.setdefault(sid, "not graded yet")
    names = reports.order_exercises(reports.exercise_names(table.values()), order)
    return reports.write_class_reports(out, table, names, pending=pending, similarity=similarity)


# -- merging the outputs of several machines ------------------------------------------------------


def _check_shards(dirs: Sequence[Path], manifests: Sequence[dict]) -> None:
    """The folders are the N shards of one class grading, each once, graded alike."""
    n = {m.get("shard", [1, 1])[1] for m in manifests}
    classes = {m.get("class_sha256") for m in manifests}
    if len(n) != 1 or len(classes) != 1:
        raise CnnlabError("these folders are not shards of one grading: they differ in the "
                          "shard count or in the class (the SUBMISSIONS each shard saw)")
    (count,) = n
    seen = sorted(m["shard"][0] for m in manifests)
    if seen != list(range(1, count + 1)):
        missing = sorted(set(range(1, count + 1)) - set(seen))
        doubled = sorted({s for s in seen if seen.count(s) > 1})
        raise CnnlabError(f"shards of {count}: " + "; ".join(
            ([f"missing {', '.join(f'{i}/{count}' for i in missing)}"] if missing else [])
            + ([f"given twice: {', '.join(f'{i}/{count}' for i in doubled)}"] if doubled else [])))
    versions = {m.get("grader") for m in manifests}
    if len(versions) > 1:
        raise CnnlabError("the shards were graded by different grader versions "
                          f"({', '.join(sorted(map(str, versions)))}): grade them with one "
                          "checkout")
    owners: dict[str, Path] = {}
    for folder, m in zip(dirs, manifests, strict=True):
        for sid in m["students"]:
            if sid in owners:
                raise CnnlabError(f"student {sid!r} is in two shards: {owners[sid]} and {folder}")
            owners[sid] = folder


def _check_specs(table: dict[str, dict]) -> None:
    """Every shard graded each exercise against the same spec (hidden-case seed included)."""
    seen: dict[str, tuple[str, str]] = {}
    for sid, data in table.items():
        for name, e in (reports.meta(data).get("exercises") or {}).items():
            spec = e.get("spec") if isinstance(e, dict) else None
            first = seen.setdefault(name, (spec, sid))
            if spec != first[0]:
                raise CnnlabError(
                    f"{name} was graded against different specs for {first[1]!r} and {sid!r}: "
                    "give every machine the same checkout and CNNLAB_HIDDEN_SEED")


def merge(dirs: Sequence[Path], out: Path, *, stream=None) -> dict:
    """Combine the shard folders ``dirs`` into ``out``: every student's folder, one run.json and
    the class reports, the same files a single machine grading the class would have written."""
    stream = stream or sys.stdout
    dirs = [Path(d).resolve() for d in dirs]
    out = Path(out).resolve()
    if out in dirs or any(d in out.parents for d in dirs):
        raise CnnlabError("--out must be a new folder, not one of the shard folders (or inside)")
    manifests = [read_manifest(d) for d in dirs]
    _check_shards(dirs, manifests)
    students: dict[str, str] = {}
    table: dict[str, dict] = {}
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    for folder, m in sorted(zip(dirs, manifests, strict=True), key=lambda p: p[1]["shard"][0]):
        found = load_class(folder, m["students"])
        table.update(found)
        for sid, name in m["students"].items():
            students[sid] = name
            if sid in found:
                _copy_student(folder / name, out / name)
    _check_specs(table)
    first = manifests[0]
    write_text(out / RUN_FILE, json.dumps({
        "version": 1, "shard": [1, 1], "class_size": first["class_size"],
        "class_sha256": first["class_sha256"], "grader": first.get("grader"),
        "students": dict(sorted(students.items()))}, indent=2, ensure_ascii=False) + "\n")
    if len(students) != first["class_size"]:
        print(f"grader: warning: the shards list {len(students)} of the class's "
              f"{first['class_size']} submissions", file=sys.stderr)
    summary = build_class_reports(out, dict(sorted(students.items())), course_order())
    summary["errors"] = {}
    print(reports.format_summary(summary).rstrip(), file=stream)
    print(f"merged {len(dirs)} shard(s), {len(table)} graded submission(s), into {out}",
          file=stream)
    return summary


def _copy_student(src: Path, dest: Path) -> None:
    """Copy one student's results folder, results.json last (it marks the folder complete)."""
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
    for path in sorted(files, key=lambda p: p.name == "results.json"):
        write_bytes(dest / path.name, path.read_bytes())


# -- after grading: similarity and the gradebook ---------------------------------------------------


def finish(out: Path, summary: dict, *, similarity: bool, lms_export: Sequence[str] | None,
           assignment: str, stream) -> None:
    """The optional steps on a graded (or merged) results folder: the similarity report (added to
    the summary files) and the LMS gradebook file."""
    students = read_manifest(out)["students"]
    if similarity:
        found = sim.similarity_report(out, students, stream=stream)
        summary.update(build_class_reports(out, students, course_order(),
                                           pending=summary["remaining"], similarity=found))
        for line in reports.format_summary(summary).splitlines():
            if line.startswith("SIMILAR"):
                print(line, file=stream)
    if lms_export:
        fmt, roster = lms_export
        table = load_class(out, students)
        grades, others = {}, dict(summary["remaining"])
        for sid, results in table.items():
            record = reports.meta(results)
            if sid in others:
                continue
            if record.get("status") == "rejected":
                others[sid] = f"rejected: {record.get('reason', '')}"
            else:
                grades[sid] = round(sum(t["score"] for t in results["tests"]), 6)
        lms.export(fmt, Path(roster), out, grades=grades, others=others,
                   points_possible=summary["max_total"], assignment=assignment, stream=stream)


def grade_class(submissions, out, **kwargs) -> dict:
    """Library entry point of ``grade-class``; returns the class summary."""
    return ClassGrader(Path(submissions), Path(out), **kwargs).run()


# -- CLI ---------------------------------------------------------------------------------------


def _after_grading_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--similarity", action="store_true",
                   help="compare the submissions lab by lab (copydetect, winnowing like MOSS; "
                        "the starter code is ignored): similarity.csv, similarity-<lab>.html, "
                        "and flagged pairs in the summary")
    p.add_argument("--lms", nargs=2, metavar=("FORMAT", "ROSTER"), default=None,
                   help="also write the gradebook import file for FORMAT (canvas, moodle or "
                        "csv) matching the submission ids with ROSTER (the LMS's own export)")
    p.add_argument("--assignment", default="cnnlab", metavar="NAME",
                   help="the gradebook column to fill with --lms (default: cnnlab)")


def register_cli(subparsers) -> None:
    """Add ``grade-class`` and ``merge`` to the grader's CLI (``grader.cli`` calls this)."""
    p = subparsers.add_parser(
        "grade-class", help="grade a whole class in the sandbox (instructor)",
        description="Grade every submission (a folder, .zip or .py named after the student) in "
                    "SUBMISSIONS; write RESULTS/<student>/results.json + junit.xml, "
                    "RESULTS/grades.csv and a summary (summary.txt, summary.json, histogram.png). "
                    "A re-run grades only what changed (the submission, a spec, the grader).")
    p.add_argument("submissions", type=Path, metavar="SUBMISSIONS")
    p.add_argument("--out", type=Path, required=True, metavar="RESULTS")
    p.add_argument("--jobs", type=int, default=2,
                   help="submissions graded at once, one worker process each (default 2)")
    p.add_argument("--force", action="store_true",
                   help="re-grade the selected exercises even where nothing changed")
    p.add_argument("--exercises", default=None, metavar="NAMES",
                   help="comma-separated exercises, modules or lab numbers (default: all); "
                        "other exercises' results are kept")
    p.add_argument("--students", default=None, metavar="IDS",
                   help="comma-separated student ids to re-grade (only those)")
    p.add_argument("--shard", default="1/1", metavar="I/N",
                   help="grade shard I of N: every N-th submission in id order (combine the N "
                        "results folders with `python -m grader merge`)")
    p.add_argument("--module", default=None,
                   help="the lab of single-file submissions (default: guessed from its functions)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds per exercise (default: the runner's, 30)")
    p.add_argument("--memory-gb", type=float, default=4.0,
                   help="address-space limit per worker in GB (default 4; JAX needs >= 2)")
    _after_grading_options(p)
    p.set_defaults(func=_cmd_grade_class)
    m = subparsers.add_parser(
        "merge", help="combine the results folders of grade-class --shard runs (instructor)",
        description="Combine the RESULTS folders of `grade-class --shard I/N` (all N of them) "
                    "into OUT: the same files one machine grading the whole class writes.")
    m.add_argument("dirs", nargs="+", type=Path, metavar="RESULTS_DIR")
    m.add_argument("--out", type=Path, required=True, metavar="OUT")
    _after_grading_options(m)
    m.set_defaults(func=_cmd_merge)


add_subcommands = register_cli


def _split(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def _exit_status(summary: dict, signum: int | None) -> int:
    if signum is not None:
        return 128 + signum
    return 1 if summary.get("errors") or summary.get("remaining") else 0


def _cmd_grade_class(args: argparse.Namespace) -> int:
    try:
        if args.memory_gb < 2:
            raise CnnlabError("--memory-gb must be at least 2 (JAX needs about 1.6 GB of address "
                              "space to import)")
        if args.lms:
            lms.check_format(args.lms[0], Path(args.lms[1]))
        grader = ClassGrader(args.submissions, args.out, jobs=args.jobs, force=args.force,
                             exercises=_split(args.exercises), students=_split(args.students),
                             shard=parse_shard(args.shard), module=args.module,
                             timeout_s=args.timeout,
                             limits=Limits(address_space_bytes=int(args.memory_gb * 2**30)))
        summary = grader.run()
        if grader.signal is None:
            finish(grader.out, summary, similarity=args.similarity, lms_export=args.lms,
                   assignment=args.assignment, stream=grader.stream)
    except CnnlabError as exc:
        print(f"grader: error: {exc}", file=sys.stderr)
        return 2
    return _exit_status(summary, grader.signal)


def _cmd_merge(args: argparse.Namespace) -> int:
    try:
        if args.lms:
            lms.check_format(args.lms[0], Path(args.lms[1]))
        summary = merge(args.dirs, args.out)
        finish(Path(args.out).resolve(), summary, similarity=args.similarity,
               lms_export=args.lms, assignment=args.assignment, stream=sys.stdout)
    except CnnlabError as exc:
        print(f"grader: error: {exc}", file=sys.stderr)
        return 2
    return _exit_status(summary, None)
