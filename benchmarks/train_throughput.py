"""Steady-state training throughput (images/s): cnnlab against every peer that is installed.

Batch 128, float32, Adam 1e-3, data in memory, the same architectures in every framework:

- ``cnnlab``: ``cnnlab.train.train_step`` (jitted, state donated) on uint8 batches scaled on device;
- ``keras-jax`` / ``keras-torch``: Keras 3 (``KERAS_BACKEND=jax|torch``), ``model.fit`` over the
  block's batches (what a Keras user runs);
- ``torch``: PyTorch eager, ``torch.set_num_threads(THREADS)``, float32 NCHW;
- ``torch-compile``: the same model through ``torch.compile``;
- ``cnnlab-bf16``: cnnlab with ``precision="bf16"`` (bfloat16 compute, float32 parameters), not a
  peer but a variant: it is left out of "best peer".

Each framework runs in a process of its own (a Python for the peers is given by ``--peers-python``,
default ``.venv-peers/bin/python`` when it exists: the peers are never cnnlab dependencies), built
and warmed up once, then driven block by block over a pipe: the blocks alternate between the
frameworks (one computes while the others wait), so load from other processes hits all alike.
Each figure is the median over ``--repeats`` blocks of ``--steps`` steps; the ratio of cnnlab to a
peer is the median of the ratios of neighbouring blocks, and the last column is cnnlab over the
best peer. The CPU's model name and its AVX-512 / BF16 flags are printed: machines differ.

    python benchmarks/train_throughput.py                      # all three models, all peers
    python benchmarks/train_throughput.py --models workshop_cnn --repeats 3 --steps 20
    python benchmarks/train_throughput.py --peers torch keras-jax
    CNNLAB_CONV_BACKWARD=xla python benchmarks/train_throughput.py   # plain XLA conv gradients
    CNNLAB_XLA_FLAGS=off python benchmarks/train_throughput.py       # YNNPACK convolutions

Set up the peers once (PyPI; torch's CPU wheel is large)::

    python3 -m venv .venv-peers && .venv-peers/bin/pip install -e . keras torch

Like ``cnnlab train`` the cnnlab process opts in to XLA:CPU's multi-threaded convolutions
(:func:`cnnlab.xla_cpu.use_multithreaded_convolutions`), and it checks that each train step
compiled exactly once (``cnnlab.train.TRACE_COUNTS``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnlab import layers, models, train, xla_cpu

MODELS = ("workshop_cnn", "flax_cnn", "resnet_small")
PEERS = ("keras-jax", "keras-torch", "torch", "torch-compile", "cnnlab-bf16")
THREADS = 2
ROOT = Path(__file__).resolve().parents[1]


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

    def __init__(self, name: str, batch: int, num_batches: int = 4, seed: int = 0,
                 precision: str = "f32"):
        rng = np.random.default_rng(seed)
        self.step = train.make_train_step(options=train.StepOptions(precision=precision))
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
                self.state, metrics = self.step(self.state, self.images[k], self.labels[k],
                                                self.key)
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
    def __init__(self, name: str, batch: int, num_batches: int = 4, seed: int = 0,
                 compiled: bool = False):
        import torch

        torch.set_num_threads(THREADS)
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        self.torch = torch
        self.model = torch_model(name)
        self.model.train()
        if compiled:
            self.model = torch.compile(self.model)
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
    eval_fn = train.make_eval_step(mesh=mesh, state_sharding=shardings)
    feeder = data.BatchFeeder(ds.test, mesh)
    bs = train.TrainConfig().eval_batch_size
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        train.evaluate(state, feeder, eval_fn, bs)
        times.append(time.perf_counter() - t)
    return len(ds.test.labels), times[0], statistics.median(times[1:])


def keras_model(name: str):
    """The same architectures in Keras 3 (NHWC, as cnnlab), compiled with Adam 1e-3."""
    import keras
    from keras import layers as kl

    x = inp = keras.Input((28, 28, 1))
    if name == "workshop_cnn":
        for f in (16, 32, 64):
            x = kl.Conv2D(f, 3, strides=2, padding="same", activation="relu")(x)
        x = kl.Dense(10)(kl.Flatten()(x))
    elif name == "flax_cnn":
        for f in (32, 64):
            x = kl.AveragePooling2D(2)(kl.Conv2D(f, 3, padding="same", activation="relu")(x))
        x = kl.Dense(10)(kl.Dense(256, activation="relu")(kl.Flatten()(x)))
    elif name == "resnet_small":
        flax_model = models.get(name, num_classes=10)
        blocks = tuple(flax_model.blocks) + (0,) * (len(flax_model.widths) - len(flax_model.blocks))

        def conv_bn(x, w, relu=True):
            x = kl.BatchNormalization(momentum=0.9, epsilon=1e-5)(
                kl.Conv2D(w, 3, padding="same", use_bias=False)(x))
            return kl.ReLU()(x) if relu else x

        for i, (w, n) in enumerate(zip(flax_model.widths, blocks)):
            if i > 0:
                x = kl.MaxPooling2D(2, padding="same")(x)
            x = conv_bn(x, w)
            for _ in range(n):
                x = kl.ReLU()(kl.Add()([x, conv_bn(conv_bn(x, w), w, relu=False)]))
        x = kl.Dense(flax_model.hidden, activation="relu")(kl.Flatten()(x))
        x = kl.Dense(10)(kl.Dropout(flax_model.dropout)(x))
    else:
        raise ValueError(name)
    model = keras.Model(inp, x)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class KerasRunner:
    """``model.fit`` over ``steps`` in-memory batches per block (one epoch of them)."""

    def __init__(self, name: str, batch: int, seed: int = 0):
        import keras

        keras.utils.set_random_seed(seed)
        self.model = keras_model(name)
        self.batch = batch
        rng = np.random.default_rng(seed)
        self.data = {}
        self.rng = rng

    def run(self, steps: int) -> Timed:
        if steps not in self.data:
            n = steps * self.batch
            self.data[steps] = (self.rng.random((n, 28, 28, 1), dtype=np.float32),
                                self.rng.integers(0, 10, (n,)).astype(np.int32))
        x, y = self.data[steps]
        with Timed(steps * self.batch) as t:
            self.model.fit(x, y, batch_size=self.batch, epochs=1, shuffle=False, verbose=0)
        return t


def make_runner(framework: str, name: str, batch: int):
    if framework.startswith("cnnlab"):
        return JaxRunner(name, batch, precision="bf16" if framework == "cnnlab-bf16" else "f32")
    if framework.startswith("keras-"):
        return KerasRunner(name, batch)
    if framework in ("torch", "torch-compile"):
        return TorchRunner(name, batch, compiled=framework == "torch-compile")
    raise ValueError(framework)


def serve(framework: str, name: str, batch: int, warmup: int) -> int:
    """The child: build, warm up, say ``ready``; then one JSON line per ``run STEPS`` line."""
    if framework.startswith("cnnlab"):
        xla_cpu.use_multithreaded_convolutions()  # before JAX starts (CNNLAB_XLA_FLAGS=off: not)
    t = time.perf_counter()
    runner = make_runner(framework, name, batch)
    before = train.TRACE_COUNTS["train_step"]
    runner.run(warmup)
    warm = {"ready": True, "warmup_s": time.perf_counter() - t, "version": version(framework)}
    if framework.startswith("cnnlab"):
        warm["traces"] = train.TRACE_COUNTS["train_step"] - before
        warm["multithreaded_conv"] = xla_cpu.convolutions_are_multithreaded()
        warm["conv_backward"] = layers.conv_backward_mode()
    print(json.dumps(warm), flush=True)
    for line in sys.stdin:
        steps = int(line.split()[1])
        before = train.TRACE_COUNTS["train_step"]
        r = runner.run(steps)
        print(json.dumps({"rate": r.rate, "cpu_rate": r.cpu_rate,
                          "retraced": train.TRACE_COUNTS["train_step"] - before}), flush=True)
    return 0


def version(framework: str) -> str:
    if framework.startswith("cnnlab"):
        return f"jax {jax.__version__}"
    if framework.startswith("keras-"):
        import keras
        return f"keras {keras.__version__} on {keras.backend.backend()}"
    import torch
    return f"torch {torch.__version__}"


class Peer:
    """One framework's process, driven block by block."""

    def __init__(self, framework: str, python: str, name: str, args):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if framework.startswith("keras-"):
            env["KERAS_BACKEND"] = framework.split("-", 1)[1]
        self.framework = framework
        # stderr to a file: a pipe nobody reads would block a chatty child (compiler logs)
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [python, __file__, "--serve", framework, "--models", name, "--batch", str(args.batch),
             "--warmup", str(args.warmup)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, text=True, env=env, cwd=ROOT)
        self.info = self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            status = self.proc.wait()
            self.stderr.seek(0)
            err = self.stderr.read().strip().splitlines()
            raise RuntimeError(err[-1] if err else f"exited with status {status}")
        return json.loads(line)

    def run(self, steps: int) -> dict:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.stderr.close()


def cpu_description() -> str:
    """lscpu's model name and whether the CPU has AVX-512 and AVX512-BF16 / AMX."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}; {os.cpu_count()} CPUs; flags: {', '.join(have) or 'none of avx2/avx512'}"


def peers_python(given: str | None) -> str:
    if given:
        return given
    venv = ROOT / ".venv-peers" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def start_peers(name: str, frameworks, python: str, args) -> dict:
    """Start each framework's process for model ``name``; those that cannot start are named."""
    started = {}
    for fw in frameworks:
        try:
            started[fw] = Peer(fw, sys.executable if fw.startswith("cnnlab") else python, name,
                               args)
        except (RuntimeError, OSError, json.JSONDecodeError) as e:
            print(f"  {fw}: not run ({str(e)[:160]})", flush=True)
    return started


def report(name: str, peers: dict, blocks: dict) -> bool:
    """One table per model: img/s (min-max) and img/CPU-s per framework, ratios of cnnlab."""
    med = statistics.median
    ours = blocks.get("cnnlab", [])
    print(f"\n{name}")
    print(f"  {'framework':<14} {'img/s':>8} {'(min-max)':>15} {'img/cpu-s':>9} "
          f"{'cnnlab/it':>9} {'warm-up s':>9}  version")
    best = None
    for fw, bl in blocks.items():
        rates = [b["rate"] for b in bl]
        ratio = med(a["rate"] / b["rate"] for a, b in zip(ours, bl)) if ours else float("nan")
        if not fw.startswith("cnnlab") and (best is None or ratio < best[1]):
            best = (fw, ratio)
        print(f"  {fw:<14} {med(rates):>8.0f} {f'({min(rates):.0f}-{max(rates):.0f})':>15} "
              f"{med(b['cpu_rate'] for b in bl):>9.0f} {ratio:>8.2f}x "
              f"{peers[fw].info['warmup_s']:>9.1f}  {peers[fw].info['version']}")
    if best is not None and ours:
        print(f"  cnnlab / best peer ({best[0]}): {best[1]:.2f}x")
    if "cnnlab" not in peers:
        return True
    info = peers["cnnlab"].info
    retraced = sum(b["retraced"] for b in ours)
    print(f"  cnnlab: conv backward {info['conv_backward']}, multi-threaded convolutions "
          f"{info['multithreaded_conv']}, train step compiled {info['traces'] + retraced} time(s)")
    return info["traces"] == 1 and retraced == 0


def run_model(name: str, frameworks, python: str, args) -> bool:
    peers = start_peers(name, frameworks, python, args)
    blocks = {fw: [] for fw in peers}
    try:
        for _ in range(args.repeats):
            for fw, peer in peers.items():
                # A pause before each block: another runtime's worker threads spin for a while
                # after their last task (OpenMP, Eigen) and would steal the cores.
                time.sleep(args.pause)
                blocks[fw].append(peer.run(args.steps))
    finally:
        for peer in peers.values():
            peer.close()
    return report(name, peers, blocks)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=models.names())
    p.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS,
                   help="peers to run beside cnnlab (those not installed are skipped)")
    p.add_argument("--peers-python", default=None,
                   help="the Python with keras/torch (default: .venv-peers/bin/python if present)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=30, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per framework and model")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (incl. compile)")
    p.add_argument("--pause", type=float, default=0.5, help="seconds of rest before each block")
    p.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation timing")
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # the child's framework
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.models[0], args.batch, args.warmup)

    python = peers_python(args.peers_python)
    print(f"CPU: {cpu_description()}")
    print(f"batch {args.batch}, float32, Adam 1e-3; {args.repeats} blocks x {args.steps} steps per "
          f"framework, interleaved, each framework in its own process; peers' Python: {python}")
    load0 = os.getloadavg()
    ok = True
    for name in args.models:
        ok &= run_model(name, ["cnnlab", *args.peers], python, args)
    print(f"\nload average (1, 5, 15 min) before: {' '.join(f'{x:.1f}' for x in load0)}; after: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if not args.no_eval:
        print("\ninference: cnnlab.train.evaluate over the test split (what `cnnlab evaluate` "
              "runs), batch 1000")
        xla_cpu.use_multithreaded_convolutions()
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
