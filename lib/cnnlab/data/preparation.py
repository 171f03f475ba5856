"""Preparing a prepared copy once, safely: a lock, aside-then-swap, never over a good copy.

A prepared copy lives where TFDS puts it, ``TFDS_DIR/<builder>/<config>/<version>/``, and the
config name of cnnlab's own builders is the fingerprint of the source files
(:attr:`cnnlab.data.sources.Sources.fingerprint`). So:

* **nothing good is overwritten**: other files get another config, prepared beside the existing
  copies (cnnlab never asks TFDS to overwrite: no ``FORCE_REDOWNLOAD``);
* **a copy appears only when complete**: TFDS writes into ``incomplete.XXXXXX_<version>/`` next to
  the final place and renames it into place at the end (one atomic rename); a preparation that
  fails (corrupt files) or is killed (``kill -9``, power loss) leaves no copy, only that
  temporary directory, which the next preparation of the same copy removes;
* **each copy is prepared once**: an exclusive lock per copy (``flock`` on
  ``TFDS_DIR/<builder>/.<config>.lock``, released by the kernel when a process dies) makes
  parallel processes (pytest-xdist, several trainings) wait for the first one and reuse its copy.

Downloads (MNIST, CIFAR-10) go through TFDS's download manager, which verifies each file's
sha256. Its downloader retries a connection for minutes before it gives up, so a HEAD request per
host, bounded by :data:`PROBE_TIMEOUT`, checks first that the host answers; offline that is one
line in seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError
from tensorflow_datasets.core.utils import tqdm_utils

from cnnlab.data.sources import Download
from cnnlab.errors import CnnlabError

PROBE_TIMEOUT = 10.0  # seconds a host has to answer before a download is called offline


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence TFDS's progress bars and its absl log lines ("Downloading and preparing",
    "Using custom data configuration", ...) while cnnlab prints one line of its own."""
    # The level of absl's Python logger, not absl.logging.get_verbosity(): before absl's flags
    # are parsed that reports the flag's default (WARNING), and restoring it would undo the
    # caller's own setting (the CLI's ERROR, which hides orbax's routine warnings).
    logger, bars = logging.getLogger("absl"), tqdm_utils._active
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    tqdm_utils.display_progress_bar(False)
    try:
        yield
    finally:
        logger.setLevel(level)
        tqdm_utils.display_progress_bar(bars)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path``; yields False (no lock) when it cannot be created (a
    read-only data dir prepared by someone else: nothing to race for) or the file system has no
    locks (some network mounts)."""
    try:
        f = open(path, "a")
    except OSError:
        yield False
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive(tfds_dir: Path, name: str, config: str | None) -> Iterator[None]:
    """Hold the lock of the prepared copy ``name/config`` in ``tfds_dir`` (check and prepare it
    inside); on entry, remove what killed preparations of that copy left behind.

    Raises:
      CnnlabError: ``tfds_dir`` cannot be created.
    """
    builder_dir = tfds_dir / name
    try:
        builder_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CnnlabError(f"cannot create the TFDS data dir {tfds_dir} ({e.strerror}); "
                          "pass a writable --tfds-dir or set TFDS_DATA_DIR") from None
    with _flock(builder_dir / f".{config or name}.lock") as locked:
        if locked:  # no live process is preparing this copy: its temporary dirs are leftovers
            parent = builder_dir / config if config else builder_dir
            for leftover in parent.glob("incomplete.*"):
                shutil.rmtree(leftover, ignore_errors=True)
        yield


def is_prepared(builder) -> bool:
    """Whether a complete copy of ``builder``'s config and version exists."""
    # Checking existence first keeps TFDS from warning about a variant folder that is not there.
    return builder.data_path.exists() and builder.is_prepared()


def check_reachable(urls: Sequence[str], *, what: str, hint: str) -> None:
    """One HEAD request per host of ``urls``, each allowed :data:`PROBE_TIMEOUT` seconds.

    Any HTTP answer (even 403 or 405) counts as reachable; proxies are taken from the usual
    ``https_proxy``/``http_proxy`` variables, as TFDS's downloader does.

    Raises:
      CnnlabError: a host cannot be resolved, refuses the connection or does not answer in time.
    """
    hosts = {}
    for url in urls:
        hosts.setdefault(urlsplit(url).netloc, url)
    for host, url in hosts.items():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                   timeout=PROBE_TIMEOUT).close()
        except urllib.error.HTTPError:
            pass  # the server answered: the network works
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise CnnlabError(f"cannot download {what}: {host} does not answer ({reason}); "
                              f"offline? {hint}") from None


def build(builder, *, what: str, manual_dir: str | os.PathLike | None = None,
          downloads: Mapping[str, Download] | None = None, hint: str = "") -> None:
    """Prepare ``builder``'s copy (call it inside :func:`exclusive`, after :func:`is_prepared`).

    Args:
      builder: a TFDS builder whose copy does not exist yet.
      what: what is prepared, for the one line printed to stderr and for errors.
      manual_dir: passed to the builder as ``dl_manager.manual_dir``.
      downloads: the files the builder will download (checked with :func:`check_reachable`
        first, then verified against their sha256 by TFDS's download manager).
      hint: what to do instead when a download fails (appended to the error).

    Raises:
      CnnlabError: one line: the source files are broken (raised by the builder's readers), the
        data dir is not writable, a host does not answer, or a download fails or does not match
        its checksum. Nothing is left in place of the copy.
    """
    if downloads:
        check_reachable([d.url for d in downloads.values()], what=what, hint=hint)
        megabytes = sum(d.size for d in downloads.values()) / 1e6
        print(f"cnnlab: downloading {what} ({megabytes:.1f} MB) into {builder.data_dir_root}/downloads",
              file=sys.stderr)
    print(f"cnnlab: preparing {what} in {builder.data_path} (once)", file=sys.stderr)
    config = tfds.download.DownloadConfig(
        try_download_gcs=False, force_checksums_validation=bool(downloads),
        manual_dir=os.fspath(manual_dir) if manual_dir is not None else None)
    try:
        builder.download_and_prepare(download_config=config)
    except PermissionError as e:
        raise CnnlabError(f"cannot write to the TFDS data dir {builder.data_dir_root} ({e.strerror}: "
                          f"{e.filename}); pass a writable --tfds-dir or set TFDS_DATA_DIR") from None
    except (tfds.download.DownloadError, NonMatchingChecksumError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CnnlabError(f"could not prepare {what}: {first}"
                          f"{'; ' + hint if downloads and hint else ''}") from None


def prepare(make_builder: Callable[[], object], *, what: str,
            manual_dir: str | os.PathLike | None = None,
            downloads: Mapping[str, Download] | None = None, hint: str = ""):
    """A prepared builder: ``make_builder()`` reused if its copy exists, else prepared once.

    See :func:`build` for the arguments and errors.
    """
    with quiet():
        builder = make_builder()
        config = builder.builder_config.name if builder.builder_config else None
        with exclusive(Path(builder.data_dir_root), builder.name, config):
            if not is_prepared(builder):
                build(builder, what=what, manual_dir=manual_dir, downloads=downloads, hint=hint)
                builder = make_builder()
    return builder
