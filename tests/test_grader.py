"""The grader end to end: the reference scores 100 %, blank exercises score 0, every planted
mistake loses points with a message that points at it, the CLI contract, saved expected outputs,
and a worker that hangs or dies costs only the exercise it was running.

Grading runs real worker subprocesses. To stay within budget the planted mistakes are grouped:
each round puts at most one mistake in every function (never in a function that another planted
function calls), all the lab modules in one submission, graded in one call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grader.assign import assign, replace_block, solution_blocks, strip_solutions
from grader.runner import GraderError, grade_submission
from grader.specs import MODULES, load_all

sys.path.insert(0, str(Path(__file__).parent))
from test_grader_mutants import MUTANTS, _all_text, _write_round  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"


def test_exercises_are_up_to_date():
    stale = assign(check=True)
    assert stale == [], f"exercises/ is stale for {stale}: run `python -m grader assign`"


def test_strip_solutions_keeps_signature_and_docstring():
    src = ('def f(x):\n    """Doc."""\n    # BEGIN SOLUTION\n    # HINT: add one\n    return x + 1\n'
           '    # END SOLUTION\n\n# BEGIN SOLUTION\n# STUB: # TODO: decorate\n@deco\n'
           '# END SOLUTION\ndef g():\n    # BEGIN SOLUTION\n    return 2\n    # END SOLUTION\n')
    out = strip_solutions(src)
    assert 'def f(x):\n    """Doc."""\n    raise NotImplementedError(\'add one\')\n' in out
    assert "# TODO: decorate\ndef g():" in out and "@deco" not in out
    assert "raise NotImplementedError('write the body of g')" in out
    assert "x + 1" not in out and "return 2" not in out
    with pytest.raises(ValueError, match="without"):
        strip_solutions("def f():\n    # BEGIN SOLUTION\n    pass\n")


def test_exercise_names_are_unique_and_every_function_is_graded():
    every = load_all()
    names = [e.name for e in every]
    assert len(names) == len(set(names))
    for module in MODULES:
        owners = {b[0].split("@")[0] for b in solution_blocks((SOLUTIONS / f"{module}.py").read_text())}
        graded = {e.name for e in every if e.module == module}
        assert owners == graded, module
    planted = {(m, o.split("@")[0]) for m, o, _, _ in MUTANTS}
    assert {(e.module, e.name) for e in every} <= planted


def test_reference_scores_100_percent_with_hidden_cases():
    result = grade_submission(SOLUTIONS, include_hidden=True)
    bad = [(e.qualname, e.first_hint()) for e in result.exercises if e.status != "passed"]
    assert not bad
    assert result.score == result.max_score > 0
    assert any(e.has_hidden for e in result.exercises)
    gs = result.to_gradescope()
    assert gs["score"] == gs["max_score"] == result.max_score
    assert {"tests", "score", "max_score", "output"} <= set(gs)
    visible = [t for t in gs["tests"] if t["visibility"] == "visible"]
    assert [t["name"] for t in visible] == [e.qualname for e in result.exercises]
    assert all(t["status"] == "passed" for t in gs["tests"])
    assert any(t["visibility"] == "after_due_date" for t in gs["tests"])


def test_blank_exercises_score_zero_not_attempted():
    result = grade_submission(ROOT / "exercises")
    assert result.score == 0
    statuses = {e.qualname: e.status for e in result.exercises}
    assert set(statuses.values()) == {"not attempted"}, statuses
    assert len(statuses) == len(load_all())
    # the hint students see is the one-line hint of the exercise file
    conv = result.by_name("conv_output_size")
    assert "not attempted" in conv.first_hint() and "W - K + 2P" in conv.first_hint()


def test_hang_and_crash_cost_only_their_exercise(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    src = (SOLUTIONS / "cnn_models.py").read_text()
    src = replace_block(src, "WorkshopCNN", "while True:\n    pass")
    src = replace_block(src, "SeminarCNN", "import os\nos._exit(3)")
    (sub / "cnn_models.py").write_text(src)
    result = grade_submission(sub, exercises=["cnn_models"], timeout_s=3)
    ws, sem, rf = (result.by_name(n) for n in ("WorkshopCNN", "SeminarCNN", "receptive_field"))
    assert rf.status == "passed"
    assert ws.score == 0 and "timed out" in _all_text(ws)
    assert sem.score == 0 and "exited with status 3" in _all_text(sem)


def test_processes_left_behind_by_an_exercise_are_ended_before_the_next(tmp_path):
    """Children (and double-forked grandchildren) that an exercise leaves running would hold the
    sandbox's process limit and starve the next exercises' threads: the worker ends them."""
    sub = tmp_path / "sub"
    sub.mkdir()
    src = (SOLUTIONS / "neurons.py").read_text()
    src = replace_block(src, "sigmoid", "\n".join([
        "import os, time",
        "if not os.path.exists('forked'):",
        "    open('forked', 'w').close()",
        "    for _ in range(3):",
        "        if os.fork() == 0:",
        "            if os.fork() == 0:  # a grandchild that outlives its parent",
        "                open(f'grandchild-{os.getpid()}', 'w').close()",
        "                time.sleep(60)",
        "            os._exit(0)",
        "    time.sleep(0.5)",
        "return 1 / (1 + jnp.exp(-x))"]))
    src = replace_block(src, "relu", "\n".join([
        "import glob, os",
        "alive = [p for p in glob.glob('grandchild-*') if os.path.exists(f'/proc/{p[11:]}/stat')",
        "         and open(f'/proc/{p[11:]}/stat').read().split(')')[-1].split()[0] != 'Z']",
        "if len(glob.glob('grandchild-*')) != 3 or alive:",
        "    raise RuntimeError(f'grandchildren still running: {alive}')",
        "try:",
        "    os.waitpid(-1, os.WNOHANG)",
        "    raise RuntimeError('a child of an earlier exercise is still here')",
        "except ChildProcessError:",
        "    return jnp.maximum(x, 0)"]))
    (sub / "neurons.py").write_text(src)
    result = grade_submission(sub, exercises=["sigmoid", "relu"])
    assert result.by_name("sigmoid").status == "passed", _all_text(result.by_name("sigmoid"))
    assert result.by_name("relu").status == "passed", _all_text(result.by_name("relu"))


def test_import_failure_and_missing_module(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "pooling.py").write_text("def max_pool(x:\n")
    result = grade_submission(sub, exercises=["pooling", "receptive_field"])
    mp = result.by_name("max_pool")
    assert mp.status == "error" and "SyntaxError" in mp.reason and "pooling.py" in mp.reason
    rf = result.by_name("receptive_field")
    assert rf.status == "missing" and rf.score == 0


def test_modules_sharing_a_worker_do_not_affect_each_other(tmp_path):
    """With one worker for all modules (as class grading runs): a module that kills the worker at
    import costs only its own exercises, and one that turns jit off at import does not change how
    the next module is graded (its train_step must still compile once)."""
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "neurons.py").write_text("import os\nos._exit(1)\n")
    (sub / "pooling.py").write_text((SOLUTIONS / "pooling.py").read_text()
                                    + "\njax.config.update('jax_disable_jit', True)\n")
    (sub / "training.py").write_text((SOLUTIONS / "training.py").read_text())
    result = grade_submission(sub, exercises=["relu", "flatten", "train_step"], jobs=1)
    relu = result.by_name("relu")
    assert relu.score == 0 and "exited with status 1" in relu.reason
    assert result.by_name("flatten").status == "passed"
    assert result.by_name("train_step").status == "passed", _all_text(result.by_name("train_step"))


def test_a_module_that_hangs_on_import_gets_one_exercise_time(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "neurons.py").write_text((SOLUTIONS / "neurons.py").read_text())
    (sub / "pooling.py").write_text("while True:\n    pass\n")
    result = grade_submission(sub, exercises=["relu", "max_pool"], jobs=1, timeout_s=2)
    assert result.by_name("relu").status == "passed"
    mp = result.by_name("max_pool")
    assert mp.score == 0 and "top-level code ran for more than 2 s" in mp.reason, mp.reason
    assert result.execution_time < 25  # not the worker's whole budget (30 s + 2 s per exercise)


def test_saved_expected_outputs_grade_like_the_reference(tmp_path):
    from grader.runner import SavedStore, export_expected

    files = export_expected(tmp_path / "expected", modules=["cnn_models", "augmentation"])
    assert {f.suffix for f in files} == {".json", ".npz"}
    text = (tmp_path / "expected" / "cnn_models.json").read_text()
    assert "BEGIN SOLUTION" not in text and "nn.Conv" not in text
    store = SavedStore(tmp_path / "expected")
    ok = grade_submission(SOLUTIONS, exercises=["cnn_models", "augmentation"], reference=store)
    assert ok.percent == 100.0
    sub = _write_round(tmp_path / "wrong", [m for m in MUTANTS if m[1] == "receptive_field"])
    bad = grade_submission(sub, exercises=["receptive_field"], reference=store)
    assert bad.by_name("receptive_field").score < 1


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_cli_check_json_and_errors(tmp_path):
    out = tmp_path / "results.json"
    p = _cli("check", "conv_output_size", "--submission", "solutions", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert "conv_output_size" in p.stdout and "100%" in p.stdout
    gs = json.loads(out.read_text())
    assert gs["score"] == gs["max_score"] == 1.0
    assert [t["name"] for t in gs["tests"]] == ["convolution.conv_output_size"]
    assert gs["tests"][0]["status"] == "passed" and gs["tests"][0]["visibility"] == "visible"

    p = _cli("check", "conv_output_size", "--fail-under", "50")   # blank exercises/: 0 %
    assert p.returncode == 1 and "not attempted" in p.stdout

    p = _cli("check", "no_such_exercise")
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "unknown exercise 'no_such_exercise'" in p.stderr and "conv2d" in p.stderr

    p = _cli("--submission", str(tmp_path / "missing"))
    assert p.returncode == 2 and "not found" in p.stderr and "Traceback" not in p.stderr


def test_grader_error_for_unknown_names():
    with pytest.raises(GraderError, match="valid names"):
        grade_submission(SOLUTIONS, exercises=["nope"])
