"""``python -m grader``: see :mod:`grader.cli`.

Run with a Python that lacks the course's packages (not the project's ``.venv``), it says in one
line how to run it instead of failing on an import (:func:`grader.commands.preflight`).
"""

import sys

from grader.commands import preflight

problem = preflight(sys.argv[1:])
if problem:
    print(problem, file=sys.stderr)
    sys.exit(2)

from grader.cli import main  # noqa: E402  (after the check: it imports numpy, rich, jax)

sys.exit(main())
