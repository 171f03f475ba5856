"""Hidden cases of lab 5, drawn at grading time (see :mod:`grader.hidden`)."""

from grader.hidden import fresh_values, merge
from grader.spec import Case
from grader.specs.cnn_models import EXERCISES


def hidden_cases(r):
    layers = [(int(k), int(s)) for k, s in zip(r.integers(1, 8, 4), r.integers(1, 4, 4))]
    return merge({"receptive_field": [Case("hidden: four random layers", (layers,))]},
                 fresh_values(EXERCISES, r))
