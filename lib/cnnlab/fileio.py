"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

Every file cnnlab and its grader write for someone else to read (metrics, plots, data files,
grader results) goes through :func:`atomic_open`: write into a temporary file in the same
directory, flush it to disk, then ``os.replace`` it over the target (atomic on POSIX within one
file system). A crash or a kill in the middle leaves the previous file untouched and no stray
temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _default_mode() -> int:
    """The mode a plain ``open()`` would give under the current umask (``mkstemp`` gives 0600,
    which would hide results from other users, e.g. a grader's sandboxed worker)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _default_mode()  # read once at import: os.umask is process-wide, threads must not race it


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, durable: bool = True) -> Iterator[IO]:
    """Open ``path`` for writing (``mode`` "wb" or "w"); it appears complete on success only.

    Missing parent directories are created. On an exception the temporary file is removed and
    ``path`` keeps its previous content. ``durable=False`` skips the fsync, for scratch files
    that need atomicity against readers but need not survive a power cut.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    with atomic_open(path, "wb") as f:
        f.write(text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_open(path, "wb") as f:
        f.write(data)
