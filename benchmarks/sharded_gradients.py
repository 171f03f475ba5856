"""Gradients on 1 device vs the batch sharded over N devices, per parameter leaf (issue 11).

resnet_small (dropout off, batch norm in training mode), one batch of Fashion-MNIST training
images, the mean cross-entropy loss: its gradient computed with every array on one device, and
computed by ``jax.jit`` with the batch split along a mesh axis over N devices
(``NamedSharding(mesh, P("data"))``), once with cnnlab's layers and once with Flax's
(``nn.Conv``, ``nn.max_pool`` with the same window and stride). Prints, per parameter leaf, the
relative difference ``max|g_N - g_1| / max|g_1|`` for both, and between cnnlab's and Flax's
layers on N devices::

    python benchmarks/sharded_gradients.py                      # 4 devices, batch 128
    python benchmarks/sharded_gradients.py --devices 8 --batch 24

It sets ``--xla_force_host_platform_device_count`` itself (before JAX starts), so it runs on one
CPU. Exits 1 when a leaf of cnnlab's gradients (N vs 1 device, or vs Flax's) differs by more
than ``--tolerance`` (default 1e-5). Before the fix of issue 11 (the max pool's gradient) the
first two stages were 20-55 % off on 4 devices; see the README, "Performance".
"""

from __future__ import annotations

import argparse
import functools
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--tolerance", type=float, default=1e-5)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    from cnnlab import data, layers, metrics, models
    from cnnlab.models import resnet_small

    ds = data.load("fashion_mnist")
    x = jnp.asarray(ds.train.images[:args.batch], jnp.float32) / 255.0
    y = jnp.asarray(ds.train.labels[:args.batch], jnp.int32)
    model = models.get("resnet_small", num_classes=10, dropout=0.0)
    variables = model.init(jax.random.key(0), x[:1], train=False)

    def loss(params, x, y):
        logits, _ = model.apply({**variables, "params": params}, x, train=True,
                                mutable=["batch_stats"])
        return metrics.cross_entropy(logits, y).mean()

    def gradients(x, y, sharded: bool):
        grad = jax.jit(jax.grad(loss))
        if sharded:
            mesh = jax.make_mesh((args.devices,), ("data",), devices=jax.devices()[:args.devices],
                                 axis_types=(AxisType.Auto,))
            x = jax.device_put(x, NamedSharding(mesh, P("data")))
            y = jax.device_put(y, NamedSharding(mesh, P("data")))
        else:
            x, y = jax.device_put((x, y), jax.devices()[0])
        return jax.device_get(grad(variables["params"], x, y))

    flax_pool = functools.partial(nn.max_pool, strides=(2, 2))
    grads = {}
    for label, conv, pool in (("cnnlab", layers.Conv, layers.max_pool),
                              ("flax", nn.Conv, flax_pool)):
        # the model module's globals, looked up when the model is called
        resnet_small.Conv, resnet_small.max_pool = conv, pool
        grads[label] = gradients(x, y, False), gradients(x, y, True)
    resnet_small.Conv, resnet_small.max_pool = layers.Conv, layers.max_pool

    def relative(a, b):
        return {jax.tree_util.keystr(path): float(np.max(np.abs(u - v))
                                                  / max(np.max(np.abs(u)), 1e-30))
                for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(a),
                                        jax.tree.leaves(b))}

    n = args.devices
    columns = {f"cnnlab {n} vs 1": relative(*grads["cnnlab"]),
               f"flax {n} vs 1": relative(*grads["flax"]),
               f"cnnlab vs flax, {n}": relative(grads["flax"][1], grads["cnnlab"][1])}
    print(f"resnet_small, batch {args.batch} of Fashion-MNIST ({ds.source.split(';')[0]}), "
          f"1 device vs {n} devices, jax {jax.__version__}")
    print("relative gradient difference max|g_a - g_b| / max|g_b| per parameter leaf:")
    names = list(columns)
    width = max(len(k) for k in columns[names[0]])
    print(f"{'leaf':<{width}}  " + "  ".join(f"{c:>20}" for c in names))
    for leaf in columns[names[0]]:
        print(f"{leaf:<{width}}  " + "  ".join(f"{columns[c][leaf]:20.2e}" for c in names))
    worst = max(max(columns[names[0]].values()), max(columns[names[2]].values()))
    print(f"worst leaf of cnnlab: {worst:.2e} (tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
