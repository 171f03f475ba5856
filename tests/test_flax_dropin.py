"""Drop-in means drop-in: Flax's own Conv and pooling tests pass with cnnlab's layers.

The tests are those of the Flax release installed here, taken from its source distribution on
PyPI (``pip download --no-deps --no-binary :all: flax==<version>``, cached in
``~/.cache/cnnlab/flax-sdist`` or ``$CNNLAB_FLAX_SDIST_DIR``; not a copy in this repository):
the Conv tests of ``tests/linen/linen_linear_test.py`` (ConvLocal and ConvTranspose left out:
cnnlab has no such layers), ``PoolTest`` of ``tests/linen/linen_test.py`` and the tests there that
wrap ``nn.Conv`` (spectral and weight norm). Every test of the two files whose code or
parameters use ``nn.Conv``, ``nn.max_pool``, ``nn.avg_pool`` or ``nn.pooling`` must be among
those that ran and passed (:func:`conv_and_pool_tests_of_flax`), so a new one in a later Flax
release cannot be left out silently. They run in a subprocess under
``tests/flax_dropin_plugin.py``, which swaps ``nn.Conv``, ``nn.max_pool`` and ``nn.avg_pool``
for cnnlab's before Flax's test modules are imported.

Without network access to PyPI (and no cached sdist) the test is skipped, saying so; under CI
(``CI`` set) that is a failure.
"""

from __future__ import annotations

import ast
import collections
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
# ConvTranspose; PoolTest; the normalisation tests that wrap nn.Conv.
SELECTION = ("PoolTest or ((conv or int_kernel) and not transpose and not conv_local)"
             " or spectral_norm_train or weight_norm_train")
USES_CONV_OR_POOLS = re.compile(r"\bnn\.(Conv\b|max_pool\b|avg_pool\b|pooling\.)")


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


def conv_and_pool_tests_of_flax(directory: Path) -> dict[str, str]:
    """{test method name: its class} for every test in Flax's two files whose code or
    decorators (parameters) use ``nn.Conv`` (not ConvLocal/ConvTranspose), ``nn.max_pool``,
    ``nn.avg_pool`` or ``nn.pooling``."""
    found = {}
    for name in TEST_FILES:
        source = (directory / Path(name).name).read_text()
        for cls in ast.parse(source).body:
            if not isinstance(cls, ast.ClassDef):
                continue
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test"):
                    code = "\n".join(ast.get_source_segment(source, node) or ""
                                     for node in [*fn.decorator_list, fn])
                    if USES_CONV_OR_POOLS.search(code):
                        found[fn.name] = cls.name
    return found


def run_flax_tests(directory: Path, tmp_path: Path) -> tuple[dict, dict, str]:
    """Run the selection with cnnlab's layers swapped in; ``({outcome: count}, the plugin's
    report {"counts": calls of cnnlab's layers, "passed": {test name: 1}}, output)``."""
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


@pytest.mark.exhaustive  # hundreds of Flax's cases, ~70 s: make test-exhaustive (CI runs it)
def test_flax_conv_and_pool_tests_pass_with_cnnlab_layers(flax_tests, tmp_path):
    outcomes, report, output = run_flax_tests(flax_tests, tmp_path)
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0 and \
        outcomes.get("error", 0) == 0, output
    assert outcomes.get("passed", 0) > 0 and not outcomes.get("skipped"), output
    # Every Flax test that uses Conv or a pool ran and passed, each of its parameter cases
    # (absl names them test_x0, test_x1, ...): none was left out by the selection.
    required, passed = conv_and_pool_tests_of_flax(flax_tests), report["passed"]
    per_test = {name: sum(1 for p in passed if re.fullmatch(re.escape(name) + r"\d*", p))
                for name in required}
    assert all(per_test.values()), [name for name, n in per_test.items() if not n]
    per_class = collections.Counter()
    for name, n in per_test.items():
        per_class[required[name]] += n
    print(f"flax {FLAX_VERSION}: {outcomes.get('passed')} passed; of them, using Conv or pools: "
          f"{dict(per_class)}")
    # Flax 0.12.8: 10 PoolTest cases, 400 LinearTest cases using nn.Conv, 6 spectral/weight norm
    assert per_class["PoolTest"] >= 10 and per_class["LinearTest"] >= 300, per_class
    assert per_class["NormalizationTest"] >= 2, per_class
    # The swap took place, and the fast CPU path ran inside Flax's tests (not only fallbacks)
    counts = report["counts"]
    for layer in ("Conv", "max_pool", "avg_pool"):
        assert counts.get(f"{layer} calls", 0) > 0, counts
    assert counts.get("Conv on cnnlab's path", 0) > 10, counts  # 2-D circular/reflect tests
    assert counts.get("max_pool on cnnlab's path", 0) > 0, counts
