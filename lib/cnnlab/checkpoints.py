"""Orbax checkpoints of the (possibly sharded) train state, saved asynchronously, last N kept.

A checkpoint is a directory ``<workdir>/checkpoints/<step>/`` with two items: ``state`` (the
pytree ``{"step", "params", "batch_stats", "opt_state"}``, written by every process for the shards
it holds) and ``meta`` (small JSON: epoch, position in the epoch, running sums of the epoch's
training metrics — what an exact resume needs besides the arrays).

Why a cut-short checkpoint is never restored: orbax writes each step into a temporary directory
and renames it to ``<step>`` only once every file (and, with several processes, every process)
has finished; :meth:`Checkpoints.latest_step` only sees renamed directories, and leftover
temporary directories are deleted when the manager opens.

Restoring takes an abstract target whose leaves carry the shardings wanted *now*, so a checkpoint
written on 8 devices restores onto 1 (or the other way round).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from cnnlab.errors import CnnlabError


class Checkpoints:
    """A thin wrapper over :class:`orbax.checkpoint.CheckpointManager`.

    Args:
      directory: where step directories live (created if missing).
      keep: how many of the newest checkpoints to keep.
      async_save: write in a background thread (the device-to-host copy still happens in
        :meth:`save`, so the caller may donate the state right after).
    """

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        self.directory = os.path.abspath(directory)
        if read_only and not os.path.isdir(self.directory):
            raise CnnlabError(f"no checkpoints in {self.directory}; train first with "
                              f"`cnnlab train --workdir {os.path.dirname(self.directory)}`")
        if read_only:  # for reading back a run: never creates, deletes or cleans anything
            options = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False)
        else:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
                cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: dict[str, Any], meta: dict[str, Any]) -> None:
        """Start saving ``state`` (pytree of arrays) and ``meta`` (JSON-able) as ``step``."""
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def restore(self, abstract_state, step: int | None = None) -> tuple[dict, dict]:
        """Read ``step`` (default: the latest) into the structure, dtypes and shardings of
        ``abstract_state`` (a pytree of :class:`jax.ShapeDtypeStruct` with ``sharding`` set).

        Returns ``(state, meta)``.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CnnlabError(f"no complete checkpoint in {self.directory}")
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return restored.state, dict(restored.meta)

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


def abstract_like(tree, shardings) -> Any:
    """Pytree of arrays (or ShapeDtypeStructs) + matching shardings -> ShapeDtypeStructs."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)
