"""benchmarks/workshop_recipe.py: each run is timed to its printed test accuracy and to its exit,
from output read as it comes; a failed run is reported with its error line, not a figure."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("workshop_recipe",
                                                  ROOT / "benchmarks" / "workshop_recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_accuracy_is_timed_when_it_is_printed_not_at_exit(recipe):
    child = ("import time; print('epoch 1', flush=True); time.sleep(0.3); "
             "print('test accuracy 89.47% (top-5 99.80%)', flush=True); time.sleep(1.5); "
             "print('workdir: w')")
    to_accuracy, seconds, accuracy, last = recipe.timed([sys.executable, "-c", child],
                                                        dict(os.environ))
    assert accuracy == 89.47 and last == "workdir: w"
    assert 0.3 <= to_accuracy < seconds - 1.0, (to_accuracy, seconds)


def test_a_failed_run_gives_its_error_line_and_no_figure(recipe):
    child = "print('test accuracy 50.00%'); import sys; sys.exit('cnnlab: error: no data')"
    to_accuracy, _, accuracy, last = recipe.timed([sys.executable, "-c", child], dict(os.environ))
    assert (to_accuracy, accuracy, last) == (None, None, "cnnlab: error: no data")
