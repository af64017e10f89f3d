"""Array namespaces: the same partition code runs on NumPy (CPU) and CuPy (GPU) arrays.

Driver-side state (counts, histograms, cutoffs) is always NumPy; per-row data lives where the
partition lives. :func:`to_host` is the one way values leave the device.
"""

from __future__ import annotations

import numpy as np


def cupy_or_none():
    """The ``cupy`` module if it imports and sees a CUDA device, else None."""
    try:
        import cupy
    except ImportError:
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # noqa: BLE001 - no driver / no device: CuPy is unusable here
        return None
    return cupy


def array_module(array):
    """``numpy`` or ``cupy``, whichever ``array`` belongs to."""
    if type(array).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def to_host(array):
    """A NumPy array (copied from the device when ``array`` is a CuPy array)."""
    return array.get() if hasattr(array, "get") and type(array).__module__.startswith("cupy") else array


def like(array, values):
    """``values`` (NumPy or scalars) as an array of ``array``'s namespace."""
    return array_module(array).asarray(values)


def bincount(values, minlength: int):
    """``bincount(values, minlength=minlength)`` in the array's namespace, shape (>= minlength,).

    An empty ``values`` gives ``minlength`` zeros: CuPy before 14 takes ``max(values)`` first
    and raises on it (a partition whose rows were all skipped as bad input is empty).
    """
    xp = array_module(values)
    if not values.size:
        return xp.zeros(minlength, dtype=np.intp)
    return xp.bincount(values, minlength=minlength)


def stable_argsort(values):
    """Indices sorting a 1-d array, equal values kept in their order, in the array's namespace
    (CuPy's argsort is always stable and takes no ``kind``)."""
    xp = array_module(values)
    return np.argsort(values, kind="stable") if xp is np else xp.argsort(values)
