"""Hidden cases of lab 4, drawn at grading time (see :mod:`grader.hidden`)."""

from grader.spec import FAST, Case


def hidden_cases(r):
    n, b, k = int(r.integers(5, 60)), int(r.integers(1, 5)), int(r.integers(2, 5))
    seed, epoch = int(r.integers(0, 1000)), int(r.integers(0, 5))
    drawn = {
        "minibatch_indices": [Case("hidden: random sizes", (n, b),
                                   {"seed": seed, "epoch": epoch}, options=FAST)],
        "train_test_split": [Case("hidden: random sizes", (n, float(r.uniform(0.1, 0.5))),
                                  {"seed": seed}, options=FAST)],
        "kfold_indices": [Case("hidden: random sizes", (n, k), options=FAST)],
    }
    return drawn
