# attacks: relu
"""Recursion through C frames with the recursion limit lifted: the C stack (8 MB) overflows and
the worker dies with SIGSEGV. The runner starts a new worker for the exercises after relu."""
import sys as _sys


def relu(x):
    _sys.setrecursionlimit(10**8)

    def down(n):
        return list(map(down, [n + 1]))

    return down(0)
