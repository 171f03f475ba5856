# attacks: relu
"""Returns an object that claims to equal everything and pretends to be an array."""


class _Liar:
    shape = ()
    dtype = "float32"

    def __init__(self, like):
        self.shape = getattr(like, "shape", ())

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = object.__hash__

    def __array__(self, dtype=None, copy=None):
        import numpy as np

        return np.zeros(self.shape, dtype=dtype or "float32")

    def __float__(self):
        return 0.0

    def __len__(self):
        return self.shape[0] if self.shape else 0

    def all(self):
        return True


def relu(x):
    return _Liar(x)
