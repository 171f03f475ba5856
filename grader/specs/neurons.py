"""Specs of lab 1: neurons and backprop."""

from __future__ import annotations

from grader.spec import Case, Exercise, f32, ints, randn, random_shapes, rng

M = "neurons"
JIT_HINT = "the function must also work under jax.jit (no Python if/for on array values)"
VMAP_HINT = "the function must also work under jax.vmap (write it for one example, shapes generic)"


def elementwise(name: str, *, seed: int, points: float = 1.0, scale: float = 3.0,
                extra: tuple[Case, ...] = (), forbidden: tuple[str, ...] = (), grad: bool = True,
                large_grad: str = "", hint: str = "") -> Exercise:
    """Random shapes, jit, vmap, grad and (optionally) a "from scratch" rule for f(x);
    ``large_grad``: also the gradient at x = ±100 must be finite, with that hint when it is not
    (a form whose values survive large |x| may still have a NaN gradient there)."""
    r = rng(seed)
    cases = [Case(f"random #{i} shape {shape}", (randn(r, *shape, scale=scale),))
             for i, shape in enumerate(random_shapes(seed, 4))]
    x = cases[-1].args[0]   # jit reuses a shape that is compiled already
    cases += [
        Case("under jax.jit", (x,), mode="jit", hint=JIT_HINT),
        Case("under jax.vmap", (randn(r, 3, 4, scale=scale),), mode="vmap",
             options={"in_axes": [0]}, hint=VMAP_HINT, hint_on=("tracer", "shape")),
    ]
    if grad:
        cases.append(Case("gradient (jax.grad)", (x + 0.01,), mode="grad",
                          hint="differentiate through it: use jnp operations only"))
    if forbidden:
        cases.append(Case("from scratch", (x,), mode="jaxpr", check="no_primitives",
                          options={"forbidden": list(forbidden)},
                          hint="write it from the formula with jnp.exp and arithmetic"))
    cases += extra
    if large_grad:  # after the values at large |x|: a NaN value makes a NaN gradient too
        cases.append(Case("gradient at x = ±100", (f32([-100.0, -20.0, 0.0, 20.0, 100.0]),),
                          mode="grad", hint=large_grad, hint_on=("nonfinite",)))
    return Exercise(M, name, points, tuple(cases), hint=hint)


def _mlp3_params(r, d=4, h1=5, h2=3, o=2):
    return {"w1": randn(r, d, h1), "b1": randn(r, h1), "w2": randn(r, h1, h2),
            "b2": randn(r, h2), "w3": randn(r, h2, o), "b3": randn(r, o)}


def _softmax_cases() -> tuple[Case, ...]:
    r = rng(11)
    cases = [Case(f"random #{i} shape {s}", (randn(r, *s, scale=2.0),))
             for i, s in enumerate([(5,), (3, 4), (2, 3, 6), (1, 10), (4, 1)])]
    cases += [
        Case("axis=0 of a (4, 3) array", (randn(r, 4, 3),), {"axis": 0},
             hint="normalise along the `axis` argument: the values along it sum to 1"),
        Case("axis=1 of a (2, 5, 3) array", (randn(r, 2, 5, 3),), {"axis": 1},
             hint="normalise along the `axis` argument"),
        Case("large logits [1000, 1000, 999]", (f32([[1000, 1000, 999]]),),
             hint="exp(1000) overflows: subtract the max along the axis first",
             hint_on=("nonfinite",)),
        Case("very negative logits", (f32([[-1000, -1001, -1002]]),),
             hint="exp(-1000) underflows to 0: subtract the max along the axis first",
             hint_on=("nonfinite",)),
        Case("under jax.jit", (randn(r, 3, 5),), mode="jit", hint=JIT_HINT),
        Case("under jax.vmap", (randn(r, 4, 6),), mode="vmap", options={"in_axes": [0]},
             hint=VMAP_HINT, hint_on=("tracer", "shape")),
        Case("gradient (jax.grad)", (randn(r, 3, 4),), mode="grad"),
    ]
    return tuple(cases)


def _ce_cases() -> tuple[Case, ...]:
    r = rng(12)
    cases = []
    for i, (n, c) in enumerate([(4, 3), (8, 10), (1, 2), (16, 5)]):
        cases.append(Case(f"random #{i} logits ({n}, {c})", (randn(r, n, c, scale=2.0),
                                                             ints(r, c, n))))
    cases += [
        Case("uniform logits give log C", (f32([[0.0] * 10]), ints(r, 10, 1))),
        Case("large logits (1000)", (f32([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 2.0]]),
                                     ints(r, 3, 2) * 0),
             hint="log(softmax) overflows/underflows for large logits: use "
                  "logsumexp(z) - z[label] with the max subtracted", hint_on=("nonfinite",)),
        Case("mean over the batch", (randn(r, 6, 4), ints(r, 4, 6)),
             hint="the loss is the *mean* over the N examples, not the sum"),
        Case("under jax.jit", (randn(r, 5, 4), ints(r, 4, 5)), mode="jit", hint=JIT_HINT),
        Case("gradient (jax.grad)", (randn(r, 5, 4), ints(r, 4, 5)), mode="grad",
             options={"argnums": [0]}),
    ]
    return tuple(cases)


def _exercises() -> list[Exercise]:
    r = rng(1)
    big = f32([[-1000.0, -50.0, 0.0, 50.0, 1000.0]])
    exercises = [
        elementwise("sigmoid", seed=101, forbidden=("logistic",),
                    extra=(Case("s(0) = 0.5, s(±1000) = 0 and 1", (big,),
                                hint="e^1000 = inf: no NaN for large |x| — compute with "
                                     "exp(-|x|), which never overflows", hint_on=("nonfinite",)),),
                    large_grad="a NaN gradient at x = -100: 1 / (1 + exp(-x)) has the right "
                               "value there, but exp(100) = inf makes its gradient inf / inf; "
                               "use exp(-|x|), which never overflows, for both signs",
                    hint="1 / (1 + exp(-x))"),
        elementwise("tanh", seed=102, forbidden=("tanh",),
                    extra=(Case("tanh(±100) = ±1", (f32([-100.0, -20.0, 0.0, 20.0, 100.0]),),
                                hint="e^100 / e^100 is inf / inf = NaN: rewrite with "
                                     "exp(-2|x|), which never overflows", hint_on=("nonfinite",)),),
                    large_grad="a gradient of inf / inf = NaN at x = ±100: compute with "
                               "exp(-2|x|) (or 2 s(2x) - 1 with a stable sigmoid)",
                    hint="(e^x - e^-x) / (e^x + e^-x), or 2 s(2x) - 1"),
        elementwise("relu", seed=103, extra=(Case("zero and negatives", (f32([-2.0, 0.0, 3.0]),)),),
                    hint="max(0, x) elementwise: jnp.where or jnp.maximum"),
        elementwise("leaky_relu", seed=104, extra=(
            Case("negative_slope=0.2", (f32([-5.0, -1.0, 0.0, 2.0]),), {"negative_slope": 0.2},
                 hint="use the negative_slope argument, not a fixed 0.01"),
            Case("negative_slope=0.1 under jit", (randn(r, 3, 3),), {"negative_slope": 0.1},
                 mode="jit")),
            hint="x where x >= 0, negative_slope * x elsewhere"),
        elementwise("elu", seed=105, extra=(
            Case("alpha=0.5", (f32([-3.0, -0.5, 0.0, 0.5]),), {"alpha": 0.5},
                 hint="use the alpha argument"),
            Case("gradient at x = 100 and -100", (f32([100.0, -100.0, 1.0]),), mode="grad",
                 hint="jnp.where differentiates both branches: exp(100) = inf in the branch you "
                      "do not use makes the gradient NaN; clamp: exp(minimum(x, 0))",
                 hint_on=("nonfinite",))),
            hint="x for x > 0, alpha (e^x - 1) otherwise"),
        Exercise(M, "maxout", 1.0, tuple(
            [Case(f"random #{i} N={n} D={d} M={m} K={k}",
                  (randn(r, n, d), randn(r, d, m, k), randn(r, m, k)))
             for i, (n, d, m, k) in enumerate([(4, 3, 2, 2), (1, 5, 3, 4), (6, 2, 1, 3)])]
            + [Case("under jax.jit", (randn(r, 3, 4), randn(r, 4, 2, 3), randn(r, 2, 3)),
                    mode="jit", hint=JIT_HINT),
               Case("gradient w.r.t. w", (randn(r, 3, 4), randn(r, 4, 2, 3), randn(r, 2, 3)),
                    mode="grad", options={"argnums": [1]})]),
            hint="z[n, m, k] = sum_d x[n, d] w[d, m, k] + b[m, k]; max over k (the last axis)"),
        Exercise(M, "softmax", 2.0, _softmax_cases(),
                 hint="exp(x - max) / sum(exp(x - max)) along `axis`"),
        Exercise(M, "dense", 1.0, tuple(
            [Case(f"random #{i} ({n}, {a}) -> {b}", (randn(r, n, a), randn(r, a, b), randn(r, b)),
                  hint="z = x W + b: every unit adds its bias")
             for i, (n, a, b) in enumerate([(4, 3, 2), (1, 7, 5), (9, 2, 6)])]
            + [Case("under jax.jit", (randn(r, 2, 3), randn(r, 3, 4), randn(r, 4)), mode="jit"),
               Case("gradient w.r.t. W", (randn(r, 2, 3), randn(r, 3, 4), randn(r, 4)),
                    mode="grad", options={"argnums": [1]})]),
            hint="z = x W + b with x (N, D_in), W (D_in, D_out), b (D_out,)"),
        Exercise(M, "cross_entropy", 2.0, _ce_cases(),
                 hint="mean over n of logsumexp(logits_n) - logits_n[label_n]"),
        elementwise("sigmoid_derivative", seed=106, grad=False,
                    extra=(Case("s'(0) = 0.25", (f32([0.0]),)),),
                    hint="s(x) (1 - s(x)) with s the sigmoid"),
        Exercise(M, "softmax_jvp", 1.0, tuple(
            [Case(f"random #{i} shape {s}", (randn(r, *s), randn(r, *s)),
                  hint="J v = p * (v - sum(p * v)) with the sum along the last axis")
             for i, s in enumerate([(4,), (3, 5), (2, 2, 3)])]
            + [Case("under jax.jit", (randn(r, 2, 4), randn(r, 2, 4)), mode="jit"),
               Case("under jax.vmap", (randn(r, 3, 4), randn(r, 3, 4)), mode="vmap",
                    options={"in_axes": [0, 0]}, hint=VMAP_HINT, hint_on=("tracer", "shape"))]),
            hint="J v = p * (v - sum(p * v)) along the last axis"),
        Exercise(M, "softmax_cross_entropy_grad", 1.0, tuple(
            [Case(f"random #{i} logits ({n}, {c})", (randn(r, n, c), ints(r, c, n)),
                  hint="the gradient of the *mean* loss: divide by N")
             for i, (n, c) in enumerate([(4, 3), (1, 5), (7, 10)])]
            + [Case("under jax.jit", (randn(r, 3, 4), ints(r, 4, 3)), mode="jit")]),
            hint="(softmax(logits) - onehot(labels)) / N"),
        Exercise(M, "add_multiply_backward", 1.0, (
            Case("lecture example x=-2, y=5, z=-4", (-2.0, 5.0, -4.0)),
            Case("x=3, y=-1, z=2", (3.0, -1.0, 2.0),
                 hint="the add gate passes df/dq = z to both x and y; df/dz = q = x + y"),
            Case("x=0.5, y=0.25, z=-3", (0.5, 0.25, -3.0))),
            hint="q = x + y, f = q z: df/dx = df/dy = z, df/dz = q"),
        Exercise(M, "mlp3_loss", 1.0, tuple(
            [Case(f"random #{i} N={n}", (_mlp3_params(r), randn(r, n, 4), randn(r, n, 2)))
             for i, n in enumerate([1, 5, 8])]
            + [Case("under jax.jit", (_mlp3_params(r), randn(r, 3, 4), randn(r, 3, 2)),
                    mode="jit"),
               Case("mean over the batch, sum over outputs",
                    (_mlp3_params(r), randn(r, 6, 4), randn(r, 6, 2)),
                    hint="0.5 * sum((out - y)^2) / N: sum over the outputs, divide by N only")]),
            hint="three sigmoid layers, then 0.5 * sum((out - y)^2) / N"),
        Exercise(M, "mlp3_backward", 2.0, tuple(
            [Case(f"random #{i} N={n} equals jax.grad",
                  (_mlp3_params(r), randn(r, n, 4), randn(r, n, 2)),
                  hint="each delta carries the sigmoid derivative h (1 - h) of its own layer")
             for i, n in enumerate([1, 4, 7])]
            + [Case("check_grads (finite differences)",
                    (_mlp3_params(r), randn(r, 3, 4), randn(r, 3, 2)), mode="driver:check_grads",
                    options={"loss": "mlp3_loss"}, check="check_grads"),
               Case("under jax.jit", (_mlp3_params(r), randn(r, 3, 4), randn(r, 3, 2)),
                    mode="jit")]),
            hint="delta3 = (out - y) / N * out (1 - out); dW3 = h2^T delta3; "
                 "delta2 = delta3 W3^T * h2 (1 - h2); ..."),
        Exercise(M, "layer_gradient_norms", 1.0, (
            Case("6-layer sigmoid network, width 8",
                 ([{"w": randn(r, 8, 8), "b": randn(r, 8)} for _ in range(6)],
                  randn(r, 16, 8), randn(r, 16, 8)),
                 hint="one norm per layer, first layer first; use jax.grad of the loss",
                 hint_on=("value", "shape")),
            Case("3 layers of different widths",
                 ([{"w": randn(r, 4, 6), "b": randn(r, 6)}, {"w": randn(r, 6, 5), "b": randn(r, 5)},
                   {"w": randn(r, 5, 2), "b": randn(r, 2)}], randn(r, 5, 4), randn(r, 5, 2))),
            Case("1 layer", ([{"w": randn(r, 3, 2), "b": randn(r, 2)}], randn(r, 4, 3),
                             randn(r, 4, 2)))),
            hint="jax.grad of 0.5 * sum((out - y)^2) / N; then the Frobenius norm of each dW"),
    ]
    return exercises


EXERCISES = _exercises()
