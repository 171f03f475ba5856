"""Devices, meshes and shardings: one program from a laptop CPU to a TPU pod slice.

Everything is JAX's own machinery: a :func:`jax.make_mesh` mesh over all devices with a ``data``
axis (and optionally a ``model`` axis), :class:`~jax.sharding.NamedSharding` for batches (split
along ``data``) and for the train state (replicated, or split by :func:`param_spec`), and
``jax.jit`` with in/out shardings. No pmap, no cluster code of our own: several processes (hosts)
join through :func:`jax.distributed.initialize`, which is called only when several processes are
configured or a real launcher started them (:func:`detect_launcher`). Each process then feeds
the rows of the global batch that live on its own devices (:func:`local_rows`), assembled into
one global array with :func:`jax.make_array_from_process_local_data` (:func:`global_batch`).

On one device all of this is the plain single-device program.

>>> mesh = make_mesh()
>>> dict(mesh.shape) == {"data": jax.device_count(), "model": 1}
True
>>> param_spec((3, 3, 16, 64), mesh) == P()   # replicated
True
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from cnnlab.errors import CnnlabError

DATA, MODEL = "data", "model"
# Parameters smaller than this stay replicated under the "fsdp" rule: splitting them saves
# nothing and costs a collective each.
FSDP_MIN_SIZE = 2**14


# SLURM's step ids of the batch script and the "extern" step: not a step started by srun.
_SLURM_SPECIAL_STEPS = {"4294967294", "4294967293", "batch", "extern"}


def _count(var: str) -> int:
    value = os.environ.get(var, "").strip()
    return int(value) if value.isdigit() else 0


def detect_launcher() -> tuple[str, int] | None:
    """``(launcher, process count)`` when a real multi-process launcher started this process,
    else None (one process).

    Only a launcher that starts every process counts, so the variables a job merely inherits do
    not (``SLURM_NTASKS=4`` in a batch script outside ``srun`` is one process):

    - a SLURM job step, i.e. inside ``srun``: ``SLURM_STEP_ID`` (not the batch or extern step),
      ``SLURM_PROCID`` and ``SLURM_STEP_NODELIST`` set, ``SLURM_STEP_NUM_TASKS`` (or
      ``SLURM_NTASKS``) > 1;
    - an MPI rank: ``OMPI_COMM_WORLD_SIZE`` > 1 with ``OMPI_COMM_WORLD_RANK`` (Open MPI), or
      ``PMI_SIZE`` > 1 with ``PMI_RANK`` (MPICH, Intel MPI);
    - a Cloud TPU pod slice: ``TPU_WORKER_HOSTNAMES`` naming more than one host.

    ``CNNLAB_DISTRIBUTED=1`` says "several" whatever the rest (JAX's own cluster detection then
    finds the coordinator), ``CNNLAB_DISTRIBUTED=0`` says "one".

    Returns:
      ``(a description such as "SLURM step 1234.0", number of processes)`` or None.

    >>> detect_launcher() is None   # a plain process
    True
    """
    forced = os.environ.get("CNNLAB_DISTRIBUTED", "").strip()
    if forced in ("0", "1"):
        return ("CNNLAB_DISTRIBUTED=1", 2) if forced == "1" else None
    env = os.environ
    step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID", "")).strip()
    if step and step not in _SLURM_SPECIAL_STEPS and "SLURM_PROCID" in env \
            and "SLURM_STEP_NODELIST" in env:
        n = _count("SLURM_STEP_NUM_TASKS") or _count("SLURM_NTASKS")
        if n > 1:
            return f"SLURM step {env.get('SLURM_JOB_ID', '?')}.{step}", n
    for size, rank, name in (("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "Open MPI"),
                             ("PMI_SIZE", "PMI_RANK", "MPI (PMI)")):
        if _count(size) > 1 and rank in env:
            return f"{name} rank {env[rank]}", _count(size)
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1:
        return "Cloud TPU pod slice", len(hosts)
    return None


def detected_process_count() -> int:
    """How many processes the launcher started (see :func:`detect_launcher`).

    Returns:
      The count; 1 without a launcher.
    """
    found = detect_launcher()
    return found[1] if found else 1


_initialized = False


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Join a multi-process job through :func:`jax.distributed.initialize`, when there is one.

    Explicit arguments (``--coordinator host:port --num-processes N --process-id I``) win;
    otherwise :func:`detect_launcher` decides and JAX's own cluster detection fills in the
    coordinator and ids (SLURM, Open MPI, Cloud TPU, ...). A single process does nothing. Must run
    before anything touches a device. ``CNNLAB_DISTRIBUTED_TIMEOUT`` (seconds, default 300) bounds
    the wait for the other processes.

    Args:
      coordinator: ``HOST:PORT`` of process 0 (``--coordinator``).
      num_processes: the number of processes (``--num-processes``).
      process_id: this process's id (``--process-id``).

    Returns:
      True when this process joined a multi-process job.

    Raises:
      CnnlabError: incomplete or inconsistent flags, or the start failed (one line saying which
        launcher was found and why it failed).
    """
    global _initialized
    if _initialized:
        return True
    explicit = [coordinator, num_processes, process_id]
    kwargs: dict = {}
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise CnnlabError("multi-process training needs all three of --coordinator HOST:PORT, "
                              "--num-processes N and --process-id I")
        if not 0 <= process_id < num_processes:
            raise CnnlabError(f"--process-id must be in [0, {num_processes}), got {process_id}")
        if num_processes == 1:
            return False
        how = f"--coordinator {coordinator}, process {process_id} of {num_processes}"
        kwargs = dict(coordinator_address=coordinator, num_processes=num_processes,
                      process_id=process_id)
    else:
        found = detect_launcher()
        if found is None:
            return False
        how = f"{found[0]}, {found[1]} processes"
    timeout = _count("CNNLAB_DISTRIBUTED_TIMEOUT") or 300
    try:
        kwargs = _resolve(kwargs, timeout)
        _preflight(kwargs["coordinator_address"], kwargs["process_id"], timeout)
        jax.distributed.initialize(initialization_timeout=timeout, **kwargs)
    except CnnlabError as e:
        raise CnnlabError(f"could not start jax.distributed ({how}): {e}") from None
    except Exception as e:  # noqa: BLE001 - JAX raises many kinds; all mean "could not start"
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise CnnlabError(f"could not start jax.distributed ({how}): {reason}; check that every "
                          "process runs the same command and can reach the coordinator, or set "
                          "CNNLAB_DISTRIBUTED=0 to run as one process") from None
    _initialized = True
    return True


def _resolve(kwargs: dict, timeout: int) -> dict:
    """Coordinator, process count and id: given, or from JAX's own cluster detection (the same
    code ``jax.distributed.initialize`` would run), so they can be checked before JAX connects.
    """
    if "coordinator_address" in kwargs:
        return kwargs
    from jax._src import clusters  # noqa: PLC0415 - JAX's cluster detection; multi-process only
    coordinator, n, pid, local_ids = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        os.environ.get("JAX_COORDINATOR_ADDRESS"), None, None, None, None, timeout)
    if coordinator is None or n is None or pid is None:
        raise CnnlabError("JAX found no coordinator for this launcher; pass --coordinator "
                          "HOST:PORT --num-processes N --process-id I")
    return dict(coordinator_address=coordinator, num_processes=n, process_id=pid,
                local_device_ids=local_ids)


def _preflight(coordinator: str, process_id: int, timeout: float) -> None:
    """Check what JAX's connect would otherwise turn into a process abort (a C++ fatal error,
    no Python exception): process 0 can bind the coordinator's port, the others can reach it
    within ``timeout`` seconds."""
    host, _, port_text = coordinator.rpartition(":")
    if not port_text.isdigit() or not host:
        raise CnnlabError(f"the coordinator address {coordinator!r} is not HOST:PORT")
    port, host = int(port_text), host.strip("[]")
    if process_id == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("", port))
            except OSError as e:
                raise CnnlabError(f"process 0 cannot listen on port {port} ({e.strerror}); pick "
                                  "another port") from None
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise CnnlabError(f"process {process_id} cannot reach the coordinator "
                                  f"{coordinator} ({e.strerror or e}) within {timeout:g} s; is "
                                  "process 0 running?") from None
            time.sleep(0.5)


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes logs, metrics and plots (every process
    takes part in checkpoints).

    Returns:
      True on process 0 (and in a single-process run).
    """
    return jax.process_index() == 0


def make_mesh(model_parallelism: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over all devices (of all processes): axes ``("data", "model")``, shape
    ``(D / model_parallelism, model_parallelism)``.

    Axis types are ``Auto`` (the compiler propagates shardings, GSPMD-style), so model code needs
    no sharding annotations.

    Args:
      model_parallelism: size of the ``model`` axis; must divide the number of devices.
      devices: the devices (default: every device of every process).

    Returns:
      The :class:`jax.sharding.Mesh`.

    Raises:
      CnnlabError: ``model_parallelism`` does not divide the device count.
    """
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if model_parallelism < 1 or n % model_parallelism:
        raise CnnlabError(f"--model-parallelism {model_parallelism} must divide the number of "
                          f"devices ({n})")
    return jax.make_mesh((n // model_parallelism, model_parallelism), (DATA, MODEL),
                         axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def data_size(mesh: Mesh) -> int:
    """Number of batch shards (the size of the ``data`` axis of ``mesh``); global batch sizes
    must be multiples of it.

    Args:
      mesh: from :func:`make_mesh`.

    Returns:
      The size of ``data``.
    """
    return mesh.shape[DATA]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of a batch: leading dimension split along ``data``, replicated along
    ``model``.

    Args:
      mesh: from :func:`make_mesh`.

    Returns:
      ``NamedSharding(mesh, P("data"))``.
    """
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of a value every device holds in full (keys, metrics).

    Args:
      mesh: from :func:`make_mesh`.

    Returns:
      ``NamedSharding(mesh, P())``.
    """
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

    Args:
      shape: the leaf's shape.
      mesh: the mesh (only its ``shape`` mapping is read).
      rule: "replicate" or "fsdp".

    Returns:
      A :class:`jax.sharding.PartitionSpec` (trailing ``None`` entries dropped).

    Raises:
      CnnlabError: an unknown rule.
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
    """A NamedSharding for every leaf of a (possibly abstract) pytree, by :func:`param_spec`.

    Args:
      abstract_state: a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g. a TrainState).
      mesh: from :func:`make_mesh`.
      rule: "replicate" or "fsdp".

    Returns:
      The same pytree with a :class:`~jax.sharding.NamedSharding` per leaf.
    """
    return jax.tree.map(
        lambda leaf: NamedSharding(mesh, param_spec(np.shape(leaf), mesh, rule)), abstract_state)


def local_rows(sharding: NamedSharding, num_rows: int) -> np.ndarray:
    """The rows of a (num_rows, ...) array sharded by ``sharding`` that live on this process's
    devices: what this process must feed to :func:`jax.make_array_from_process_local_data`.

    Args:
      sharding: a batch sharding (:func:`batch_sharding`).
      num_rows: the global number of rows.

    Returns:
      int64 indices in ascending order (all rows on a single process).
    """
    starts = set()
    for index in sharding.addressable_devices_indices_map((num_rows,)).values():
        s = index[0]
        starts.add((s.start or 0, num_rows if s.stop is None else s.stop))
    return np.concatenate([np.arange(a, b) for a, b in sorted(starts)]).astype(np.int64)


def global_batch(sharding: NamedSharding, local_data: np.ndarray, num_rows: int) -> jax.Array:
    """This process's rows -> the global array, sharded by ``sharding``.

    Args:
      sharding: the batch sharding.
      local_data: this process's rows (N_local, ...), in :func:`local_rows` order.
      num_rows: the global number of rows.

    Returns:
      A ``jax.Array`` of shape (num_rows, ...).
    """
    global_shape = (num_rows, *np.shape(local_data)[1:])
    return jax.make_array_from_process_local_data(sharding, np.asarray(local_data), global_shape)


def replicate_from_host(mesh: Mesh, value: np.ndarray) -> jax.Array:
    """A host array every process holds in full -> a replicated global array.

    Args:
      mesh: from :func:`make_mesh`.
      value: the same numpy array on every process.

    Returns:
      A ``jax.Array`` replicated on every device of ``mesh``.
    """
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, replicated(mesh), lambda idx: value[idx])


def to_host(tree):
    """Pytree of (possibly sharded, possibly multi-process) arrays -> numpy on every process.

    Fully replicated arrays are read from a local copy; others are all-gathered (a collective:
    every process must call this at the same point).

    Args:
      tree: a pytree of arrays (``jax.Array`` or anything numpy takes).

    Returns:
      The same pytree of numpy arrays.
    """
    def one(x):
        if not isinstance(x, jax.Array):
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        if x.is_fully_addressable:
            return np.asarray(x)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.tree.map(one, tree)
