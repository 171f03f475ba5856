"""Hidden cases of lab 1, drawn at grading time (see :mod:`grader.hidden`)."""

from grader.hidden import shape
from grader.spec import Case, f32, ints, randn

ELEMENTWISE = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "sigmoid_derivative")


def hidden_cases(r):
    x = randn(r, *shape(r, int(r.integers(1, 4))), scale=4.0)
    n, c = (int(v) for v in r.integers(2, 12, 2))
    drawn = {name: [Case("hidden: random shape", (randn(r, *shape(r, 2), scale=4.0),))]
             for name in ELEMENTWISE}
    drawn["tanh"].append(Case("hidden: from scratch", (x,), mode="jaxpr", check="no_primitives",
                              options={"forbidden": ["tanh"]}))
    drawn["leaky_relu"].append(Case("hidden: random slope", (x,),
                                    {"negative_slope": float(r.uniform(0.02, 0.5))}))
    drawn["elu"].append(Case("hidden: random alpha", (x,), {"alpha": float(r.uniform(0.2, 2.0))}))
    drawn["softmax"] = [
        Case("hidden: a random axis", (randn(r, 3, 4, 2, scale=5.0),),
             {"axis": int(r.integers(-3, 3))}),
        Case("hidden: mixed huge logits", (f32([[3000.0, -3000.0, 0.0]]),))]
    drawn["cross_entropy"] = [Case("hidden: random logits", (randn(r, n, c, scale=4.0),
                                                             ints(r, c, n)))]
    drawn["add_multiply_backward"] = [Case("hidden: random numbers",
                                           tuple(float(v) for v in r.uniform(-5, 5, 3)))]
    return drawn
