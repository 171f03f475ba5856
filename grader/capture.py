"""What a student's code prints, captured per case in the worker and shown by the grader.

The worker runs every call inside a :class:`CaseOutput`: ``sys.stdout`` and ``sys.stderr``
(``print``, warnings, ``jax.debug.print``) go to one bounded buffer that keeps the first
:data:`HEAD_CHARS` and the last :data:`TAIL_CHARS` characters (a student may print gigabytes), and
:meth:`CaseOutput.attach` adds the text to the call's outcome as ``"printed"``. The grader reads
it back with :func:`printed_of` (bounded again: the worker is not trusted) and shows it under the
case (:func:`grader.results.printed_block`). Output written to the file descriptors directly
(``os.write``, C code, subprocesses) is not captured.

:func:`aside` sends what is printed meanwhile to a separate buffer: a plain call is first tried
compiled (:func:`grader.drivers.mode_call`), and what the function prints while it is traced
(tracers, no values) is not what the student asked to see.

Standard library only: the worker imports this before any student code.
"""

from __future__ import annotations

import collections
import contextlib
import io
import re
import sys

HEAD_CHARS = 4000
TAIL_CHARS = 4000
CUT = "\n… {} characters not shown …\n"          # between the head and the tail kept
CUT_RE = re.compile(r"\n… (\d+) characters not shown …\n")


class BoundedText(io.TextIOBase):
    """A text stream that keeps its first ``head`` and last ``tail`` characters."""

    def __init__(self, head: int = HEAD_CHARS, tail: int = TAIL_CHARS):
        super().__init__()
        self._head_cap, self._tail_cap = head, tail
        self._head: list[str] = []
        self._head_len = 0
        self._tail: collections.deque[str] = collections.deque()
        self._tail_len = 0
        self.total = 0  # characters written

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"

    def write(self, s) -> int:
        s = s if isinstance(s, str) else str(s)
        n = len(s)
        self.total += n
        room = self._head_cap - self._head_len
        if room > 0:
            self._head.append(s[:room])
            self._head_len += len(s[:room])
            s = s[room:]
        if s:
            self._tail.append(s)
            self._tail_len += len(s)
            while len(self._tail) > 1 and self._tail_len - len(self._tail[0]) >= self._tail_cap:
                self._tail_len -= len(self._tail.popleft())
        return n

    def text(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)[-self._tail_cap:]
        dropped = self.total - len(head) - len(tail)
        return head + CUT.format(dropped) + tail if dropped > 0 else head + tail


class CaseOutput:
    """``with CaseOutput() as printed: ...`` captures stdout and stderr of the block."""

    def __init__(self):
        self.buffer = BoundedText()

    def __enter__(self) -> CaseOutput:
        self._saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.buffer
        return self

    def __exit__(self, *exc) -> None:
        jax = sys.modules.get("jax")
        if jax is not None:  # jax.debug.print callbacks may still be on their way
            try:
                jax.effects_barrier()
            except Exception:  # noqa: BLE001 - a broken effect must not lose the outcome
                pass
        sys.stdout, sys.stderr = self._saved

    def attach(self, outcome: dict) -> dict:
        """``outcome`` with ``"printed"`` added when something was printed."""
        if self.buffer.total:
            outcome["printed"] = self.buffer.text()
        return outcome


@contextlib.contextmanager
def aside():
    """Send what is printed inside the block to a buffer of its own (``.total`` characters)."""
    saved = sys.stdout, sys.stderr
    buffer = BoundedText(head=0, tail=0)
    sys.stdout = sys.stderr = buffer
    try:
        yield buffer
    finally:
        sys.stdout, sys.stderr = saved


def printed_of(raw) -> str | None:
    """The ``"printed"`` text of an outcome written by the worker, validated and bounded."""
    text = raw.get("printed") if isinstance(raw, dict) else None
    if not isinstance(text, str) or not text:
        return None
    cap = HEAD_CHARS + TAIL_CHARS + 200
    return text if len(text) <= cap else text[:cap // 2] + "\n… cut …\n" + text[-cap // 2:]
