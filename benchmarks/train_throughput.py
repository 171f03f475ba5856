"""Steady-state training throughput (images/s), JAX/Flax vs PyTorch eager, on this CPU.

Batch 128, float32, data in memory. JAX: ``cnnlab.train.train_step`` (jitted, state donated) with
Adam on a uint8 in-memory batch (scaled to [0, 1] on device). PyTorch (when installed): the same
architecture in eager mode with ``torch.set_num_threads(THREADS)``, Adam, float32 NCHW batches.
The two run interleaved in one process (JAX block, PyTorch block, per model and repeat), so load
from other processes hits both alike; each figure is the median over ``--repeats`` blocks of
``--steps`` steps after warm-up; the ratio is JAX images/s over PyTorch images/s.

    python benchmarks/train_throughput.py                      # all three models, 7 repeats
    python benchmarks/train_throughput.py --models workshop_cnn --repeats 3 --steps 20
    CNNLAB_CONV_BACKWARD=xla python benchmarks/train_throughput.py   # plain XLA conv gradients
    CNNLAB_XLA_FLAGS=off python benchmarks/train_throughput.py       # YNNPACK convolutions

Like ``cnnlab train`` it opts in to XLA:CPU's multi-threaded convolutions
(:func:`cnnlab.xla_cpu.use_multithreaded_convolutions`).

It also checks that each train step compiled exactly once (``cnnlab.train.TRACE_COUNTS``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnlab import layers, models, train, xla_cpu

MODELS = ("workshop_cnn", "flax_cnn", "resnet_small")
THREADS = 2


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Timed:
    """Wall and CPU time of a block: images/s and images per CPU-second (the latter is what a
    loaded machine changes least; on an idle 2-core machine img/s ~ 2 x img/cpu-s at best)."""

    def __init__(self, images: int):
        self.images = images

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.rate = self.images / (time.perf_counter() - self.wall)
        self.cpu_rate = self.images / max(cpu_seconds() - self.cpu, 1e-9)


# --------------------------------------------------------------------------------------------
# JAX
# --------------------------------------------------------------------------------------------

class JaxRunner:
    """Adam train steps of one cnnlab model on fixed in-memory batches."""

    def __init__(self, name: str, batch: int, num_batches: int = 4, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.model = models.get(name, num_classes=10)
        tx = optax.adam(1e-3)
        self.state = train.create_train_state(self.model, tx, jax.random.key(seed), (28, 28, 1))
        self.images = [jnp.asarray(rng.integers(0, 256, (batch, 28, 28, 1), dtype=np.uint8))
                       for _ in range(num_batches)]
        self.labels = [jnp.asarray(rng.integers(0, 10, (batch,), dtype=np.int32))
                       for _ in range(num_batches)]
        self.key = jax.random.key(seed + 1)
        self.batch = batch
        self.i = 0

    def run(self, steps: int) -> Timed:
        """Run ``steps`` steps (timed until the device finishes)."""
        with Timed(steps * self.batch) as t:
            for _ in range(steps):
                k = self.i % len(self.images)
                self.state, metrics = train.train_step(self.state, self.images[k],
                                                       self.labels[k], self.key)
                self.i += 1
            jax.block_until_ready((self.state, metrics))
        return t


# --------------------------------------------------------------------------------------------
# PyTorch (optional)
# --------------------------------------------------------------------------------------------

def torch_model(name: str):
    """The same architectures in PyTorch (NCHW; padding giving the same output sizes)."""
    from torch import nn

    if name == "workshop_cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * 4 * 64, 10))
    if name == "flax_cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(7 * 7 * 64, 256), nn.ReLU(), nn.Linear(256, 10))
    if name == "resnet_small":
        return TorchResNetSmall(models.get(name, num_classes=10))
    raise ValueError(name)


def TorchResNetSmall(flax_model):  # noqa: N802 - a factory standing in for a class
    """PyTorch twin of :class:`cnnlab.models.ResNetSmall`, built from its attributes."""
    from torch import nn

    def conv_bn(c_in, c_out, relu=True):
        layers_ = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                   nn.BatchNorm2d(c_out, momentum=0.1, eps=1e-5)]
        return layers_ + [nn.ReLU()] if relu else layers_

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(c, c), *conv_bn(c, c, relu=False))

        def forward(self, x):
            return nn.functional.relu(x + self.body(x))

    widths, hw = flax_model.widths, 28
    blocks = tuple(flax_model.blocks) + (0,) * (len(widths) - len(flax_model.blocks))
    layers_, c_in = [], 1
    for i, (w, n) in enumerate(zip(widths, blocks)):
        if i > 0:
            layers_.append(nn.MaxPool2d(2))
            hw //= 2
        layers_ += conv_bn(c_in, w) + [Residual(w) for _ in range(n)]
        c_in = w
    layers_ += [nn.Flatten(), nn.Linear(hw * hw * c_in, flax_model.hidden), nn.ReLU(),
                nn.Dropout(flax_model.dropout), nn.Linear(flax_model.hidden, 10)]
    return nn.Sequential(*layers_)


class TorchRunner:
    def __init__(self, name: str, batch: int, num_batches: int = 4, seed: int = 0):
        import torch

        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        self.torch = torch
        self.model = torch_model(name)
        self.model.train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.images = [torch.rand(batch, 1, 28, 28, generator=g) for _ in range(num_batches)]
        self.labels = [torch.randint(0, 10, (batch,), generator=g) for _ in range(num_batches)]
        self.batch = batch
        self.i = 0

    def run(self, steps: int) -> Timed:
        torch = self.torch
        with Timed(steps * self.batch) as t:
            for _ in range(steps):
                k = self.i % len(self.images)
                self.opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(self.model(self.images[k]),
                                                         self.labels[k])
                loss.backward()
                self.opt.step()
                self.i += 1
        return t


def eval_seconds(name: str, repeats: int = 3) -> tuple[int, float, float]:
    """Seconds of ``cnnlab.train.evaluate`` over the Fashion-MNIST test split (what
    ``cnnlab evaluate`` runs), compile excluded: (images, first call incl. compile, median)."""
    from cnnlab import data, distributed

    ds = data.load("fashion_mnist")
    mesh = distributed.make_mesh()
    model = models.get(name, num_classes=len(ds.class_names))
    state = train.create_train_state(model, optax.adam(1e-3), jax.random.key(0),
                                     ds.test.images.shape[1:])
    shardings = distributed.state_shardings(state, mesh)
    state = jax.device_put(state, shardings)
    _, eval_fn = train.make_step_fns(train.StepOptions(), mesh, shardings)
    feeder = train.BatchFeeder(ds.test, mesh)
    bs = train.TrainConfig().eval_batch_size
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        train.evaluate(state, feeder, eval_fn, bs)
        times.append(time.perf_counter() - t)
    return len(ds.test.labels), times[0], statistics.median(times[1:])


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=models.names())
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=30, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=7, help="timed blocks per framework and model")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (incl. compile)")
    p.add_argument("--pause", type=float, default=0.5, help="seconds of rest before each block")
    p.add_argument("--no-torch", action="store_true", help="JAX figures only")
    p.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation timing")
    args = p.parse_args(argv)
    xla_cpu.use_multithreaded_convolutions()  # before JAX starts (CNNLAB_XLA_FLAGS=off: not)

    have_torch = torch_available() and not args.no_torch
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; "
          f"conv backward: {layers.conv_backward_mode()}; multi-threaded convolutions: "
          f"{xla_cpu.convolutions_are_multithreaded()}; batch {args.batch}, float32, "
          f"{args.repeats} x {args.steps} steps")
    if have_torch:
        import torch

        torch.set_num_threads(THREADS)
        print(f"torch {torch.__version__}, eager, set_num_threads({THREADS})")
    elif not args.no_torch:
        print("torch not installed: JAX figures only (pip install torch to compare)")

    load0 = os.getloadavg()[0]
    runners = {}
    for name in args.models:
        t = time.perf_counter()
        jr = JaxRunner(name, args.batch)
        before = train.TRACE_COUNTS["train_step"]
        jr.run(args.warmup)
        compile_s = time.perf_counter() - t
        traces = train.TRACE_COUNTS["train_step"] - before
        tr = TorchRunner(name, args.batch) if have_torch else None
        if tr is not None:
            tr.run(args.warmup)
        runners[name] = (jr, tr, traces, compile_s)

    before_timing = train.TRACE_COUNTS["train_step"]
    results = {name: ([], []) for name in args.models}
    for _ in range(args.repeats):
        for name in args.models:
            jr, tr, _, _ = runners[name]
            # A pause before each block: the other runtime's worker threads spin for a while
            # after their last task (OpenMP, Eigen) and would steal the cores.
            time.sleep(args.pause)
            results[name][0].append(jr.run(args.steps))
            if tr is not None:
                time.sleep(args.pause)
                results[name][1].append(tr.run(args.steps))

    retraced = train.TRACE_COUNTS["train_step"] - before_timing  # must stay 0
    print(f"\nload average (1 min) before/after: {load0:.1f} / {os.getloadavg()[0]:.1f}")
    med = statistics.median
    header = f"{'model':<14} {'JAX img/s':>10} {'(min-max)':>13}"
    if have_torch:
        header += f" {'torch img/s':>11} {'(min-max)':>13} {'ratio':>6}"
    header += f" {'JAX img/cpu-s':>13}"
    if have_torch:
        header += f" {'torch img/cpu-s':>15} {'ratio':>6}"
    print(header + f" {'compile s':>9} {'compiles':>8}")
    ok = True
    for name in args.models:
        jr, tr, traces, compile_s = runners[name]
        js, ts = results[name]
        ok &= traces == 1 and retraced == 0
        j_rates = [t.rate for t in js]
        line = f"{name:<14} {med(j_rates):>10.0f} {f'({min(j_rates):.0f}-{max(j_rates):.0f})':>13}"
        if tr is not None:
            t_rates = [t.rate for t in ts]
            # Median of the ratios of neighbouring (interleaved) blocks: load drifts cancel.
            ratio = med(a.rate / b.rate for a, b in zip(js, ts))
            line += (f" {med(t_rates):>11.0f} {f'({min(t_rates):.0f}-{max(t_rates):.0f})':>13}"
                     f" {ratio:>5.2f}x")
        line += f" {med(t.cpu_rate for t in js):>13.0f}"
        if tr is not None:
            cpu_ratio = med(a.cpu_rate / b.cpu_rate for a, b in zip(js, ts))
            line += f" {med(t.cpu_rate for t in ts):>15.0f} {cpu_ratio:>5.2f}x"
        print(line + f" {compile_s:>9.1f} {traces + retraced:>8}")
    if not args.no_eval:
        print("\ninference: cnnlab.train.evaluate over the test split (what `cnnlab evaluate` "
              "runs), batch 1000")
        for name in args.models:
            n, first, median = eval_seconds(name)
            print(f"{name:<14} {n:,} images: {median:.2f} s after compile "
                  f"({n / median:,.0f} img/s; first call incl. compile {first:.1f} s)")
    if not ok:
        print("ERROR: a train step compiled more than once", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
