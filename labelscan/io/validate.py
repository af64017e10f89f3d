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

Each check returns the rows it finds as :class:`RowProblem` values; ``validate_*`` raise the
first, and a skipping read (:mod:`labelscan.io.rejects`) drops them all.
"""

import bisect
import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from labelscan.errors import InputError

LOWER_BOUND = 0 - 1e-6
UPPER_BOUND = 1 + 1e-6

REASONS = ("null_pred_probs", "pred_probs_length", "null_in_pred_probs", "null_label", "null_id",
           "label_out_of_range", "non_finite", "out_of_bounds", "row_sum")
"""Why a row fails (``rejected/``'s ``reason``), in the order the checks run: a row failing several
gets the first. The first five are found in the Arrow columns, the others in the decoded values."""


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


@dataclass
class RowProblem:
    """Rows of a partition failing one check.

    Attributes
    ----------
    reason : str
        One of :data:`REASONS`.
    message : str
        What is wrong, as the error of ``on_bad_rows="error"`` says it.
    rows : numpy.ndarray
        (m,) sorted row indices, ``m >= 1``, in the frame the check ran on.
    """

    reason: str
    message: str
    rows: np.ndarray

    def remapped(self, positions):
        """This problem with ``rows`` mapped through ``positions`` (a subset's local rows)."""
        return RowProblem(self.reason, self.message, np.asarray(positions)[self.rows])


def raise_first(spec, problems):
    """Raise the :class:`InputError` of the first of ``problems`` (local rows of ``spec``), if any."""
    if problems:
        raise row_error(spec, problems[0].message, problems[0].rows)


def label_problems(labels, num_classes):
    """Rows whose label is not a class index.

    Parameters
    ----------
    labels : numpy.ndarray
        (n,) int64 given labels.
    num_classes : int
        K.

    Returns
    -------
    list of RowProblem
        Empty or ``label_out_of_range``.
    """
    bad = (labels < 0) | (labels >= num_classes)
    if not bad.any():
        return []
    return [RowProblem("label_out_of_range", f"label values outside [0, {num_classes})", np.flatnonzero(bad))]


def pred_probs_problems(pred_probs):
    """Rows with a probability that is not finite, or finite but outside cleanlab's bounds.

    Parameters
    ----------
    pred_probs : numpy.ndarray
        (n, K) float16, float32 or float64 predicted probabilities.

    Returns
    -------
    list of RowProblem
        ``non_finite`` and ``out_of_bounds`` (finite rows only), each when found.
    """
    if pred_probs.size == 0:
        return []
    # Fast path: min/max propagate NaN, which fails both comparisons.
    if np.min(pred_probs) >= LOWER_BOUND and np.max(pred_probs) <= UPPER_BOUND:
        return []
    problems = []
    non_finite = ~np.isfinite(pred_probs).all(axis=1)
    if non_finite.any():
        problems.append(RowProblem("non_finite", "pred_probs values are NaN or infinite",
                                   np.flatnonzero(non_finite)))
    out_of_bounds = ((pred_probs < LOWER_BOUND) | (pred_probs > UPPER_BOUND)).any(axis=1) & ~non_finite
    if out_of_bounds.any():
        problems.append(RowProblem("out_of_bounds", "pred_probs values outside [0, 1]",
                                   np.flatnonzero(out_of_bounds)))
    return problems


def validate_labels(labels, num_classes, spec):
    """Raise :class:`InputError` unless every label is a class index (:func:`label_problems`).

    Parameters
    ----------
    labels : numpy.ndarray
        (n,) int64 given labels.
    num_classes : int
        K.
    spec : PartitionSpec
        Where ``labels`` came from, to name the offending rows.
    """
    raise_first(spec, label_problems(labels, num_classes))


def validate_pred_probs(pred_probs, spec):
    """Raise :class:`InputError` unless every probability is finite and within cleanlab's bounds.

    Parameters
    ----------
    pred_probs : numpy.ndarray
        (n, K) float16, float32 or float64 predicted probabilities.
    spec : PartitionSpec
        Where ``pred_probs`` came from, to name the offending rows.
    """
    raise_first(spec, pred_probs_problems(pred_probs))


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


def row_sum_problems(pred_probs, tolerance):
    """Rows whose sum is further from 1 than ``tolerance`` allows.

    Parameters
    ----------
    pred_probs : numpy.ndarray
        (n, K) predicted probabilities (non-finite rows count as not summing to 1).
    tolerance : float
        Accepted ``|sum - 1|`` beyond :func:`rounding_allowance` of the dtype.

    Returns
    -------
    list of RowProblem
        Empty or ``row_sum``.
    """
    if pred_probs.size == 0:
        return []
    limit = float(tolerance) + rounding_allowance(pred_probs.dtype, pred_probs.shape[1])
    sums = pred_probs.sum(axis=1, dtype=np.float64)
    bad = ~(np.abs(sums - 1.0) <= limit)
    if not bad.any():
        return []
    rows = np.flatnonzero(bad)
    return [RowProblem("row_sum", f"pred_probs rows do not sum to 1 (first sums to {sums[rows[0]]:.9g}; "
                                  f"row_sum_tolerance {tolerance:g})", rows)]


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
    raise_first(spec, row_sum_problems(pred_probs, tolerance))


def value_problems(data, num_classes, row_sum_tolerance=None):
    """Every check of decoded values, in order: labels, probabilities, row sums (with a tolerance).

    Parameters
    ----------
    data : PartitionData
        ``labels`` (n,) and ``pred_probs`` (n, K).
    num_classes : int
        K.
    row_sum_tolerance : float, optional

    Returns
    -------
    list of RowProblem
        Rows counted in ``data``'s frame.
    """
    problems = label_problems(data.labels, num_classes) + pred_probs_problems(data.pred_probs)
    if row_sum_tolerance is not None:
        problems += row_sum_problems(data.pred_probs, row_sum_tolerance)
    return problems


def validate_unique_ids(ids, spec, rows=None):
    """Raise :class:`InputError` when an id repeats an earlier id of the partition.

    Parameters
    ----------
    ids : numpy.ndarray
        (n,) non-null ids.
    spec : PartitionSpec
        Where ``ids`` came from; the error names the first row repeating an id.
    rows : numpy.ndarray, optional
        (n,) local row of each id, when ``ids`` are a subset of the partition's rows (skipped
        rows); default ``arange(n)``.
    """
    repeated = pd.Series(ids).duplicated(keep="first").to_numpy()
    if repeated.any():
        rows = np.arange(len(ids)) if rows is None else np.asarray(rows)
        value = ids[np.flatnonzero(repeated)[0]]
        first = int(rows[np.flatnonzero(pd.Series(ids) == value)[0]])
        value = value.item() if isinstance(value, np.generic) else value
        raise row_error(spec, f"duplicate id {value!r} (first at global row "
                              f"{spec.row_start + first})", rows[repeated])


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
    raise_first(spec, value_problems(data, plan.num_classes, row_sum_tolerance))
    if data.ids is not None:
        validate_unique_ids(data.ids, spec)
