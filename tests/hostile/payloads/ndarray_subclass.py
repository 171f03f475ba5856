# attacks: relu
"""Returns a numpy.ndarray subclass full of -1 whose comparisons, allclose and ufuncs lie."""
import numpy as _np


class _Lying(_np.ndarray):
    def __eq__(self, other):
        return _np.ones(_np.shape(self), dtype=bool).view(_np.ndarray)

    def __ne__(self, other):
        return _np.zeros(_np.shape(self), dtype=bool).view(_np.ndarray)

    __hash__ = None

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc in (_np.equal, _np.isclose, _np.less_equal):
            return True
        inputs = [i.view(_np.ndarray) if isinstance(i, _Lying) else i for i in inputs]
        return getattr(ufunc, method)(*inputs, **kwargs)

    def allclose(self, *args, **kwargs):
        return True


def relu(x):
    return _np.full(_np.shape(x), -1.0, dtype=_np.float32).view(_Lying)
