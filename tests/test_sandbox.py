"""The sandboxed launcher, exercised directly with tiny scripts: every protection must really bind.

Each payload is bounded (a few hundred MB, a few hundred processes, a few seconds) so that a broken
sandbox fails a test instead of hurting the machine.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from grader import sandbox
from grader.sandbox import GiB, MiB, Limits, Sandbox

# The sandbox forks with a preexec_fn (the parent-death signal is set between fork and exec). JAX,
# imported into this pytest process by other test modules, warns on every fork; the forked child
# only calls prctl and getppid before exec, and the grader process itself never imports JAX.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = os.geteuid() == 0
# Without bwrap (a laptop) the view cannot be tested and these tests say so; under CI (which
# installs bubblewrap, see .ci/run) they must run.
needs_isolation = pytest.mark.skipif(
    Sandbox().mode != "bwrap" and not os.environ.get("CI"),
    reason="the file-system view needs bwrap (apt-get install bubblewrap); "
    "Sandbox.protections_off() says so and the launcher warns")
# Where the grader may create memory cgroups (root with a writable cgroup v1 memory hierarchy,
# as on this project's machines, or a delegated cgroup v2) the memory cgroup must be used; a
# kernel or container without one cannot run the exact-bound test (the polled one runs there).
has_memory_cgroup = sandbox.memory_parent() is not None
needs_memory_cgroup = pytest.mark.skipif(
    not has_memory_cgroup,
    reason="no writable memory cgroup here (root with cgroup v1, or a delegated cgroup v2); "
    "the sandbox polls instead and its mode line says so")


def run(tmp_path, code, *, timeout=20.0, **limits):
    """Write ``code`` to a script in a fresh work dir and run it sandboxed. The child may write
    only into the work dir's sub-folders (``out/``)."""
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True, exist_ok=True)
    (work / "script.py").write_text(textwrap.dedent(code))
    return Sandbox(Limits(**limits))([sys.executable, "script.py"], cwd=work, timeout_s=timeout)


def test_exit_status_and_output_are_returned(tmp_path):
    r = run(tmp_path, """
        import sys
        print("hello out"); print("hello err", file=sys.stderr)
        sys.exit(3)
    """)
    assert (r.returncode, r.timed_out, r.reason) == (3, False, None)
    assert r.stdout == "hello out\n" and r.stderr == "hello err\n"


@needs_isolation
def test_runs_as_unprivileged_uid_in_own_pid_namespace(tmp_path):
    r = run(tmp_path, """
        import os
        print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups(), os.getpid())
        print(sorted(p for p in os.listdir("/proc") if p.isdigit()))
    """)
    uid, euid, gid, groups, pid = r.stdout.splitlines()[0].split(" ")
    assert int(uid) == int(euid) == int(gid) >= Limits().uid_base
    assert (groups, pid) == ("[]", "2")  # no supplementary groups; PID 2 under our PID 1
    assert r.stdout.splitlines()[1] == "['1', '2']"  # sees no host process


@needs_isolation
def test_network_is_unreachable(tmp_path):
    r = run(tmp_path, """
        import socket
        for host in ("1.1.1.1", "127.0.0.1"):
            try:
                socket.create_connection((host, 80), timeout=2)
                print(host, "CONNECTED")
            except OSError as exc:
                print(host, exc.errno)
        print(sorted(name for _, name in socket.if_nameindex()))
    """)
    assert "CONNECTED" not in r.stdout
    assert "1.1.1.1 101" in r.stdout  # ENETUNREACH
    assert r.stdout.splitlines()[-1] == "['lo']"


def allowed_roots() -> list[str]:
    """What the view shows whole, derived here independently of the sandbox's own code."""
    roots = {"/usr", sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parent)}
    return sorted(str(Path(r).resolve()) for r in roots)


WALK = """
    import json, os, sys
    roots = json.loads(sys.argv[1])
    found = []
    for top, dirs, files in os.walk("/"):
        if top in ("/proc", "/dev") or any(top == r or top.startswith(r + "/") for r in roots):
            dirs[:] = []
            continue
        found += [os.path.join(top, f) for f in files]
        found += [os.path.join(top, d) for d in dirs if os.path.islink(os.path.join(top, d))]
    print(json.dumps(sorted(found)))
"""


@needs_isolation
def test_the_view_shows_only_the_allow_list(tmp_path):
    """Walk the child's whole file system: outside the Python installation and /usr there is
    nothing but the worker's own files, the loader's cache and the work dir."""
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    (work / "walk.py").write_text(textwrap.dedent(WALK))
    (work / "out" / "mine.txt").write_text("x")
    r = Sandbox()([sys.executable, "walk.py", json.dumps(allowed_roots())], cwd=work,
                  timeout_s=60)
    assert r.returncode == 0, r
    seen = set(json.loads(r.stdout))
    links = {f"/{name}" for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
             if os.path.islink(f"/{name}")}
    worker = {str(ROOT / "grader" / f) for f in ("__init__.py", "worker.py", "codec.py",
                                                 "capture.py", "drivers.py",
                                                 "verify.py")}
    worker |= {str(ROOT / "lib" / "cnnlab" / f) for f in ("__init__.py", "fileio.py")}
    mine = {str(work / f) for f in ("walk.py", "out/mine.txt")}
    assert seen - links - {"/etc/ld.so.cache"} == worker | mine


@needs_isolation
def test_python_and_the_worker_code_are_read_only_and_the_course_absent(tmp_path):
    site = next(p for p in sys.path if p.endswith("site-packages"))
    r = run(tmp_path, f"""
        import errno, importlib
        import jax, flax, optax, grader.worker
        for path in ["{site}/planted.py", grader.worker.__file__]:
            try:
                open(path, "a").write("x")
                print("WROTE", path)
            except OSError as exc:
                print("refused", errno.errorcode[exc.errno])
        for name in ["cnnlab.layers", "cnnlab.data", "grader.specs", "grader.hidden",
                     "grader.runner", "solutions"]:
            try:
                importlib.import_module(name)
                print("IMPORTED", name)
            except ImportError:
                print("absent", name)
    """, timeout=60)
    wrote = r.stdout.split("\n")[:2]
    assert wrote[0] == "refused EROFS" and wrote[1] in ("refused EROFS", "refused EACCES"), r
    assert "IMPORTED" not in r.stdout and r.stdout.count("absent") == 6, r


@needs_isolation
def test_proc_shows_only_the_sandbox_and_no_host_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTOR_TOKEN", "s3cret")
    monkeypatch.setenv("CNNLAB_HIDDEN_SEED", "1234")
    r = run(tmp_path, f"""
        import os
        print(sorted(p for p in os.listdir("/proc") if p.isdigit()))
        print(os.path.exists("/proc/{os.getpid()}"))
        for pid in ("1", "self"):
            try:
                print(b"s3cret" in open(f"/proc/{{pid}}/environ", "rb").read())
            except OSError as exc:
                print(type(exc).__name__)
    """)
    lines = r.stdout.splitlines()
    assert lines[:2] == ["['1', '2']", "False"], r  # our PID 1 and the child, no host process
    assert lines[2] in ("False", "PermissionError") and lines[3] == "False", r


@needs_isolation
def test_process_limit_binds_and_does_not_starve_a_neighbour(tmp_path):
    """RLIMIT_NPROC never binds root, so it must bind the sandbox uid; each sandbox has its own uid,
    so a storm in one leaves a concurrent sandbox able to start threads."""
    storm = """
        import os, time
        children, refused = [], 0
        for _ in range(300):           # bounded: at most 300 children, each gone within 3 s
            try:
                pid = os.fork()
            except BlockingIOError:
                refused += 1
                continue
            if pid == 0:
                time.sleep(3)
                os._exit(0)
            children.append(pid)
        print(len(children), refused)
        time.sleep(1.5)
    """
    neighbour = """
        import threading, time
        time.sleep(0.5)  # start while the storm is at its limit
        threads = [threading.Thread(target=time.sleep, args=(0.2,)) for _ in range(20)]
        for t in threads: t.start()
        for t in threads: t.join()
        print("threads ok")
    """
    results = {}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    t = threading.Thread(target=lambda: results.update(
        storm=run(tmp_path / "a", storm, nproc=32)))
    t.start()
    time.sleep(0.3)
    results["neighbour"] = run(tmp_path / "b", neighbour, nproc=32)
    t.join()
    forked, refused = map(int, results["storm"].stdout.split())
    assert forked < 32 and refused > 250, results["storm"]
    assert results["neighbour"].stdout == "threads ok\n", results["neighbour"]


def test_memory_limit_binds(tmp_path):
    r = run(tmp_path, """
        chunks = []
        try:
            for _ in range(16):                      # bounded: at most 16 x 64 MB
                chunks.append(bytearray(64 << 20))
            print("ALLOCATED", len(chunks))
        except MemoryError:
            print("MemoryError after", len(chunks))
    """, address_space_bytes=512 * MiB)
    assert r.stdout.startswith("MemoryError after"), r
    assert int(r.stdout.split()[-1]) < 8


def test_data_limit_binds(tmp_path):
    r = run(tmp_path, """
        chunks = []
        try:
            for _ in range(16):
                chunks.append(b"x" * (64 << 20))
        except MemoryError:
            print("MemoryError after", len(chunks))
    """, address_space_bytes=None, data_bytes=256 * MiB)
    assert r.stdout.startswith("MemoryError after"), r


def test_timeout_kills_grandchildren_too(tmp_path):
    """The grandchild leaves the process group (setsid) and double-forks; it must still die."""
    (tmp_path / "work" / "out").mkdir(parents=True)
    (tmp_path / "work" / "daemon.py").write_text(textwrap.dedent("""
        import os, time
        if os.fork():
            os._exit(0)
        os.setsid()
        for i in range(600):  # bounded: 30 s at most
            with open("out/ticks.txt", "a") as f:
                f.write("x")
            time.sleep(0.05)
    """))
    r = run(tmp_path, """
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "daemon.py"], start_new_session=True)
        time.sleep(60)
    """, timeout=1.5)
    assert r.timed_out and "timed out after 1.5 s" in r.reason
    assert r.returncode < 0
    ticks = tmp_path / "work" / "out" / "ticks.txt"
    size = ticks.stat().st_size
    assert size > 0
    time.sleep(0.4)
    if Sandbox().mode != "none":  # mode "none": a setsid'd grandchild escapes (documented)
        assert ticks.stat().st_size == size


def test_timeout_unisolated_kills_process_group(tmp_path):
    r = run(tmp_path, """
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time\\nfor i in range(600):\\n"
                          "  open('out/ticks.txt','a').write('x'); time.sleep(0.05)"])
        time.sleep(60)
    """, timeout=1.5, mode="none")
    assert r.timed_out
    ticks = tmp_path / "work" / "out" / "ticks.txt"
    size = ticks.stat().st_size
    time.sleep(0.4)
    assert ticks.stat().st_size == size


def test_cpu_limit_binds(tmp_path):
    r = run(tmp_path, """
        while True:
            pass
    """, timeout=60, cpu_s=1)
    # ended by the CPU limit, not the wall clock: 1 CPU-second took 12 s of wall time on a
    # machine at load 38, so the wall-clock margin is wide and the reason is what is checked
    assert not r.timed_out and r.duration_s < 60
    assert r.returncode < 0 and "CPU time limit of 1 s" in r.reason


def test_output_is_capped_head_and_tail(tmp_path):
    r = run(tmp_path, """
        import sys
        sys.stdout.write("FIRST\\n")
        block = "y" * (1 << 20)
        for _ in range(300):            # bounded: 300 MB
            sys.stdout.write(block)
        sys.stdout.write("\\nLAST\\n")
    """, timeout=60, output_bytes=4096)
    assert len(r.stdout) < 4096 + 100
    assert r.stdout.startswith("FIRST") and r.stdout.endswith("LAST\n")
    assert "characters not shown" in r.stdout
    assert r.returncode == 0


def test_file_size_limit_binds(tmp_path):
    r = run(tmp_path, """
        try:
            with open("out/big.bin", "wb") as f:
                f.write(b"x" * (3 << 20))
            print("WROTE")
        except OSError as exc:
            print("refused", exc.errno)
    """, file_size_bytes=1 * MiB)
    assert r.stdout.strip() == "refused 27", r  # EFBIG (Python ignores SIGXFSZ)


def test_workdir_quota_binds(tmp_path):
    r = run(tmp_path, """
        import time
        for i in range(40):             # bounded: 40 MB
            with open(f"out/f{i}.bin", "wb") as f:
                f.write(b"x" * (1 << 20))
        time.sleep(5)
    """, workdir_bytes=8 * MiB, timeout=20)
    assert "wrote more than 8 MB into its work dir" in r.reason
    assert r.returncode < 0 and r.duration_s < 5


@needs_isolation
def test_private_tmp_is_small_and_private(tmp_path):
    (Path(tempfile.gettempdir()) / "cnnlab-host-only.txt").write_text("host")
    try:
        r = run(tmp_path, """
            import os
            print(os.path.exists("/tmp/cnnlab-host-only.txt"))
            try:
                with open("/tmp/fill.bin", "wb") as f:
                    for _ in range(64):     # bounded: 64 MB
                        f.write(b"x" * (1 << 20))
                print("FILLED")
            except OSError as exc:
                print("full", exc.errno)
        """, tmpfs_bytes=8 * MiB)
    finally:
        os.unlink(Path(tempfile.gettempdir()) / "cnnlab-host-only.txt")
    assert r.stdout.split("\n")[:2] == ["False", "full 28"], r  # ENOSPC
    assert not Path("/tmp/fill.bin").exists()


def test_links_and_fifos_left_behind_are_removed(tmp_path):
    r = run(tmp_path, """
        import os
        os.chdir("out")
        open("result.npz", "wb").write(b"mine")
        os.link("result.npz", "alias.npz")
        os.symlink("/etc/passwd", "expected.npz")
        os.symlink("/etc", "outdir")
        os.mkfifo("pipe.npz")
        os.makedirs("sub")
        os.symlink("../result.npz", "sub/x.npz")
        open("honest.npz", "wb").write(b"ok")
    """)
    assert r.returncode == 0, r
    left = sorted(str(p.relative_to(tmp_path / "work")) for p in (tmp_path / "work").rglob("*"))
    assert left == ["out", "out/honest.npz", "out/sub", "script.py"]


def test_environment_is_clean(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTOR_TOKEN", "s3cret")
    monkeypatch.setenv("CNNLAB_HIDDEN_SEED", "1234")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    r = run(tmp_path, """
        import os
        print(os.environ.get("INSTRUCTOR_TOKEN"), os.environ.get("CNNLAB_HIDDEN_SEED"),
              os.environ.get("JAX_PLATFORMS"), os.access(os.environ["HOME"], os.W_OK))
    """)
    assert r.stdout.split() == ["None", "None", "cpu", "True"]


@needs_isolation
def test_child_cannot_delete_its_request_but_can_write_results(tmp_path):
    (tmp_path / "work" / "out").mkdir(parents=True)
    (tmp_path / "work" / "request.json").write_text("{}")
    os.chmod(tmp_path / "work" / "request.json", 0o600)  # as mkstemp leaves it
    r = run(tmp_path, """
        import os, shutil
        print(open("request.json").read())
        for path in ("request.json", "out", "script.py"):
            try:
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
                print("deleted", path)
            except OSError as exc:
                print("kept", path, exc.errno)
        open("out/result.txt", "w").write("ok")
    """)
    assert r.stdout.split("\n")[:4] == ["{}", "kept request.json 13", "kept out 13",
                                        "kept script.py 13"], r
    assert (tmp_path / "work" / "out" / "result.txt").read_text() == "ok"


def test_crash_signal_has_a_reason(tmp_path):
    r = run(tmp_path, """
        import os, signal
        os.kill(os.getpid(), signal.SIGSEGV)
    """)
    assert r.returncode == -11 and "crashed with SIGSEGV" in r.reason


def test_missing_program_is_reported(tmp_path):
    (tmp_path / "w").mkdir()
    r = Sandbox()(["no-such-program-xyz"], cwd=tmp_path / "w", timeout_s=5)
    assert r.returncode == 127 and "no-such-program-xyz" in (r.stderr + (r.reason or ""))


def test_protections_off_are_named_in_one_line(capsys):
    box = Sandbox(Limits(mode="none"))
    off = box.protections_off()
    assert len(off) == 1 and "network isolation" in off[0] and "process-count" in off[0]
    sandbox._WARNED = False
    sandbox.warn_protections_off(box)
    sandbox.warn_protections_off(box)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("grader: warning: sandbox:")
    if IS_ROOT and Sandbox().mode == "bwrap":
        assert Sandbox().protections_off() == []
        assert "no network" in Sandbox().describe()


def test_jax_imports_and_runs_under_the_default_limits(tmp_path):
    r = run(tmp_path, """
        import jax, jax.numpy as jnp
        print(float(jax.jit(lambda x: (x * 2).sum())(jnp.arange(4.0))))
    """, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "12.0", r
    assert Limits().address_space_bytes >= 3 * GiB
    if has_memory_cgroup:  # it ran inside its memory cgroup, far under the 6 GB
        assert 50 * MiB < r.memory_peak_bytes < 2 * GiB, r


def test_killing_the_grader_kills_the_sandbox(tmp_path):
    """If the grading process dies (SIGKILL: no cleanup code runs), its sandboxes die with it."""
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    (work / "tick.py").write_text(textwrap.dedent("""
        import time
        for i in range(600):  # bounded: 30 s
            with open("out/ticks.txt", "a") as f:
                f.write("x")
            time.sleep(0.05)
    """))
    grader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from grader.sandbox import Sandbox
        Sandbox()([sys.executable, "tick.py"], cwd={str(work)!r}, timeout_s=60)
    """)])
    ticks = work / "out" / "ticks.txt"
    deadline = time.monotonic() + 30
    while not (ticks.exists() and ticks.stat().st_size > 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ticks.exists()
    if has_memory_cgroup:  # the worker runs in its memory cgroup
        cgroups = list(sandbox.memory_parent()[0].glob(f"cnnlab-worker-{grader.pid}-*"))
        assert len(cgroups) == 1 and (cgroups[0] / "cgroup.procs").read_text().split()
    grader.kill()
    grader.wait()
    time.sleep(0.5)
    size = ticks.stat().st_size
    time.sleep(0.5)
    assert ticks.stat().st_size == size
    if has_memory_cgroup:  # the next grader to start removes the cgroup the dead one left
        subprocess.run([sys.executable, "-c", "from grader.sandbox import Sandbox; Sandbox()"],
                       check=True, timeout=60)
        assert not cgroups[0].exists()


needs_root = pytest.mark.skipif(not IS_ROOT or "user" not in Sandbox().available,
                                reason="mode 'user' needs root and setpriv")
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by any uid (a venv in /root may not be)


@pytest.fixture
def open_dir():
    """A work dir every uid can reach (mode "user" has no mount namespace to bind it in)."""
    path = Path(tempfile.mkdtemp(prefix="cnnlab-user-mode-"))
    os.chmod(path, 0o755)
    (path / "out").mkdir()
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


@needs_root
def test_user_mode_drops_to_a_uid_whose_process_limit_binds(open_dir):
    (open_dir / "script.py").write_text(textwrap.dedent("""
        import os, time
        born, refused = 0, 0
        for _ in range(300):           # bounded: 300 children gone within 2 s
            try:
                pid = os.fork()
            except BlockingIOError:
                refused += 1
                continue
            if pid == 0:
                time.sleep(2)
                os._exit(0)
            born += 1
        print(os.getuid(), born, refused)
    """))
    box = Sandbox(Limits(mode="user", nproc=24))
    r = box([SYSTEM_PYTHON, "script.py"], cwd=open_dir, timeout_s=20)
    uid, born, refused = map(int, r.stdout.split())
    assert uid >= Limits().uid_base and born < 24 and refused > 270, r
    assert "network isolation" in box.protections_off()[0]


@needs_root
def test_user_mode_kills_every_process_of_the_uid(open_dir):
    (open_dir / "daemon.py").write_text(textwrap.dedent("""
        import os, time
        if os.fork():
            os._exit(0)
        os.setsid()
        for i in range(600):  # bounded: 30 s
            with open("out/ticks.txt", "a") as f:
                f.write("x")
            time.sleep(0.05)
    """))
    (open_dir / "script.py").write_text(
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, 'daemon.py'], start_new_session=True)\n"
        "time.sleep(60)\n")
    r = Sandbox(Limits(mode="user"))([SYSTEM_PYTHON, "script.py"], cwd=open_dir, timeout_s=1.5)
    assert r.timed_out
    size = (open_dir / "out" / "ticks.txt").stat().st_size
    time.sleep(0.4)
    assert (open_dir / "out" / "ticks.txt").stat().st_size == size


@needs_root
def test_user_mode_warns_about_readable_hidden_paths(open_dir):
    (open_dir / "answers").mkdir()
    os.chmod(open_dir / "answers", 0o755)
    off = Sandbox(Limits(mode="user", hide=(str(open_dir / "answers"),))).protections_off()
    assert any("chmod go-rwx" in line and "answers" in line for line in off)
    with pytest.raises(sandbox.SandboxError, match="traversable"):
        hidden_parent = open_dir / "private"
        (hidden_parent / "w").mkdir(parents=True)
        os.chmod(hidden_parent, 0o700)
        Sandbox(Limits(mode="user"))([SYSTEM_PYTHON, "-c", "0"], cwd=hidden_parent / "w",
                                     timeout_s=5)


def test_a_stale_heartbeat_ends_the_run(tmp_path):
    r = run(tmp_path, """
        import time
        for i in range(3):
            open("out/progress.json", "w").write(str(i))
            time.sleep(0.3)
        time.sleep(30)                      # hangs: no more progress
    """, timeout=20, heartbeat_file="out/progress.json", heartbeat_s=1.0)
    assert r.timed_out and "no progress for 1 s" in r.reason
    assert 1.5 < r.duration_s < 6


# Four children of 150 MB each: each far under its own RLIMIT_AS, together over the limit.
MEMORY_HOGS = """
    import os, time
    for _ in range(4):                  # bounded: 4 x 150 MB
        if os.fork() == 0:
            block = bytearray(150 << 20)
            block[::4096] = b"x" * len(block[::4096])   # touch every page
            time.sleep(20)
            os._exit(0)
    time.sleep(20)
"""


@needs_isolation
def test_total_memory_of_all_processes_is_bounded_when_polled(tmp_path, monkeypatch):
    """Without a memory cgroup (a kernel or container without one) the sum is polled."""
    monkeypatch.setattr(sandbox, "memory_parent", lambda: None)
    box = Sandbox(Limits(total_memory_bytes=400 * MiB, address_space_bytes=GiB))
    assert box.memory_cgroup is None and "400 MB memory in all (polled)" in box.describe()
    r = box([sys.executable, "-c", textwrap.dedent(MEMORY_HOGS)], cwd=tmp_path, timeout_s=30)
    assert "used more than 400 MB of memory" in r.reason, r
    assert r.duration_s < 20 and r.memory_peak_bytes is None


@needs_memory_cgroup
def test_memory_cgroup_bounds_the_whole_tree_exactly(tmp_path):
    """With a memory cgroup the kernel holds the tree's total at the limit at every instant (a
    poll every 0.5 s lets a fast tree overshoot), the run ends with the memory reason, and the
    worker's cgroup is gone afterwards."""
    box = Sandbox(Limits(total_memory_bytes=400 * MiB, address_space_bytes=GiB))
    parent, version = box.memory_cgroup
    assert f"400 MB memory in all (cgroup v{version})" in box.describe()
    r = box([sys.executable, "-c", textwrap.dedent(MEMORY_HOGS)], cwd=tmp_path, timeout_s=30)
    assert "used more than 400 MB of memory in all its processes" in r.reason, r
    assert r.returncode < 0 and r.duration_s < 20
    # the children were charged (the limit was reached) and never held more than it together
    assert 300 * MiB < r.memory_peak_bytes <= 400 * MiB, r
    assert not list(parent.glob(f"cnnlab-worker-{os.getpid()}-*"))


@pytest.fixture
def cgroup2_hierarchy(tmp_path):
    """The kernel's cgroup v2 hierarchy mounted at a fresh folder (root that may mount only)."""
    mount = tmp_path / "cgroup2"
    mount.mkdir()
    if not IS_ROOT or subprocess.run(["mount", "-t", "cgroup2", "none", str(mount)],
                                     capture_output=True).returncode != 0:
        pytest.skip("mounting the cgroup v2 hierarchy needs root in a kernel that allows it")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


DELEGATE = """
    import os, sys
    from pathlib import Path
    sys.path[:0] = [{root!r}]
    from grader import memcg
    scope = Path({scope!r})
    (scope / "cgroup.procs").write_text(str(os.getpid()))   # as systemd-run --scope puts it
    try:
        memcg._delegate(scope, {controller!r})
    except OSError as e:
        print("refused", e.errno)
    print(Path("/proc/self/cgroup").read_text().splitlines()[-1].split("::")[1])
    print((scope / "cgroup.subtree_control").read_text().strip())
"""


def test_cgroup2_delegation_moves_the_grader_into_a_leaf_of_its_own(cgroup2_hierarchy):
    """cgroup v2 hands a controller to the children of a cgroup only while no process lives in
    it: the grader, alone in its delegated scope, moves into a leaf and enables the controller;
    beside another process it is refused (and the sandbox polls). This kernel gives the memory
    controller to cgroup v1, so the mechanics are checked with a controller v2 has here."""
    controllers = (cgroup2_hierarchy / "cgroup.controllers").read_text().split()
    if not controllers:
        pytest.skip("this kernel's cgroup v2 hierarchy has no controller to delegate")
    controller = "memory" if "memory" in controllers else controllers[0]
    alone, shared = cgroup2_hierarchy / "cnnlab-test-alone", cgroup2_hierarchy / "cnnlab-test-shared"
    root_control = cgroup2_hierarchy / "cgroup.subtree_control"
    enabled = controller in root_control.read_text().split()
    other = None
    try:
        root_control.write_text(f"+{controller}")  # the scopes are offered it, as systemd does
        for scope in (alone, shared):
            scope.mkdir()
        other = subprocess.Popen(["sleep", "60"])
        (shared / "cgroup.procs").write_text(str(other.pid))
        out = {}
        for scope in (alone, shared):
            code = textwrap.dedent(DELEGATE.format(root=str(ROOT), scope=str(scope),
                                                   controller=controller))
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=60)
            assert r.returncode == 0, r.stderr
            out[scope.name] = r.stdout.splitlines()
        leaf = out["cnnlab-test-alone"][0]
        assert leaf.startswith("/cnnlab-test-alone/cnnlab-worker-") and leaf.endswith("-grader")
        assert out["cnnlab-test-alone"][1] == controller
        assert out["cnnlab-test-shared"][0].startswith("refused"), out
        assert out["cnnlab-test-shared"][2] == ""
    finally:
        if other is not None:
            other.kill()
            other.wait()
        for scope in (alone, shared):  # the children have exited: their cgroups are empty
            for leaf in scope.glob("cnnlab-worker-*"):
                leaf.rmdir()
            if scope.exists():
                scope.rmdir()
        if not enabled:
            root_control.write_text(f"-{controller}")


def test_mode_can_be_chosen_and_unknown_modes_are_refused(monkeypatch):
    monkeypatch.setenv("CNNLAB_SANDBOX_MODE", "none")
    assert Sandbox().mode == "none"
    assert "namespaces" not in Sandbox().describe() and "none" in Sandbox().describe()
    monkeypatch.setenv("CNNLAB_SANDBOX_MODE", "chroot")
    with pytest.raises(sandbox.SandboxError, match="unknown sandbox mode"):
        Sandbox()


VIEW_PROBE = """
    import os
    print(os.getuid(), sorted(p for p in os.listdir("/proc") if p.isdigit()))
    print(os.path.exists("/root"), os.path.exists("{solutions}"), os.path.exists("{work}/../x"))
"""


@pytest.fixture
def probe_dir(open_dir):
    """A work dir every uid can reach holding VIEW_PROBE, and a file beside it."""
    work = open_dir / "w"
    (work / "out").mkdir(parents=True)
    (work / "p.py").write_text(textwrap.dedent(VIEW_PROBE.format(
        solutions=ROOT / "solutions", work=work)))
    (open_dir / "x").write_text("beside the work dir")
    for path in (work, work / "out"):
        os.chmod(path, 0o777)
    return work


@needs_isolation
def test_without_root_bwrap_runs_in_a_user_namespace_and_says_what_is_off(probe_dir):
    """A grader that is not root (a laptop): the same view, as the grader's own user."""
    work = probe_dir
    pylib = work.parent / "pylib"  # psutil (an abi3 wheel) where the system Python's uid reads it
    shutil.copytree(Path(psutil.__file__).parent, pylib / "psutil")
    code = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "lib")!r}, {str(pylib)!r}]
        from grader.sandbox import Sandbox
        box = Sandbox()
        print(box.mode, box.own_uid, box.protections_off())
        r = box(["{SYSTEM_PYTHON}", "p.py"], cwd={str(work)!r}, timeout_s=20)
        print(r.stdout + r.stderr, end="")
    """)
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          SYSTEM_PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("bwrap False") and "process-count limit" in lines[0], out
    assert lines[1:] == ["65534 ['1', '2']", "False False False"], out


@needs_isolation
def test_as_root_where_mounting_is_forbidden_bwrap_runs_as_the_sandbox_uid(probe_dir,
                                                                           monkeypatch):
    """The container fallback: bwrap started as the sandbox uid, in a user namespace. (The
    grader's Python may live where that uid cannot pass, so the system Python runs here.)"""
    work = probe_dir
    monkeypatch.setattr(sandbox, "_python_dirs", lambda: [Path("/usr")])
    box = Sandbox()
    box._style = "userns"
    r = box([SYSTEM_PYTHON, "p.py"], cwd=work, timeout_s=20)
    uid, procs = r.stdout.splitlines()[0].split(" ", 1)
    assert int(uid) >= Limits().uid_base and procs == "['1', '2']", r
    assert r.stdout.splitlines()[1] == "False False False", r
