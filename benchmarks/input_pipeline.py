"""Is the input pipeline ever the bottleneck? Images/s it delivers vs. images/s training consumes.

Pipeline = what feeds one train step: the epoch's shuffled batch indices (host), the batch gathered
by index (``cnnlab.train.BatchFeeder``: from the device-resident data set, and from host memory
through ``jax.make_array_from_process_local_data``), then augmentation (random pad-and-crop and
flip) and normalisation on device. Training = steady-state ``train_step`` of the stronger small
model (``resnet_small``) at the same batch size. Prints both and the ratio (issue 6 asks >= 5x).

    .venv/bin/python benchmarks/input_pipeline.py [--batch-size 128] [--batches 300]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax

from cnnlab import data, distributed, models, train, xla_cpu


def pipeline_rate(ds, mesh, *, batch_size: int, batches: int, on_device: bool) -> float:
    feeder = train.BatchFeeder(ds.train, mesh, on_device=on_device)

    @jax.jit
    def prepare(images, step):
        key = jax.random.fold_in(jax.random.key(0), step)
        return data.normalize(data.augment(key, images))

    def run(n):
        out = None
        epoch, order = -1, None
        steps_per_epoch = len(ds.train) // batch_size
        for step in range(n):
            if step // steps_per_epoch != epoch:
                epoch = step // steps_per_epoch
                order = data.batch_indices(len(ds.train), batch_size, seed=0, epoch=epoch)
            images, labels = feeder.batch(order[step % steps_per_epoch])
            out = prepare(images, step)
        jax.block_until_ready(out)

    run(3)  # compile
    t = time.perf_counter()
    run(batches)
    return batches * batch_size / (time.perf_counter() - t)


def training_rate(ds, *, model_name: str, batch_size: int, steps: int) -> float:
    model = models.get(model_name, num_classes=ds.num_classes)
    config = train.TrainConfig(model=model_name)
    tx = train.make_optimizer(config, 100)
    state = train.create_train_state(model, tx, jax.random.key(0), ds.image_shape)
    step = functools.partial(train.train_step, options=train.StepOptions(augment=True))
    images = ds.train.images[:batch_size]
    labels = ds.train.labels[:batch_size]
    key = jax.random.key(1)
    for _ in range(3):  # compile and warm up
        state, m = step(state, images, labels, key)
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, images, labels, key)
    jax.block_until_ready(m)
    return steps * batch_size / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--train-steps", type=int, default=15)
    parser.add_argument("--model", default="resnet_small")
    args = parser.parse_args()
    xla_cpu.use_multithreaded_convolutions()  # as cnnlab train does

    ds = data.load("fashion_mnist")
    mesh = distributed.make_mesh()
    print(f"data: {ds.source}; {jax.device_count()} device(s) ({jax.devices()[0].platform}); "
          f"batch {args.batch_size}")
    on_dev = pipeline_rate(ds, mesh, batch_size=args.batch_size, batches=args.batches,
                           on_device=True)
    print(f"pipeline, data set on device      : {on_dev:12,.0f} images/s")
    host = pipeline_rate(ds, mesh, batch_size=args.batch_size, batches=args.batches,
                         on_device=False)
    print(f"pipeline, host rows -> global array: {host:12,.0f} images/s")
    rate = training_rate(ds, model_name=args.model, batch_size=args.batch_size,
                         steps=args.train_steps)
    print(f"training {args.model:<26}: {rate:12,.0f} images/s")
    worst = min(on_dev, host)
    verdict = "ok" if worst >= 5 * rate else "BELOW the 5x target"
    print(f"pipeline / training = {on_dev / rate:.1f}x (device-resident), {host / rate:.1f}x "
          f"(host path): {verdict}")


if __name__ == "__main__":
    main()
