"""Grade a submission: run its modules in worker processes, compare with the reference, score.

    result = grade_submission("exercises")                       # what `python -m grader` does
    result = grade_submission(path, exercises=["conv2d"], include_hidden=True, launcher=sandboxed)

Student code runs only in worker processes (:mod:`grader.worker`), each grading one or more lab
modules in turn (JAX starts once per worker, not per module or exercise), started through a
*launcher*::

    launcher(argv: list[str], *, cwd: str, timeout_s: float) -> LaunchResult

The default, :func:`subprocess_launcher`, is a plain subprocess with a wall-clock timeout and
capped captured output; :mod:`grader.sandbox` supplies a confined one. A worker that hangs or dies
costs only the exercise it was running (the first one without results), or the module it was
importing (as ``out/progress.json`` says): the runner starts a new worker for the rest.

The reference outcomes come from a *reference store*: :class:`ReferenceStore` runs the solutions
(trusted, in a plain subprocess, cached on disk by content hash), :class:`SavedStore` reads the
inputs and expected outputs that :func:`export_expected` wrote (the student release ships
``grader/expected/<module>.{json,npz}`` for public cases only and no solutions).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from grader import names as names_of
from grader import specs as spec_registry
from grader.codec import CodecError, decode, encode, load_arrays, read_json, save_arrays, write_json
from grader.commands import cache_dir
from grader.capture import printed_of
from grader.checks import OWN_PROCESS, Context, decidable, judge
from grader.delegation import delegations, library_calls
from grader.diagnose import case_hint, describe_error, error_kind
from grader.notebook import with_notebooks
from grader.results import CaseResult, ExerciseResult, SubmissionResult
from grader.sandbox import LaunchResult
from grader.spec import Case, Exercise
from grader.verify import verify_programs
from grader.worker import fast_compile_flags

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS_DIR = ROOT / "solutions"
EXPECTED_DIR = Path(__file__).resolve().parent / "expected"
OUTPUT_CAP = 64 * 1024           # bytes of stdout/stderr kept per worker (the tail)
MAX_SOURCE_BYTES = 2 * 2**20     # per submitted .py file
MAX_OUTPUT_BYTES = 64 * 2**20    # outputs of one exercise
DEFAULT_EXERCISE_TIMEOUT_S = 30.0


class GraderError(Exception):
    """Grading could not run (missing folder, unknown exercise, stale expected outputs)."""


# --- launching ------------------------------------------------------------------------------------

Launcher = Callable[..., LaunchResult]


def worker_env() -> dict[str, str]:
    """Environment for worker processes: CPU JAX, the persistent compilation cache, quiet."""
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("CNNLAB_JAX_CACHE_DIR", str(cache_dir() / "jax"))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _tail_reader(stream, cap: int, sink: list) -> None:
    """Keep only the last ``cap`` bytes of a stream (a student may print gigabytes)."""
    buf = collections.deque()
    size = 0
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        buf.append(chunk)
        size += len(chunk)
        while size - len(buf[0]) >= cap and len(buf) > 1:
            size -= len(buf.popleft())
    data = b"".join(buf)[-cap:]
    sink.append(data.decode("utf-8", "replace"))


def subprocess_launcher(argv: list[str], *, cwd: str, timeout_s: float,
                        env: dict[str, str] | None = None) -> LaunchResult:
    """Run ``argv`` in its own session; kill the whole group after ``timeout_s`` seconds.
    ``env`` is set on top of :func:`worker_env`."""
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**worker_env(), **(env or {})},
                            start_new_session=True)
    out, err = [], []
    threads = [threading.Thread(target=_tail_reader, args=(proc.stdout, OUTPUT_CAP, out)),
               threading.Thread(target=_tail_reader, args=(proc.stderr, OUTPUT_CAP, err))]
    for t in threads:
        t.daemon = True
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # also any children it left behind
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    for t in threads:
        t.join(timeout=5)
    return LaunchResult(returncode=proc.returncode, stdout=out[0] if out else "",
                        stderr=err[0] if err else "", timed_out=timed_out,
                        reason=f"timed out after {timeout_s:g} s" if timed_out else None)


# --- plans: the calls of one module and their inputs -------------------------------------------------

def call_id(ex: Exercise, case: Case) -> str:
    return f"{ex.name}/{case.name}"


@dataclasses.dataclass
class ModulePlan:
    """Everything needed to run one module: per exercise the (case, call) pairs, the input
    arrays, and the reference outcome of every call (decoded: {"ok", "out"|"error", "info"})."""

    module: str
    exercises: list[Exercise]
    calls: dict[str, dict]                       # call id -> call dict for the request
    arrays: dict[str, np.ndarray]                # input arrays
    expected: dict[str, dict]                    # call id -> decoded reference outcome

    def inputs_of(self, cid: str):
        c = self.calls[cid]
        return decode(c["args"], self.arrays), decode(c["kwargs"], self.arrays)


def build_calls(exercises: Sequence[Exercise]) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Encode every case's inputs (numpy, deterministic) into call dicts plus one array dict."""
    calls: dict[str, dict] = {}
    arrays: dict[str, np.ndarray] = {}
    for j, ex in enumerate(exercises):
        for i, case in enumerate(ex.cases):
            cid = call_id(ex, case)
            if cid in calls:
                raise ValueError(f"duplicate case name {cid!r}")
            prefix = f"x{j}_{i}_"
            calls[cid] = {"id": cid, "fn": case.fn or ex.name, "mode": case.mode,
                          "options": case.options,
                          "args": encode(list(case.args), arrays, prefix=prefix),
                          "kwargs": encode(dict(case.kwargs), arrays, prefix=prefix)}
    return calls, arrays


@dataclasses.dataclass
class ModuleJob:
    """One lab module to run in a worker: its file, the exercises to run and their inputs."""

    module: str
    module_file: Path
    exercises: Sequence[Exercise]
    calls: dict[str, dict]
    arrays: dict[str, np.ndarray]

    @property
    def n_cases(self) -> int:
        return sum(len(ex.cases) for ex in self.exercises)

    def request(self, skip: Sequence[str] = ()) -> dict:
        """This module's entry of a worker request (see :mod:`grader.worker`)."""
        return {"module": self.module, "module_file": f"submission/{self.module}.py",
                "inputs": f"inputs/{self.module}.npz", "skip": list(skip),
                "exercises": [{"name": ex.name,
                               "calls": [self.calls[call_id(ex, c)] for c in ex.cases]}
                              for ex in self.exercises]}


def _copy_submission(jobs: Sequence[ModuleJob], dest: Path) -> None:
    """The modules to run, under their lab names, and the top-level .py files beside them (a
    submission may import its own helpers); each file bounded in size."""
    dest.mkdir(parents=True, exist_ok=True)
    folders = dict.fromkeys(job.module_file.parent for job in jobs)
    siblings = [p for folder in folders for p in sorted(folder.glob("*.py"))[:50]]
    for src, name in [(p, p.name) for p in siblings] + \
            [(job.module_file, f"{job.module}.py") for job in jobs]:
        try:
            if src.is_file() and src.stat().st_size <= MAX_SOURCE_BYTES:
                shutil.copyfile(src, dest / name)
        except OSError:
            continue


def _collect(job: ModuleJob, names: Sequence[str], out: Path) -> dict[str, dict]:
    """What the worker wrote for ``names`` of ``job`` in ``out`` (missing ones are left out)."""
    if (out / "import_error.json").exists():
        err = _safe_json(out / "import_error.json") or {"kind": "ImportError"}
        reason = f"{job.module}.py could not be imported: {describe_error(err)}"
        return {n: {"failure": reason, "status": "error", "printed_on_import": printed_of(err)}
                for n in names}
    on_import = printed_of(_safe_json(out / "import.json"))  # None when nothing was printed
    results: dict[str, dict] = {}
    for n in names:
        f = out / f"{n}.json"
        if not f.exists():
            continue
        rec = _safe_json(f)
        try:
            arrs = load_arrays(out / f"{n}.npz", max_bytes=MAX_OUTPUT_BYTES)
        except CodecError as e:
            results[n] = {"failure": f"unreadable outputs: {e}", "status": "error"}
            continue
        if rec is not None and isinstance(rec.get("outcomes"), dict):
            results[n] = {"outcomes": rec["outcomes"], "arrays": arrs,
                          "printed_on_import": on_import}
        else:
            results[n] = {"failure": "the worker wrote malformed results", "status": "error"}
    return results


def run_modules(jobs: Sequence[ModuleJob], *, launcher: Launcher | None = None,
                timeout_s: float = DEFAULT_EXERCISE_TIMEOUT_S,
                keep_dir: bool = False) -> dict[str, dict[str, dict]]:
    """Run the modules of ``jobs`` one after the other in one worker process.

    One process for several modules because starting one costs more than most exercises (Python,
    JAX, Flax and optax imports: ~1.5 CPU-s). Returns ``{module: {exercise: result}}`` where a
    result is ``{"outcomes": {call id: raw outcome}, "arrays": {...}}`` or ``{"failure": reason,
    "status": ...}`` for an exercise that could not run. A module that fails to import costs its
    own exercises only; a worker that dies or hangs costs the exercise it was running (the first
    one without results), or the whole module when it died importing it (as the worker's
    ``out/progress.json`` says), and a new worker runs the rest.
    """
    launcher = launcher or subprocess_launcher
    by_module = {job.module: job for job in jobs}
    results: dict[str, dict[str, dict]] = {job.module: {} for job in jobs}
    remaining = {job.module: [ex.name for ex in job.exercises] for job in jobs}

    def fail(module: str, names: Sequence[str], reason: str, status: str) -> None:
        for n in names:
            results[module][n] = {"failure": reason, "status": status}
        remaining[module] = [n for n in remaining[module] if n not in names]

    while any(remaining.values()):
        live = [by_module[m] for m, names in remaining.items() if names]
        req_dir = Path(tempfile.mkdtemp(prefix="cnnlab-worker-"))
        try:
            _copy_submission(live, req_dir / "submission")
            (req_dir / "inputs").mkdir()
            for job in live:
                save_arrays(req_dir / "inputs" / f"{job.module}.npz", job.arrays)
            request = {"version": 2, "exercise_timeout_s": timeout_s, "modules": [
                job.request(skip=[ex.name for ex in job.exercises
                                  if ex.name not in remaining[job.module]]) for job in live]}
            write_json(req_dir / "request.json", request)
            (req_dir / "out").mkdir()
            os.chmod(req_dir, 0o755)
            budget = 30.0 + timeout_s * sum(len(remaining[job.module]) for job in live)
            lr = launcher([sys.executable, "-m", "grader.worker", str(req_dir)],
                          cwd=str(req_dir), timeout_s=budget)
            for job in live:
                done = _collect(job, remaining[job.module], req_dir / "out" / job.module)
                results[job.module].update(done)
                remaining[job.module] = [n for n in remaining[job.module] if n not in done]
            if not any(remaining.values()):
                break
            # The worker runs modules and exercises in request order and writes each exercise's
            # results when it ends, so it died in the first one without results: in its code, or
            # importing its module when the progress file says so. (Student code can rewrite that
            # file, which is why it only tells the stage.)
            progress_file = req_dir / "out" / "progress.json"
            progress = _safe_json(progress_file) or {}
            why = _death_reason(lr)
            status = "timeout" if lr.timed_out else "error"
            first = next(m for m, names in remaining.items() if names)
            if not progress_file.exists():  # died before its first module: nothing can run
                for m in list(remaining):
                    fail(m, remaining[m], f"{m}.py could not be run: {why}", status)
            elif progress.get("module") == first and progress.get("stage") == "import":
                fail(first, remaining[first], f"{first}.py could not be run: {why}", status)
            else:
                culprit = remaining[first][0]
                fail(first, [culprit], f"the worker {why} while running {culprit}", status)
        finally:
            if not keep_dir:
                shutil.rmtree(req_dir, ignore_errors=True)
    return results


def _death_reason(lr: LaunchResult) -> str:
    if lr.timed_out:
        return lr.reason or "timed out"
    if lr.reason:
        return lr.reason
    if lr.returncode < 0:
        try:
            name = signal.Signals(-lr.returncode).name
        except ValueError:
            name = str(-lr.returncode)
        return f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    tail = [ln for ln in lr.stderr.strip().splitlines() if ln.strip()][-1:] if lr.stderr else []
    return f"exited with status {lr.returncode}" + (f" ({tail[0][:200]})" if tail else "")


def _safe_json(path: Path):
    try:
        obj = read_json(path)
    except (OSError, CodecError):
        return None
    return obj if isinstance(obj, dict) else None


def decode_outcome(raw, arrays: dict[str, np.ndarray]) -> dict:
    """An outcome from a worker, validated: {"ok": True, "out", "info"} or {"ok": False, "error"}."""
    if not isinstance(raw, dict):
        return {"ok": False, "error": {"kind": "BadReturn", "message": "malformed outcome"}}
    if raw.get("ok") is True:
        try:
            out = decode(raw.get("out"), arrays)
        except (CodecError, KeyError, TypeError, ValueError, RecursionError) as e:
            return {"ok": False, "error": {"kind": "BadReturn",
                                           "message": f"unreadable output ({type(e).__name__})"}}
        info = raw.get("info") if isinstance(raw.get("info"), dict) else {}
        return {"ok": True, "out": out, "info": info}
    err = raw.get("error") if isinstance(raw.get("error"), dict) else {}
    err = {"kind": str(err.get("kind", "Error"))[:100], "message": str(err.get("message", ""))[:3000],
           "where": err.get("where") if isinstance(err.get("where"), dict) else None}
    return {"ok": False, "error": err}


# --- reference stores --------------------------------------------------------------------------------

def package_versions() -> str:
    """``"jax=0.10.2,jaxlib=...,numpy=..."``: the packages whose versions change the outputs
    (a cached reference, a class's grading run are keyed by them)."""
    out = []
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            out.append(f"{pkg}={importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{pkg}=?")
    return ",".join(out)


def _digest(request: dict, arrays: dict[str, np.ndarray], source: bytes) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(request, sort_keys=True).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    h.update(source)
    h.update(package_versions().encode())
    for code in WORKER_CODE:  # how the reference's outcomes are computed and written
        h.update(Path(__file__).with_name(code).read_bytes())
    h.update(fast_compile_flags().encode())  # the reference's compiler flags
    return h.hexdigest()[:24]


WORKER_CODE = ("worker.py", "drivers.py", "codec.py", "capture.py")


def _reference_failure(module: str, exercises: Sequence[Exercise], raw: dict) -> str | None:
    """Why reference outcomes ``raw`` (by call id) cannot grade ``exercises``, or None: a case
    missing, or one that raised where the case compares a returned value (only a ``"match"``
    case may expect an exception)."""
    for ex in exercises:
        for case in ex.cases:
            outcome = raw.get(call_id(ex, case))
            if not isinstance(outcome, dict):
                return f"no reference outcome for {module}.{ex.name}, case {case.name!r}"
            if case.check != "match" and outcome.get("ok") is not True:
                err = outcome.get("error") if isinstance(outcome.get("error"), dict) else {}
                return (f"the reference failed on {module}.{ex.name}, case {case.name!r}: "
                        f"{err.get('kind', 'Error')}: {str(err.get('message', ''))[:300]}")
    return None


def compiled_cache_dir() -> Path:
    """The reference's compiled programs (a JAX compilation cache), which a sandboxed worker may
    open by exact name (``Limits.compiled_cache``): ``$CNNLAB_CACHE_DIR/jax-compiled``."""
    return cache_dir() / "jax-compiled"


STAGING_PREFIX = ".jax-compiled-"  # the reference worker's private folders in cache_dir()
STALE_STAGING_S = 3600.0  # a reference run times out after 120 s: no live run's folder is this old


def sweep_stale_staging(parent: Path, *, older_than_s: float = STALE_STAGING_S) -> None:
    """Remove the staging folders of reference runs that were killed before they could clean up
    (untouched for ``older_than_s``); those of runs still going (another grader's) are left."""
    now = time.time()
    for d in parent.glob(f"{STAGING_PREFIX}*"):
        try:
            if d.is_dir() and not d.is_symlink() and now - d.lstat().st_mtime > older_than_s:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass  # gone meanwhile, or not ours to stat: nothing to clean


def publish_compiled(staging: Path, dest: Path) -> None:
    """Move the cache entries the reference's worker wrote into ``staging`` into ``dest``, each
    file made world-readable and renamed in whole (a sandboxed worker never reads half an entry);
    ``dest`` is made mode 0711: others may open an entry by its name but not list them."""
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o711)
    for entry in staging.iterdir():
        if entry.is_file() and not entry.is_symlink():
            os.chmod(entry, 0o644)
            os.replace(entry, dest / entry.name)


class ReferenceStore:
    """Reference outcomes computed by running ``solutions/<module>.py`` through the worker.

    The whole module (all exercises, public and hidden cases) runs once; the outcomes are cached
    in ``$CNNLAB_CACHE_DIR/expected`` (default ``~/.cache/cnnlab``) under a hash of the request,
    the inputs, the solution source, the library versions and the drivers. The programs the
    reference's worker compiles go to :func:`compiled_cache_dir` (when caching), where the
    sandboxed workers of the submissions find those a correct submission compiles the same way;
    outcomes read from the cache whose programs are not there yet are computed again, once.
    """

    def __init__(self, solutions_dir: Path | str = SOLUTIONS_DIR, *, use_cache: bool = True):
        self.solutions_dir = Path(solutions_dir)
        self.use_cache = use_cache
        self._lock = threading.Lock()
        self._module_locks: dict[str, threading.Lock] = {}
        self._plans: dict[str, ModulePlan] = {}

    def plan(self, module: str, *, include_hidden: bool) -> ModulePlan:
        with self._lock:  # one lock per module: modules are computed in parallel, each once
            lock = self._module_locks.setdefault(module, threading.Lock())
        with lock:
            if module not in self._plans:
                self._plans[module] = self._compute(module)
        full = self._plans[module]
        if include_hidden:
            return full
        exercises = spec_registry.load(module, include_hidden=False)
        return dataclasses.replace(full, exercises=exercises)

    def _compute(self, module: str) -> ModulePlan:
        exercises = spec_registry.load(module, include_hidden=True)
        calls, arrays = build_calls(exercises)
        source_file = self.solutions_dir / f"{module}.py"
        if not source_file.exists():
            raise GraderError(f"reference {source_file} not found")
        job = ModuleJob(module, source_file, exercises, calls, arrays)
        digest = _digest(job.request(), arrays, source_file.read_bytes())
        cdir = cache_dir() / "expected"
        cjson, cnpz = cdir / f"{module}-{digest}.json", cdir / f"{module}-{digest}.npz"
        compiled = compiled_cache_dir()
        filled = compiled / f"filled-{module}-{digest}"  # this request's programs are there
        raw, out_arrays = None, {}
        if self.use_cache and cjson.exists() and cnpz.exists() and filled.exists():
            raw = _safe_json(cjson)
            try:
                out_arrays = load_arrays(cnpz)
            except CodecError:
                raw = None
            if raw is not None and _reference_failure(module, exercises, raw):
                raw = None  # written by another version of the grader, or damaged: computed anew
        if raw is None:
            launcher, staging = subprocess_launcher, None
            if self.use_cache:  # a fresh folder: the reference's compiled programs only
                cache_dir().mkdir(parents=True, exist_ok=True)
                sweep_stale_staging(cache_dir())
                staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=cache_dir()))
                launcher = functools.partial(subprocess_launcher, env={
                    "CNNLAB_JAX_CACHE_DIR": str(staging), "CNNLAB_JAX_CACHE_READONLY": "0"})
            try:
                res = run_modules([job], launcher=launcher, timeout_s=120.0)[module]
                if staging is not None:
                    publish_compiled(staging, compiled)
            finally:
                if staging is not None:
                    shutil.rmtree(staging, ignore_errors=True)
            raw, out_arrays = {}, {}
            for name, r in res.items():
                if "failure" in r:
                    raise GraderError(f"the reference failed on {module}.{name}: {r['failure']}")
                for cid, outcome in r["outcomes"].items():
                    skel = _rename(outcome.get("out"), r["arrays"], out_arrays)
                    raw[cid] = {**outcome, "out": skel} if outcome.get("ok") else outcome
            failure = _reference_failure(module, exercises, raw)
            if failure:
                raise GraderError(failure)
            if self.use_cache:
                cdir.mkdir(parents=True, exist_ok=True)
                save_arrays(cnpz, out_arrays)
                write_json(cjson, raw)
                filled.touch()
                os.chmod(filled, 0o644)
        expected = {cid: decode_outcome(o, out_arrays) for cid, o in raw.items()}
        return ModulePlan(module, exercises, calls, arrays, expected)


def _rename(skel, src: dict, dest: dict):
    """Copy the arrays a skeleton refers to into ``dest`` under fresh names (the worker numbers
    arrays per exercise; the cache holds a whole module in one file)."""
    if not isinstance(skel, dict):
        return skel
    if skel.get("t") == "array":
        name = f"o{len(dest)}"
        dest[name] = src[skel["k"]]
        return {"t": "array", "k": name}
    if skel.get("t") == "dict":
        return {"t": "dict", "items": [[k, _rename(v, src, dest)] for k, v in skel["items"]]}
    if skel.get("t") in ("list", "tuple"):
        return {"t": skel["t"], "items": [_rename(v, src, dest) for v in skel["items"]]}
    return skel


class SavedStore:
    """Inputs and reference outcomes read from ``<dir>/<module>.json`` + ``<module>.npz``.

    Only the cases found there are graded (a release holds public cases only); a spec case that
    is missing means the files are older than the specs: a :class:`GraderError`.
    """

    def __init__(self, expected_dir: Path | str = EXPECTED_DIR):
        self.expected_dir = Path(expected_dir)

    def plan(self, module: str, *, include_hidden: bool) -> ModulePlan:
        jf, nf = self.expected_dir / f"{module}.json", self.expected_dir / f"{module}.npz"
        if not jf.exists():
            raise GraderError(f"expected outputs {jf} not found")
        saved = read_json(jf)
        arrays = load_arrays(nf, max_bytes=2**31)
        exercises = spec_registry.load(module, include_hidden=include_hidden)
        calls, expected, kept = {}, {}, []
        for ex in exercises:
            cases = []
            for case in ex.cases:
                cid = call_id(ex, case)
                entry = saved["calls"].get(cid)
                if entry is None:
                    if case.hidden:
                        continue
                    raise GraderError(f"no expected output for {module}.{cid} in {jf}: the saved "
                                      f"expected outputs are older than the specs")
                calls[cid] = {**entry["call"], "mode": case.mode, "options": case.options,
                              "fn": case.fn or ex.name}
                expected[cid] = decode_outcome(entry["expected"], arrays)
                cases.append(case)
            kept.append(dataclasses.replace(ex, cases=tuple(cases)))
        return ModulePlan(module, kept, calls, arrays, expected)


def export_expected(dest_dir: Path | str, *, solutions_dir: Path | str = SOLUTIONS_DIR,
                    modules: Sequence[str] | None = None, include_hidden: bool = False) -> list[Path]:
    """Write the inputs and reference outputs of the public cases (hidden ones too only if asked)
    to ``dest_dir/<module>.json`` + ``.npz`` for :class:`SavedStore`. Returns the files written."""
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    store = ReferenceStore(solutions_dir)
    written = []
    for module in modules or spec_registry.MODULES:
        plan = store.plan(module, include_hidden=True)
        arrays: dict[str, np.ndarray] = {}
        entries = {}
        for ex in plan.exercises:
            for case in ex.cases:
                if case.hidden and not include_hidden:
                    continue
                cid = call_id(ex, case)
                args, kwargs = plan.inputs_of(cid)
                call = dict(plan.calls[cid])
                call["args"] = encode(list(args), arrays, prefix="i")
                call["kwargs"] = encode(dict(kwargs), arrays, prefix="i")
                exp = plan.expected[cid]
                if exp["ok"]:
                    kept = exp["out"]
                    if case.mode == "jaxpr":  # the reference's compiled program stays home
                        kept = {"value": kept["value"]}
                    exp_raw = {"ok": True, "out": encode(kept, arrays, prefix="o"), "info": {}}
                else:
                    exp_raw = {"ok": False, "error": {"kind": exp["error"]["kind"],
                                                      "message": "", "where": None}}
                entries[cid] = {"call": call, "expected": exp_raw}
        save_arrays(dest / f"{module}.npz", arrays)
        write_json(dest / f"{module}.json", {"version": 1, "module": module, "calls": entries})
        written += [dest / f"{module}.json", dest / f"{module}.npz"]
    return written


def open_reference(reference: str | Path | None = None):
    """A reference store: ``solutions/`` when present (instructor), else ``grader/expected``."""
    if reference is None:
        if (SOLUTIONS_DIR / "neurons.py").exists():
            return ReferenceStore(SOLUTIONS_DIR)
        if EXPECTED_DIR.exists():
            return SavedStore(EXPECTED_DIR)
        raise GraderError("no reference found: neither solutions/ nor grader/expected/ exists")
    if isinstance(reference, ReferenceStore | SavedStore):
        return reference
    p = Path(reference)
    if any(p.glob("*.py")):
        return ReferenceStore(p)
    if any(p.glob("*.json")):
        return SavedStore(p)
    raise GraderError(f"{p} holds neither solution modules nor expected outputs")


# --- selection ---------------------------------------------------------------------------------------

def select_exercises(names: Sequence[str] | None) -> list[Exercise]:
    """Exercises named by function (``conv2d``), ``module.function``, module or lab number, in
    any case (:mod:`grader.names`); a :class:`GraderError` saying what is valid otherwise."""
    try:
        return names_of.select_exercises(names, spec_registry.load_all(), spec_registry.MODULES)
    except names_of.UnknownName as e:
        raise GraderError(str(e)) from None


# --- grading ------------------------------------------------------------------------------------------

def _check_case(ex: Exercise, case: Case, cid: str, plan: ModulePlan, raw, arrays,
                verified: dict | None = None) -> CaseResult:
    """Compare one student outcome with the reference outcome; a student-facing message.
    ``verified``: what the grader's verifier found in the program of a "from scratch" case."""
    res = CaseResult(case.name, passed=False, weight=case.weight, hidden=case.hidden,
                     printed=printed_of(raw))
    if case.check == "check_grads" or (case.check == "no_primitives" and not decidable(case)):
        res.weight = 0.0  # only the student's own process can tell: feedback, no points
    actual = decode_outcome(raw, arrays) if raw is not None else \
        {"ok": False, "error": {"kind": "Error", "message": "no result"}}
    expected = plan.expected.get(cid)
    if expected is None:
        res.message = "no reference outcome (grader error)"
        return res
    if not actual["ok"]:
        err = actual["error"]
        res.not_attempted = err.get("kind") == "NotImplementedError"
        if not expected["ok"] and case.check == "match" and \
                err.get("kind") == expected["error"].get("kind"):
            res.passed = True
            return res
        res.message = describe_error(err)
        res.kind = error_kind(err)
        if not expected["ok"] and case.check == "match" and not res.not_attempted:
            res.kind = "raises"
            res.message = f"expected {expected['error'].get('kind')}, but it raised {res.message}"
        res.hint = case_hint(case, res.kind, reference_raises=not expected["ok"],
                             exception=err.get("kind"))
        return res
    out, info = actual["out"], actual["info"]
    found = judge(case, expected, out, info, Context(lambda: plan.inputs_of(cid), verified))
    if found:
        res.message = found.text + "." * (not found.text.endswith("."))
        res.kind = found.kind
        res.hint = case_hint(case, res.kind, reference_raises=not expected["ok"])
    else:
        res.passed = True
    return res


def _compiled_once(case: Case, raw) -> CaseResult | None:
    """The "compiled once" note of a ``traced_once`` case: how often the step's Python code ran,
    as the student's process counted it -- feedback worth no points (weight 0)."""
    info = raw.get("info") if isinstance(raw, dict) and raw.get("ok") is True else None
    if not isinstance(info, dict):
        return None
    n, calls = info.get("traces"), info.get("calls")
    note = CaseResult(f"{case.name}: compiled once", passed=n == 1, weight=0.0, hidden=case.hidden)
    if n != 1:
        note.message = (f"the step's Python code ran {n} times in {calls} calls: it is not compiled "
                        f"once (decorate it with @jax.jit, at module level) ({OWN_PROCESS})")
    return note


def _zero_if_not_from_scratch(ex: Exercise, cases: list[CaseResult]) -> str | None:
    """A failed, decidable "from scratch" case makes the whole exercise score 0 (its rule): the
    reason, with every case marked failed; None when the rule holds."""
    rule = {c.name for c in ex.cases if c.check == "no_primitives" and decidable(c)}
    broken = next((c for c in cases if c.name in rule and not c.passed and not c.not_attempted),
                  None)
    if broken is None:
        return None
    for c in cases:
        if c.passed:
            c.passed, c.message = False, "not counted: the from-scratch rule does not hold"
    return f"scores 0 until its from-scratch rule holds — {broken.name}: {broken.message}"


def score_module(plan: ModulePlan, exercises: Sequence[Exercise],
                 runs: dict[str, dict] | None,
                 verified: dict[str, dict] | None = None) -> list[ExerciseResult]:
    """Results of ``exercises`` of ``plan.module`` from the worker's ``runs`` (``None``: the
    submission has no such module file) and the verifier's findings by call id."""
    verified = verified or {}
    lab = spec_registry.LAB_TITLES.get(plan.module, plan.module)
    by_name = {e.name: e for e in plan.exercises}
    todo = [by_name[e.name] for e in exercises]
    if runs is None:
        out = []
        for ex in todo:
            cases = [CaseResult(c.name, False, c.weight, c.hidden) for c in ex.cases]
            out.append(ExerciseResult(plan.module, ex.name, lab, _points(ex, cases), cases,
                                      status="missing", reason=f"{plan.module}.py not found",
                                      hint=ex.hint))
        return out
    results = []
    for ex in todo:
        r = runs.get(ex.name, {"failure": "not run", "status": "error"})
        if "failure" in r:
            cases = [CaseResult(c.name, False, c.weight, c.hidden, message=r["failure"],
                                kind=r.get("kind")) for c in ex.cases]
            results.append(ExerciseResult(plan.module, ex.name, lab, _points(ex, cases), cases,
                                          status=r.get("status", "error"), reason=r["failure"],
                                          hint=ex.hint,
                                          printed_on_import=r.get("printed_on_import")))
            continue
        cases = []
        for c in ex.cases:
            raw = r["outcomes"].get(call_id(ex, c))
            cases.append(_check_case(ex, c, call_id(ex, c), plan, raw, r["arrays"],
                                     verified.get(call_id(ex, c))))
            if c.check == "traced_once":
                cases += [n for n in [_compiled_once(c, raw)] if n is not None]
        reason = _zero_if_not_from_scratch(ex, cases)
        on_import = r.get("printed_on_import")
        if reason:
            results.append(ExerciseResult(plan.module, ex.name, lab, _points(ex, cases), cases,
                                          status="failed", reason=reason, hint=ex.hint,
                                          printed_on_import=on_import))
            continue
        if all(c.passed for c in cases):
            status = "passed"
        elif all(c.not_attempted for c in cases if not c.passed) and \
                not any(c.passed for c in cases):
            status = "not attempted"
        else:
            status = "failed"
        results.append(ExerciseResult(plan.module, ex.name, lab, _points(ex, cases), cases,
                                      status=status, hint=ex.hint, printed_on_import=on_import))
    return results


def _points(ex: Exercise, cases: list[CaseResult]) -> float:
    """The exercise's points, hidden part included. Its public cases are worth ``ex.points``
    (a whole number: a visible Gradescope test reveals nothing withheld); graded hidden cases
    are worth as much again, shared by weight (their weights are rescaled here)."""
    public = sum(c.weight for c in cases if not c.hidden)
    hidden = sum(c.weight for c in cases if c.hidden)
    if hidden <= 0 or public <= 0:
        return ex.points
    for c in cases:
        if c.hidden:
            c.weight *= public / hidden
    return 2 * ex.points


MAX_PROGRAM_BYTES = 16 * 2**20


def verify_from_scratch(plans: dict[str, ModulePlan], runs: dict[str, dict[str, dict]],
                        launcher: Launcher) -> dict[str, dict[str, dict]]:
    """Have the verifier run the program of every decidable "from scratch" case the worker
    answered (one launch for the whole submission); ``{module: {call id: finding}}``."""
    items, arrays, where = [], {}, {}
    for module, module_runs in runs.items():
        plan = plans[module]
        for ex in plan.exercises:
            r = module_runs.get(ex.name, {})
            for case in ex.cases:
                cid = call_id(ex, case)
                if case.check != "no_primitives" or "outcomes" not in r or not decidable(case):
                    continue
                actual = decode_outcome(r["outcomes"].get(cid), r["arrays"])
                program = actual["out"].get("program") if actual["ok"] and \
                    isinstance(actual["out"], dict) else None
                if not isinstance(program, np.ndarray) or program.dtype != np.uint8 or \
                        program.ndim != 1 or program.nbytes > MAX_PROGRAM_BYTES:
                    continue
                key = f"p{len(items)}"
                arrays[key] = program
                args, _ = plan.inputs_of(cid)
                items.append({"id": key, "program": key, "options": case.options,
                              "args": encode(list(args), arrays, prefix=f"{key}_")})
                where[key] = (module, cid)
    found = verify_programs(items, arrays, launcher)
    out: dict[str, dict[str, dict]] = {}
    for key, (module, cid) in where.items():
        out.setdefault(module, {})[cid] = found[key]
    return out


def split_balanced(jobs: Sequence[ModuleJob], n: int) -> list[list[ModuleJob]]:
    """``jobs`` in at most ``n`` groups of about equal case counts, course order within each."""
    groups: list[list[ModuleJob]] = [[] for _ in range(max(1, min(n, len(jobs))))]
    load = [0] * len(groups)
    for job in sorted(jobs, key=lambda j: -j.n_cases):  # largest first, to the lightest group
        i = load.index(min(load))
        groups[i].append(job)
        load[i] += job.n_cases
    order = {job.module: k for k, job in enumerate(jobs)}
    return [sorted(g, key=lambda j: order[j.module]) for g in groups if g]


def grade_submission(submission_dir: str | Path, *, exercises: Sequence[str] | None = None,
                     include_hidden: bool = False, launcher: Launcher | None = None,
                     reference=None, jobs: int | None = None,
                     timeout_s: float = DEFAULT_EXERCISE_TIMEOUT_S) -> SubmissionResult:
    """Grade the modules in ``submission_dir`` (``<module>.py`` per lab), with the code written in
    the labs' notebooks (``notebooks/NN_<lab>.ipynb``) merged in (:mod:`grader.notebook`).

    See :func:`_grade_folder` for the arguments.
    """
    sub = Path(submission_dir)
    if not sub.is_dir():
        raise GraderError(f"submission folder {sub} not found")
    modules = [m for m in spec_registry.MODULES
               if any(e.module == m for e in select_exercises(exercises))]
    with with_notebooks(sub, modules) as (folder, notes):
        result = _grade_folder(folder, exercises=exercises, include_hidden=include_hidden,
                               launcher=launcher, reference=reference, jobs=jobs,
                               timeout_s=timeout_s)
    result.submission = str(sub)
    result.warnings = notes + result.warnings
    return result


def _grade_folder(submission_dir: str | Path, *, exercises: Sequence[str] | None = None,
                  include_hidden: bool = False, launcher: Launcher | None = None,
                  reference=None, jobs: int | None = None,
                  timeout_s: float = DEFAULT_EXERCISE_TIMEOUT_S) -> SubmissionResult:
    """Grade the modules in ``submission_dir`` (``<module>.py`` per lab).

    ``exercises``: names to grade (function, ``module.function``, module, or lab number); all by
    default. ``include_hidden``: also grade hidden cases (instructor). ``launcher``: how to start
    the worker (default :func:`subprocess_launcher`). ``reference``: a solutions folder, an
    expected-outputs folder or a store (default: ``solutions/`` if present, else
    ``grader/expected/``). ``jobs``: worker processes run at once, each grading a share of the
    modules (default 2; class grading uses 1 per submission). ``timeout_s``: per exercise.
    Raises :class:`GraderError` only when grading cannot run.
    """
    t0 = time.perf_counter()
    sub = Path(submission_dir)
    if not sub.is_dir():
        raise GraderError(f"submission folder {sub} not found")
    chosen = select_exercises(exercises)
    store = open_reference(reference)
    modules = [m for m in spec_registry.MODULES if any(e.module == m for e in chosen)]
    jobs = jobs or min(2, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        plans = dict(zip(modules, pool.map(
            lambda m: store.plan(m, include_hidden=include_hidden), modules)))
        mine = {m: [e for e in chosen if e.module == m] for m in modules}
        present = [m for m in modules if (sub / f"{m}.py").is_file()]
        # exercises that call the course's code or answers: 0 with the reason, never run
        barred = {m: delegations(sub, m, [e.name for e in mine[m]]) for m in present}
        # and "from scratch" exercises that call the library routine they teach: 0, never run
        scratch = {m: library_calls(sub, m, {e.name: e.not_allowed for e in mine[m]})
                   for m in present}
        runs: dict[str, dict[str, dict]] = {
            m: {**{name: {"failure": why, "status": "failed", "kind": "from_scratch"}
                   for name, why in scratch[m].items()},
                **{name: {"failure": why, "status": "failed"} for name, why in barred[m].items()}}
            for m in present}
        barred = {m: {**scratch[m], **barred[m]} for m in present}
        work = [ModuleJob(m, sub / f"{m}.py",
                          [e for e in plans[m].exercises
                           if e.name in {x.name for x in mine[m]} and e.name not in barred[m]],
                          plans[m].calls, plans[m].arrays) for m in present]
        work = [job for job in work if job.exercises]
        for group_runs in pool.map(lambda group: run_modules(group, launcher=launcher,
                                                             timeout_s=timeout_s),
                                   split_balanced(work, jobs)):
            for m, module_runs in group_runs.items():
                runs[m].update(module_runs)
    verified = verify_from_scratch(plans, runs, launcher or subprocess_launcher)
    results = [r for m in modules
               for r in score_module(plans[m], mine[m], runs.get(m), verified.get(m))]
    warnings = []
    if include_hidden and not spec_registry.hidden_available():
        warnings.append("hidden cases were requested but grader/hidden/ is not present")
    return SubmissionResult(str(sub), results, time.perf_counter() - t0, warnings)
