"""The cnnlab autograder: specs per exercise, a worker process for student code, comparison and
scoring in the grader process, a CLI (``python -m grader``) and the generator of ``exercises/``.

Public entry points: :func:`grader.runner.grade_submission`, :func:`grader.assign.assign`.
"""
