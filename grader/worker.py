"""The worker: the only place where a student's code runs.

``python -m grader.worker REQUEST_DIR`` reads ``REQUEST_DIR/request.json`` and, for each module
it names in turn, imports ``REQUEST_DIR/submission/<module>.py`` (the submission's other top-level
modules are importable beside it), reads its inputs ``REQUEST_DIR/inputs/<module>.npz``, runs
every requested call, and writes per exercise ``REQUEST_DIR/out/<module>/<exercise>.json``
(outcomes: output skeleton or error kind, message and the student's line; what the call printed,
:mod:`grader.capture`) and ``.npz`` (the output
arrays); a module that cannot be imported gets ``out/<module>/import_error.json`` instead, and
what a module's top-level code printed goes to ``out/<module>/import.json`` (or into its
``import_error.json``), as ``"printed"``. Before
each import and each exercise it writes ``out/progress.json`` (module, exercise, stage): the
sandbox's heartbeat watches it, and the grader reads from it whether a worker that died was
importing a module or running an exercise (which exercise follows from the results written).
Nothing is pickled; everything it writes is data that the grader checks (see :mod:`grader.codec`).

Several modules share one process because starting Python with JAX, Flax and optax costs more
than most exercises; each module starts from the same JAX configuration.

Request (written by :mod:`grader.runner`)::

    {"version": 2, "exercise_timeout_s": 20, "modules": [
        {"module": "convolution", "module_file": "submission/convolution.py",
         "inputs": "inputs/convolution.npz", "skip": [],
         "exercises": [{"name": "conv2d", "calls": [{"id": "conv2d/stride 2", "fn": "conv2d",
                        "mode": "jit", "args": <skeleton>, "kwargs": <skeleton>,
                        "options": {}}]}]}]}

Exit status 0 whenever the request could be read (student failures are outcomes, not crashes).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import psutil

# Own references first: student code imported later may patch modules, not these names.
from grader.capture import CaseOutput
from grader.codec import CodecError, decode, encode, load_arrays, read_json, save_arrays, write_json

_write_json = write_json
_save_arrays = save_arrays
_monotonic = time.monotonic  # the exercise deadline; student code may patch time.monotonic


class ExerciseTimeout(BaseException):
    """Raised by the per-exercise alarm (a BaseException so that ``except Exception`` in student
    code does not swallow it)."""


def _on_alarm(signum, frame):
    raise ExerciseTimeout()


def _start_alarm(seconds: float) -> None:
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _stop_alarm() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


_FAST_EMITTER_JAXLIB = ("0.10.",)  # where the emitter flags below were verified


def fast_compile_flags() -> str:
    """XLA flags that make XLA:CPU compile small programs fast rather than run them fast.

    Grading compiles hundreds of tiny programs and runs each once (the reference is computed
    with the same flags). Measured on jaxlib 0.10 (2 cores, programs of a few ops): the classic
    elemental emitters in one codegen split compile 2.5-3x faster than the default fusion
    emitters. Those two flags are added only on the jaxlib versions they were verified on,
    because an unknown flag in XLA_FLAGS aborts the process.
    """
    flags = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    try:
        jaxlib_version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        jaxlib_version = ""
    if jaxlib_version.startswith(_FAST_EMITTER_JAXLIB):
        flags += " --xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
    return flags


def configure_jax() -> None:
    """CPU only, quiet, and the persistent compilation cache when a directory is configured."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + fast_compile_flags()).strip()
    # JAX is imported inside functions in this module: only once the lines above have set its
    # environment, and never in the grader's process, which imports this module (~1 s).
    import jax  # noqa: PLC0415 - see above

    # JAX names a GPU autotuning folder after the cache folder and puts that name in every cache
    # key; off (it does nothing on CPU), so that a cache filled at one path hits at another.
    jax.config.update("jax_persistent_cache_enable_xla_caches", "none")
    cache = os.environ.get("CNNLAB_JAX_CACHE_DIR", "")
    readonly = os.environ.get("CNNLAB_JAX_CACHE_READONLY") == "1"
    if cache:
        try:
            if readonly:  # the reference's compiled programs, shown read-only in a sandbox
                usable = os.path.isdir(cache) and os.access(cache, os.X_OK)
            else:
                os.makedirs(cache, exist_ok=True)
                usable = os.access(cache, os.W_OK)
            if usable:
                jax.config.update("jax_compilation_cache_dir", cache)
                # read-only: never try to write (a program that compiled here is not kept)
                jax.config.update("jax_persistent_cache_min_compile_time_secs",
                                  float("inf") if readonly else 0.0)
                jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        except OSError:
            pass  # no cache: slower, same results


def _error_record(exc: BaseException, student_dir: str) -> dict:
    """Kind, message and the last line of the student's files in the traceback."""
    where = None
    try:
        for fr in traceback.extract_tb(exc.__traceback__):
            if fr.filename and os.path.abspath(fr.filename).startswith(student_dir):
                where = {"file": os.path.basename(fr.filename), "line": fr.lineno,
                         "code": (fr.line or "").strip()[:300]}
    except Exception:
        where = None
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable exception>"
    return {"kind": type(exc).__name__, "module": type(exc).__module__ or "",
            "message": message[:3000], "where": where}


def _snapshot(tree):
    """Containers copied, leaves kept by identity: detects in-place edits of dicts and lists."""
    if isinstance(tree, dict):
        return ("dict", {k: _snapshot(v) for k, v in tree.items()})
    if isinstance(tree, list | tuple):
        return (type(tree).__name__, [_snapshot(v) for v in tree])
    return ("leaf", tree)


def _mutation(snap, tree, path: str = "") -> str | None:
    """The path of the first difference between ``tree`` now and its snapshot, if any."""
    kind, content = snap
    if kind == "dict":
        if not isinstance(tree, dict) or set(tree) != set(content):
            return path or "(top level)"
        for k in content:
            m = _mutation(content[k], tree[k], f"{path}[{k!r}]")
            if m:
                return m
        return None
    if kind in ("list", "tuple"):
        if len(tree) != len(content):
            return path or "(top level)"
        for i, (s, v) in enumerate(zip(content, tree)):
            m = _mutation(s, v, f"{path}[{i}]")
            if m:
                return m
        return None
    return None if tree is content else (path or "(top level)")


_NOT_RUN = object()


def run_call(module, call: dict, in_arrays: dict, out_arrays: dict, prefix: str,
             student_dir: str, ready=_NOT_RUN) -> dict:
    """Run one call; return its outcome record (output skeleton or error). ``ready``: its
    output, already computed in a batch (:func:`batched_outputs`)."""
    import jax  # noqa: PLC0415 - after configure_jax (see there)

    from grader import drivers  # noqa: PLC0415 - imports JAX

    def fresh_inputs():
        def to_jax(a):
            return jax.device_put(a)
        return (list(decode(call["args"], in_arrays, array_fn=to_jax)),
                decode(call["kwargs"], in_arrays, array_fn=to_jax))

    try:
        fn = getattr(module, call["fn"])
    except AttributeError:
        return {"ok": False, "error": {"kind": "MissingFunction", "module": "",
                                       "message": f"{call['fn']} is not defined in the module",
                                       "where": None}}
    args, kwargs = fresh_inputs()
    snap = _snapshot([args, kwargs])
    info: dict = {}
    try:
        if ready is not _NOT_RUN:
            out = ready
        else:
            out, info = drivers.run(call["mode"], fn, args, kwargs, call.get("options", {}),
                                    module=module, fresh_inputs=fresh_inputs)
    except ExerciseTimeout:
        raise
    except BaseException as exc:  # noqa: BLE001 - student code may raise anything, even SystemExit
        return {"ok": False, "error": _error_record(exc, student_dir)}
    mutated = _mutation(snap, [args, kwargs])
    if mutated:
        info["mutated"] = mutated
    try:
        skeleton = encode(out, out_arrays, prefix=prefix)
    except CodecError as exc:
        return {"ok": False, "error": {"kind": "BadReturn", "module": "", "message": str(exc),
                                       "where": None}}
    except Exception as exc:  # noqa: BLE001 - e.g. an __array__ that raises
        return {"ok": False, "error": {"kind": "BadReturn", "module": "",
                                       "message": f"the returned value could not be read: "
                                                  f"{type(exc).__name__}", "where": None}}
    return {"ok": True, "out": skeleton, "info": info}


def _become_subreaper() -> None:
    """Have orphaned grandchildren reparented to this process (Linux), so that
    :func:`_end_children` finds a double-forked process too."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _end_children() -> None:
    """Kill and reap every process the student's code started and left behind.

    Live or unreaped (zombie) children count against the sandbox's process limit: a fork storm in
    one exercise would otherwise keep the uid at its limit and make the threads of the next,
    honest exercises fail to start (XLA aborts when it cannot start a thread).
    """
    for _ in range(10):  # rounds: a child may fork between the scan and the kill
        pids = [p.pid for p in psutil.Process().children(recursive=True)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)  # our own children: gone at once after SIGKILL
            except ChildProcessError:  # a grandchild: reaped by its parent or comes to us
                pass
        while True:  # orphans reparented to us, already dead
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not pids:
            return


class _Unavailable:
    """How the course's own code looks to graded code that imports it: importable (so the rest of
    a module that imports it is still graded), but unusable. The sandbox shows none of it, and
    the grader scores an exercise that reaches it 0 (:mod:`grader.delegation`)."""

    def __init__(self, name: str):
        self.__name__, self.__path__ = name, []

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self.__name__}.{attr}")

    def __call__(self, *args, **kwargs):
        raise ImportError(f"{self.__name__} is not available to graded code: an exercise must be "
                          "implemented by the submission itself")

    # an import-system finder and loader for the names above
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in ("cnnlab", "grader", "solutions") and name not in sys.modules:
            return importlib.util.spec_from_loader(name, cls)
        return None

    @classmethod
    def create_module(cls, spec):
        return cls(spec.name)

    @staticmethod
    def exec_module(module) -> None:
        pass


def _import_student(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def batched_outputs(module, calls: list[dict], in_arrays: dict) -> dict[int, object]:
    """``{index in calls: output}`` for the calls of one function that compile as a whole, run
    together in one compiled program per function (:func:`grader.drivers.run_batch`); calls left
    out (other modes, a lone call, a batch that failed) run on their own."""
    import jax  # noqa: PLC0415 - after configure_jax (see there)

    from grader import drivers  # noqa: PLC0415 - imports JAX

    groups: dict[str, list] = {}
    for i, call in enumerate(calls):
        fn = getattr(module, call["fn"], None)
        if fn is None:
            continue
        args = list(decode(call["args"], in_arrays, array_fn=jax.device_put))
        kwargs = decode(call["kwargs"], in_arrays, array_fn=jax.device_put)
        options = call.get("options", {})
        if drivers.compiled_whole(call["mode"], fn, args, kwargs, options):
            groups.setdefault(call["fn"], []).append((i, fn, call["mode"], args, kwargs, options))
    ready: dict[int, object] = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        try:
            outs = drivers.run_batch(group[0][1], [case for _, _, *case in group])
        except ExerciseTimeout:
            raise
        except BaseException:  # noqa: BLE001 - e.g. SystemExit while traced: each runs alone
            outs = None
        if outs is not None:
            ready.update(zip([i for i, *_ in group], outs))
    return ready


def run_exercises(module, exercises: list[dict], in_arrays: dict, out_dir: Path,
                  progress, timeout: float, student_dir: str) -> None:
    """Run every exercise of one module, each under its own alarm; write its outcomes."""
    for ex in exercises:
        name = ex["name"]
        progress(name, "run")
        outcomes: dict[str, dict] = {}
        out_arrays: dict = {}
        _start_alarm(timeout)
        # The alarm fires once; where it lands inside library code that turns exceptions into
        # its own (JAX unwinding a deep recursion), it may be lost: the deadline still holds
        # at the next case.
        deadline = _monotonic() + timeout
        timed_out = False
        try:
            try:
                ready = batched_outputs(module, ex["calls"], in_arrays)
            except ExerciseTimeout:
                ready, timed_out = {}, True
            except BaseException:  # noqa: BLE001 - student code misbehaving: each call runs alone
                ready = {}
            for i, call in enumerate(ex["calls"]):
                timed_out = timed_out or _monotonic() > deadline
                if timed_out:
                    outcomes[call["id"]] = {"ok": False, "error": {
                        "kind": "Timeout", "module": "", "where": None,
                        "message": f"timed out after {timeout:g} s" if not outcomes else
                        f"not run: the exercise exceeded {timeout:g} s"}}
                    continue
                printed = CaseOutput()  # what the student's code prints, shown under the case
                try:
                    with printed:
                        outcome = run_call(module, call, in_arrays, out_arrays, f"c{i}_",
                                           student_dir, ready.get(i, _NOT_RUN))
                except ExerciseTimeout:
                    timed_out = True
                    outcome = {"ok": False, "error": {
                        "kind": "Timeout", "module": "", "where": None,
                        "message": f"timed out after {timeout:g} s"}}
                outcomes[call["id"]] = printed.attach(outcome)
        finally:
            _stop_alarm()
        try:
            _save_arrays(out_dir / f"{name}.npz", out_arrays)
        except Exception as exc:  # noqa: BLE001 - e.g. disk full: every call of it failed
            outcomes = {c["id"]: {"ok": False, "error": {
                "kind": "BadReturn", "module": "", "where": None,
                "message": f"outputs could not be saved: {type(exc).__name__}"}}
                for c in ex["calls"]}
            _save_arrays(out_dir / f"{name}.npz", {})
        _write_json(out_dir / f"{name}.json", {"exercise": name, "outcomes": outcomes})
        _end_children()


def _restore_jax_config(values: dict) -> None:
    import jax  # noqa: PLC0415 - after configure_jax (see there)

    for key, value in values.items():
        try:
            if jax.config.values.get(key) != value:
                jax.config.update(key, value)
        except Exception:  # noqa: BLE001 - an option that cannot be set back: leave it
            pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m grader.worker REQUEST_DIR", file=sys.stderr)
        return 2
    request_dir = Path(argv[0]).resolve()
    request = read_json(request_dir / "request.json")
    out_root = request_dir / "out"
    out_root.mkdir(exist_ok=True)

    _become_subreaper()
    configure_jax()
    import jax  # noqa: PLC0415 - after configure_jax, before the student's modules (on purpose)
    import jax.numpy  # noqa: F401, PLC0415 - same

    from grader import drivers  # noqa: F401, PLC0415 - same

    sys.meta_path.insert(0, _Unavailable)  # before any student code; see _Unavailable
    timeout = float(request.get("exercise_timeout_s", 20))
    jax_config = dict(jax.config.values)
    for job in request["modules"]:
        name = job["module"]
        # Each module starts from the same JAX configuration: a module that turns on float64 or
        # disables jit for itself must not change how the next module of the worker is graded.
        _restore_jax_config(jax_config)

        def progress(exercise, stage, name=name):
            _write_json(out_root / "progress.json",
                        {"module": name, "exercise": exercise, "stage": stage})

        progress(None, "import")
        out_dir = out_root / name
        out_dir.mkdir(exist_ok=True)
        module_file = (request_dir / job["module_file"]).resolve()
        student_dir = str(module_file.parent)
        if student_dir not in sys.path:
            sys.path.insert(0, student_dir)
        error = None
        printed = CaseOutput()  # what the module's top-level code prints: shown with its results
        try:
            in_arrays = load_arrays(request_dir / job["inputs"])
            _start_alarm(timeout)  # the module's top-level code gets one exercise's time
            try:
                with printed:
                    module = _import_student(name, module_file)
            finally:
                _stop_alarm()
        except ExerciseTimeout:
            error = {"kind": "Timeout", "module": "", "where": None,
                     "message": f"its top-level code ran for more than {timeout:g} s (it runs on "
                                "import: keep work inside functions, or under "
                                "`if __name__ == \"__main__\":`)"}
        except BaseException as exc:  # noqa: BLE001 - SyntaxError, ImportError, SystemExit, ...
            error = _error_record(exc, student_dir)
        if error is not None:
            _write_json(out_dir / "import_error.json", printed.attach(error))
            _end_children()
            continue
        if printed.buffer.total:
            _write_json(out_dir / "import.json", printed.attach({}))
        skip = set(job.get("skip", []))
        run_exercises(module, [ex for ex in job["exercises"] if ex["name"] not in skip],
                      in_arrays, out_dir, progress, timeout, student_dir)
    _write_json(out_root / "progress.json", {"module": None, "exercise": None, "stage": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
