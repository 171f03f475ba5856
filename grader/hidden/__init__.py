"""Hidden cases (instructor only): ``<module>.py`` defines ``HIDDEN = {exercise: [Case, ...]}``.

A student release leaves this package out; grading with ``include_hidden=True`` (``--hidden``,
class grading) merges the cases in, marked hidden: students see only how many passed.
"""
