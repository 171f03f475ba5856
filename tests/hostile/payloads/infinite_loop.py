# attacks: relu
"""An infinite loop: the worker's per-exercise alarm stops it."""


def relu(x):
    while True:
        pass
