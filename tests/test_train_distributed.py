"""Scale-out (issue 6): 8 devices == 1 device, checkpoints moving between device counts, two
processes through jax.distributed == one process, SIGKILL mid-epoch + --resume == uninterrupted,
bf16 compute with f32 state.

Multi-device runs happen in subprocesses with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
so this test process (and the rest of the suite) keeps its single device.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import configs, models, train

# Batch norm, dropout and augmentation: every kind of state and randomness crosses devices.
CONFIG_FILE = textwrap.dedent("""
    from cnnlab.train import TrainConfig

    def get_config():
        return TrainConfig(model="resnet_small", model_kwargs={"widths": (4,), "dropout": 0.3},
                           dataset="fashion_mnist_subset", epochs=2, batch_size=32,
                           max_steps_per_epoch=6, eval_batch_size=500, augment=True,
                           # SGD with momentum, not Adam: Adam divides by sqrt(v), which turns
                           # float rounding in near-zero gradients into full-size steps and so
                           # measures its own noise rather than the sharding.
                           optimizer="momentum", learning_rate=0.05, schedule="constant",
                           plots=False, seed=0)
""")


@pytest.fixture(scope="module")
def config_file(write_config) -> Path:
    return write_config("tiny_resnet.py", CONFIG_FILE)


@pytest.fixture(scope="module")
def one_device_run(config_file, env, tmp_path_factory):
    """The reference: 2 epochs on this process's single device."""
    workdir = tmp_path_factory.mktemp("one_device")
    train.train_and_evaluate(configs.get(str(config_file)), str(workdir))
    return workdir


def arrays(workdir):
    """Every array of the newest checkpoint, the optimizer state included."""
    run = train.load_run(str(workdir), step="latest", optimizer=True)
    return jax.device_get(run.state.arrays())


def max_difference(a, b) -> float:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_8_devices_equal_1_device_and_checkpoints_move_between_device_counts(
        one_device_run, config_file, env, tmp_path):
    # Epoch 1 on one device; the 8-device process continues it (save on 1, restore on 8).
    half = tmp_path / "half"
    train.train_and_evaluate(configs.get(str(config_file)).replace(epochs=1), str(half))
    shutil.copytree(half, tmp_path / "continued_on_8")
    script = textwrap.dedent(f"""
        import json, jax
        from cnnlab import configs, train
        train.enable_compilation_cache()
        config = configs.get({str(config_file)!r})
        assert jax.device_count() == 8, jax.devices()
        # from scratch, pure data parallelism: the batch of 32 split 8 ways
        _, a = train.train_and_evaluate(config, {str(tmp_path / "eight")!r})
        # resume a 1-device checkpoint on a 4 x 2 mesh (kernels split along "model")
        _, b = train.train_and_evaluate(config.replace(model_parallelism=2),
                                     {str(tmp_path / "continued_on_8")!r}, resume=True)
        print(json.dumps([a["devices"], b["devices"], a["test_accuracy"]]))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                       env=dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=8"))
    assert r.returncode == 0, r.stderr[-3000:]
    devices_a, devices_b, _ = json.loads(r.stdout.strip().splitlines()[-1])
    assert devices_a == devices_b == 8
    mesh = json.loads((tmp_path / "eight" / "run.json").read_text())["mesh"]
    assert mesh == {"data": 8, "model": 1}
    assert json.loads((tmp_path / "continued_on_8" / "run.json").read_text())["mesh"] == {
        "data": 4, "model": 2}

    reference = arrays(one_device_run)
    # Saved on 8 devices, restored here on 1 (load_run lays everything on one device).
    assert max_difference(arrays(tmp_path / "eight"), reference) < 1e-5
    assert max_difference(arrays(tmp_path / "continued_on_8"), reference) < 1e-5
    assert int(arrays(tmp_path / "eight")["step"]) == 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_through_jax_distributed_equal_one(one_device_run, config_file, env,
                                                         tmp_path):
    workdir = tmp_path / "two_processes"
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "train", "--config", str(config_file), "--workdir",
         str(workdir), "--coordinator", f"localhost:{port}", "--num-processes", "2",
         "--process-id", str(i),
         # each process gathers its own rows from host memory (the path for big data sets)
         "--no-data-on-device"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "test accuracy" in outs[0][0]
    assert "test accuracy" not in outs[1][0]  # only process 0 reports and writes
    info = json.loads((workdir / "run.json").read_text())
    assert info["processes"] == 2 and info["devices"] == 2
    assert max_difference(arrays(workdir), arrays(one_device_run)) < 1e-5


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(config_file, env, tmp_path):
    # Longer epochs with a checkpoint every 10 steps, so the kill lands inside an epoch.
    long_file = tmp_path / "long.py"
    long_file.write_text(CONFIG_FILE.replace("max_steps_per_epoch=6", "max_steps_per_epoch=60")
                         .replace("plots=False", "plots=False, checkpoint_every_steps=10"))
    config = configs.get(str(long_file))
    reference = tmp_path / "uninterrupted"
    train.train_and_evaluate(config, str(reference))

    workdir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cnnlab", "train", "--config", str(long_file), "--workdir",
           str(workdir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ckpt_dir = workdir / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = [int(n) for n in (os.listdir(ckpt_dir) if ckpt_dir.is_dir() else []) if n.isdigit()]
        if any(0 < s < 60 for s in done):  # a mid-epoch checkpoint of epoch 1 is complete
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"

    steps = sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())
    assert steps and steps[-1] < 120, steps
    # A checkpoint cut short (as a kill during a save leaves it: orbax's temporary directory,
    # here with a larger step and half-written files) must never be the one restored.
    fake = ckpt_dir / f"{steps[-1] + 5}.orbax-checkpoint-tmp-1234567"
    shutil.copytree(ckpt_dir / str(steps[-1]), fake)
    for f in fake.rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming from step {steps[-1]} " in r.stdout, r.stdout
    assert not fake.exists()  # cleaned up when the checkpoint manager opened
    a, b = arrays(reference), arrays(workdir)
    assert int(a["step"]) == int(b["step"]) == 120
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    strip = lambda rs: [{k: v for k, v in r.items()  # noqa: E731
                         if k not in ("epoch_seconds", "images_per_second", "seconds")} for r in rs]
    assert strip(train.read_metrics(str(workdir))) == strip(train.read_metrics(str(reference)))


def all_equations(jaxpr):
    """Every equation of a jaxpr, including those inside jit / custom_vjp / ... sub-jaxprs."""
    for e in jaxpr.eqns:
        yield e
        for value in e.params.values():
            for sub in (value if isinstance(value, (list, tuple)) else [value]):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from all_equations(inner)


def test_bf16_computes_in_bfloat16_and_keeps_float32_state(env, tmp_path):
    model = models.get("resnet_small", num_classes=10, widths=(4,))
    tx = train.make_optimizer("adam", 1e-3)
    # Shapes only (nothing is compiled): what the forward pass computes in, by tracing it.
    state = jax.eval_shape(lambda k: train.create_train_state(model, tx, k, (28, 28, 1)),
                           jax.random.key(0))
    x = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)

    def forward(params, stats, x, train_mode):
        return train.apply_model(model.apply, params, stats, x, train=train_mode,
                                 rngs={"dropout": jax.random.key(1)}, precision="bf16")

    jaxpr = jax.make_jaxpr(lambda p, s, x: forward(p, s, x, True))(state.params,
                                                                  state.batch_stats, x)
    eqns = list(all_equations(jaxpr.jaxpr))
    convs = [e for e in eqns if e.primitive.name == "conv_general_dilated"]
    dots = [e for e in eqns if e.primitive.name == "dot_general"]
    assert convs and dots
    assert all(v.aval.dtype == jnp.bfloat16 for e in convs + dots for v in e.invars)
    logits, stats = jax.eval_shape(lambda p, s, x: forward(p, s, x, True), state.params,
                                   state.batch_stats, x)
    assert logits.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(stats))  # BN stats stay f32

    config = train.TrainConfig(model="workshop_cnn", dataset="fashion_mnist_subset", epochs=1,
                               batch_size=64, max_steps_per_epoch=30, eval_batch_size=300,
                               learning_rate=3e-3, precision="bf16", plots=False)
    _, final = train.train_and_evaluate(config, str(tmp_path))
    assert final["test_accuracy"] > 0.5 and final["precision"] == "bf16"
    saved = arrays(tmp_path)
    assert all(leaf.dtype in (np.float32, np.int32) for leaf in jax.tree.leaves(saved)), \
        {str(leaf.dtype) for leaf in jax.tree.leaves(saved)}


def test_sharding_rule_by_shape():
    from types import SimpleNamespace

    from jax.sharding import PartitionSpec as P

    from cnnlab import distributed
    mesh = SimpleNamespace(shape={"data": 4, "model": 2})
    assert distributed.param_spec((16,), mesh) == P()                      # biases: replicated
    assert distributed.param_spec((3, 3, 1, 16), mesh) == P(None, None, None, "model")
    assert distributed.param_spec((3, 3, 1, 15), mesh) == P()              # 15 does not split
    big = (784, 256)
    assert distributed.param_spec(big, mesh, "fsdp") == P("data", "model")
    assert distributed.param_spec((64,), mesh, "fsdp") == P()              # too small to split
    one = SimpleNamespace(shape={"data": 1, "model": 1})
    assert distributed.param_spec(big, one, "fsdp") == P()


def test_multi_process_flags_must_come_together(monkeypatch):
    from cnnlab import distributed
    from cnnlab.errors import CnnlabError
    with pytest.raises(CnnlabError, match="all three"):
        distributed.initialize("localhost:1234", None, 0)
    with pytest.raises(CnnlabError, match="process-id"):
        distributed.initialize("localhost:1234", 2, 5)
    # Inside an srun step of 16 tasks (tests/test_durable.py checks every launcher).
    for var, value in (("SLURM_JOB_ID", "7"), ("SLURM_NTASKS", "16"), ("SLURM_STEP_ID", "0"),
                       ("SLURM_PROCID", "3"), ("SLURM_STEP_NODELIST", "node[01-16]")):
        monkeypatch.setenv(var, value)
    assert distributed.detected_process_count() == 16
    monkeypatch.setenv("CNNLAB_DISTRIBUTED", "0")
    assert distributed.detected_process_count() == 1


def test_feeding_from_device_or_from_host_gives_the_same_batches():
    from cnnlab import data, distributed
    ds = data.load("fashion_mnist_subset")
    mesh = distributed.make_mesh()
    on_device = data.BatchFeeder(ds.test, mesh, on_device=True)
    from_host = data.BatchFeeder(ds.test, mesh, on_device=False)
    idx = np.array([5, 999, 0, 5, 17, 3, 640, 2])
    for feeder in (on_device, from_host):
        images, labels = feeder.batch(idx)
        np.testing.assert_array_equal(images, ds.test.images[idx])
        np.testing.assert_array_equal(labels, ds.test.labels[idx])
        assert images.sharding == distributed.batch_sharding(mesh)
