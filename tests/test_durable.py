"""Runs that lose nothing (issue 11, points 4 and 6): SIGTERM/SIGINT save the current step and the
resumed run is bit-identical, damaged checkpoints are skipped with one line, saving a step again
never fails, and multi-process start-up happens only under a real launcher and fails in one line.

The signals are real (``Popen.send_signal`` to a real ``cnnlab train``), the checkpoints real
orbax directories damaged on disk.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from cnnlab import checkpoints, configs, distributed, train
from cnnlab.checkpoints import Checkpoints
from cnnlab.errors import CnnlabError

# Dropout, batch norm and augmentation: every kind of state and randomness has to survive.
# One mid-epoch checkpoint of its own, at step 610: the test signals once it exists, so the signal
# lands inside the second epoch (611..1199), where any other checkpoint can only come from it.
CONFIG_FILE = textwrap.dedent("""
    from cnnlab.config import TrainConfig

    def get_config():
        return TrainConfig(model="resnet_small", model_kwargs={"widths": (4,), "dropout": 0.3},
                           dataset="fashion_mnist_subset", epochs=2, batch_size=8,
                           max_steps_per_epoch=600, eval_batch_size=500, augment=True,
                           optimizer="adam", learning_rate=1e-3, checkpoint_every_steps=610,
                           plots=False, seed=0)
""")
STEPS = 600  # per epoch
MID = 610
DROP = ("epoch_seconds", "images_per_second", "seconds")


@pytest.fixture(scope="module")
def config_file(write_config) -> Path:
    return write_config("durable.py", CONFIG_FILE)


@pytest.fixture(scope="module")
def uninterrupted(config_file, env, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("uninterrupted")
    train.train_and_evaluate(configs.get(str(config_file)), str(workdir))
    return workdir


def arrays(workdir):
    """Every array of the newest checkpoint, the optimizer state included."""
    return jax.device_get(train.load_run(str(workdir), step="latest", optimizer=True)
                          .state.arrays())


def assert_same_run(a: Path, b: Path) -> None:
    x, y = arrays(a), arrays(b)
    assert int(x["step"]) == int(y["step"]) == 2 * STEPS
    for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(x), jax.tree.leaves(y)):
        np.testing.assert_array_equal(u, v, err_msg=jax.tree_util.keystr(path))
    strip = lambda rs: [{k: v for k, v in r.items() if k not in DROP} for r in rs]  # noqa: E731
    assert strip(train.read_metrics(str(a))) == strip(train.read_metrics(str(b)))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_the_current_step_and_the_resumed_run_is_bit_identical(
        signum, uninterrupted, config_file, env, tmp_path):
    workdir = tmp_path / "signalled"
    cmd = [sys.executable, "-m", "cnnlab", "train", "--config", str(config_file), "--workdir",
           str(workdir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    mid_epoch = workdir / "checkpoints" / str(MID)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not mid_epoch.is_dir():
        time.sleep(0.005)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, (proc.returncode, err[-2000:])

    steps = sorted(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())
    stop = steps[-1]  # saved by the signal, in the middle of the second epoch
    assert steps == [STEPS, MID, stop] and MID < stop < 2 * STEPS, steps
    name = signal.Signals(signum).name
    assert err.strip().splitlines()[-1] == (
        f"cnnlab: stopped by {name} at step {stop} (checkpoint of step {stop} saved); "
        f"continue with: cnnlab train --workdir {workdir} --resume"), err[-2000:]
    assert "Traceback" not in err

    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming from step {stop} " in r.stdout, r.stdout
    assert_same_run(uninterrupted, workdir)


def _damage_data(step_dir: Path) -> None:
    """Cut every array data file of the state item short (a disk that filled up)."""
    files = [f for f in (step_dir / "state" / "d").iterdir() if f.is_file()]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _delete_data(step_dir: Path) -> None:
    for f in (step_dir / "state" / "d").iterdir():
        f.unlink()


def _damage_metadata(step_dir: Path) -> None:
    path = step_dir / "state" / "_METADATA"
    path.write_text(path.read_text()[:40])


@pytest.mark.parametrize("damage,culprit", [(_damage_data, "/state/d/"),
                                            (_delete_data, "/state/"),
                                            (_damage_metadata, "/state/_METADATA")],
                         ids=["truncated", "missing", "bad_metadata"])
def test_a_damaged_newest_checkpoint_is_named_and_the_older_one_resumes_exactly(
        damage, culprit, uninterrupted, config_file, tmp_path):
    config = configs.get(str(config_file))
    workdir = tmp_path / "damaged"
    train.train_and_evaluate(config.replace(epochs=1), str(workdir))
    # The second epoch from the first's checkpoint, then the newest checkpoint is damaged.
    train.train_and_evaluate(config, str(workdir), resume=True)
    damage(workdir / "checkpoints" / str(2 * STEPS))

    notes = []

    class Notes(train.Reporter):
        def note(self, text):
            notes.append(text)

    train.train_and_evaluate(config, str(workdir), resume=True, reporter=Notes())
    skipped = [n for n in notes if n.startswith(f"checkpoint step {2 * STEPS} does not restore")]
    assert len(skipped) == 1 and culprit in skipped[0], notes
    assert "\n" not in skipped[0] and "damaged" in skipped[0]
    # the next older checkpoint: the mid-epoch one of the second epoch
    assert f"resuming from step {MID} " in " ".join(notes) + " ", notes
    assert (workdir / "checkpoints" / "damaged" / str(2 * STEPS)).is_dir()  # moved, not deleted
    assert_same_run(uninterrupted, workdir)


def test_when_no_checkpoint_restores_it_is_one_error(config_file, tmp_path):
    config = configs.get(str(config_file)).replace(epochs=1, max_steps_per_epoch=5)
    workdir = tmp_path / "all_damaged"
    train.train_and_evaluate(config, str(workdir))
    _damage_data(workdir / "checkpoints" / "5")
    with pytest.raises(CnnlabError, match=r"none of the checkpoints in .* \(steps 5\) restores"):
        train.train_and_evaluate(config.replace(epochs=2), str(workdir), resume=True)


def test_resuming_past_a_damaged_checkpoint_prints_one_line_and_no_traceback(
        config_file, env, tmp_path):
    """The command as a user runs it: the note is the only word about the damage (tensorstore's
    abandoned reads would print a traceback each, seconds later, without the fix)."""
    config = configs.get(str(config_file)).replace(epochs=1, max_steps_per_epoch=5)
    workdir = tmp_path / "damaged_cli"
    train.train_and_evaluate(config, str(workdir))
    train.train_and_evaluate(config.replace(epochs=2), str(workdir), resume=True)
    _damage_data(workdir / "checkpoints" / "10")
    r = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--workdir", str(workdir),
                        "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Event loop is closed" not in r.stderr, r.stderr
    assert not r.stderr.strip(), r.stderr
    notes = [ln for ln in r.stdout.splitlines() if "checkpoint step 10" in ln]
    assert len(notes) == 1 and notes[0].startswith("note: checkpoint step 10 does not restore (") \
        and "/checkpoints/10/state/d/" in notes[0], r.stdout
    assert "note: resuming from step 5 " in r.stdout, r.stdout


def _log_of_a_never_retrieved_task(message: str) -> list[str]:
    """What asyncio logs when a task that failed with ValueError(message) is collected."""
    async def read():
        raise ValueError(message)

    loop = asyncio.new_event_loop()
    task = loop.create_task(read())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("asyncio").addHandler(handler)
    try:
        del task
        gc.collect()
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    return [r.getMessage() for r in records]


def test_abandoned_checkpoint_reads_are_not_logged_other_task_errors_are(monkeypatch):
    """Python 3.13 logs the failed reads orbax abandons ("Task exception was never retrieved",
    with a tensorstore traceback) when their tasks are collected; after a restore failed they
    are dropped, and only they."""
    # Any earlier restore in this process (another test on the same worker) installed the
    # filter already: start without it, and leave the logger as it was.
    monkeypatch.setattr(logging.getLogger("asyncio"), "filters", [])
    read_error = 'OUT_OF_RANGE: Error reading "x/.zarray" in OCDBT database at local file "/c/10"'
    assert _log_of_a_never_retrieved_task(read_error)   # what happens without the filter
    checkpoints._quiet_abandoned_reads()
    assert _log_of_a_never_retrieved_task(read_error) == []
    [other] = _log_of_a_never_retrieved_task("a bug of someone else's")
    assert other.startswith("Task exception was never retrieved") and "someone else" in other


def test_saving_a_step_again_never_fails(tmp_path):
    with Checkpoints(str(tmp_path / "ckpt"), keep=2) as ckpts:
        state = {"step": np.int32(3), "params": {"w": np.ones(4, np.float32)}, "batch_stats": {},
                 "opt_state": {"mu": np.zeros(4, np.float32)}}
        assert ckpts.save(3, state, {"step": 3}) is True
        ckpts.wait()
        changed = {**state, "params": {"w": np.full(4, 7, np.float32)}}
        assert ckpts.save(3, changed, {"step": 3}) is False   # the complete one is kept
        ckpts.wait()
        assert ckpts.all_steps() == [3]
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
            np.shape(x), np.asarray(x).dtype,
            sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])), state)
        restored, meta = ckpts.restore(target)
        np.testing.assert_array_equal(restored["params"]["w"], 1.0)
        assert meta == {"step": 3}


# ------------------------------------------------------------------------- multi-process start

LAUNCHERS = {
    "slurm batch script (no srun)": ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, None),
    "srun step": ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4",
                   "SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_STEP_NODELIST": "n[1-2]"},
                  4),
    "slurm batch step": ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "4294967294",
                          "SLURM_NTASKS": "4", "SLURM_PROCID": "0",
                          "SLURM_STEP_NODELIST": "n1"}, None),
    "open mpi": ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}, 2),
    "mpich": ({"PMI_SIZE": "3", "PMI_RANK": "0"}, 3),
    "tpu pod": ({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, 2),
    "tpu vm (one host)": ({"TPU_WORKER_HOSTNAMES": "10.0.0.2"}, None),
    "forced off": ({"CNNLAB_DISTRIBUTED": "0", "OMPI_COMM_WORLD_SIZE": "2",
                    "OMPI_COMM_WORLD_RANK": "1"}, None),
}


@pytest.mark.parametrize("case", list(LAUNCHERS))
def test_jax_distributed_starts_only_under_a_real_launcher(case, monkeypatch):
    for var in list(os.environ):
        if var.startswith(("SLURM_", "OMPI_", "PMI_", "TPU_", "CNNLAB_DISTRIBUTED")):
            monkeypatch.delenv(var)
    variables, expected = LAUNCHERS[case]
    for k, v in variables.items():
        monkeypatch.setenv(k, v)
    found = distributed.detect_launcher()
    assert (found[1] if found else None) == expected, found
    if expected is None:
        assert distributed.initialize() is False  # one process: nothing started


def test_a_failure_to_start_is_one_line(env, tmp_path):
    # Inside an srun step of 2 tasks, as task 1, with no task 0 anywhere.
    launcher = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2",
                "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
                "SLURM_STEP_NODELIST": "localhost", "CNNLAB_DISTRIBUTED_TIMEOUT": "2"}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--config", "smoke",
                        "--workdir", str(tmp_path / "w")], capture_output=True, text=True,
                       env={**env, **launcher}, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stderr.strip().splitlines() == [
        r.stderr.strip().splitlines()[-1]], r.stderr  # nothing but one line
    line = r.stderr.strip()
    assert line.startswith("cnnlab: error: could not start jax.distributed (SLURM step 77.0, "
                           "2 processes): process 1 cannot reach the coordinator"), line
    assert time.time() - t0 < 60
    assert not (tmp_path / "w" / "checkpoints").exists()
