"""Devices, meshes and shardings: one program from a laptop CPU to a TPU pod slice.

Everything is JAX's own machinery: a :func:`jax.make_mesh` mesh over all devices with a ``data``
axis (and optionally a ``model`` axis), :class:`~jax.sharding.NamedSharding` for batches (split
along ``data``) and for the train state (replicated, or split by :func:`param_spec`), and
``jax.jit`` with in/out shardings. No pmap, no cluster code of our own: several processes (hosts)
join through :func:`jax.distributed.initialize`, which is called only when several processes are
configured or detected (:func:`initialize`). Each process then feeds the rows of the global batch
that live on its own devices (:func:`local_rows`), assembled into one global array with
:func:`jax.make_array_from_process_local_data` (:func:`global_batch`).

On one device all of this is the plain single-device program.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from cnnlab.errors import CnnlabError

DATA, MODEL = "data", "model"
# Parameters smaller than this stay replicated under the "fsdp" rule: splitting them saves
# nothing and costs a collective each.
FSDP_MIN_SIZE = 2**14


def detected_process_count() -> int:
    """How many processes the environment says this job has (1 when it says nothing).

    SLURM (``SLURM_NTASKS``), Open MPI (``OMPI_COMM_WORLD_SIZE``), Cloud TPU pod slices
    (``TPU_WORKER_HOSTNAMES``, one host name per worker) and ``JAX_NUM_PROCESSES``.
    ``CNNLAB_DISTRIBUTED=1`` says "several" whatever the rest (JAX's cluster detection then finds
    the coordinator, e.g. from the TPU metadata server); ``CNNLAB_DISTRIBUTED=0`` says "one".
    """
    forced = os.environ.get("CNNLAB_DISTRIBUTED", "").strip()
    if forced in ("0", "1"):
        return 2 if forced == "1" else 1
    if os.environ.get("SLURM_JOB_ID"):
        n = os.environ.get("SLURM_NTASKS") or os.environ.get("SLURM_NPROCS")
        if n and n.isdigit() and int(n) > 1:
            return int(n)
    for var in ("OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES"):
        n = os.environ.get(var, "")
        if n.isdigit() and int(n) > 1:
            return int(n)
    hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    return max(1, len(hosts))


_initialized = False


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Join a multi-process job through :func:`jax.distributed.initialize`, when there is one.

    Explicit arguments (``--coordinator host:port --num-processes N --process-id I``) win;
    otherwise the environment decides (:func:`detected_process_count`) and JAX's own cluster
    detection fills in the coordinator and ids (SLURM, Cloud TPU, ...). A single process does
    nothing. Must run before anything touches a device. Returns True when initialized.
    """
    global _initialized
    if _initialized:
        return True
    explicit = [coordinator, num_processes, process_id]
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise CnnlabError("multi-process training needs all three of --coordinator HOST:PORT, "
                              "--num-processes N and --process-id I")
        if not 0 <= process_id < num_processes:
            raise CnnlabError(f"--process-id must be in [0, {num_processes}), got {process_id}")
        if num_processes == 1:
            return False
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    elif detected_process_count() > 1:
        jax.distributed.initialize()
    else:
        return False
    _initialized = True
    return True


def is_main_process() -> bool:
    """Process 0 writes logs, metrics and plots; every process takes part in checkpoints."""
    return jax.process_index() == 0


def make_mesh(model_parallelism: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over all devices (of all processes): axes ``("data", "model")``, shape
    ``(D / model_parallelism, model_parallelism)``.

    Axis types are ``Auto`` (the compiler propagates shardings, GSPMD-style), so model code needs
    no sharding annotations.
    """
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if model_parallelism < 1 or n % model_parallelism:
        raise CnnlabError(f"--model-parallelism {model_parallelism} must divide the number of "
                          f"devices ({n})")
    return jax.make_mesh((n // model_parallelism, model_parallelism), (DATA, MODEL),
                         axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def data_size(mesh: Mesh) -> int:
    """Number of batch shards (the size of the ``data`` axis)."""
    return mesh.shape[DATA]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split along ``data``; replicated along ``model``."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def param_spec(shape: Sequence[int], mesh: Mesh, rule: str = "replicate") -> P:
    """The partition of one state leaf (parameter, batch statistic or optimizer moment), by shape.

    - ``replicate``: every device holds everything (data parallelism).
    - ``fsdp``: leaves with at least ``FSDP_MIN_SIZE`` elements are split along ``data`` on their
      largest dimension that divides evenly (ZeRO-3 / fully-sharded data parallelism; the compiler
      inserts the all-gathers).
    Independently of the rule, when the mesh has a ``model`` axis larger than 1, the last
    dimension of each >= 2-D leaf that divides evenly is split along ``model`` (output features of
    conv and dense kernels: tensor parallelism for the large backbones).
    Optimizer moments have their parameter's shape, so they land on the same devices.
    """
    if rule not in ("replicate", "fsdp"):
        raise CnnlabError(f"unknown sharding rule {rule!r}; choose one of: replicate, fsdp")
    spec: list[str | None] = [None] * len(shape)
    m = mesh.shape.get(MODEL, 1)
    if m > 1 and len(shape) >= 2 and shape[-1] % m == 0:
        spec[-1] = MODEL
    d = mesh.shape[DATA]
    if rule == "fsdp" and d > 1 and int(np.prod(shape, dtype=np.int64)) >= FSDP_MIN_SIZE:
        free = [i for i in range(len(shape)) if spec[i] is None and shape[i] % d == 0]
        if free:
            spec[max(free, key=lambda i: shape[i])] = DATA
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def state_shardings(abstract_state, mesh: Mesh, rule: str = "replicate"):
    """A NamedSharding for every leaf of a (possibly abstract) pytree, by :func:`param_spec`."""
    return jax.tree.map(
        lambda leaf: NamedSharding(mesh, param_spec(np.shape(leaf), mesh, rule)), abstract_state)


def local_rows(sharding: NamedSharding, num_rows: int) -> np.ndarray:
    """Indices of the rows of a (num_rows, ...) array sharded by ``sharding`` that live on this
    process's devices, in order: what this process must feed to
    :func:`jax.make_array_from_process_local_data`. All rows on one process."""
    starts = set()
    for index in sharding.addressable_devices_indices_map((num_rows,)).values():
        s = index[0]
        starts.add((s.start or 0, num_rows if s.stop is None else s.stop))
    return np.concatenate([np.arange(a, b) for a, b in sorted(starts)]).astype(np.int64)


def global_batch(sharding: NamedSharding, local_data: np.ndarray, num_rows: int) -> jax.Array:
    """This process's rows (``local_data``, in :func:`local_rows` order) -> the global array of
    ``num_rows`` rows, sharded by ``sharding``."""
    global_shape = (num_rows, *np.shape(local_data)[1:])
    return jax.make_array_from_process_local_data(sharding, np.asarray(local_data), global_shape)


def replicate_from_host(mesh: Mesh, value: np.ndarray) -> jax.Array:
    """A host array every process holds in full -> a replicated global array."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, replicated(mesh), lambda idx: value[idx])


def to_host(tree):
    """Pytree of (possibly sharded, possibly multi-process) arrays -> numpy on every process.

    Fully replicated arrays are read from a local copy; others are all-gathered (a collective:
    every process must call this at the same point).
    """
    def one(x):
        if not isinstance(x, jax.Array):
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        if x.is_fully_addressable:
            return np.asarray(x)
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.tree.map(one, tree)
