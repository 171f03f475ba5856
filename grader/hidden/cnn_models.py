"""Hidden cases of lab 5, drawn at grading time (see :mod:`grader.hidden`)."""

from grader.spec import Case


def hidden_cases(r):
    layers = [(int(k), int(s)) for k, s in zip(r.integers(1, 8, 4), r.integers(1, 4, 4))]
    return {"receptive_field": [Case("hidden: four random layers", (layers,))]}
