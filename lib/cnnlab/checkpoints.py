"""Orbax checkpoints of the (possibly sharded) train state: saved asynchronously, the newest N
kept (and the best one by a metric), restored with a fallback past damaged ones.

A checkpoint is a directory ``<workdir>/checkpoints/<step>/`` with three items:

- ``state``: ``{"step", "params", "batch_stats"}``, written by every process for the shards it
  holds; what evaluation and prediction read;
- ``opt_state``: the optimizer state (what an exact resume needs besides ``state``);
- ``meta``: small JSON, a :class:`cnnlab.workdir.CheckpointMeta` (epoch, running sums of an
  unfinished epoch, best step so far, ...).

Why a cut-short checkpoint is never restored: orbax writes each step into a temporary directory
and renames it to ``<step>`` only once every file (and, with several processes, every process)
has finished; :meth:`Checkpoints.latest_step` only sees renamed directories, and leftover
temporary directories are deleted when the manager opens. A complete checkpoint damaged later
(a truncated or deleted file, bad metadata) is found when it is read:
:meth:`Checkpoints.restore_newest` reports it in one line naming the step and the file, moves it
into ``checkpoints/damaged/`` (nothing is deleted) and falls back to the next older one.

Restoring takes an abstract target whose leaves carry the shardings wanted *now*, so a checkpoint
written on 8 devices restores onto 1 (or the other way round).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from cnnlab.errors import CnnlabError

STATE, OPT_STATE, META = "state", "opt_state", "meta"
DAMAGED = "damaged"  # where restore_newest moves checkpoints that do not restore


class Checkpoints:
    """A thin wrapper over :class:`orbax.checkpoint.CheckpointManager`.

    Args:
      directory: where step directories live (created if missing, unless ``read_only``).
      keep: how many of the newest checkpoints to keep.
      best_metric: with a name (e.g. ``"val_loss"``), the checkpoint with the lowest value of
        that metric (passed to :meth:`save`) is kept too, however old.
      async_save: write in a background thread (the device-to-host copy still happens in
        :meth:`save`, so the caller may donate the state right after).
      read_only: for reading a finished run back: never creates, deletes or cleans anything.

    Raises:
      CnnlabError: ``read_only`` and the directory does not exist.

    Example:

    >>> import tempfile, numpy as np
    >>> state = {"step": np.int32(7), "params": {"w": np.ones(3, np.float32)}, "batch_stats": {},
    ...          "opt_state": {"mu": np.zeros(3, np.float32)}}
    >>> with Checkpoints(tempfile.mkdtemp(), keep=2) as ckpts:
    ...     ckpts.save(7, state, {"step": 7, "epochs_done": 1})
    ...     ckpts.wait()
    ...     device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    ...     target = abstract_like(state, jax.tree.map(lambda _: device, state))
    ...     arrays, meta = ckpts.restore(target)
    True
    >>> int(arrays["step"]), arrays["params"]["w"].tolist(), meta["epochs_done"]
    (7, [1.0, 1.0, 1.0], 1)
    """

    def __init__(self, directory: str, *, keep: int = 3, best_metric: str | None = None,
                 async_save: bool = True, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        self._read_only = read_only
        if read_only and not os.path.isdir(self.directory):
            raise CnnlabError(f"no checkpoints in {self.directory}; train first with "
                              f"`cnnlab train --workdir {os.path.dirname(self.directory)}`")
        if read_only:
            options = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False)
        else:
            policy: policies.PreservationPolicy = policies.LatestN(n=keep)
            best_fn = None
            if best_metric:
                def best_fn(metrics):
                    return metrics[best_metric]
                policy = policies.AnyPreservationPolicy([policy, policies.BestN(
                    get_metric_fn=best_fn, reverse=True, n=1,
                    keep_checkpoints_without_metrics=False)])
            # best_fn also makes orbax record the metrics of each checkpoint (for BestN).
            options = ocp.CheckpointManagerOptions(
                preservation_policy=policy, best_fn=best_fn, best_mode="min",
                enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, arrays: Mapping[str, Any], meta: Mapping[str, Any], *,
             metrics: Mapping[str, float] | None = None) -> bool:
        """Start saving ``arrays`` (``{"step", "params", "batch_stats", "opt_state"}``) and
        ``meta`` (JSON-able) as ``step``.

        Saving a step that already exists does nothing and returns False: a run is
        deterministic, so the same step holds the same state (and the existing, complete
        checkpoint is never replaced by a possibly unfinished one).

        Args:
          metrics: values for ``best_metric`` (e.g. ``{"val_loss": 0.31}``); checkpoints saved
            without them never count as the best.

        Returns:
          True when a save was started.
        """
        if step in self._manager.all_steps():
            return False
        items = {STATE: ocp.args.StandardSave({k: v for k, v in arrays.items()
                                               if k != OPT_STATE}),
                 META: ocp.args.JsonSave(dict(meta))}
        if jax.tree.leaves(arrays.get(OPT_STATE)):
            items[OPT_STATE] = ocp.args.StandardSave(arrays[OPT_STATE])
        self._manager.save(step, args=ocp.args.Composite(**items),
                           metrics=dict(metrics) if metrics else None, force=True)
        return True

    def read_meta(self, step: int) -> dict:
        """The ``meta`` item of ``step`` alone."""
        return dict(self._manager.restore(step, args=ocp.args.Composite(
            **{META: ocp.args.JsonRestore()}))[META])

    def restore(self, abstract: Mapping[str, Any], step: int | None = None) -> tuple[dict, dict]:
        """Read ``step`` (default: the newest) into the structure, dtypes and shardings of
        ``abstract``.

        Args:
          abstract: ``{"step", "params", "batch_stats"[, "opt_state"]}`` of
            :class:`jax.ShapeDtypeStruct` with ``sharding`` set (:func:`abstract_like`); without
            ``"opt_state"`` the optimizer state is not read (evaluation, prediction).
          step: which checkpoint.

        Returns:
          ``(arrays, meta)`` with the keys of ``abstract``.

        Raises:
          CnnlabError: there is no complete checkpoint.
          Exception: whatever orbax raises for a damaged checkpoint (see :meth:`restore_newest`).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CnnlabError(f"no complete checkpoint in {self.directory}")
        state_target = {k: v for k, v in abstract.items() if k != OPT_STATE}
        items = {STATE: ocp.args.StandardRestore(state_target), META: ocp.args.JsonRestore()}
        wants_opt = OPT_STATE in abstract and jax.tree.leaves(abstract[OPT_STATE])
        if wants_opt:
            items[OPT_STATE] = ocp.args.StandardRestore(abstract[OPT_STATE])
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        arrays = dict(restored[STATE])
        if OPT_STATE in abstract:
            arrays[OPT_STATE] = restored[OPT_STATE] if wants_opt else abstract[OPT_STATE]
        return arrays, dict(restored[META])

    def mismatch(self, abstract: Mapping[str, Any], step: int) -> str | None:
        """How the checkpoint ``step`` differs in structure or shapes from ``abstract``, in
        words, or None when it fits. Raises whatever reading its metadata raises."""
        stored = _leaf_shapes(self._item_metadata(step, STATE))
        wanted = _leaf_shapes({k: v for k, v in abstract.items() if k != OPT_STATE})
        for path in sorted(set(stored) | set(wanted)):
            if stored.get(path) != wanted.get(path):
                return (f"{path or 'the state'} is {_describe(stored.get(path))} in the "
                        f"checkpoint and {_describe(wanted.get(path))} here")
        if OPT_STATE in abstract and jax.tree.leaves(abstract[OPT_STATE]):
            have = sorted(_leaf_shapes(self._item_metadata(step, OPT_STATE)).values())
            want = sorted(_leaf_shapes(abstract[OPT_STATE]).values())
            if have != want:
                return (f"the optimizer state has {len(have)} arrays in the checkpoint and "
                        f"{len(want)} of other shapes here (another optimizer?)")
        return None

    def _item_metadata(self, step: int, item: str):
        path = epath.Path(self.directory) / str(step) / item
        if not path.exists():
            raise FileNotFoundError(f'item "{item}" is missing: local file "{path}"')
        metadata = ocp.StandardCheckpointHandler().metadata(path)
        return getattr(metadata, "tree", metadata)

    def restore_newest(self, abstract: Mapping[str, Any], *,
                       note: Callable[[str], None] = print) -> tuple[dict, dict, int]:
        """The newest checkpoint that restores: damaged ones are skipped with one line each.

        Args:
          abstract: as for :meth:`restore`.
          note: receives one line per skipped checkpoint (naming its step and the damaged
            file) and one saying which step was used after a skip.

        Returns:
          ``(arrays, meta, step)``.

        Raises:
          CnnlabError: there is no checkpoint, none restores, or the newest readable one does
            not fit ``abstract`` (another model or optimizer: older ones would not fit either).
        """
        steps = self.all_steps()[::-1]
        if not steps:
            raise CnnlabError(f"no complete checkpoint in {self.directory}")
        skipped = []
        _quiet_abandoned_reads()
        for step in steps:
            try:
                problem = self.mismatch(abstract, step)
            except Exception:  # noqa: BLE001 - unreadable metadata: restoring will tell
                problem = None
            if problem:
                raise CnnlabError(f"the checkpoint at step {step} in {self.directory} does not "
                                  f"fit this model/optimizer: {problem}; use the settings of "
                                  "the run that wrote it")
            try:
                arrays, meta = self.restore(abstract, step)
            except Exception as e:  # noqa: BLE001 - whatever orbax/tensorstore raise for bad data
                skipped.append(step)
                note(self._damage(step, e) + self._set_aside(step))
                continue
            if skipped:
                note(f"using checkpoint step {step}, the newest one that restores")
            return arrays, meta, step
        raise CnnlabError(f"none of the checkpoints in {self.directory} (steps "
                          f"{', '.join(map(str, sorted(skipped)))}) restores; start over with "
                          "--overwrite")

    def _set_aside(self, step: int) -> str:
        """Move a damaged checkpoint out of the way (into ``damaged/``, never deleted), so the
        resumed run writes that step anew; read-only managers leave it where it is."""
        if self._read_only:
            return ""
        target = Path(self.directory) / DAMAGED / str(step)
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            target = target.with_name(f"{step}-{len(list(target.parent.iterdir()))}")
        os.replace(Path(self.directory) / str(step), target)
        self._manager.reload()
        return f"; moved to {target}"

    def _damage(self, step: int, error: BaseException) -> str:
        """One line: the damaged step, the file to blame, the reason."""
        step_dir = Path(self.directory) / str(step)
        text = " ".join(str(error).split())
        files = list(re.finditer(r'local file "([^"]+)"', text))  # the last is the most specific
        culprit = files[-1].group(1) if files else _unreadable_json(step_dir) or str(step_dir)
        reason = text[files[-1].end():].lstrip(": ") if files else text
        reason = re.split(r"\s*\[(?:tensorstore_spec|source locations)", reason)[0][:160]
        if not reason:
            reason = "missing" if not Path(culprit).exists() else type(error).__name__
        if isinstance(error, json.JSONDecodeError):
            reason = "not valid JSON (cut short?)"
        return f"checkpoint step {step} does not restore ({culprit}: {reason}), skipped"

    def wait(self) -> None:
        """Block until the last asynchronous save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _leaf_shapes(tree) -> dict[str, tuple]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): (tuple(leaf.shape), str(leaf.dtype)) for path, leaf in flat}


def _describe(entry) -> str:
    return "missing" if entry is None else f"{entry[1]} {entry[0]}"


def _unreadable_json(step_dir: Path) -> str | None:
    """The first JSON file of a checkpoint that does not parse (orbax's errors do not say)."""
    names = ("_CHECKPOINT_METADATA", "_METADATA", "metadata", "_sharding")
    for path in sorted(step_dir.rglob("*")):
        if path.is_file() and path.name in names:
            try:
                json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError):
                return str(path)
    return None


def abstract_like(tree, shardings) -> Any:
    """The abstract target of :meth:`Checkpoints.restore`.

    Args:
      tree: a pytree of arrays or ``jax.ShapeDtypeStruct``.
      shardings: the same pytree of shardings (where each leaf should live after restoring).

    Returns:
      The pytree of ``jax.ShapeDtypeStruct`` with ``sharding`` set.
    """
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def on_one_device(tree) -> Any:
    """:func:`abstract_like` with every leaf on this process's first device.

    Args:
      tree: arrays or :class:`jax.ShapeDtypeStruct` (e.g. a state's ``arrays()``).

    Returns:
      The restore target of a run read back for evaluation, prediction or sampling, whatever
      device count wrote it.
    """
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return abstract_like(tree, jax.tree.map(lambda _: sharding, tree))


def _ignore_closed_loop(previous: Callable) -> Callable:
    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        previous(unraisable)
    hook.cnnlab_closed_loop = True
    return hook


class _AbandonedReadFilter(logging.Filter):
    """Drops asyncio's "exception was never retrieved" records of abandoned checkpoint reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("never retrieved" in record.getMessage() and record.exc_info is not None
                    and _is_read_error(record.exc_info[1]))


def _is_read_error(error: BaseException | None) -> bool:
    return error is not None and ("tensorstore" in str(error) or "OCDBT" in str(error)
                                  or str(error) == "Event loop is closed")


def _quiet_abandoned_reads() -> None:
    """When a restore fails, tensorstore still finishes the reads orbax gave up on. Their
    callbacks find orbax's event loop closed and report ``RuntimeError('Event loop is closed')``
    through :data:`sys.unraisablehook`; on Python 3.13 the failed reads of the other arrays are
    also logged by asyncio when their tasks are collected ("Task exception was never
    retrieved"): a traceback each on stderr around the one-line note. Exactly those are dropped
    from then on; anything else reaches the previous hook and asyncio's log."""
    if not getattr(sys.unraisablehook, "cnnlab_closed_loop", False):
        sys.unraisablehook = _ignore_closed_loop(sys.unraisablehook)
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _AbandonedReadFilter) for f in asyncio_log.filters):
        asyncio_log.addFilter(_AbandonedReadFilter())
