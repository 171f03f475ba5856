"""The grader's own look at a "from scratch" exercise: the program the student's function compiles
to, run by code that never loads student Python.

In a ``"jaxpr"`` case the worker (student process) returns ``jax.export`` of the function for the
case's inputs: a serialized StableHLO program. A report of primitive names from that process could
be forged; the program cannot lie about what it computes. So the grader hands the programs to
``python -m grader.verify REQUEST_DIR`` -- started like a worker, in the sandbox (the programs are
untrusted data: they may loop or exhaust memory), but loading no student code -- which lists each
program's operations (the MLIR ops of every function in it) and runs it on the case's inputs. The
grader then checks the operations for forbidden ones and the values against the reference: a
program without the forbidden operation that computes the reference's values on inputs the student
has not seen (the hidden cases' inputs are drawn at grading time) is a from-scratch implementation.

Which jaxpr primitives show as which StableHLO operations is :data:`STABLEHLO_OPS`. A primitive
that lowers to ordinary arithmetic (``logistic``: ``jax.nn.sigmoid`` compiles to the very
``1 / (1 + exp(-x))`` the exercise asks for) cannot be told apart in the program; for it only the
student process's own report remains, and such a check is worth no points.

Request ``REQUEST_DIR/verify.json``: ``{"items": [{"id", "program", "args", "kwargs",
"options"}]}`` with arrays (programs as uint8) in ``REQUEST_DIR/verify.npz``; results in
``REQUEST_DIR/out/verified.json`` + ``.npz``: per id ``{"ok": True, "ops": [...], "out": skeleton}``
or ``{"ok": False, "error": message}``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from grader.codec import CodecError, decode, encode, load_arrays, read_json, save_arrays, write_json
from grader.worker import configure_jax

# jaxpr primitive -> the StableHLO operation it always lowers to (on CPU, in the supported JAX).
STABLEHLO_OPS = {
    "conv_general_dilated": "stablehlo.convolution", "conv": "stablehlo.convolution",
    "reduce_window_max": "stablehlo.reduce_window", "reduce_window_sum": "stablehlo.reduce_window",
    "reduce_window_min": "stablehlo.reduce_window", "reduce_window": "stablehlo.reduce_window",
    "tanh": "stablehlo.tanh",
    "scan": "stablehlo.while", "while": "stablehlo.while",
}
# Operations whose work the grader cannot see (a kernel called by name) are never from scratch.
OPAQUE_OPS = ("stablehlo.custom_call",)
VERIFY_TIMEOUT_S = 30.0  # per program, on top of the start (JAX import)


def verify_programs(items: list[dict], arrays: dict[str, np.ndarray], launcher,
                    keep_dir: bool = False) -> dict[str, dict]:
    """Run the verifier on ``items`` (see the module docstring) with ``launcher``; returns the
    decoded results by id (``{"ok", "ops", "out"}`` or ``{"ok": False, "error"}``). Items the
    verifier did not answer (it crashed or timed out on a program) get an error."""
    if not items:
        return {}
    req = Path(tempfile.mkdtemp(prefix="cnnlab-verify-"))
    try:
        save_arrays(req / "verify.npz", arrays)
        write_json(req / "verify.json", {"items": items})
        (req / "out").mkdir()
        req.chmod(0o755)
        lr = launcher([sys.executable, "-m", "grader.verify", str(req)], cwd=str(req),
                      timeout_s=30.0 + VERIFY_TIMEOUT_S * len(items))
        try:
            raw = read_json(req / "out" / "verified.json")
            out_arrays = load_arrays(req / "out" / "verified.npz", max_bytes=2**28)
        except (OSError, CodecError):
            raw, out_arrays = {}, {}
        why = lr.reason or f"exited with status {lr.returncode}"
        results = {}
        for item in items:
            r = raw.get(item["id"]) if isinstance(raw, dict) else None
            if not isinstance(r, dict) or not r.get("ok"):
                error = r.get("error") if isinstance(r, dict) else None
                results[item["id"]] = {"ok": False, "error": str(error or why)[:500]}
                continue
            try:
                results[item["id"]] = {"ok": True, "ops": sorted(map(str, r["ops"])),
                                       "out": decode(r["out"], out_arrays)}
            except (CodecError, KeyError, TypeError, ValueError):
                results[item["id"]] = {"ok": False, "error": "unreadable verifier output"}
        return results
    finally:
        if not keep_dir:
            shutil.rmtree(req, ignore_errors=True)


# --- the verifier process (no student code) ------------------------------------------------------

def operations(exported) -> list[str]:
    """Names of every MLIR operation in every function of an exported program."""
    # JAX only in the verifier process, after configure_jax; never in the grader's (~1 s).
    from jax._src.interpreters import mlir  # noqa: PLC0415 - see above
    from jax._src.lib.mlir import ir  # noqa: PLC0415 - see above

    names: set[str] = set()

    def walk(op) -> None:
        names.add(op.name)
        for region in op.regions:
            for block in region.blocks:
                for inner in block.operations:
                    walk(inner.operation)

    with mlir.make_ir_context():
        walk(ir.Module.parse(exported.mlir_module()).operation)
    return sorted(names)


def run_program(blob: np.ndarray, args, options) -> dict:
    """Deserialize one program, list its operations, and run it on the case's dynamic inputs
    (the same positions the worker's drivers trace) unless it holds an opaque operation."""
    import jax  # noqa: PLC0415 - as in operations()

    from grader.drivers import array_positions  # noqa: PLC0415 - imports JAX

    exported = jax.export.deserialize(bytearray(np.asarray(blob, np.uint8).tobytes()))
    ops = operations(exported)
    if any(op in OPAQUE_OPS for op in ops):
        return {"ok": True, "ops": ops, "out": None}
    dyn = [args[i] for i in array_positions(args, options)]
    return {"ok": True, "ops": ops, "out": exported.call(*dyn)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    req = Path(argv[0]).resolve()
    configure_jax()
    request = read_json(req / "verify.json")
    arrays = load_arrays(req / "verify.npz", max_bytes=2**30)
    results, out_arrays = {}, {}
    for i, item in enumerate(request["items"]):
        try:
            r = run_program(arrays[item["program"]], decode(item["args"], arrays),
                            item.get("options", {}))
            r["out"] = encode(r["out"], out_arrays, prefix=f"v{i}_")
        except Exception as exc:  # noqa: BLE001 - a program that cannot be read or run
            r = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        results[item["id"]] = r
        # written after every program: one that kills the process costs only itself and later ones
        save_arrays(req / "out" / "verified.npz", out_arrays)
        write_json(req / "out" / "verified.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
