"""The grader end to end: the reference scores 100 %, blank exercises score 0, every planted
mistake loses points with a message that points at it, the CLI contract, saved expected outputs,
and a worker that hangs or dies costs only the exercise it was running.

Grading runs real worker subprocesses. To stay within budget the planted mistakes are grouped:
each round puts at most one mistake in every function (never in a function that another planted
function calls), all the lab modules in one submission, graded in one call.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from grader.assign import assign, replace_block, solution_blocks, strip_solutions
from grader.results import CaseResult, ExerciseResult, SubmissionResult, printed_block
from grader.runner import GraderError, grade_submission, select_exercises
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
    planted = {(m.module, m.owner.split("@")[0]) for m in MUTANTS}
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
        "e = jnp.exp(-jnp.abs(x))",
        "return jnp.where(x >= 0, 1 / (1 + e), e / (1 + e))"]))
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
    sub = _write_round(tmp_path / "wrong", [m for m in MUTANTS if m.owner == "receptive_field"])
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

    p = _cli("check", "Sigmod")
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "unknown exercise 'Sigmod': did you mean sigmoid?" in p.stderr
    assert "1 neurons, 2 convolution" in p.stderr and "conv2d_single" not in p.stderr

    p = _cli("--submission", str(tmp_path / "missing"))
    assert p.returncode == 2 and "not found" in p.stderr and "Traceback" not in p.stderr


def test_names_match_in_any_case_with_did_you_mean_and_lab_numbers():
    assert [e.qualname for e in select_exercises(["Conv2D"])] == ["convolution.conv2d"]
    assert [e.qualname for e in select_exercises(["CONVOLUTION.conv2d"])] == ["convolution.conv2d"]
    lab2 = [e.qualname for e in select_exercises(["convolution"])]
    assert lab2 and all(q.startswith("convolution.") for q in lab2)
    for name in ("2", "lab 2", "Lab2", "exercises/convolution.py"):
        assert [e.qualname for e in select_exercises([name])] == lab2, name
    for typo, meant in [("sigmod", "sigmoid"), ("seminar_cnn", "SeminarCNN"),
                        ("nurons", "neurons (lab 1)"), ("pool", "max_pool")]:
        with pytest.raises(GraderError) as e:
            grade_submission(SOLUTIONS, exercises=[typo])
        message = str(e.value)
        assert "did you mean" in message and meant in message, message
        assert "\n" not in message and len(message) < 300, message
        assert "1 neurons, 2 convolution, 3 pooling, 4 training, 5 cnn_models, 6 transfer, " \
               "7 augmentation" in message
    with pytest.raises(GraderError, match="unknown exercise 'zzz': Name an exercise"):
        select_exercises(["zzz"])


# --- what the student reads ----------------------------------------------------------------------

def test_printed_output_is_shown_under_its_case_capped_and_never_for_hidden_cases(tmp_path):
    """print() output of the student's code: under each failed case (head and tail of a flood),
    under passed cases too with verbose, in Gradescope's output, every line marked so that it
    never passes for the grader's own; never for a hidden case (it would show hidden inputs)."""
    sub = tmp_path / "sub"
    sub.mkdir()
    src = (SOLUTIONS / "neurons.py").read_text()
    src = replace_block(src, "softmax",  # prints, and NaN at large logits
                        "print('softmax of', x.shape)\n"
                        "e = jnp.exp(x)\nreturn e / e.sum(axis=axis, keepdims=True)")
    src = replace_block(src, "relu", "import sys\nfor i in range(100_000):\n    print('line', i)\n"
                                     "print('\\x1b[31mthe end\\x1b[0m', file=sys.stderr)\nreturn x")
    (sub / "neurons.py").write_text(src)
    result = grade_submission(sub, exercises=["softmax", "relu"], include_hidden=True)
    softmax, relu = result.by_name("softmax"), result.by_name("relu")
    assert any(c.hidden and c.printed for c in softmax.cases)

    text = softmax.output_text(max_cases=50)
    lines = text.splitlines()
    i = lines.index(next(ln for ln in lines if ln.startswith("- large logits")))
    assert lines[i + 1:i + 3] == ["  your code printed (1 line):", "  │ softmax of (1, 3)"]
    shown = [ln for ln in lines if "softmax of" in ln]
    assert all(ln.startswith("  │ ") for ln in shown)
    failed = [c for c in softmax.cases if not c.passed and not c.hidden]
    assert len(shown) == len(failed)            # failed public cases only: no passed, no hidden
    verbose = softmax.output_text(max_cases=50, verbose=True).splitlines()
    public = [c for c in softmax.cases if not c.hidden]
    assert "+ random #0 shape (5,): passed" in verbose and "  │ softmax of (5,)" in verbose
    assert len([ln for ln in verbose if "softmax of" in ln]) >= len(public)
    assert sum("your code printed" in ln for ln in verbose) == len(public)

    flood = relu.output_text(max_cases=1, printed_budget=None)
    assert "│ line 0" in flood and "│ line 99999" in flood and "│ the end" in flood
    assert "characters not shown" in flood and "\x1b" not in flood
    assert "your code printed (1,088,898 characters):" in flood and len(flood) < 3000
    many = "".join(f"step {i}\n" for i in range(50))     # short enough to keep: lines cut
    assert printed_block(many)[11:13] == ["  │ … 30 lines not shown …", "  │ step 40"]

    gs = {t["name"]: t for t in result.to_gradescope()["tests"]}
    assert "│ softmax of (1, 3)" in gs["neurons.softmax"]["output"]
    assert "softmax of" not in gs["neurons.softmax (hidden)"]["output"]


def _one_exercise(*cases, hint="the general hint") -> SubmissionResult:
    ex = ExerciseResult("neurons", "softmax", "1 Neurons", 2.0, [CaseResult("fine", True), *cases],
                        status="failed", hint=hint)
    return SubmissionResult("exercises", [ex])


def test_scoreboard_keeps_the_hint_whole_and_bracketed_text():
    from rich.console import Console

    from grader.scoreboard import HINT_WIDTH, print_results

    nan = CaseResult("large logits [1000, 1000, 999]", False, kind="nonfinite",
                     message="output[0, 0]: got NaN, expected 0.422319 (3 of 3 values differ) — "
                             "something overflowed (inf - inf, inf / inf, 0 * inf) or took "
                             "log/sqrt of a negative number.",
                     hint="exp(1000) overflows: subtract the max along [rows, cols] first")
    result = _one_exercise(nan)
    first = result.exercises[0].first_hint(HINT_WIDTH)
    assert first.startswith(nan.hint + " — large logits [1000, 1000, 999]: output[0, 0]: got NaN")
    assert len(first) <= HINT_WIDTH and first.endswith(" …")
    assert first[:-2] == first[:-2].rstrip() and (first[:-2] + " ") in (nan.hint + " — "
                                                                         + nan.name + ": "
                                                                         + nan.message + " ")
    console = Console(width=120, record=True, file=io.StringIO())
    print_results(result, detailed=False, verbose=False, console=console)
    screen = " ".join(console.export_text().split())
    assert "[rows, cols]" in " ".join(screen.replace("│", " ").split())


def test_a_hint_shows_only_for_the_failure_it_addresses():
    overflow = dict(kind="nonfinite", hint="subtract the max")
    value = CaseResult("axis=0", False, message="output[0]: expected 1, got 2.", kind="value",
                       hint="normalise along the `axis` argument")
    later = CaseResult("axis=1", False, message="output[1]: expected 1, got 3.", kind="value",
                       hint="another explanation of the same symptom")
    nan = CaseResult("large logits", False, message="output[0]: got NaN.", **overflow)
    ex = _one_exercise(value, later, nan).exercises[0]
    assert [h for _, h in ex.hints()] == ["normalise along the `axis` argument", "subtract the max"]
    text = ex.output_text()
    assert text.count("normalise along") == 1 and "another explanation" not in text
    assert text.splitlines()[1] == "hint: normalise along the `axis` argument"   # first
    assert "  hint: subtract the max" in text.splitlines()                        # under its case
    assert "the general hint" not in text     # a case hint applied
    error = CaseResult("random", False, message="NameError: name 'e' is not defined", kind="error")
    assert _one_exercise(error).exercises[0].hints() == []   # its message is the teaching
    wrong = CaseResult("random", False, message="output[0]: expected 1, got 2.", kind="value")
    assert [h for _, h in _one_exercise(wrong).exercises[0].hints()] == ["the general hint"]


def test_cases_accept_exactly_the_registered_checks_and_every_one_is_used():
    from grader.checks import CHECKS, Context, judge
    from grader.diagnose import FAILURE_KINDS
    from grader.spec import Case

    assert {c.check for ex in load_all() for c in ex.cases} == set(CHECKS)
    with pytest.raises(ValueError, match="unknown check 'nope'; checks: match, no_primitives"):
        Case("c", check="nope")
    # A wrong outcome fails every check with a failure kind the hints know.
    wrong = {"first": 1.0, "second": 2.0, "params": {}, "ok": False}
    for name in CHECKS:
        case = Case("c", check=name,
                    options={"frozen": ("conv",), "forbidden": ("conv_general_dilated",)})
        found = judge(case, {"ok": True, "out": {"first": 0.0, "value": 0.0}}, wrong, {},
                      Context(lambda: (({"conv": 0.0},), {}), {"ok": False}))
        assert found and found.kind in FAILURE_KINDS, (name, found)
    mutated = judge(Case("c"), {"ok": True, "out": 1.0}, 1.0, {"mutated": "x[0]"}, Context(tuple))
    assert mutated.kind == "mutated" and "x[0]" in mutated.text


def test_what_a_module_prints_when_imported_is_shown_once_and_with_an_import_error(tmp_path):
    """print() at a module's top level (run when the grader imports it) is shown with that
    module's results: once in ``check``'s details however many of its exercises fail, in
    Gradescope's output, and with the import error when the module then fails to import."""
    sub = tmp_path / "sub"
    sub.mkdir()
    src = (SOLUTIONS / "pooling.py").read_text()
    src = src.replace("\ndef ", "\nprint('pooling: loaded', 42)\n\ndef ", 1)
    src = replace_block(src, "global_avg_pool", "return x.mean(axis=0)")     # wrong axes
    src = replace_block(src, "flatten", "return x")
    (sub / "pooling.py").write_text(src)
    (sub / "neurons.py").write_text("print('about to fail')\nimport numpyy\n")
    out = tmp_path / "results.json"
    p = _cli("check", "pooling", "sigmoid", "--submission", str(sub), "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("your code printed when pooling.py was imported (1 line):") == 1, \
        p.stdout
    assert p.stdout.count("│ pooling: loaded 42") == 1
    assert "could not be imported: ModuleNotFoundError" in p.stdout
    assert "your code printed when neurons.py was imported (1 line):\n│ about to fail" in p.stdout
    gs = {t["name"]: t["output"] for t in json.loads(out.read_text())["tests"]}
    assert "│ pooling: loaded 42" in gs["pooling.global_avg_pool"]
    assert "│ about to fail" in gs["neurons.sigmoid"]
    assert "pooling: loaded" not in gs["pooling.max_pool"]   # passed: nothing to debug there


def test_a_stale_or_damaged_reference_cache_is_computed_anew_and_a_failing_reference_is_named(
        tmp_path, monkeypatch):
    """The shared cache of reference outcomes (``~/.cache/cnnlab/expected``) may hold what
    another version of the grader wrote: an outcome that raised where the case needs a value
    (e.g. a "from scratch" program) is never used to grade; it is computed again. A reference
    that really fails is a one-line GraderError naming the exercise and case, not a KeyError."""
    from grader.runner import ReferenceStore, call_id
    from grader.specs import load

    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    ReferenceStore(SOLUTIONS).plan("pooling", include_hidden=True)
    [cached] = (tmp_path / "cache" / "expected").glob("pooling-*.json")
    raw = json.loads(cached.read_text())
    ex = next(e for e in load("pooling", include_hidden=True) if e.name == "max_pool")
    case = next(c for c in ex.cases if c.check == "no_primitives")
    raw[call_id(ex, case)] = {"ok": False, "error": {"kind": "Timeout", "message": "old"}}
    cached.write_text(json.dumps(raw))

    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "pooling.py").write_text((SOLUTIONS / "pooling.py").read_text())
    result = grade_submission(sub, exercises=["max_pool"], reference=ReferenceStore(SOLUTIONS))
    assert result.score == result.max_score > 0
    assert json.loads(cached.read_text())[call_id(ex, case)]["ok"] is True   # written anew

    broken = tmp_path / "solutions"
    broken.mkdir()
    src = replace_block((SOLUTIONS / "pooling.py").read_text(), "max_pool",
                        "raise ValueError('broken reference')")
    (broken / "pooling.py").write_text(src)
    with pytest.raises(GraderError, match=r"^the reference failed on pooling\.max_pool, case "
                                          r"'from scratch.*': ValueError: broken reference$"):
        ReferenceStore(broken).plan("pooling", include_hidden=True)
