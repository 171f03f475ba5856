"""The memory of a worker's whole process tree, enforced by the kernel: one cgroup per worker.

RLIMIT_AS binds each process alone, so a fork storm of memory hogs could take nproc x RLIMIT_AS;
polling the tree's memory (what :mod:`grader.sandbox` does without a cgroup) sees it only every
half second. A memory cgroup binds exactly: every page any process of the worker touches (its
forked children, its tmpfs files) is charged to it, and above the limit the kernel reclaims or
OOM-kills inside it. Used where the grader may create cgroups below its own:

* cgroup v1 (root, a writable ``memory`` hierarchy): ``memory.limit_in_bytes`` and, where swap is
  accounted, ``memory.memsw.limit_in_bytes`` (no swapping around the limit);
* cgroup v2 (a writable, delegated cgroup offering ``memory``; the grader moves into a leaf of its
  own to enable it below, :func:`_delegate`): ``memory.max``, ``memory.swap.max = 0`` and
  ``memory.oom.group`` (an OOM kills the whole worker).

Workers' cgroups are named ``cnnlab-worker-<grader pid>-<n>``; :func:`memory_parent` removes
those of graders that are gone (killed before their clean-up ran).
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import time
from pathlib import Path

_PREFIX = "cnnlab-worker-"
_COUNTER = itertools.count()


def _own_cgroups() -> list[tuple[Path, int]]:
    """The folders of this process's cgroups that hold the memory controller, as
    ``(path, version)``: where each hierarchy is mounted plus this process's path in it."""
    paths = {}  # "memory" (v1) and "cgroup2": this process's path in that hierarchy
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        paths.update(dict.fromkeys(["cgroup2"] if hid == "0" else controllers.split(","), path))
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, fs = line.partition(" - ")
        root, mount = fields.split()[3:5]
        fstype, _, options = fs.split()[:3]
        if fstype == "cgroup2":
            version, path = 2, paths.get("cgroup2")
        elif fstype == "cgroup" and "memory" in options.split(","):
            version, path = 1, paths.get("memory")
        else:
            continue
        if path is not None and (path + "/").startswith(root.rstrip("/") + "/"):
            found.append((Path(mount + path[len(root.rstrip("/")):]), version))
    return found


@functools.cache
def memory_parent() -> tuple[Path, int] | None:
    """The cgroup below which workers get theirs, and its version (1 or 2); None when this kernel
    or this process offers none (then the sandbox polls). Checked once per process, by creating
    and removing a child; cgroups left by graders that are gone are removed on the way."""
    try:
        candidates = _own_cgroups()
    except (OSError, ValueError):
        return None
    for folder, version in candidates:
        try:
            if version == 2 and "memory" not in (folder / "cgroup.subtree_control").read_text():
                _delegate(folder, "memory")
            probe = folder / f"{_PREFIX}probe-{os.getpid()}"
            probe.mkdir()
            probe.rmdir()
        except OSError:  # not ours to write (a read-only /sys/fs/cgroup in a container)
            continue
        _remove_stale(folder)
        return folder, version
    return None


def _delegate(folder: Path, controller: str) -> None:
    """Enable ``controller`` for the children of this process's cgroup v2 ``folder`` (one
    delegated to us, e.g. by ``systemd-run --scope -p Delegate=yes``). cgroup v2 lets a cgroup other
    than the root hand a controller to its children only while no process lives in it, so this
    process first moves into a leaf of its own (``cnnlab-worker-<pid>-grader``: swept like a
    worker's when it is gone). Raises OSError where that is refused (other processes remain)."""
    if controller not in (folder / "cgroup.controllers").read_text().split():
        raise OSError(f"no {controller} controller in {folder}")
    leaf = folder / f"{_PREFIX}{os.getpid()}-grader"
    leaf.mkdir(exist_ok=True)
    (leaf / "cgroup.procs").write_text(str(os.getpid()))
    (folder / "cgroup.subtree_control").write_text(f"+{controller}")


def _remove_stale(parent: Path) -> None:
    for folder in parent.glob(_PREFIX + "*"):
        pid = folder.name[len(_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            WorkerCgroup.remove(folder)


class WorkerCgroup:
    """One worker's cgroup below ``parent``, limited to ``limit_bytes`` of memory (swap included).

    ``procs_fd`` is its ``cgroup.procs`` open for writing: the child writes ``b"0"`` to it between
    fork and exec (so every process it starts is inside); :meth:`oom_killed` says whether the
    kernel killed a process for memory; :meth:`close` kills what is left and removes the cgroup.
    """

    def __init__(self, parent: Path, version: int, limit_bytes: int):
        self.version = version
        self.path = parent / f"{_PREFIX}{os.getpid()}-{next(_COUNTER)}"
        self.path.mkdir()
        # the first limit must hold; the others are set where the kernel has them
        limits = ({"memory.max": limit_bytes, "memory.swap.max": 0, "memory.oom.group": 1}
                  if version == 2 else
                  {"memory.limit_in_bytes": limit_bytes, "memory.memsw.limit_in_bytes": limit_bytes})
        try:
            for i, (name, value) in enumerate(limits.items()):
                if i == 0 or (self.path / name).exists():
                    (self.path / name).write_text(str(value))
            self.procs_fd = os.open(self.path / "cgroup.procs", os.O_WRONLY)
        except BaseException:
            self.remove(self.path)
            raise

    def oom_killed(self) -> bool:
        """Whether the kernel has OOM-killed a process of this cgroup (``oom_kill`` in v2's
        ``memory.events``, v1's ``memory.oom_control``)."""
        events = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            counts = dict(line.split() for line in (self.path / events).read_text().splitlines())
        except (OSError, ValueError):
            return False
        return counts.get("oom_kill", "0") != "0"

    def peak_bytes(self) -> int | None:
        """The most memory its processes held together (v1 ``memory.max_usage_in_bytes``, v2
        ``memory.peak``: kernels from 5.19), or None where the kernel does not say."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text())
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        os.close(self.procs_fd)
        self.remove(self.path)

    @staticmethod
    def remove(path: Path, wait_s: float = 10.0) -> None:
        """SIGKILL every process in the cgroup ``path`` until none is left, then remove it (one
        that stays busy for ``wait_s`` is left to the next grader's sweep)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                pids = (path / "cgroup.procs").read_text().split()
            except FileNotFoundError:
                return
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                path.rmdir()
                return
            except OSError:  # EBUSY: a process is still exiting
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)
