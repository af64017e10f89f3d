"""Order-preserving integer images of float keys.

Selections and rankings need the total order numpy's ``argsort`` uses on floats, made stable:
ascending value, ``-0.0 == +0.0``, NaN after ``+inf`` (all NaNs equal), ties by global row.
Mapping each float to an unsigned integer of the same width turns that order into integer
order, so keys can be histogrammed by their top bits and compared exactly.
"""

from __future__ import annotations

import numpy as np

_UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def image_dtype(float_dtype: np.dtype) -> np.dtype:
    """Unsigned integer dtype of the same width as ``float_dtype``."""
    return np.dtype(_UNSIGNED[np.dtype(float_dtype).itemsize])


def image_bits(float_dtype: np.dtype) -> int:
    """Number of bits of the image of ``float_dtype``."""
    return np.dtype(float_dtype).itemsize * 8


def float_images(keys: np.ndarray) -> np.ndarray:
    """Map floats to unsigned integers whose order is numpy's sort order.

    Parameters
    ----------
    keys : numpy.ndarray of float16, float32 or float64, any shape

    Returns
    -------
    numpy.ndarray, same shape, unsigned integer of the same width
        ``-0.0`` and ``+0.0`` map to the same value; every NaN maps to the largest value.
    """
    unsigned = image_dtype(keys.dtype)
    bits = image_bits(keys.dtype)
    nan_rows = np.isnan(keys)
    canonical = keys + keys.dtype.type(0)  # -0.0 + 0.0 == +0.0
    raw = canonical.view(unsigned)
    sign = unsigned.type(1) << unsigned.type(bits - 1)
    # negative floats: flip every bit; others: set the sign bit
    flip = raw >> unsigned.type(bits - 1)
    np.negative(flip, out=flip)
    flip |= sign
    raw ^= flip
    if nan_rows.any():
        raw[nan_rows] = np.iinfo(unsigned).max
    return raw
