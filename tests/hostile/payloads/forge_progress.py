# attacks: relu
"""Overwrites the worker's progress file with values that are not names (a list, a dict), then
kills the worker: the grader must still place the failure on relu, not crash on the file."""
import json as _json
import os as _os


def relu(x):
    with open("out/progress.json", "w") as f:
        _json.dump({"module": ["neurons"], "exercise": {"relu": 1}, "stage": []}, f)
    _os._exit(0)
