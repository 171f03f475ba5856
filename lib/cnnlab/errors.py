"""The one exception type for user mistakes.

Anything a user can get wrong (a name, a path, a file, a flag) raises :class:`CnnlabError` with a
message that says what was wrong and how to fix it. The CLI prints it as one line,
``cnnlab: error: <message>``, and exits with status 2; it never shows a traceback for it.
Programming errors stay ordinary exceptions and keep their tracebacks.
"""

import signal


class CnnlabError(Exception):
    """A user mistake, reported as one line and exit status 2 by the CLI."""


class Interrupted(Exception):
    """A run stopped by SIGTERM or SIGINT between two steps, after saving a checkpoint of the
    current step (when there was anything to save). The CLI prints one line saying how to resume
    and exits with status 128 + ``signum`` (143 for SIGTERM, 130 for SIGINT), as a process
    killed by that signal would.

    Attributes:
      signum: the signal.
      step: the step the run stopped at (its checkpoint, when ``saved``).
      saved: whether a checkpoint of ``step`` exists.
      hint: what to do next (set by the command that knows how to resume), or None.
    """

    def __init__(self, signum: int, step: int, saved: bool):
        self.signum, self.step, self.saved = signum, step, saved
        self.hint: str | None = None
        self.signal_name = signal.Signals(signum).name
        what = f"checkpoint of step {step} saved" if saved else "nothing to save yet"
        super().__init__(f"stopped by {self.signal_name} at step {step} ({what})")
