"""Hidden cases of lab 6, drawn at grading time (see :mod:`grader.hidden`)."""

from grader.spec import Case


def hidden_cases(r):
    blocks = tuple(f"block{i}" for i in range(int(r.integers(2, 7))))
    lr_min = float(10 ** r.uniform(-6, -4))
    drawn = {"discriminative_learning_rates": [
        Case("hidden: random blocks and range", (blocks, lr_min, lr_min * float(r.uniform(10, 1e3))),
             rtol=1e-6, atol=0.0)]}
    return drawn
