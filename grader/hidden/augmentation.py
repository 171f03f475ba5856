"""Hidden cases of lab 7, drawn at grading time (see :mod:`grader.hidden`)."""

from grader.hidden import fresh_values
from grader.specs.augmentation import EXERCISES


def hidden_cases(r):
    return fresh_values(EXERCISES, r)
