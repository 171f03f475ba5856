"""``check(NAME)`` in a lab notebook: the feedback of ``python -m grader check NAME`` on the code
the kernel ran, merged over the lab's module (:mod:`grader.notebook` extracts and merges). Kept
apart from :mod:`grader.notebook` because it runs the grader, which reads notebooks itself.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from grader.notebook import ROOT, extract, kernel_cells, merge, module_folder
from grader.runner import GraderError, grade_submission, select_exercises
from grader.scoreboard import print_results
from grader.specs import MODULES, load


def check(*names: str, timeout: float = 30.0) -> None:
    """Grade exercises (or a whole lab) from a notebook cell and print the feedback of
    ``python -m grader check NAME``, on the code this kernel ran on top of the lab's module.

    ``check("conv_output_size")``, ``check("convolution")``; run the cell of your function
    first (the check grades what the kernel has, not what is saved).
    """
    try:
        chosen = select_exercises(list(names) or None)
    except GraderError as exc:
        print(f"check: {exc}")
        return
    modules = [m for m in MODULES if any(e.module == m for e in chosen)]
    code = extract(kernel_cells())
    notes: list[str] = []
    folders: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-check-") as tmp:
        stage = Path(tmp)
        for module in modules:
            folder = module_folder(module)
            if folder is None:
                print(f"check: cannot find {module}.py next to this notebook or in "
                      f"{ROOT / 'exercises'}")
                return
            folders.append(folder)
            for path in sorted(folder.glob("*.py"))[:50]:
                if not (stage / path.name).exists():
                    shutil.copyfile(path, stage / path.name)
            base = (folder / f"{module}.py").read_text(encoding="utf-8", errors="replace")
            text, why = merge(base, code, [e.name for e in load(module)], label="this notebook")
            notes += why
            (stage / f"{module}.py").write_text(text if text is not None else base,
                                                encoding="utf-8")
        try:
            result = grade_submission(stage, exercises=list(names) or None, timeout_s=timeout)
        except GraderError as exc:
            print(f"check: {exc}")
            return
    # the title names the module under the notebook's code: "cnnlab grades — ../pooling.py"
    result.submission = str(folders[0] / f"{modules[0]}.py")
    result.warnings = notes + result.warnings
    print_results(result, detailed=True, verbose=False)
