"""The worker: the only place where a student's code runs.

``python -m grader.worker REQUEST_DIR`` reads ``REQUEST_DIR/request.json`` and
``REQUEST_DIR/inputs.npz``, imports the module ``REQUEST_DIR/submission/<module>.py`` (the
submission's other top-level modules are importable beside it), runs every requested call, and
writes per exercise ``REQUEST_DIR/out/<exercise>.json`` (outcomes: output skeleton or error kind,
message and the student's line) and ``REQUEST_DIR/out/<exercise>.npz`` (the output arrays).
Before each exercise it writes ``out/progress.json`` so that the grader knows which exercise was
running if the process dies or hangs. Nothing is pickled; everything it writes is data that the
grader checks (see :mod:`grader.codec`).

Request (written by :mod:`grader.runner`)::

    {"version": 1, "module": "convolution", "module_file": "submission/convolution.py",
     "exercise_timeout_s": 20,
     "exercises": [{"name": "conv2d", "calls": [{"id": "conv2d/stride 2", "fn": "conv2d",
                    "mode": "jit", "args": <skeleton>, "kwargs": <skeleton>, "options": {}}]}]}

Exit status 0 whenever the request could be read (student failures are outcomes, not crashes).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Own references first: student code imported later may patch modules, not these names.
from grader.codec import CodecError, decode, encode, load_arrays, read_json, save_arrays, write_json

_write_json = write_json
_save_arrays = save_arrays


class ExerciseTimeout(BaseException):
    """Raised by the per-exercise alarm (a BaseException so that ``except Exception`` in student
    code does not swallow it)."""


def _configure_jax() -> None:
    """CPU only, quiet, and the persistent compilation cache when a directory is configured."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Grading runs hundreds of tiny programs once each: compile them fast, not run them fast
    # (halves the grading time; the reference is computed with the same flags).
    fast = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + fast).strip()
    import jax

    cache = os.environ.get("CNNLAB_JAX_CACHE_DIR", "")
    if cache:
        try:
            os.makedirs(cache, exist_ok=True)
            if os.access(cache, os.W_OK):
                jax.config.update("jax_compilation_cache_dir", cache)
                jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
                jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        except OSError:
            pass  # no cache: slower, same results


def _error_record(exc: BaseException, student_dir: str) -> dict:
    """Kind, message and the last line of the student's files in the traceback."""
    import traceback

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


def run_call(module, call: dict, in_arrays: dict, out_arrays: dict, prefix: str,
             student_dir: str) -> dict:
    """Run one call; return its outcome record (output skeleton or error)."""
    import jax.numpy as jnp

    from grader import drivers

    def fresh_inputs():
        def to_jax(a):
            return jnp.asarray(a)
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


def _reap_children() -> None:
    """Collect the exit status of every child the student's code started and left behind.

    Unreaped (zombie) children still count against the sandbox's process limit: a fork storm in one
    exercise would otherwise leave the uid at its limit and make the threads of the next, honest
    exercise fail to start.
    """
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no children left
            return
        if pid == 0:  # children still running: the sandbox kills them at the end
            return


def _import_student(name: str, path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m grader.worker REQUEST_DIR", file=sys.stderr)
        return 2
    request_dir = Path(argv[0]).resolve()
    request = read_json(request_dir / "request.json")
    in_arrays = load_arrays(request_dir / "inputs.npz")
    out_dir = request_dir / "out"
    out_dir.mkdir(exist_ok=True)

    _configure_jax()
    import signal

    import jax  # noqa: F401  (imported before the student's module, on purpose)
    import jax.numpy  # noqa: F401

    from grader import drivers  # noqa: F401

    module_file = (request_dir / request["module_file"]).resolve()
    student_dir = str(module_file.parent)
    sys.path.insert(0, student_dir)
    skip = set(request.get("skip", []))
    try:
        _write_json(out_dir / "progress.json", {"exercise": None, "stage": "import"})
        module = _import_student(request["module"], module_file)
    except BaseException as exc:  # noqa: BLE001 - SyntaxError, ImportError, SystemExit, ...
        _write_json(out_dir / "import_error.json", _error_record(exc, student_dir))
        return 0

    timeout = float(request.get("exercise_timeout_s", 20))

    def on_alarm(signum, frame):
        raise ExerciseTimeout()

    for ex in request["exercises"]:
        name = ex["name"]
        if name in skip:
            continue
        _write_json(out_dir / "progress.json", {"exercise": name, "stage": "run"})
        outcomes: dict[str, dict] = {}
        out_arrays: dict = {}
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        timed_out = False
        try:
            for i, call in enumerate(ex["calls"]):
                if timed_out:
                    outcomes[call["id"]] = {"ok": False, "error": {
                        "kind": "Timeout", "module": "", "where": None,
                        "message": f"not run: the exercise exceeded {timeout:g} s"}}
                    continue
                try:
                    outcomes[call["id"]] = run_call(module, call, in_arrays, out_arrays,
                                                    f"c{i}_", student_dir)
                except ExerciseTimeout:
                    timed_out = True
                    outcomes[call["id"]] = {"ok": False, "error": {
                        "kind": "Timeout", "module": "", "where": None,
                        "message": f"timed out after {timeout:g} s"}}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            _save_arrays(out_dir / f"{name}.npz", out_arrays)
        except Exception as exc:  # noqa: BLE001 - e.g. disk full: every call of it failed
            outcomes = {c["id"]: {"ok": False, "error": {
                "kind": "BadReturn", "module": "", "where": None,
                "message": f"outputs could not be saved: {type(exc).__name__}"}}
                for c in ex["calls"]}
            _save_arrays(out_dir / f"{name}.npz", {})
        _write_json(out_dir / f"{name}.json", {"exercise": name, "outcomes": outcomes})
        _reap_children()
    _write_json(out_dir / "progress.json", {"exercise": None, "stage": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
