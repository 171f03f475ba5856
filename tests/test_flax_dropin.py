"""Drop-in means drop-in: Flax's own Conv and pooling tests pass with cnnlab's layers.

The tests are those of the Flax release installed here, taken from its source distribution on
PyPI (``pip download --no-deps --no-binary :all: flax==<version>``, cached in
``~/.cache/cnnlab/flax-sdist`` or ``$CNNLAB_FLAX_SDIST_DIR``; not a copy in this repository):
the Conv tests of ``tests/linen/linen_linear_test.py`` (ConvLocal and ConvTranspose left out)
and ``PoolTest`` of ``tests/linen/linen_test.py``. They run in a subprocess under
``tests/flax_dropin_plugin.py``, which swaps ``nn.Conv``, ``nn.max_pool`` and ``nn.avg_pool``
for cnnlab's before Flax's test modules are imported.

Without network access to PyPI (and no cached sdist) the test is skipped, saying so; under CI
(``CI`` set) that is a failure.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FLAX_VERSION = importlib.metadata.version("flax")
TEST_FILES = ("tests/linen/linen_linear_test.py", "tests/linen/linen_test.py")
# Conv tests (names with "conv", plus test_int_kernel_equality), without ConvLocal and
# ConvTranspose; and PoolTest.
SELECTION = "PoolTest or ((conv or int_kernel) and not transpose and not conv_local)"


def sdist_dir() -> Path:
    return Path(os.environ.get("CNNLAB_FLAX_SDIST_DIR")
                or Path.home() / ".cache" / "cnnlab" / "flax-sdist")


def flax_sdist() -> Path:
    """The source distribution of the installed Flax, downloaded once from PyPI."""
    cache = sdist_dir()
    path = cache / f"flax-{FLAX_VERSION}.tar.gz"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", f"flax=={FLAX_VERSION}", "--dest", str(cache), "--quiet"],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not path.exists():
        message = (f"could not download the source of flax=={FLAX_VERSION} from PyPI: "
                   f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def flax_tests(tmp_path_factory) -> Path:
    """Flax's two test files of the installed version, extracted into a temporary directory."""
    out = tmp_path_factory.mktemp(f"flax-{FLAX_VERSION}")
    with tarfile.open(flax_sdist()) as tar:
        for name in TEST_FILES:
            member = tar.getmember(f"flax-{FLAX_VERSION}/{name}")
            member.name = Path(name).name
            tar.extract(member, out, filter="data")
    (out / "pytest.ini").write_text("[pytest]\n")  # not this project's pytest settings
    return out


def run_flax_tests(directory: Path, tmp_path: Path) -> tuple[dict, dict, str]:
    """Run the selection with cnnlab's layers swapped in; ``({outcome: count}, the plugin's
    counts, output)``."""
    report = tmp_path / "counts.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get(
        "PYTHONPATH", "")]), CNNLAB_DROPIN_REPORT=str(report), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
           "flax_dropin_plugin", "-k", SELECTION, "linen_linear_test.py", "linen_test.py"]
    r = subprocess.run(cmd, cwd=directory, env=env, capture_output=True, text=True,
                       timeout=1200)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-2000:]
    outcomes = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)",
                                                 summary)}
    counts = json.loads(report.read_text()) if report.exists() else {}
    return outcomes, counts, r.stdout[-6000:] + r.stderr[-2000:]


def test_flax_conv_and_pool_tests_pass_with_cnnlab_layers(flax_tests, tmp_path):
    outcomes, counts, output = run_flax_tests(flax_tests, tmp_path)
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0 and \
        outcomes.get("error", 0) == 0, output
    # Flax 0.12.8 has 10 pool tests and about 400 selected conv tests; nothing may be skipped
    assert outcomes.get("passed", 0) >= 300 and not outcomes.get("skipped"), output
    # The swap took place, and the fast CPU path ran inside Flax's tests (not only fallbacks)
    for layer in ("Conv", "max_pool", "avg_pool"):
        assert counts.get(f"{layer} calls", 0) > 0, counts
    assert counts.get("Conv on cnnlab's path", 0) > 10, counts  # 2-D circular/reflect tests
    assert counts.get("max_pool on cnnlab's path", 0) > 0, counts
