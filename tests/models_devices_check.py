"""Every registered model trains the same on 8 devices as on 1 (run in a subprocess).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/models_devices_check.py \
        --models mlp workshop_cnn ... [--steps 3] [--batch 16] [--no-threefry-partitionable]

For each model: the train step of ``cnnlab.train`` (``make_train_step``: augmentation on, dropout
and batch norm in training mode where the model has them), a few momentum-SGD steps from the
same initial state on the same batches of the embedded Fashion-MNIST subset (28x28x1; random RGB
32x32 images for the ImageNet backbones), once on a mesh of 1 device and once with the batch
split over 8. Prints one JSON line per model: ``{"model", "leaves": {leaf: relative
difference}}`` where the difference of a leaf (every parameter and batch statistic) is
``max|a8 - a1| / max(max|a1|, 1e-2)``.

Momentum SGD rather than Adam: Adam divides by sqrt(v), which turns float rounding in near-zero
gradients into full-size steps and would measure its own noise rather than the sharding.

The images are dequantized, ``(pixel + u) / 256`` with ``u ~ U[0, 1)`` (fixed seed), so that no
max-pool window holds equal entries. Why: the gradient of a max goes to one maximum of its window;
where several entries are equal (Fashion-MNIST's zero background) float rounding, which differs
with the rows per device (vector body vs. tail of XLA's loops), may make another one the largest,
and that window's gradient then goes there: a different, equally valid subgradient. It happens
with Flax's own ``nn.max_pool`` and XLA's convolutions too (resnet_small, 56 real images, one SGD
step at lr 1: 0.9 % in a batch-norm bias on 8 devices vs 1; 5e-7 with the dequantized images).
Everything else (a lost or misrouted gradient, as the max pool of issue 11 had) still shows.

A leaf is compared relative to its largest entry, but never to less than 1e-2: the biases of
convolutions followed by batch norm (ResNet50) have zero gradient in exact arithmetic, so their
values are rounding noise (1e-9) whose relative difference means nothing.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnlab import data, distributed, models, train

# Models that need RGB input of their own size (ImageNet backbones), with their options.
RGB_MODELS = {"vgg16": dict(classifier="avg"), "resnet50": {}}


def batches(name: str, batch: int, steps: int, dtype=np.float32):
    """``steps`` batches (dequantized images in [0, 1) of ``dtype``, int32 labels), the input
    shape."""
    rng = np.random.default_rng(0)
    if name in RGB_MODELS:
        images = rng.integers(0, 256, (steps * batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, steps * batch).astype(np.int32)
    else:
        ds = data.load("fashion_mnist_subset")
        images, labels = ds.train.images[: steps * batch], ds.train.labels[: steps * batch]
    images = ((images + rng.uniform(0, 1, images.shape)) / 256).astype(dtype)
    return [(images[i * batch:(i + 1) * batch], labels[i * batch:(i + 1) * batch].astype(np.int32))
            for i in range(steps)], images.shape[1:]


def train_on(devices, model, tx, input_shape, feed, dtype=jnp.float32) -> dict:
    """A few train steps on a mesh of ``devices``, the whole state in ``dtype``; the final
    params and batch stats on host."""
    mesh = distributed.make_mesh(devices=devices)

    def create(key):
        state = train.create_train_state(model, tx, key, input_shape)
        return jax.tree.map(lambda x: x.astype(dtype) if x.dtype == jnp.float32 else x, state)

    abstract = jax.eval_shape(create, jax.random.key(0))
    shardings = distributed.state_shardings(abstract, mesh)
    state = jax.jit(create, out_shardings=shardings)(jax.random.key(0))
    options = train.StepOptions(augment=True)
    train_fn = train.make_train_step(options=options, mesh=mesh, state_sharding=shardings)
    rows = distributed.batch_sharding(mesh)
    run_key = jax.device_put(jax.random.key(1), distributed.replicated(mesh))
    for images, labels in feed:
        state, _ = train_fn(state, jax.device_put(images, rows), jax.device_put(labels, rows),
                            run_key)
    return jax.device_get({"params": state.params, "batch_stats": state.batch_stats})


def relative_differences(a, b) -> dict[str, float]:
    return {jax.tree_util.keystr(path): float(
        np.max(np.abs(np.asarray(y, np.float64) - np.asarray(x, np.float64)))
        / max(float(np.max(np.abs(np.asarray(x, np.float64)))), 1e-2))
        for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--no-threefry-partitionable", action="store_true")
    p.add_argument("--float64", action="store_true",
                   help="train in float64 (state and images): rounding no longer hides anything")
    args = p.parse_args(argv)
    dtype = jnp.float32
    if args.float64:
        jax.config.update("jax_enable_x64", True)
        dtype = jnp.float64
    if args.no_threefry_partitionable:
        jax.config.update("jax_threefry_partitionable", False)
    assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
    tx = optax.sgd(0.05, momentum=0.9)
    for name in args.models:
        feed, input_shape = batches(name, args.batch, args.steps, dtype)
        model = models.get(name, num_classes=10, **RGB_MODELS.get(name, {}))
        one = train_on(jax.devices()[:1], model, tx, input_shape, feed, dtype)
        eight = train_on(jax.devices(), model, tx, input_shape, feed, dtype)
        print(json.dumps({"model": name, "leaves": relative_differences(one, eight),
                          "batch_stats": len(jax.tree.leaves(one["batch_stats"]))}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
