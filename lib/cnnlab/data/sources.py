"""The raw files a data set is prepared from, and the fingerprint that names the prepared copy.

A prepared copy (TFDS ``array_record`` files) is keyed by its sources: its TFDS config name is
:attr:`Sources.fingerprint`, a hash of the sha256 of every source file. Files that change (or a
``--data-dir`` that points at other files) give another key, so they are prepared *beside* the
copies that exist, never over them: bad files can fail to prepare, but they cannot take a good
copy with them. The same files always give the same key, wherever they are and whether they were
downloaded (their registered checksums) or found in a directory (their computed ones).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cnnlab.errors import CnnlabError


def sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(checksums: Mapping[str, str]) -> str:
    """``"src-"`` + 16 hex digits of sha256 over the sorted ``"<role> <sha256>"`` lines.

    >>> fingerprint({"train": "ab" * 32}) == fingerprint({"train": "ab" * 32})
    True
    """
    lines = "".join(f"{role} {digest}\n" for role, digest in sorted(checksums.items()))
    return "src-" + hashlib.sha256(lines.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Download:
    """A file at its original location with its registered size and sha256."""

    url: str
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Sources:
    """The raw files of one prepared copy.

    Attributes:
      checksums: role (usually the file name) -> sha256 of the file.
      files: role -> the local file, or None when the files are downloaded.
      where: the directory, or the URL (the URLs' common prefix), for messages.
    """

    checksums: Mapping[str, str]
    files: Mapping[str, Path] | None
    where: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.checksums)

    @classmethod
    def local(cls, directory: Path, names: Sequence[str]) -> Sources:
        """The files ``names`` in ``directory`` (their checksums are computed: one read of each)."""
        files = {name: directory / name for name in names}
        return cls({name: sha256(path) for name, path in files.items()}, files, str(directory))

    @classmethod
    def download(cls, downloads: Mapping[str, Download]) -> Sources:
        """The files of ``downloads`` (role -> :class:`Download`), keyed by their registered checksums."""
        urls = [d.url for d in downloads.values()]
        where = urls[0] if len(urls) == 1 else os.path.commonprefix(urls).rpartition("/")[0] + "/"
        return cls({role: d.sha256 for role, d in downloads.items()}, None, where)


def missing(directory: Path, names: Sequence[str]) -> list[str]:
    """The files of ``names`` that ``directory`` lacks."""
    return [n for n in names if not (directory / n).is_file()]


def complete_dir(directory: Path, names: Sequence[str], subdir: str) -> Path | None:
    """``directory`` or ``directory/subdir``, whichever holds every file of ``names``, else None."""
    for d in (directory, directory / subdir):
        if not missing(d, names):
            return d
    return None


def find_dir(data_dir: str | os.PathLike, names: Sequence[str], subdir: str, *, what: str,
             how_to_get: str) -> Path:
    """The directory of a user's ``--data-dir`` that holds the files ``names``.

    ``data_dir`` is tried as itself and as ``data_dir/subdir``.

    Raises:
      CnnlabError: the directory does not exist or lacks some of the files (named).
    """
    d = Path(data_dir).expanduser()
    if not d.is_dir():
        raise CnnlabError(f"data dir {d} does not exist; point --data-dir at a directory with the "
                          f"{what} files ({', '.join(names)}), or {how_to_get}")
    found = complete_dir(d, names, subdir)
    if found is None:
        raise CnnlabError(f"{what} files not found in {d} (missing {', '.join(missing(d, names))}); "
                          f"{how_to_get}")
    return found
