"""The reference's compiled programs shared with the sandboxed workers (``Limits.compiled_cache``):
shown only when safe, the same grades with it as without, and a cache that is missing, corrupt or
not writable just costs compile time."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader import runner
from grader.sandbox import Limits, Sandbox, shareable_cache

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "hostile"))
import submissions as kit  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
needs_isolation = pytest.mark.skipif(
    Sandbox().mode != "bwrap" and not os.environ.get("CI"),
    reason="the compiled cache is shown in mode bwrap only (apt-get install bubblewrap)")


def folder(tmp_path: Path, mode: int = 0o711, entry_mode: int = 0o644) -> Path:
    d = tmp_path / "compiled"
    d.mkdir(parents=True)
    (d / "jit_f-0123-cache").write_bytes(b"x")
    os.chmod(d / "jit_f-0123-cache", entry_mode)
    os.chmod(d, mode)
    return d


def test_only_a_folder_that_cannot_be_listed_or_changed_is_shown(tmp_path):
    assert shareable_cache(folder(tmp_path / "a")) is not None
    assert shareable_cache(folder(tmp_path / "b", mode=0o755)) is None  # others could list it
    assert shareable_cache(folder(tmp_path / "c", mode=0o733)) is None  # ... or write into it
    assert shareable_cache(folder(tmp_path / "d", mode=0o700)) is None  # ... or not enter it
    assert shareable_cache(folder(tmp_path / "e", entry_mode=0o666)) is None  # a writable entry
    linked = folder(tmp_path / "f")
    os.chmod(linked, 0o755)
    (linked / "jit_g-4567-cache").symlink_to("/etc/passwd")  # an entry that points elsewhere
    os.chmod(linked, 0o711)
    assert shareable_cache(linked) is None
    (tmp_path / "g").symlink_to(folder(tmp_path / "h"))
    assert shareable_cache(tmp_path / "g") is None  # the folder itself a link
    assert shareable_cache(tmp_path / "missing") is None and shareable_cache(None) is None


def after_configure_jax(code: str, env: dict[str, str]) -> str:
    """The last line ``code`` prints, run in a fresh Python after the worker's JAX set-up
    (``grader.worker.configure_jax``) in ``env``."""
    r = subprocess.run([sys.executable, "-c", f"from grader.worker import configure_jax; "
                        f"configure_jax(); import jax; {code}"], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, **env}, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def cache_dir_seen(env: dict[str, str]) -> str:
    """The cache folder the worker's JAX set-up chooses in ``env``; compiles one function."""
    return after_configure_jax("jax.jit(lambda x: x * 3.0)(1.0); "
                               "print(jax.config.values['jax_compilation_cache_dir'])", env)


def test_a_read_only_cache_is_read_never_written_and_a_missing_one_ignored(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    assert cache_dir_seen({"CNNLAB_JAX_CACHE_DIR": str(ro), "CNNLAB_JAX_CACHE_READONLY": "1"}) \
        == str(ro)
    assert list(ro.iterdir()) == []  # compiled, not kept
    missing = tmp_path / "missing"
    assert cache_dir_seen({"CNNLAB_JAX_CACHE_DIR": str(missing),
                           "CNNLAB_JAX_CACHE_READONLY": "1"}) == "None"
    assert not missing.exists()
    rw = tmp_path / "rw"  # the writable cache of `make grade` still fills
    assert cache_dir_seen({"CNNLAB_JAX_CACHE_DIR": str(rw)}) == str(rw) and any(rw.iterdir())


def cache_hits(env: dict[str, str]) -> int:
    """How many programs the worker's JAX set-up in ``env`` read from the persistent cache while
    compiling three functions (JAX's own monitoring event)."""
    return int(after_configure_jax(
        "hits = []; jax.monitoring.register_event_listener(lambda e, **_: "
        "hits.append(e) if e == '/jax/compilation_cache/cache_hits' else None); "
        "[jax.jit(f)(jax.numpy.ones((4, 4))) for f in (jax.nn.softmax, jax.numpy.tanh, "
        "lambda x: x @ x.T)]; print(len(hits))", env))


def test_programs_cached_at_one_path_are_hit_read_only_at_another(tmp_path):
    """The sandbox shows the cache at another path than the grader filled it at: the keys must
    not depend on the path (JAX's GPU autotune folder, named after it, is switched off)."""
    filled = tmp_path / "filled"
    assert cache_hits({"CNNLAB_JAX_CACHE_DIR": str(filled)}) == 0
    shown = tmp_path / "elsewhere" / "shown"
    shutil.copytree(filled, shown)
    entries = sorted(p.name for p in shown.iterdir())
    programs = len({name.rsplit("-", 1)[0] for name in entries})  # a key may have an -atime file
    assert programs >= 3  # the three functions (and the arrays' own small programs)
    hits = cache_hits({"CNNLAB_JAX_CACHE_DIR": str(shown), "CNNLAB_JAX_CACHE_READONLY": "1"})
    assert hits == programs, entries
    assert sorted(p.name for p in shown.iterdir()) == entries  # read, nothing written


def outcomes(result) -> dict:
    return {e.qualname: (e.score, e.status, [(c.name, c.passed, c.message) for c in e.cases])
            for e in result.exercises}


@needs_isolation
def test_the_same_grades_with_the_cache_without_it_and_with_a_corrupt_one(tmp_path):
    """A correct and a wrong submission of two labs, graded in the sandbox without the cache,
    with the reference's compiled programs, and with every entry of them damaged (garbage or cut
    in half): every case the same, message included."""
    store = runner.open_reference()
    modules = ("neurons", "pooling")
    for module in modules:
        store.plan(module, include_hidden=True)  # fills the cache
    compiled = runner.compiled_cache_dir()
    damaged = tmp_path / "damaged"
    shutil.copytree(compiled, damaged)
    for i, entry in enumerate(sorted(damaged.iterdir())):
        data = entry.read_bytes()
        entry.write_bytes(data[: len(data) // 2] if i % 2 else b"\x00garbage" * 64)
    os.chmod(damaged, 0o711)
    assert shareable_cache(compiled) and shareable_cache(damaged)
    for kind in ("correct", "wrong"):
        sub = kit.make_submission(kind, tmp_path / kind, modules=modules)
        graded = [outcomes(runner.grade_submission(
            sub, exercises=list(modules), include_hidden=True, reference=store, jobs=1,
            launcher=Sandbox(Limits(compiled_cache=cache))))
            for cache in (None, str(compiled), str(damaged))]
        assert graded[1] == graded[0] and graded[2] == graded[0], kind
        assert any(score == 0 for score, _, _ in graded[0].values()) == (kind == "wrong")


def test_staging_folders_of_killed_reference_runs_are_swept_live_ones_kept(tmp_path, monkeypatch):
    """A grader killed while its reference compiled leaves a hidden staging folder; the next
    reference run removes those untouched for an hour and leaves a running one's alone."""
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path))
    stale, live = tmp_path / ".jax-compiled-killed", tmp_path / ".jax-compiled-running"
    for d in (stale, live):
        d.mkdir()
        (d / "jit_f-0123-cache").write_bytes(b"x")
    hours_ago = os.path.getmtime(stale) - 2 * runner.STALE_STAGING_S
    os.utime(stale, (hours_ago, hours_ago))
    (tmp_path / "jax-compiled-notes").write_text("not a staging folder")
    runner.ReferenceStore().plan("neurons", include_hidden=True)  # runs the reference
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".", "jax")))
    assert left == [".jax-compiled-running", "jax-compiled", "jax-compiled-notes"]
    assert (live / "jit_f-0123-cache").read_bytes() == b"x"
    assert any(p.name.startswith("filled-neurons-") for p in (tmp_path / "jax-compiled").iterdir())
