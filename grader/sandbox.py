"""Run untrusted student code in a sandboxed child process.

``Sandbox(limits)(argv, cwd=..., timeout_s=...) -> LaunchResult`` is the launcher that
``grader.runner.grade_submission(..., launcher=...)`` calls for every worker process. What binds:

* always: a wall-clock timeout that kills the whole process tree (and, optionally, a heartbeat:
  the run ends when a progress file stops changing); rlimits on CPU seconds (``RLIMIT_CPU``),
  address space (``RLIMIT_AS``; JAX needs about 1.6 GB of it to import, so keep it >= 3 GB)
  and/or data segment (``RLIMIT_DATA``), file size (``RLIMIT_FSIZE``), open files, no core files;
  stdout/stderr read incrementally and kept as a bounded head + tail, so gigabytes of printing cost
  neither memory nor disk; a clean environment (no tokens, no compilation or reference caches); a
  cap on what the child leaves in its work dir; with a sandbox uid, a cap on the memory of all its
  processes together (RLIMIT_AS binds each process alone).
* mode "namespaces" (root and a working ``unshare``, the default when available): new network,
  PID, mount, IPC and UTS namespaces; the child runs as an unprivileged uid with no account, one
  uid per concurrent sandbox, so ``RLIMIT_NPROC`` -- which counts a uid's threads machine-wide and
  never binds root -- bounds each sandbox on its own and a fork storm cannot starve a neighbour.
  When the sandbox's first process exits or is killed (also when the grader dies: parent-death
  signal), the kernel kills everything left in its PID namespace. /tmp, /var/tmp, /dev/shm and
  /run/lock are small private tmpfs with only the work dir bound back in; folders others cannot
  traverse (e.g. /root) are replaced by an empty tmpfs with only what the worker needs bound back
  (the Python installation); the source checkout is hidden except for lib/, grader/ (without
  grader/expected/ and grader/hidden/), exercises/ and .venv, so solutions/, .git/ (whose history
  holds the solutions), tests/ and results cannot be read; ``Limits.hide`` hides more (the class's
  submissions and results, the reference cache).
* mode "user" (root, but namespaces forbidden, as in most Docker containers): the unprivileged uid
  with its process limit, and every process of that uid killed after the run; what must stay
  secret has to be unreadable by file modes (:meth:`Sandbox.protections_off` lists what is not).
* mode "none" (not root): rlimits, timeout and output caps only.
* the work dir itself and the files directly in it stay root-owned and read-only (the child can
  read its request but neither replace nor delete it); its sub-folders belong to the child. After
  every run, symlinks, hard links, FIFOs and device files left there are deleted, so a result file
  can never be a link to the expected outputs.

:func:`warn_protections_off` prints once, as one warning line, which protections are off and why.

The sandbox's first process (PID 1 of the namespaces) is this very file run as a script
(``python -I -S sandbox.py --init CONFIG``), so this module uses only the standard library and
never imports the grader package.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pwd
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GiB = 1 << 30
MiB = 1 << 20
KiB = 1 << 10

# World-writable places on a Debian system; inside the sandbox each becomes a private small tmpfs.
_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
# What a worker needs from a source checkout; every other top-level entry of it is hidden.
_REPO_ALLOW = ("lib", "grader", "exercises", ".venv", "pyproject.toml", "README.md", "Makefile")
# Environment variables passed through to the child (by exact name or prefix); everything else is
# dropped so no instructor token or CI secret reaches student code.
_ENV_KEEP = ("PATH", "LANG", "TZ", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED",
             "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV")
_ENV_KEEP_PREFIXES = ("LC_", "JAX_", "XLA_", "TF_CPP_", "CNNLAB_", "GRADER_", "OMP_", "OPENBLAS_",
                      "MKL_")
# ... except these: a cache of reference outputs or compiled code must never be shared with (and
# so poisoned or read by) student code.
_ENV_DROP = ("CNNLAB_CACHE_DIR", "CNNLAB_JAX_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR")


@dataclasses.dataclass(frozen=True)
class LaunchResult:
    """What one sandboxed run produced (the launcher contract of ``grader.runner``).

    ``returncode`` is the child's exit status, or ``-signal`` when a signal ended it; ``stdout`` and
    ``stderr`` are capped (head + tail); ``reason`` is a human sentence when a limit or the sandbox
    ended the run (timeout, CPU, memory, file size, disk, crash), else ``None``.
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    reason: str | None
    duration_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run. ``None`` switches a limit off.

    cpu_s: RLIMIT_CPU per process; ``None`` means 2 x the wall-clock timeout (JAX runs several
      threads, whose CPU seconds add up).
    address_space_bytes: RLIMIT_AS. 1 GB kills JAX at import (SIGSEGV); 2 GB imports; 4 GB default.
    data_bytes: RLIMIT_DATA (heap + anonymous mappings only; JAX imports fine under 1 GB).
    file_size_bytes: RLIMIT_FSIZE, the largest file the child may write.
    nproc: RLIMIT_NPROC, processes *and threads* of the sandbox uid (JAX alone starts ~17 threads).
    nofile: RLIMIT_NOFILE.
    output_bytes: stdout and stderr each keep at most this many bytes (half head, half tail).
    workdir_bytes / workdir_files: what the child may leave in its work dir (polled; killed above).
    tmpfs_bytes: size of each private /tmp, /var/tmp, /dev/shm, /run/lock (mode "namespaces").
    mode: "namespaces", "user" or "none" (see :class:`Sandbox`); None picks the best available
      (or ``$CNNLAB_SANDBOX_MODE`` when set).
    uid_base / uid_slots: concurrent sandboxes run as uids uid_base .. uid_base + uid_slots - 1.
    hide: further paths (files or folders) the child must not see, e.g. submissions and results.
    total_memory_bytes: memory (proportional set size) of all the sandbox uid's processes together
      (polled; the run is ended above it). RLIMIT_AS binds each process alone, so without this a
      fork storm of memory hogs could take nproc x RLIMIT_AS; only in the modes with a sandbox uid.
    heartbeat_file / heartbeat_s: a file (relative to the work dir) the child rewrites as it makes
      progress; when it is older than ``heartbeat_s`` the run is ended as timed out. The grader's
      worker rewrites ``out/progress.json`` before each exercise, so a hang that ignores the
      worker's own per-exercise alarm costs one exercise's time, not the whole module's budget.
    """

    cpu_s: float | None = None
    address_space_bytes: int | None = 4 * GiB
    data_bytes: int | None = None
    file_size_bytes: int | None = 64 * MiB
    nproc: int | None = 96
    nofile: int | None = 512
    output_bytes: int = 64 * KiB
    workdir_bytes: int | None = 256 * MiB
    workdir_files: int | None = 5000
    tmpfs_bytes: int = 64 * MiB
    mode: str | None = None
    uid_base: int = 61000
    uid_slots: int = 64
    hide: tuple[str, ...] = ()
    heartbeat_file: str | None = None
    heartbeat_s: float | None = None
    total_memory_bytes: int | None = 6 * GiB


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (a grader problem, not the student's)."""


# ---------------------------------------------------------------------------------------------
# Launcher side (runs in the grader process).


def _repo_root() -> Path | None:
    """The source checkout this file lives in, or None for an installed (non-editable) grader."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "grader").is_dir():
        return root
    return None


def default_hidden_paths(cwd: str | os.PathLike | None = None) -> list[str]:
    """Paths of the source checkout a worker must not see: everything but ``_REPO_ALLOW``, plus
    ``grader/expected`` (expected outputs) and ``grader/hidden`` (hidden cases). An entry that
    contains ``cwd`` is kept visible."""
    root = _repo_root()
    if root is None:
        return []
    hidden = [root / name for name in sorted(os.listdir(root)) if name not in _REPO_ALLOW]
    hidden += [root / "grader" / "expected", root / "grader" / "hidden"]
    out = []
    for path in hidden:
        if not os.path.lexists(path) or os.path.islink(path):
            continue
        if cwd is not None and _is_within(Path(cwd).resolve(), path.resolve()):
            continue
        out.append(str(path))
    return out


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class _Capture:
    """Reads one pipe to EOF on a thread, keeping the first and last ``cap // 2`` bytes."""

    def __init__(self, stream, cap: int):
        self._stream = stream
        self._half = max(cap // 2, 1)
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = self._stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            self.total += len(chunk)
            room = self._half - len(self._head)
            if room > 0:
                self._head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self._tail += chunk
                if len(self._tail) > 2 * self._half:  # trim rarely: amortised O(1) per byte
                    del self._tail[: len(self._tail) - self._half]

    def text(self, timeout: float) -> str:
        self._thread.join(timeout)
        tail = bytes(self._tail[-self._half:])
        dropped = self.total - len(self._head) - len(tail)
        parts = [bytes(self._head).decode("utf-8", "replace")]
        if dropped > 0:
            parts.append(f"\n[... {dropped:,} bytes of output dropped ...]\n")
        parts.append(tail.decode("utf-8", "replace"))
        return "".join(parts)


def _child_env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if (k in _ENV_KEEP or k.startswith(_ENV_KEEP_PREFIXES)) and k not in _ENV_DROP}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    # The interpreter running the grader must come first (a venv without activation still works).
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    env.setdefault("LANG", "C.UTF-8")
    env.setdefault("JAX_PLATFORMS", "cpu")
    root = _repo_root()
    if root is not None:  # the worker imports the same grader (and library) as this process
        env["PYTHONPATH"] = os.pathsep.join(
            [str(root), str(root / "lib")] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(HOME=home, TMPDIR="/tmp", PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg")
    return env


def _rlimits(limits: Limits, timeout_s: float, *, with_nproc: bool) -> dict[str, tuple[int, int]]:
    cpu = limits.cpu_s if limits.cpu_s is not None else 2 * timeout_s
    wanted = {
        "RLIMIT_CPU": None if cpu is None else int(cpu) + 1,
        "RLIMIT_AS": limits.address_space_bytes,
        "RLIMIT_DATA": limits.data_bytes,
        "RLIMIT_FSIZE": limits.file_size_bytes,
        "RLIMIT_NOFILE": limits.nofile,
        "RLIMIT_NPROC": limits.nproc if with_nproc else None,
        "RLIMIT_CORE": 0,
    }
    # Soft = hard, so the child cannot raise a limit back up; except CPU, whose soft limit sends
    # SIGXCPU (a clear reason) a little before the hard limit's SIGKILL.
    out = {name: (int(v), int(v)) for name, v in wanted.items() if v is not None}
    if "RLIMIT_CPU" in out:
        out["RLIMIT_CPU"] = (out["RLIMIT_CPU"][0], out["RLIMIT_CPU"][0] + 2)
    return out


def _apply_rlimits(rlimits: dict) -> None:
    for name, (soft, hard) in rlimits.items():
        resource.setrlimit(getattr(resource, name), (soft, hard))


def _describe_signal(sig: int, limits: Limits, timeout_s: float) -> str:
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
    cpu = limits.cpu_s if limits.cpu_s is not None else 2 * timeout_s
    if sig == signal.SIGXCPU:
        return f"CPU time limit of {cpu:g} s exceeded ({name})"
    if sig == signal.SIGXFSZ:
        return f"wrote a file larger than the {_fmt_bytes(limits.file_size_bytes)} limit ({name})"
    mem = limits.address_space_bytes or limits.data_bytes
    mem_hint = f": the limit is {_fmt_bytes(mem)}" if mem else ""
    if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT):
        return (f"crashed with {name} (a stack overflow, the process/thread limit, or out of "
                f"memory{mem_hint})")
    if sig == signal.SIGKILL:
        return f"killed by {name} (the CPU time limit of {cpu:g} s, or out of memory{mem_hint})"
    return f"ended by {name}"


def _workdir_over(cwd: Path, lim: Limits) -> str | None:
    """Why the work dir is over its quota, or None."""
    if not (lim.workdir_bytes or lim.workdir_files):
        return None
    size, count = _scan_workdir(str(cwd), lim.workdir_files or 1 << 62)
    if lim.workdir_bytes and size > lim.workdir_bytes:
        return f"wrote more than {_fmt_bytes(lim.workdir_bytes)} into its work dir"
    if lim.workdir_files and count > lim.workdir_files:
        return f"created more than {lim.workdir_files} files in its work dir"
    return None


def _fmt_bytes(n: float) -> str:
    return f"{n / GiB:g} GB" if n >= GiB else f"{n / MiB:g} MB"


def _resident_bytes(uid: int) -> int:
    """Memory of the processes of ``uid``: the sum of their proportional set sizes (Pss, from
    /proc/PID/smaps_rollup), so pages shared after a fork are counted once, not per process."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid_line = status.read_text().partition("\nUid:")[2]
            if uid_line.split(None, 1)[:1] != [str(uid)]:
                continue
            rollup = (status.parent / "smaps_rollup").read_text()
        except OSError:
            continue
        pss = rollup.partition("\nPss:")[2].split(None, 1)[:1]
        total += int(pss[0]) * 1024 if pss else 0
    return total


def _scan_workdir(path: str, max_files: int) -> tuple[int, int]:
    """Total bytes and entries under ``path`` (symlinks not followed; stops counting at max_files)."""
    total, count = 0, 0
    stack = [path]
    while stack and count <= max_files:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            count += 1
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += st.st_blocks * 512
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
    return total, count


def sanitize_workdir(path: str | os.PathLike) -> list[str]:
    """Delete symlinks, hard-linked files and special files (FIFOs, sockets, devices) under
    ``path``, so that reading a result never follows a link out of the work dir or blocks on a FIFO.
    Returns the relative paths removed."""
    doomed = []  # collect first, so both names of a hard-linked pair go
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode) or (
                    not stat.S_ISDIR(st.st_mode)
                    and (not stat.S_ISREG(st.st_mode) or st.st_nlink > 1)):
                doomed.append(full)
        # never descend into a symlinked directory (os.walk lists it in dirnames)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    removed = []
    for full in doomed:
        try:
            os.unlink(full)
            removed.append(os.path.relpath(full, path))
        except OSError:
            pass
    return removed


class _UidSlot:
    """An exclusive uid for one concurrent sandbox, held through an flock on a root-only file."""

    def __init__(self, limits: Limits):
        # One fixed, root-only place for every grading process on the machine (not $TMPDIR,
        # which may differ between processes and would let two sandboxes share a uid).
        lock_dir = Path("/run/cnnlab-sandbox") if os.access("/run", os.W_OK) else \
            Path(tempfile.gettempdir()) / "cnnlab-sandbox-locks"
        lock_dir.mkdir(mode=0o700, exist_ok=True)
        for slot in range(limits.uid_slots):
            uid = limits.uid_base + slot
            try:
                pwd.getpwuid(uid)
                continue  # a real account: never borrow it
            except KeyError:
                pass
            fd = os.open(lock_dir / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return
        raise SandboxError(f"all {limits.uid_slots} sandbox uids from {limits.uid_base} are busy; "
                           "lower --jobs or raise Limits.uid_slots")

    def release(self) -> None:
        os.close(self._fd)


def _prepare_workdir(path: str, uid: int) -> None:
    """Hand the work dir's sub-folders to the sandbox uid; keep the work dir itself and the files
    directly in it root-owned and read-only (mode 0644 / 0755), so the child can read its request
    but can neither delete nor replace it, nor remove the sub-folders it writes its results to."""
    os.chown(path, 0, 0)
    os.chmod(path, 0o755)
    for entry in os.scandir(path):
        if entry.is_symlink():
            os.unlink(entry.path)
        elif entry.is_dir():
            for dirpath, dirnames, filenames in os.walk(entry.path):
                os.lchown(dirpath, uid, uid)
                for name in filenames:
                    os.lchown(os.path.join(dirpath, name), uid, uid)
        else:
            os.chown(entry.path, 0, 0)
            os.chmod(entry.path, 0o644)


def _check_reachable(cwd: Path) -> None:
    """Mode "user" has no mount namespace: every folder above the work dir must be traversable."""
    for parent in cwd.parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            raise SandboxError(f"the sandbox user cannot reach work dir {cwd}: {parent} is not "
                               "traversable by others (chmod o+x it, or use a work dir in /tmp)")


def _needed_paths(cwd: Path) -> list[str]:
    """Folders the sandboxed worker must reach: the Python installation(s), the venv, the source
    checkout (editable install) and the work dir, outermost first, nested ones dropped."""
    paths = {Path(p).resolve() for p in (sys.base_prefix, sys.prefix, sys.exec_prefix,
                                          sys.base_exec_prefix, Path(sys.executable).resolve().parent)}
    root = _repo_root()
    if root is not None:
        paths.add(root)
    paths.add(cwd)
    ordered = sorted(paths, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in ordered:
        if not any(_is_within(path, k) for k in kept):
            kept.append(path)
    return [str(p) for p in kept]


def _covers(needed: list[str]) -> list[str]:
    """Folders to replace with a private tmpfs inside the sandbox so that each needed path is
    reachable: for a needed path outside the world-writable dirs, its highest ancestor that others
    cannot traverse (e.g. /root, 0700, when Python lives in ~/.pyenv)."""
    out = []
    for path in map(Path, needed):
        if any(_is_within(path, Path(w)) for w in _WRITABLE_DIRS):
            continue
        for parent in reversed(path.parents):  # from "/" downwards
            if parent != Path("/") and not os.stat(parent).st_mode & stat.S_IXOTH:
                if str(parent) not in out:
                    out.append(str(parent))
                break
    return out


MODES = ("namespaces", "user", "none")
_NAMESPACES_WORK: bool | None = None


def _namespaces_work(unshare: str) -> bool:
    """Whether ``unshare`` can really create the namespaces here (containers often forbid it)."""
    global _NAMESPACES_WORK
    if _NAMESPACES_WORK is None:
        try:
            probe = subprocess.run([unshare, "--fork", "--kill-child", "--pid", "--mount-proc",
                                    "--net", "--ipc", "--uts", "true"],
                                   capture_output=True, timeout=10)
            _NAMESPACES_WORK = probe.returncode == 0
        except (OSError, subprocess.SubprocessError):
            _NAMESPACES_WORK = False
    return _NAMESPACES_WORK


class Sandbox:
    """A launcher with fixed :class:`Limits`; call it like ``launch(argv, cwd=..., timeout_s=...)``.

    Modes, best first (``Limits.mode=None`` picks the best available):

    - ``"namespaces"`` (root, working ``unshare``): everything in the module docstring.
    - ``"user"`` (root, but namespaces forbidden, as in many Docker containers): the child still
      runs as its own unprivileged uid with the process limit, and every process of that uid is
      killed afterwards; no network isolation, no private /tmp, hidden paths only by file modes.
    - ``"none"`` (not root): rlimits, timeout and output caps only.
    """

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self._unshare = shutil.which("unshare")
        self._setpriv = shutil.which("setpriv")
        self._root = os.geteuid() == 0 and sys.platform.startswith("linux")
        available = ["none"]
        if self._root and self._setpriv:
            available.insert(0, "user")
            if self._unshare and _namespaces_work(self._unshare):
                available.insert(0, "namespaces")
        self.available = available
        # CNNLAB_SANDBOX_MODE lets an instructor pick a weaker mode on purpose (e.g. "none" on a
        # laptop without root); the one warning line still says what is off.
        wanted = self.limits.mode or os.environ.get("CNNLAB_SANDBOX_MODE") or None
        if wanted is not None and wanted not in MODES:
            raise SandboxError(f"unknown sandbox mode {wanted!r}; choose one of {MODES}")
        if wanted is not None and wanted not in available:
            raise SandboxError(f"sandbox mode {wanted!r} is not available here: "
                               + "; ".join(self._off_for(available[0])))
        self.mode = wanted or available[0]

    @property
    def isolated(self) -> bool:
        return self.mode == "namespaces"

    # -- what binds -------------------------------------------------------------------------
    def _cause(self) -> str:
        if not self._root:
            return "the grader is not running as root (on Linux)"
        if not self._setpriv:
            return "`setpriv` (util-linux) is not installed"
        if not self._unshare:
            return "`unshare` (util-linux) is not installed"
        if "namespaces" not in self.available:
            return "`unshare` cannot create namespaces here (a container without CAP_SYS_ADMIN?)"
        return f"Limits.mode={self.mode!r} was asked for"

    def _off_for(self, mode: str) -> list[str]:
        off = []
        if mode in ("user", "none"):
            off.append("network isolation, PID namespace, private /tmp and hidden "
                       "reference/results paths")
        if mode == "none":
            off.append("separate unprivileged user and process-count limit")
        if not off:
            return []
        return [f"{' and '.join(off)} are off because {self._cause()}"]

    def protections_off(self) -> list[str]:
        """Protections that do not apply, with the cause, as one sentence; empty when all do."""
        off = self._off_for(self.mode)
        if self.mode == "user":
            readable = [p for p in (*default_hidden_paths(), *self.limits.hide)
                        if os.path.exists(p) and os.stat(p).st_mode & stat.S_IROTH]
            if readable:
                off.append("readable by the sandbox user (chmod go-rwx them): "
                           + ", ".join(readable))
        return off

    def describe(self) -> str:
        """One line listing what binds."""
        lim = self.limits
        on = ["wall-clock timeout (whole process tree)", "CPU-seconds limit"]
        if lim.address_space_bytes:
            on.append(f"address space {lim.address_space_bytes / GiB:g} GB")
        if lim.data_bytes:
            on.append(f"data {lim.data_bytes / GiB:g} GB")
        if lim.file_size_bytes:
            on.append(f"file size {lim.file_size_bytes / MiB:g} MB")
        on.append(f"captured output {lim.output_bytes // KiB} KB per stream")
        if self.mode in ("namespaces", "user"):
            on += [f"unprivileged uid from {lim.uid_base}", f"{lim.nproc} processes/threads"]
            if lim.total_memory_bytes:
                on.append(f"{_fmt_bytes(lim.total_memory_bytes)} memory in all")
        if self.mode == "namespaces":
            on += ["no network", "PID namespace", "private /tmp",
                   "solutions/tests/.git/results hidden"]
        return f"sandbox ({self.mode}): " + ", ".join(on)

    # -- the launcher -------------------------------------------------------------------------
    def __call__(self, argv: list[str], *, cwd: str | os.PathLike, timeout_s: float) -> LaunchResult:
        cwd = Path(cwd).resolve()
        if not cwd.is_dir():
            raise SandboxError(f"work dir {cwd} does not exist")
        if self.mode == "user":
            _check_reachable(cwd)
        slot = _UidSlot(self.limits) if self.mode != "none" else None
        try:
            return self._run(list(map(str, argv)), cwd, float(timeout_s), slot)
        finally:
            if slot is not None:
                slot.release()

    def _command(self, argv, cwd: Path, env, timeout_s: float, slot: _UidSlot | None, status_w):
        """The command line and Popen keywords of each mode."""
        lim = self.limits
        prctl, grader_pid = _libc().prctl, os.getpid()

        def die_with_the_grader():
            # In the child between fork and exec: a grader killed before this point (even by
            # SIGKILL, when no cleanup runs) is noticed by the parent check; after it, by the signal.
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != grader_pid:
                os._exit(1)

        if self.mode == "namespaces":
            config = {
                "argv": argv, "env": env, "cwd": str(cwd), "uid": slot.uid, "status_fd": status_w,
                "rlimits": _rlimits(lim, timeout_s, with_nproc=True),
                "tmpfs_bytes": lim.tmpfs_bytes, "writable_dirs": list(_WRITABLE_DIRS),
                "needed": _needed_paths(cwd), "covers": _covers(_needed_paths(cwd)),
                "hide": [p for p in (*default_hidden_paths(cwd), *lim.hide)
                         if os.path.lexists(p) and not _is_within(cwd, Path(p).resolve())],
            }
            # If the grader dies (even by SIGKILL), unshare gets SIGKILL (die_with_the_grader),
            # which (--kill-child) takes the namespace's PID 1 and so the whole namespace with it.
            cmd = [self._unshare, "--fork", "--kill-child", "--pid",
                   "--mount-proc", "--net", "--ipc", "--uts", sys.executable, "-I", "-S",
                   os.path.abspath(__file__), "--init", json.dumps(config)]
            return cmd, dict(pass_fds=(status_w,), preexec_fn=die_with_the_grader)
        if self.mode == "user":
            rl = _rlimits(lim, timeout_s, with_nproc=True)
            cmd = [self._setpriv, f"--reuid={slot.uid}", f"--regid={slot.uid}", "--clear-groups",
                   "--no-new-privs", "--", *argv]
        else:
            rl = _rlimits(lim, timeout_s, with_nproc=False)  # NPROC would count all our processes
            cmd = argv

        def preexec():  # only async-signal-safe-ish calls: prctl, getppid and setrlimit
            die_with_the_grader()
            _apply_rlimits(rl)

        return cmd, dict(preexec_fn=preexec)

    def _run(self, argv, cwd: Path, timeout_s: float, slot: _UidSlot | None) -> LaunchResult:
        lim = self.limits
        # HOME must be writable: /tmp (private in mode "namespaces"); the work dir itself is not
        env = _child_env(home=str(cwd) if self.mode == "none" else "/tmp")
        status_r = status_w = None
        if slot is not None:
            _prepare_workdir(str(cwd), slot.uid)
        if self.mode == "namespaces":
            status_r, status_w = os.pipe()
        cmd, popen_kw = self._command(argv, cwd, env, timeout_s, slot, status_w)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, **popen_kw)
        except OSError as exc:  # e.g. argv[0] missing (mode "none")
            for fd in (status_r, status_w):
                if fd is not None:
                    os.close(fd)
            return LaunchResult(127, "", f"cannot start {argv[0]}: {exc}", False,
                                f"could not start the worker: {exc}", 0.0)
        if status_w is not None:
            os.close(status_w)
        out, err = _Capture(proc.stdout, lim.output_bytes), _Capture(proc.stderr, lim.output_bytes)
        timed_out, reason = self._watch(proc, cwd, start, timeout_s, slot)
        self._kill_tree(proc, slot)
        duration = time.monotonic() - start
        stdout, stderr = out.text(timeout=5), err.text(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            stream.close()
        returncode = proc.returncode
        if status_r is not None:
            returncode, init_reason = self._read_status(status_r, returncode)
            reason = reason or init_reason
        if reason is None and returncode < 0:
            reason = _describe_signal(-returncode, lim, timeout_s)
        if not timed_out and reason is None:
            reason = _workdir_over(cwd, lim)
        sanitize_workdir(cwd)
        if timed_out or (reason and returncode == 0):
            returncode = -signal.SIGKILL
        return LaunchResult(returncode, stdout, stderr, timed_out, reason, duration)

    def _watch(self, proc: subprocess.Popen, cwd: Path, start: float, timeout_s: float,
               slot: _UidSlot | None) -> tuple[bool, str | None]:
        """Wait for the child to exit; ``(timed_out, reason)`` when a limit ended it first (wall
        clock, heartbeat, work-dir quota, total memory), else ``(False, None)``."""
        lim = self.limits
        next_scan = start
        while True:
            try:
                proc.wait(timeout=0.1)
                return False, None
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now - start >= timeout_s:
                return True, f"timed out after {timeout_s:g} s (wall clock)"
            if now < next_scan:
                continue
            next_scan = now + 0.5  # a /proc and work-dir scan costs ~10 ms
            over = _workdir_over(cwd, lim)
            if over:
                return False, over
            if slot is not None and lim.total_memory_bytes \
                    and _resident_bytes(slot.uid) > lim.total_memory_bytes:
                return False, (f"used more than {_fmt_bytes(lim.total_memory_bytes)} of memory "
                               "in all its processes together")
            if lim.heartbeat_file and lim.heartbeat_s:
                try:
                    idle = time.time() - (cwd / lim.heartbeat_file).stat().st_mtime
                except OSError:  # not written yet: count from the start
                    idle = now - start
                if min(idle, now - start) > lim.heartbeat_s:
                    return True, f"timed out: no progress for {lim.heartbeat_s:g} s"

    def _kill_tree(self, proc: subprocess.Popen, slot: _UidSlot | None) -> None:
        """SIGKILL everything the run started: the session; in mode "namespaces" the namespace
        (unshare --kill-child takes its PID 1 down, and the kernel the rest); in mode "user"
        every process of the sandbox uid (``kill -KILL -1`` run as that uid)."""
        for target in (lambda: os.killpg(proc.pid, signal.SIGKILL),
                       lambda: proc.send_signal(signal.SIGKILL)):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait()
        if self.mode == "user" and slot is not None:
            try:
                subprocess.run([self._setpriv, f"--reuid={slot.uid}", f"--regid={slot.uid}",
                                "--clear-groups", "--", shutil.which("kill") or "/bin/kill",
                                "-KILL", "-1"], capture_output=True, timeout=10)
            except (OSError, subprocess.SubprocessError):
                pass

    @staticmethod
    def _read_status(fd: int, unshare_rc: int) -> tuple[int, str | None]:
        with os.fdopen(fd, "rb") as f:
            raw = f.read(1 << 16)
        try:
            status = json.loads(raw.decode())
        except ValueError:  # PID 1 was killed before reporting (our timeout kill)
            return unshare_rc, None
        if "error" in status:
            return 125, f"sandbox could not start: {status['error']}"
        if "signal" in status:
            return -int(status["signal"]), None
        return int(status["exit"]), None


_DEFAULT: Sandbox | None = None
_WARNED = False


def launch(argv: list[str], *, cwd: str | os.PathLike, timeout_s: float,
           limits: Limits | None = None) -> LaunchResult:
    """Run ``argv`` sandboxed with ``limits`` (default :class:`Limits`)."""
    global _DEFAULT
    if limits is not None:
        return Sandbox(limits)(argv, cwd=cwd, timeout_s=timeout_s)
    if _DEFAULT is None:
        _DEFAULT = Sandbox()
    return _DEFAULT(argv, cwd=cwd, timeout_s=timeout_s)


def warn_protections_off(sandbox: Sandbox, stream=None) -> None:
    """Print once per process one warning line naming the protections that are off."""
    global _WARNED
    off = sandbox.protections_off()
    if off and not _WARNED:
        _WARNED = True
        print("grader: warning: sandbox: " + "; ".join(off), file=stream or sys.stderr)


# ---------------------------------------------------------------------------------------------
# Sandbox side: PID 1 of the new namespaces, still root (run as `python -I -S sandbox.py --init`).

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1


def _libc():
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def _mount(libc, source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    import ctypes
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'bind'} on {target}: {os.strerror(err)}")


def _isolate_mounts(cfg: dict) -> None:
    """Hide paths, give the sandbox private tmpfs for the world-writable dirs and for folders others
    cannot traverse, then bind the needed folders (Python, venv, checkout, work dir) back in."""
    libc = _libc()
    # Keep our mounts out of the host's mount table whatever the host's propagation is.
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    for hidden in cfg["hide"]:
        if os.path.isdir(hidden) and not os.path.islink(hidden):
            _mount(libc, "tmpfs", hidden, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                   "size=4k,mode=000")
        elif os.path.lexists(hidden) and not os.path.islink(hidden):
            _mount(libc, "/dev/null", hidden, None, _MS_BIND)
    # Handles on the real folders, still usable after the paths leading to them are covered.
    handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in cfg["needed"]}
    flags = _MS_NOSUID | _MS_NODEV
    writable = [w for w in cfg["writable_dirs"] if os.path.isdir(w) and not os.path.islink(w)]
    for w in writable:
        _mount(libc, "tmpfs", w, "tmpfs", flags, f"size={cfg['tmpfs_bytes']},mode=1777")
    for cover in cfg["covers"]:
        _mount(libc, "tmpfs", cover, "tmpfs", flags, "size=64k,mode=755")
    for path, fd in handles.items():
        inside = [d for d in writable + cfg["covers"]
                  if path == d or path.startswith(d.rstrip("/") + "/")]
        if inside:
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(libc, f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
            if path != cfg["cwd"]:  # Python and the checkout are read-only in there
                _mount(libc, None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | flags)
        os.close(fd)
    for cover in cfg["covers"]:
        _mount(libc, None, cover, None, _MS_REMOUNT | _MS_RDONLY | flags)
    os.chdir(cfg["cwd"])


def _exec_child(cfg: dict) -> None:
    """In the forked child: limits, drop to the sandbox uid, exec the worker. Never returns."""
    try:
        for name, (soft, hard) in cfg["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        uid = cfg["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")
        argv, env = cfg["argv"], cfg["env"]
        exe = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
        os.execve(exe, argv, env)
    except BaseException as exc:  # noqa: BLE001 - report anything, then die
        os.write(2, f"sandbox: cannot start {cfg['argv'][0]}: {exc}\n".encode())
        os._exit(127)


def _init_main(cfg: dict) -> None:
    status_fd = cfg["status_fd"]
    os.set_inheritable(status_fd, False)

    def report(obj: dict) -> None:
        os.write(status_fd, json.dumps(obj).encode())

    try:
        _isolate_mounts(cfg)
    except OSError as exc:
        report({"error": str(exc)})
        os._exit(125)
    child = os.fork()
    if child == 0:
        _exec_child(cfg)
    # As PID 1 we also reap orphans; the namespace dies (killing any leftovers) when we exit.
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            report({"error": "lost the worker process"})
            os._exit(125)
        except InterruptedError:
            continue
        if pid == child:
            break
    if os.WIFSIGNALED(status):
        report({"signal": os.WTERMSIG(status)})
    else:
        report({"exit": os.WEXITSTATUS(status)})
    os._exit(0)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--init":
    _init_main(json.loads(sys.argv[2]))
