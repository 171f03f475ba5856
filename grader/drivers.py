"""How the worker calls a student's function: plain, under jit/vmap/grad, twice (purity), as a
jaxpr, or through a harness for exercises that are not array -> array functions (Flax modules,
train steps, optimizers). Runs inside the worker process only.

The harnesses build what cannot cross a process boundary as arrays — a Flax model, an optax
optimizer, an ``apply_fn`` — from fixed, documented recipes here; they contain no solution.

Flax and optax are imported by the drivers that use them: every worker imports this module before
the student's, and importing both takes about 0.3 s, which most labs never need.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from grader import capture


def _is_array(x) -> bool:
    return isinstance(x, jax.Array | np.ndarray)


def _has_array(tree) -> bool:
    return any(_is_array(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def _hashable(x) -> bool:
    try:
        hash(x)
        return True
    except TypeError:
        return False


def _bind(fn, args, kwargs, dynamic: list[int]) -> tuple[Callable, list]:
    """``fn`` as a function of the positional args in ``dynamic`` only; the rest are closed over."""

    def bound(*dyn):
        full = list(args)
        for i, d in zip(dynamic, dyn):
            full[i] = d
        return fn(*full, **kwargs)

    return bound, [args[i] for i in dynamic]


def array_positions(args, options) -> list[int]:
    if "dynamic" in options:
        return list(options["dynamic"])
    return [i for i, a in enumerate(args) if _has_array(a)]


_JIT_CACHE: dict = {}


def _jitted(fn, static_argnums: tuple, static_argnames: tuple):
    """One ``jax.jit`` wrapper per function and static signature, so compilations are reused."""
    k = (fn, static_argnums, static_argnames)
    try:
        if k not in _JIT_CACHE:
            _JIT_CACHE[k] = jax.jit(fn, static_argnums=static_argnums,
                                    static_argnames=static_argnames)
        return _JIT_CACHE[k]
    except TypeError:  # unhashable fn: no caching
        return jax.jit(fn, static_argnums=static_argnums, static_argnames=static_argnames)


def _jit_call(fn, args, kwargs, options):
    dynamic = array_positions(args, options)
    static_argnums = tuple(i for i in range(len(args)) if i not in dynamic)
    static_argnames = tuple(k for k, v in kwargs.items() if not _has_array(v))
    return _jitted(fn, static_argnums, static_argnames)(*args, **kwargs)


_PRINTS: set = set()  # functions that printed while traced: their plain calls run eagerly


def mode_call(fn, args, kwargs, options, **_):
    """A plain call — compiled as a whole with ``jax.jit`` for speed (one compilation instead of
    one per operation). Whenever that fails (Python control flow on values, numpy on arrays,
    non-array results, or a genuine error) the function runs again eagerly and that outcome
    counts, so plain cases never require jit-compatible code. A function that prints runs
    eagerly too: traced, it prints tracers instead of the values the student wants to see (and a
    compiled function prints only when traced). Functions without array arguments run as they
    are (``options["jit_static"]`` compiles them too, all arguments static)."""
    if not compiled_whole("call", fn, args, kwargs, options):
        return fn(*args, **kwargs), {}
    with capture.aside() as traced:
        try:
            out = _jit_call(fn, args, kwargs, options)
        except Exception:  # noqa: BLE001 - tracer errors, returned objects, ...: eager decides
            out = traced  # (not a result)
    if traced.total:
        try:
            _PRINTS.add(fn)
        except TypeError:  # unhashable: it is traced again next time and found again
            pass
    elif out is not traced:
        return out, {}
    return fn(*args, **kwargs), {}


def compiled_whole(mode: str, fn, args, kwargs, options) -> bool:
    """Whether a call's outcome is ``fn`` compiled as a whole (:func:`case_program`): every
    "jit", "vmap", "grad" and "driver:flax_model" call, and the "call" calls that
    :func:`mode_call` tries compiled first (array arguments, hashable static ones, not marked
    eager, not known to print)."""
    if mode in ("jit", "vmap", "grad", "driver:flax_model"):
        return True
    if mode != "call":
        return False
    statics = [a for a in (*args, *kwargs.values()) if not _has_array(a)]
    all_static = len(statics) == len(args) + len(kwargs)
    return not (options.get("eager") or (all_static and not options.get("jit_static"))
                or not all(_hashable(a) for a in statics) or _prints(fn))


def run_batch(fn, cases: list[tuple[str, list, dict, dict]]) -> list | None:
    """The outputs of ``fn`` on every case ``(mode, args, kwargs, options)`` (modes for which
    :func:`compiled_whole` holds) from ONE compiled program.

    XLA:CPU spends ~0.1 CPU-s compiling even a tiny program, and grading runs most functions on
    several cases (shapes, strides, edge values, under vmap and grad): compiling them together
    costs one compilation instead of one per case. Each case is its :func:`case_program`, so its
    output is what its own compiled call gives. Returns None, and nothing counts, when the batch
    cannot be built, compiled or run, or prints while traced: then every case runs on its own
    exactly as before (:func:`run`), which decides.
    """
    with capture.aside() as traced:
        try:
            programs = [case_program(mode, fn, a, k, o) for mode, a, k, o in cases]
            outs = jax.jit(lambda inputs: [p(x) for (p, _, _), x in zip(programs, inputs)])(
                [x for _, x, _ in programs])
            outs = [finish(out) for (_, _, finish), out in zip(programs, outs)]
        except Exception:  # noqa: BLE001 - one case that cannot compile: each runs on its own
            return None
    return None if traced.total else outs


def _prints(fn) -> bool:
    try:
        return fn in _PRINTS
    except TypeError:
        return False


def _maybe_jit(f, *args):
    """``jax.jit(f)(*args)``, or ``f(*args)`` when ``f`` cannot be traced (see :func:`mode_call`)."""
    try:
        return jax.jit(f)(*args)
    except Exception:  # noqa: BLE001 - whatever fails under jit is decided by the eager call
        return f(*args)


def mode_jit(fn, args, kwargs, options, **_):
    """``jax.jit`` with every non-array argument (ints, strings, tuples of ints) static."""
    return _jit_call(fn, args, kwargs, options), {}


def mode_vmap(fn, args, kwargs, options, **_):
    """``jax.vmap`` over the positional args whose ``in_axes`` entry is not None."""
    program, inputs, finish = case_program("vmap", fn, args, kwargs, options)
    return finish(jax.jit(program)(inputs)), {}


def mode_grad(fn, args, kwargs, options, **_):
    """The VJP w.r.t. ``options["argnums"]`` with a fixed cotangent (seeded normal, per leaf)."""
    program, inputs, finish = case_program("grad", fn, args, kwargs, options)
    return finish(jax.jit(program)(inputs)), {}


def _same(out):
    return out


def case_program(mode: str, fn, args, kwargs, options) -> tuple[Callable, object, Callable]:
    """``(program, inputs, finish)``: a call of mode "call"/"jit", "vmap", "grad" or
    "driver:flax_model" as a function of its traced inputs only (a pytree; the other arguments
    are constants), so that ``finish(jax.jit(program)(inputs))`` is its outcome (``finish``
    gives the outcome its container types: ``jax.jit`` returns dicts with sorted keys).

    "call"/"jit": the array arguments are traced, as in :func:`_jit_call`. "driver:flax_model":
    ``fn(**kwargs)`` initialized and applied on ``args = (x, key)``. "vmap": the positional
    args whose ``in_axes`` entry is not None. "grad": the VJP w.r.t. ``options["argnums"]`` with a
    fixed cotangent (seeded normal, per leaf, drawn here from the output's shape).
    """
    if mode in ("call", "jit"):
        positions = array_positions(args, options)
        names = [k for k, v in kwargs.items() if _has_array(v)]

        def program(inputs):
            dyn, dyn_kwargs = inputs
            full = list(args)
            for i, d in zip(positions, dyn):
                full[i] = d
            return fn(*full, **{k: dyn_kwargs.get(k, v) for k, v in kwargs.items()})

        return program, ([args[i] for i in positions], {k: kwargs[k] for k in names}), _same
    if mode == "vmap":
        in_axes = list(options["in_axes"])
        dynamic = [i for i, a in enumerate(in_axes) if a is not None]
        bound, dyn = _bind(fn, args, kwargs, dynamic)
        return (lambda dyn: jax.vmap(bound, in_axes=[in_axes[i] for i in dynamic])(*dyn)), dyn, \
            _same
    if mode == "grad":
        bound, dyn = _bind(fn, args, kwargs, list(options.get("argnums", [0])))
        r = np.random.default_rng(1234)
        cot = jax.tree_util.tree_map(lambda o: jnp.asarray(r.standard_normal(o.shape), o.dtype),
                                     jax.eval_shape(bound, *dyn))

        def grads_of(inputs):
            return jax.vjp(bound, *inputs[0])[1](inputs[1])

        return grads_of, (dyn, cot), lambda grads: tuple(grads) if len(grads) > 1 else grads[0]
    if mode == "driver:flax_model":  # see driver_flax_model
        model = fn(**kwargs)

        def init_apply(inputs):
            x, key = inputs
            variables = model.init(key, x, train=False)
            return variables["params"], model.apply(variables, x, train=False)

        return init_apply, tuple(args), lambda out: {"params": dict(out[0]), "logits": out[1]}
    raise ValueError(f"mode {mode!r} has no program")


def mode_purity(fn, args, kwargs, options, *, fresh_inputs, **_):
    first = fn(*args, **kwargs)
    args2, kwargs2 = fresh_inputs()
    second = fn(*args2, **kwargs2)
    return {"first": first, "second": second}, {}


def _subjaxprs(p):
    if hasattr(p, "eqns"):
        yield p
    elif hasattr(p, "jaxpr") and hasattr(p.jaxpr, "eqns"):
        yield p.jaxpr
    elif isinstance(p, tuple | list):
        for q in p:
            yield from _subjaxprs(q)


def primitive_names(closed_jaxpr) -> list[str]:
    names: set[str] = set()
    seen: set[int] = set()

    def walk(j):
        if id(j) in seen:
            return
        seen.add(id(j))
        for eqn in j.eqns:
            names.add(eqn.primitive.name)
            for p in eqn.params.values():
                for sub in _subjaxprs(p):
                    walk(sub)

    walk(closed_jaxpr.jaxpr)
    return sorted(names)


def mode_jaxpr(fn, args, kwargs, options, **_):
    """For a "from scratch" check: ``{"program": jax.export of the function for these inputs,
    serialized (uint8), "primitives": its jaxpr's primitive names, "value": its output}``. The
    grader runs the program itself (:mod:`grader.verify`); the names are this process's report."""
    dynamic = array_positions(args, options)
    bound, dyn = _bind(fn, args, kwargs, dynamic)
    names = primitive_names(jax.make_jaxpr(bound)(*dyn))
    compiled = jax.jit(bound)  # the value from one compiled program, not op by op
    program = jax.export.export(compiled)(*dyn).serialize()
    return {"program": np.frombuffer(bytes(program), np.uint8), "primitives": names,
            "value": compiled(*dyn)}, {}


# --- harnesses ------------------------------------------------------------------------------------

def driver_flax_model(cls, args, kwargs, options, **_):
    """``cls(**kwargs)``, ``init(PRNGKey, x, train=False)``, ``apply`` -> params and logits.

    args: (x, key). Flax's init is deterministic in the parameter names, so a model with the
    reference's names and shapes has the reference's initial values too.
    """
    program, inputs, finish = case_program("driver:flax_model", cls, args, kwargs, options)
    return finish(_maybe_jit(program, inputs)), {}


# The harnesses keep their own bookkeeping (slicing the steps, stacking the losses, comparing
# parameters, the optimizer's zero state) off XLA: each eager jnp operation compiles a program of
# its own per shape (~0.02 CPU-s each, dozens per exercise), and none of them is the student's code.

def _steps(a) -> list:
    """``[a[0], a[1], ...]`` as device arrays, sliced on the host (``a[i]`` on a jax.Array
    compiles a slice and a squeeze)."""
    return [jax.device_put(step) for step in np.asarray(a)]


def _stack(values: list):
    """``jnp.stack(values)``; on the host when all are jax arrays of one dtype and shape (the
    same values and dtype, without compiling a stack)."""
    if values and all(isinstance(v, jax.Array) for v in values) and \
            len({(v.dtype, v.shape) for v in values}) == 1:
        return np.stack([np.asarray(v) for v in values])
    return jnp.stack([jnp.asarray(v) for v in values])


def _bit_identical(a, b) -> bool:
    """Whether two parameter trees hold equal leaves (``jnp.array_equal`` leaf by leaf)."""
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _train_state(apply_fn, params, tx):
    """``TrainState.create(apply_fn=, params=, tx=)`` with the harness optimizer's initial state
    from one compiled call (eager optax init compiles a program per leaf shape)."""
    from flax.training import train_state  # noqa: PLC0415 - see the module docstring

    return train_state.TrainState(step=0, apply_fn=apply_fn, params=params, tx=tx,
                                  opt_state=jax.jit(tx.init)(params))


class _TinyMLP:
    """A two-layer MLP in Flax, built lazily (the harness model of the train-step drivers)."""

    @staticmethod
    def make(num_classes: int, hidden: int = 8, names=("backbone", "head")):
        import flax.linen as nn  # noqa: PLC0415 - see the module docstring

        class TinyNet(nn.Module):
            @nn.compact
            def __call__(self, x):
                x = x.reshape(x.shape[0], -1)
                x = nn.relu(nn.Dense(hidden, name=names[0])(x))
                return nn.Dense(num_classes, name=names[1])(x)

        return TinyNet()


def driver_train_step(fn, args, kwargs, options, **_):
    """Run the student's ``train_step(state, images, labels)`` ``steps`` times.

    args: (init_key, images (steps, N, ...), labels (steps, N)). The harness model is a
    two-layer MLP, the optimizer ``optax.sgd(0.1, momentum=0.9)``. Counts how often the model's
    Python code runs: once when the step is compiled once, ``steps`` times when it is not.
    """
    import optax  # noqa: PLC0415 - see the module docstring

    key, images, labels = args
    images, labels = _steps(images), _steps(labels)
    model = _TinyMLP.make(int(options.get("num_classes", 3)))
    params = jax.jit(model.init)(key, images[0])["params"]
    traces = {"n": 0}

    def apply_fn(variables, x):
        traces["n"] += 1
        return model.apply(variables, x)

    state = _train_state(apply_fn, params, optax.sgd(0.1, momentum=0.9))
    losses = []
    for x, y in zip(images, labels):
        state, loss = fn(state, x, y)
        losses.append(loss)
    return ({"losses": _stack(losses), "params": dict(state.params), "step": int(state.step)},
            {"traces": traces["n"], "calls": len(images)})


def driver_finetune(fn, args, kwargs, options, **_):
    """Run ``finetune_step(params, opt_state, images, labels, apply_fn=, tx=, trainable=)``
    ``steps`` times on the harness MLP (blocks "backbone" and "head") with
    ``optax.adamw(0.05, weight_decay=0.5)``; ``opt_state = tx.init(trainable blocks)``.

    args: (params, images (steps, N, ...), labels (steps, N)).
    """
    import optax  # noqa: PLC0415 - see the module docstring

    params, images, labels = args
    trainable = tuple(kwargs.get("trainable", ("head",)))
    model = _TinyMLP.make(int(params["head"]["bias"].shape[0]))
    tx = optax.adamw(0.05, weight_decay=0.5)
    opt_state = jax.jit(tx.init)({k: params[k] for k in trainable})
    losses = []

    def step(params, opt_state, x, y):
        return fn(params, opt_state, x, y, apply_fn=model.apply, tx=tx, trainable=trainable)

    for x, y in zip(_steps(images), _steps(labels)):
        params, opt_state, loss = _maybe_jit(step, params, opt_state, x, y)
        losses.append(loss)
    return {"params": params, "losses": _stack(losses)}, {}


def _inner_tx(name: str):
    import optax  # noqa: PLC0415 - see the module docstring

    return {"adamw": lambda: optax.adamw(0.1, weight_decay=0.5),
            "sgd": lambda: optax.sgd(0.1),
            "momentum": lambda: optax.sgd(0.1, momentum=0.9)}[name]()


def driver_optimizer(fn, args, kwargs, options, **_):
    """Build an optimizer with the student's function and run it on fixed gradients.

    ``fn(params, arg1, [inner tx])`` -> a GradientTransformation; args: (params, arg1, grads
    list). ``options["inner"]`` names the inner optimizer passed as third argument (adamw with
    weight decay 0.5 for the freezing exercise). Returns the parameters after every update.
    """
    import optax  # noqa: PLC0415 - see the module docstring

    params, arg1, grads_list = args
    tx = fn(params, arg1, _inner_tx(options["inner"])) if "inner" in options else fn(params, arg1)
    state = tx.init(params)

    def step(g, state, params):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    for g in grads_list:
        params, state = _maybe_jit(step, g, state, params)
    return {"params": params}, {}


def driver_tta(fn, args, kwargs, options, **_):
    """``fn(apply_fn, images)`` with the linear model ``apply_fn(x) = flatten(x) @ w + b``.

    args: (w, b, images). The linear model is not mirror-symmetric, so flipping matters.
    """
    w, b, images = args

    def apply_fn(x):
        return x.reshape(x.shape[0], -1) @ w + b

    return _maybe_jit(lambda imgs: fn(apply_fn, imgs), images), {}


def driver_check_grads(fn, args, kwargs, options, *, module, **_):
    """Verify a hand-written backward pass with ``jax.test_util.check_grads`` (float64).

    ``fn`` is the backward (e.g. ``mlp3_backward(params, x, y)``) and ``options["loss"]`` names the
    student's loss in the same module. The loss is wrapped in a ``jax.custom_vjp`` whose backward
    is ``fn``, so ``check_grads`` compares the hand-written gradient with finite differences.
    """
    loss = getattr(module, options["loss"])
    params, x, y = args
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        x, y = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)

        @jax.custom_vjp
        def f(p):
            return loss(p, x, y)

        def f_fwd(p):
            return loss(p, x, y), p

        def f_bwd(p, g):
            return (jax.tree_util.tree_map(lambda t: g * t, fn(p, x, y)),)

        f.defvjp(f_fwd, f_bwd)
        f = jax.jit(f)  # compiled once: check_grads evaluates it many times
        try:
            check_grads(f, (params,), order=1, modes=("rev",), atol=1e-5, rtol=1e-4, eps=1e-5)
            return {"ok": True, "message": ""}, {}
        except AssertionError as e:
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            return {"ok": False, "message": " ".join(lines[:6])[:600]}, {}


# --- lab 9 (GANs) harness -------------------------------------------------------------------------

def _tiny_gan(image_shape: tuple[int, ...], hidden: int = 16):
    """The harness generator (z -> Dense(hidden) relu -> Dense(prod(image_shape)) sigmoid ->
    image) and discriminator (flatten -> Dense(hidden) leaky relu 0.2 -> Dense(1) -> (N,))."""
    import flax.linen as nn  # noqa: PLC0415 - see the module docstring

    class TinyGenerator(nn.Module):
        @nn.compact
        def __call__(self, z):
            h = nn.relu(nn.Dense(hidden)(z))
            x = nn.sigmoid(nn.Dense(math.prod(image_shape))(h))
            return x.reshape(z.shape[0], *image_shape)

    class TinyDiscriminator(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.leaky_relu(nn.Dense(hidden)(x.reshape(x.shape[0], -1)), 0.2)
            return nn.Dense(1)(h)[:, 0]

    return TinyGenerator(), TinyDiscriminator()


def driver_gan_step(fn, args, kwargs, options, **_):
    """Run ``gan_train_step(g_state, d_state, real_images, z)`` ``steps`` times on the harness
    pair, each network with ``optax.adam(0.01, b1=0.5)`` -- or, for the network named in
    ``options["frozen"]``, ``optax.set_to_zero()``: its parameters must come back bit-identical.

    args: (init_key, real_images (steps, N, H, W, C), z (steps, N, latent)). Returns both
    networks' parameters, the losses of every step, and whether each network's parameters are
    bit-identical to their initial values.
    """
    import optax  # noqa: PLC0415 - see the module docstring

    key, real, z = args
    gen, disc = _tiny_gan(tuple(real.shape[2:]))
    real, z = _steps(real), _steps(z)

    @jax.jit
    def init_both(key, z0, real0):
        kg, kd = jax.random.split(key)
        return gen.init(kg, z0)["params"], disc.init(kd, real0)["params"]

    g_params, d_params = init_both(key, z[0], real[0])
    frozen = options.get("frozen")
    tx = {name: optax.set_to_zero() if frozen == name else optax.adam(0.01, b1=0.5)
          for name in ("generator", "discriminator")}
    g_state = _train_state(gen.apply, g_params, tx["generator"])
    d_state = _train_state(disc.apply, d_params, tx["discriminator"])
    d_losses, g_losses = [], []
    for real_i, z_i in zip(real, z):
        g_state, d_state, metrics = _maybe_jit(fn, g_state, d_state, real_i, z_i)
        d_losses.append(jnp.asarray(metrics["d_loss"]))
        g_losses.append(jnp.asarray(metrics["g_loss"]))
    return {"g_params": dict(g_state.params), "d_params": dict(d_state.params),
            "d_losses": _stack(d_losses), "g_losses": _stack(g_losses),
            "generator_unchanged": _bit_identical(g_params, g_state.params),
            "discriminator_unchanged": _bit_identical(d_params, d_state.params)}, {}


MODES = {"call": mode_call, "jit": mode_jit, "vmap": mode_vmap, "grad": mode_grad,
         "purity": mode_purity, "jaxpr": mode_jaxpr}
DRIVERS = {"flax_model": driver_flax_model, "train_step": driver_train_step,
           "finetune": driver_finetune, "optimizer": driver_optimizer, "tta": driver_tta,
           "check_grads": driver_check_grads, "gan_step": driver_gan_step}


def run(mode: str, fn, args, kwargs, options, *, module, fresh_inputs):
    """Dispatch one call; returns ``(output, info)``."""
    if mode.startswith("driver:"):
        return DRIVERS[mode.split(":", 1)[1]](fn, args, kwargs, options, module=module,
                                             fresh_inputs=fresh_inputs)
    return MODES[mode](fn, args, kwargs, options, module=module, fresh_inputs=fresh_inputs)

