"""The live descendants of a process, read from ``/proc`` (standard library only).

Used by the grader's sandbox (the memory of a worker's whole process tree) and by the worker
itself (the processes an exercise left behind), so it must import nothing of the grader.
"""

from __future__ import annotations

import os


def descendants(root: int) -> list[int]:
    """PIDs of every live descendant of ``root`` (children first; empty where /proc is absent)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) "
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, frontier = [], [root]
    while frontier:
        kids = [k for pid in frontier for k in children.get(pid, [])]
        found += kids
        frontier = kids
    return found
