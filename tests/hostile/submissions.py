"""Build class submissions for tests and benchmarks: honest ones (correct, wrong, blank) and
hostile ones from the payloads in ``payloads/``.

A hostile submission is the reference module with one payload appended (later definitions win),
so only the attacked exercise differs from a correct submission: a payload's first line says
``# attacks: <function>`` of the module ``neurons`` (or ``<import>`` when the module as a whole is
attacked at import), or ``# attacks: <module>.<function>`` for another module. Every payload is
bounded (memory, processes, output, time) so that a grader bug cannot take the machine down.
``__SUBMISSIONS__``, ``__RESULTS__`` and ``__STUDENT__`` in a payload are replaced by the class's
folders and the student id (a student who knows the layout); the other ``__NAMES__`` by what a test
passes in ``fill`` (Python literals; :data:`FILL` holds harmless defaults).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PAYLOADS = HERE / "payloads"
ATTACKED_MODULE = "neurons"
OTHER_MODULE = "convolution"  # shipped honest beside import-time attacks


def attacks() -> dict[str, str]:
    """``{attack name: attacked function or "<import>"}`` for every payload."""
    out = {}
    for path in sorted(PAYLOADS.iterdir()):
        if path.suffix in (".py", ".txt"):
            first = path.read_text().splitlines()[0]
            out[path.name.split(".")[0]] = re.match(r"# attacks: (\S+)", first).group(1)
    return out


def _payload(name: str) -> str:
    for suffix in (".py", ".py.txt"):
        if (PAYLOADS / f"{name}{suffix}").exists():
            return (PAYLOADS / f"{name}{suffix}").read_text()
    raise KeyError(name)


FILL = {"__COPIES__": "[]", "__GRADER_PID__": "0", "__ROOT__": str(ROOT),
        "__RELEASE__": "/nonexistent", "__PUBLIC_ANSWERS__": "{}", "__COMPILED__": "''",
        "__ENTRY__": "''"}


def target(kind: str) -> tuple[str, str]:
    """``(module, function or "<import>")`` that attack ``kind`` attacks."""
    name = attacks()[kind]
    return tuple(name.split(".", 1)) if "." in name else (ATTACKED_MODULE, name)


def _reference(module: str) -> str:
    return (ROOT / "solutions" / f"{module}.py").read_text()


WRONG = {  # planted honest mistakes, appended like payloads
    "neurons": ("\n\ndef relu(x):\n    return x  # forgot the max\n\n\n"
                "def sigmoid(x):\n    return 1.0 / (1.0 + jnp.exp(x))  # wrong sign\n"),
    "convolution": ("\n\ndef conv_output_size(input_size, kernel_size, stride=1, padding=0):\n"
                    "    return input_size - kernel_size + 1  # ignores stride and padding\n"),
}


def make_submission(kind: str, dest: Path, *, student: str = "", submissions: Path | str = "",
                    results: Path | str = "",
                    modules: tuple[str, ...] = (ATTACKED_MODULE, OTHER_MODULE),
                    fill: dict[str, str] | None = None) -> Path:
    """Write submission ``kind`` ("correct", "wrong", "blank" or an attack name) as folder
    ``dest`` holding ``modules``. Returns ``dest``."""
    dest.mkdir(parents=True)
    for module in modules:
        if kind == "blank":
            shutil.copyfile(ROOT / "exercises" / f"{module}.py", dest / f"{module}.py")
            continue
        source = _reference(module)
        if kind == "wrong":
            source += WRONG.get(module, "")
        elif kind != "correct" and module == target(kind)[0]:
            payload = (_payload(kind).replace("__SUBMISSIONS__", str(submissions))
                       .replace("__RESULTS__", str(results)).replace("__STUDENT__", student))
            for name, value in {**FILL, **(fill or {})}.items():
                payload = payload.replace(name, value)
            source += "\n\n" + payload
        (dest / f"{module}.py").write_text(source)
    return dest


def expected_scores(kind: str, points: dict[str, float]) -> dict[str, float]:
    """What submission ``kind`` must score per exercise (``module.function``) of ``points``."""
    if kind == "correct":
        return dict(points)
    if kind == "blank":
        return {name: 0.0 for name in points}
    if kind == "wrong":
        wrong = {"neurons.relu", "neurons.sigmoid", "convolution.conv_output_size"}
        return {n: (0.0 if n in wrong else p) for n, p in points.items()}
    attacked_module, attacked = target(kind)
    out = {}
    for name, p in points.items():
        module, function = name.split(".", 1)
        hit = module == attacked_module and attacked in ("<import>", function)
        out[name] = 0.0 if hit else p
    return out
