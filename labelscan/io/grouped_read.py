"""Read a host partition's list-column predictions straight into grouped order.

A host partition is stored with its rows grouped by given label
(:mod:`labelscan.kernels.grouped`). Read in row order and then grouped, each value is written
twice, to two fresh matrices (the kernel zeroes every page of each before the first write).
Here the labels are read first, and each decoded page's rows are written to their grouped rows
at once (:class:`labelscan.io.pages.RowScatter`), in the partition's storage layout: one matrix,
one write. Partitions read and grouped one after the other on the 2-core machine (the
benchmark sets): 200K x 1000 1.0-4.1 s -> 0.56-0.66 s, 1M x 100 0.59-1.6 s -> 0.41-0.50 s,
10M x 10 1.2-2.6 s -> 0.6-1.3 s.

Only for partitions the page decoder reads (:func:`labelscan.io.pages.preferred`), whose rows
must all pass (bad rows raise, no row-sum check); a column chunk the page decoder refuses sends
the partition to :func:`labelscan.io.dataset.read_partition` (Arrow, which also reports real
corruption precisely). Bad values raise here, naming the first offending row in row order by
file, row group and row, as the row-order read does.
"""

from __future__ import annotations

import numpy as np


from labelscan.io import pages
from labelscan.io.dataset import (PartitionData, _native_or_fsspec, _parquet_file, _range_reader, read_ids,
                                  read_labels)
from labelscan.io.validate import RowProblem, pred_probs_problems, raise_first, validate_unique_ids
from labelscan.kernels.grouped import GroupedRows, class_order, grouped_rows_matrix, inverse_permutation


def applies(plan) -> bool:
    """Whether partitions of ``plan`` are read grouped: a list column that the page decoder reads."""
    return plan.pred_probs_column is not None and pages.preferred(plan.pred_probs_dtype)


def read_partition_grouped(plan, spec) -> PartitionData | None:
    """One partition read and validated, its predictions in grouped order.

    Parameters
    ----------
    plan : labelscan.io.dataset.DatasetPlan
        With :func:`applies`.
    spec : labelscan.io.dataset.PartitionSpec

    Returns
    -------
    PartitionData or None
        ``labels`` (n,) int64 in row order, ``pred_probs`` a
        :class:`~labelscan.kernels.grouped.GroupedRows` of shape (n, K), ``ids`` or None; None
        when the row-order reader must read the partition (a column chunk the page decoder
        refuses).

    Raises
    ------
    InputError
        Labels that are not class indices, predictions that are not finite or outside [0, 1],
        or duplicate ids, naming the first such row.
    """
    labels = read_labels(plan, spec)
    order = class_order(labels, plan.num_classes)
    positions = inverse_permutation(order)
    rows = grouped_rows_matrix(spec.num_rows, plan.num_classes, plan.pred_probs_dtype)
    first_row = 0
    for piece in spec.pieces:
        with _native_or_fsspec(plan.fs, piece.path) as handle:
            parquet = _parquet_file(handle, piece.path)
            leaf = pages.list_leaf(parquet, plan.pred_probs_column, plan.num_classes)
            if leaf is None:
                return None
            destinations = pages.RowScatter(rows, positions[first_row:first_row + piece.num_rows])
            try:
                pages.read_list_values(parquet, _range_reader(handle), piece.row_groups, leaf, rows_at=destinations)
            except pages.Unsupported:
                return None
        first_row += piece.num_rows
    raise_first(spec, [RowProblem(problem.reason, problem.message, np.sort(order[problem.rows]))
                       for problem in pred_probs_problems(rows)])   # grouped positions -> rows
    ids = read_ids(plan, spec) if plan.id_column is not None else None
    if ids is not None:
        validate_unique_ids(ids, spec)
    return PartitionData(row_start=spec.row_start, labels=labels, pred_probs=GroupedRows(rows, order, positions),
                         ids=ids)
