"""The one exception type for user mistakes.

Anything a user can get wrong (a name, a path, a file, a flag) raises :class:`CnnlabError` with a
message that says what was wrong and how to fix it. The CLI prints it as one line,
``cnnlab: error: <message>``, and exits with status 2; it never shows a traceback for it.
Programming errors stay ordinary exceptions and keep their tracebacks.
"""


class CnnlabError(Exception):
    """A user mistake, reported as one line and exit status 2 by the CLI."""
