"""The cnnlab autograder: specs per exercise, a worker process for student code, comparison and
scoring in the grader process, a CLI (``python -m grader``) and the generator of ``exercises/``.

Public entry points: :func:`grader.runner.grade_submission`, :func:`grader.assign.assign`.
"""


def __getattr__(name: str):
    """``from grader import check`` in a notebook cell (imported on first use: the grader's
    other entry points do not need it)."""
    if name == "check":
        # Not at the top: every process of the grader imports this package first, the sandboxed
        # worker too, and notebook_check brings numpy, rich and the runner (0.3-0.5 s).
        from grader.notebook_check import check  # noqa: PLC0415 - see above

        return check
    raise AttributeError(f"module 'grader' has no attribute {name!r}")
