"""DCGAN training throughput (images/s), JAX/Flax vs PyTorch eager, and the transposed
convolution alone.

1. The whole GAN step of ``cnnlab gan`` (:func:`cnnlab.gan.make_train_step`: discriminator update
   on a real and a generated batch, then generator update through the updated discriminator;
   jitted, state donated) against the same architecture in PyTorch eager (the workshop's
   DCGAN: Dense 100 -> 7x7x128, two ConvTranspose 128@4x4/2 "same", Conv 1@7x7, sigmoid;
   discriminator two Conv 64@3x3/2, dropout 0.4, Dense 1; LeakyReLU 0.2; Adam 2e-4, beta1 0.5;
   BCE on logits), batch 128 of 28x28x1, ``torch.set_num_threads(2)``.
2. One transposed convolution, forward and both gradients (the generator's 14x14 -> 28x28,
   128 -> 128 channels, batch 128): ``cnnlab.conv_transpose.conv_transpose2d`` (per output phase),
   XLA's ``lax.conv_transpose`` (zero-dilated input) and ``torch.nn.ConvTranspose2d``.

Blocks run interleaved in one process (JAX, PyTorch, per repeat; 0.5 s rest before each, as in
``train_throughput.py``, so that neither runtime's spinning threads steal the other's cores):
load from other processes hits both alike. Each figure is the median over ``--repeats`` blocks
of ``--steps`` steps after warm-up; the ratio is JAX over PyTorch.

    python benchmarks/dcgan_throughput.py                      # 5 repeats of 10 steps
    python benchmarks/dcgan_throughput.py --repeats 3 --steps 5 --batch-size 64
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from cnnlab import conv_transpose
from cnnlab.config import GanConfig
from cnnlab.gan import Gan, make_train_step
from jax import lax

THREADS = 2


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def timed(fn, steps: int, batch: int, pause: float) -> float:
    """images/s of ``steps`` calls of ``fn`` (which blocks until its result is ready)."""
    time.sleep(pause)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return steps * batch / (time.perf_counter() - t0)


def jax_gan_step(batch: int):
    config = GanConfig()
    gan = Gan.from_config(config, (28, 28, 1))
    step = make_train_step(gan)
    holder = {"state": gan.init(jax.random.PRNGKey(0), (28, 28, 1))}
    real = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, 28, 28, 1)), jnp.uint8)
    labels = jnp.zeros(batch, jnp.int32)  # ignored: the GAN is unconditional
    key = jax.random.PRNGKey(1)

    def run():
        holder["state"], metrics = step(holder["state"], real, labels, key)
        jax.block_until_ready(metrics["d_loss"])

    return run


def torch_gan_step(batch: int):
    import torch  # noqa: PLC0415 - PyTorch is optional: only when it is installed
    from torch import nn  # noqa: PLC0415 - as above

    torch.manual_seed(0)
    generator = nn.Sequential(
        nn.Linear(100, 7 * 7 * 128), nn.LeakyReLU(0.2), nn.Unflatten(1, (128, 7, 7)),
        nn.ConvTranspose2d(128, 128, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(128, 128, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(128, 1, 7, padding=3), nn.Sigmoid())
    discriminator = nn.Sequential(
        nn.Conv2d(1, 64, 3, 2, 1), nn.LeakyReLU(0.2), nn.Dropout(0.4),
        nn.Conv2d(64, 64, 3, 2, 1), nn.LeakyReLU(0.2), nn.Dropout(0.4),
        nn.Flatten(), nn.Linear(7 * 7 * 64, 1))
    g_opt = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    real = torch.rand(batch, 1, 28, 28)
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)

    def run():
        fake = generator(torch.randn(batch, 100)).detach()
        d_opt.zero_grad()
        d_loss = bce(discriminator(real), ones) + bce(discriminator(fake), zeros)
        d_loss.backward()
        d_opt.step()
        g_opt.zero_grad()
        g_loss = bce(discriminator(generator(torch.randn(batch, 100))), ones)
        g_loss.backward()
        g_opt.step()   # only the generator's optimizer steps: the discriminator stays put

    return run


def jax_transpose(batch: int, fast: bool):
    r = np.random.default_rng(0)
    x = jnp.asarray(r.standard_normal((batch, 14, 14, 128)), jnp.float32)
    k = jnp.asarray(r.standard_normal((4, 4, 128, 128)) * 0.02, jnp.float32)
    if fast:
        def f(x, k):
            return conv_transpose.conv_transpose2d(x, k, 2, "SAME")
    else:
        def f(x, k):
            return lax.conv_transpose(x, k, (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    grad = jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(f(x, k) ** 2), (0, 1)))

    def run():
        jax.block_until_ready(grad(x, k))

    return run


def torch_transpose(batch: int):
    import torch  # noqa: PLC0415 - PyTorch is optional: only when it is installed

    layer = torch.nn.ConvTranspose2d(128, 128, 4, 2, 1)
    x = torch.randn(batch, 128, 14, 14, requires_grad=True)

    def run():
        (layer(x) ** 2).sum().backward()

    return run


def torch_available() -> bool:
    try:
        import torch  # noqa: PLC0415, F401 - is PyTorch installed?
    except ImportError:
        return False
    torch.set_num_threads(THREADS)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--pause", type=float, default=0.5)
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    have_torch = not args.no_torch and torch_available()
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); jax {jax.__version__}; "
          f"load average (1 min) {os.getloadavg()[0]:.1f}")
    if not have_torch:
        print("torch not installed (pip install torch==2.13.0 for the side-by-side figures)")
    contenders = {
        "GAN step": {"jax": jax_gan_step(args.batch_size),
                     **({"torch": torch_gan_step(args.batch_size)} if have_torch else {})},
        "conv transpose 14->28x128 fwd+bwd": {
            "jax": jax_transpose(args.batch_size, fast=True),
            "jax (XLA conv_transpose)": jax_transpose(args.batch_size, fast=False),
            **({"torch": torch_transpose(args.batch_size)} if have_torch else {})},
    }
    for group in contenders.values():   # warm-up: compile, first allocations
        for run in group.values():
            run()
            run()
    rates = {(g, name): [] for g, group in contenders.items() for name in group}
    for _ in range(args.repeats):
        for g, group in contenders.items():
            for name, run in group.items():
                rates[(g, name)].append(timed(run, args.steps, args.batch_size, args.pause))
    print(f"\nbatch {args.batch_size}, median of {args.repeats} blocks of {args.steps} steps "
          f"(images/s):")
    for g, group in contenders.items():
        med = {name: statistics.median(rates[(g, name)]) for name in group}
        line = "  ".join(f"{name} {v:,.0f}" for name, v in med.items())
        ratio = f"  -> jax/torch {med['jax'] / med['torch']:.2f}x" if "torch" in med else ""
        print(f"  {g}: {line}{ratio}")
    print(f"load average (1 min) after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
