# attacks: relu
"""Unbounded recursion: RecursionError at Python's recursion limit."""


def relu(x, _depth=0):
    return relu(x, _depth + 1)
