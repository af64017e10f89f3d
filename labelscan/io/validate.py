"""Checks on decoded partitions, and errors that point at the offending rows.

The bounds check on ``pred_probs`` reproduces cleanlab 2.9's
``assert_valid_inputs``: ``P < -1e-6`` or ``P > 1 + 1e-6`` evaluated by numpy
in ``P``'s own dtype (numpy 2 treats the Python float as a weak scalar, so for
float16 the upper bound is exactly 1.0). Unlike cleanlab, NaN and infinities
are rejected: cleanlab lets NaN through and it silently poisons the
thresholds. Rows that do not sum to 1 are accepted, as cleanlab accepts them,
unless a ``row_sum_tolerance`` is given: then a row whose float64 sum differs
from 1 by more than the tolerance plus :func:`rounding_allowance` (what storing
exact probabilities in the file's dtype can cost, about 4.9e-4 for float16) is
rejected. With an id column, ids must be non-null and unique (within a
partition here; across partitions :mod:`labelscan.io.unique`).
"""

import bisect
import itertools

import numpy as np
import pandas as pd

from labelscan.errors import InputError

LOWER_BOUND = 0 - 1e-6
UPPER_BOUND = 1 + 1e-6


def locate_row(spec, local_row):
    """Map a row of a partition to its file, row group and row within that group.

    Parameters
    ----------
    spec : PartitionSpec
    local_row : int
        Row counted from the partition's first row, ``0 <= local_row < spec.num_rows``.

    Returns
    -------
    path : str
        The file holding the row.
    row_group : int
        Row group index within ``path``.
    row_in_group : int
        Row counted from the start of that row group.
    """
    for piece in spec.pieces:
        if local_row < piece.num_rows:
            ends = list(itertools.accumulate(piece.row_group_rows))
            position = bisect.bisect_right(ends, local_row)
            start = ends[position - 1] if position else 0
            return piece.path, piece.row_groups[position], local_row - start
        local_row -= piece.num_rows
    raise IndexError("row beyond the partition's last row")


def row_error(spec, message, bad_rows):
    """Build the error for rows of a partition that fail a check.

    Parameters
    ----------
    spec : PartitionSpec
    message : str
    bad_rows : numpy.ndarray
        (m,) sorted local row indices of the offending rows, ``m >= 1``.

    Returns
    -------
    InputError
        Naming the file, the row group and row of ``bad_rows[0]``, its global
        row, and ``m`` rows affected.
    """
    first = int(bad_rows[0])
    path, row_group, row_in_group = locate_row(spec, first)
    return InputError(message, path=path, row_group=row_group, row=row_in_group,
                      global_row=spec.row_start + first, num_rows_affected=len(bad_rows))


def validate_labels(labels, num_classes, spec):
    """Raise :class:`InputError` unless every label is a class index.

    Parameters
    ----------
    labels : numpy.ndarray
        (n,) int64 given labels.
    num_classes : int
        K.
    spec : PartitionSpec
        Where ``labels`` came from, to name the offending rows.
    """
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise row_error(spec, f"label values outside [0, {num_classes})", np.flatnonzero(bad))


def validate_pred_probs(pred_probs, spec):
    """Raise :class:`InputError` unless every probability is finite and within cleanlab's bounds.

    Parameters
    ----------
    pred_probs : numpy.ndarray
        (n, K) float16, float32 or float64 predicted probabilities.
    spec : PartitionSpec
        Where ``pred_probs`` came from, to name the offending rows.
    """
    if pred_probs.size == 0:
        return
    # Fast path: min/max propagate NaN, which fails both comparisons.
    if np.min(pred_probs) >= LOWER_BOUND and np.max(pred_probs) <= UPPER_BOUND:
        return
    non_finite = ~np.isfinite(pred_probs).all(axis=1)
    if non_finite.any():
        raise row_error(spec, "pred_probs values are NaN or infinite", np.flatnonzero(non_finite))
    out_of_bounds = ((pred_probs < LOWER_BOUND) | (pred_probs > UPPER_BOUND)).any(axis=1)
    raise row_error(spec, "pred_probs values outside [0, 1]", np.flatnonzero(out_of_bounds))


def rounding_allowance(dtype, num_classes):
    """Largest ``|sum - 1|`` that rounding exact probabilities to ``dtype`` can cause.

    Each normal value is off by at most half an ulp, ``eps / 2`` relative (the values
    sum to 1, so ``eps / 2`` in all), each subnormal or flushed-to-zero value by at most
    half the smallest subnormal; the float64 sum adds ``K`` float64 roundings.

    Parameters
    ----------
    dtype : numpy.dtype
        float16, float32 or float64.
    num_classes : int
        K.

    Returns
    -------
    float
        About 4.9e-4 for float16 (plus 3e-8 per class), 6e-8 for float32, 1.1e-16 for float64.
    """
    info = np.finfo(dtype)
    return float(info.eps / 2 + num_classes * (info.smallest_subnormal / 2 + np.finfo(np.float64).eps))


def validate_row_sums(pred_probs, tolerance, spec):
    """Raise :class:`InputError` for rows whose sum is further from 1 than ``tolerance`` allows.

    Parameters
    ----------
    pred_probs : numpy.ndarray
        (n, K) finite predicted probabilities (run :func:`validate_pred_probs` first).
    tolerance : float
        Accepted ``|sum - 1|`` beyond :func:`rounding_allowance` of the dtype.
    spec : PartitionSpec
        Where ``pred_probs`` came from, to name the offending rows.
    """
    if pred_probs.size == 0:
        return
    limit = float(tolerance) + rounding_allowance(pred_probs.dtype, pred_probs.shape[1])
    sums = pred_probs.sum(axis=1, dtype=np.float64)
    bad = ~(np.abs(sums - 1.0) <= limit)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise row_error(spec, f"pred_probs rows do not sum to 1 (first sums to "
                              f"{sums[rows[0]]:.9g}; row_sum_tolerance {tolerance:g})", rows)


def validate_unique_ids(ids, spec):
    """Raise :class:`InputError` when an id repeats an earlier id of the partition.

    Parameters
    ----------
    ids : numpy.ndarray
        (n,) non-null ids.
    spec : PartitionSpec
        Where ``ids`` came from; the error names the first row repeating an id.
    """
    repeated = pd.Series(ids).duplicated(keep="first").to_numpy()
    if repeated.any():
        rows = np.flatnonzero(repeated)
        value = ids[rows[0]]
        first = int(np.flatnonzero(pd.Series(ids) == value)[0])
        value = value.item() if isinstance(value, np.generic) else value
        raise row_error(spec, f"duplicate id {value!r} (first at global row "
                              f"{spec.row_start + first})", rows)


def validate_partition(data, plan, spec, row_sum_tolerance=None):
    """Raise :class:`InputError` if a decoded partition holds invalid labels, predictions or ids.

    Parameters
    ----------
    data : PartitionData
        ``labels`` (n,), ``pred_probs`` (n, K) and ``ids`` (n,) or None of the partition.
    plan : DatasetPlan
    spec : PartitionSpec
    row_sum_tolerance : float, optional
        Also reject rows whose sum is further from 1 (see :func:`validate_row_sums`).
    """
    validate_labels(data.labels, plan.num_classes, spec)
    validate_pred_probs(data.pred_probs, spec)
    if row_sum_tolerance is not None:
        validate_row_sums(data.pred_probs, row_sum_tolerance, spec)
    if data.ids is not None:
        validate_unique_ids(data.ids, spec)
