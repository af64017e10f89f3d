"""Read a host partition's list-column predictions straight into grouped order.

A host partition of many classes is kept row-major, its rows grouped by given label
(:data:`labelscan.kernels.grouped.ROW_MAJOR_K`). Read in row order and then grouped, each row
is written twice, to two fresh matrices (the kernel zeroes every page of each before the
first write). Here the labels are read first, and each decoded page's rows are written to
their grouped rows at once (:class:`labelscan.io.pages.RowScatter`): one matrix, one write.

Only for partitions the page decoder reads (:func:`labelscan.io.pages.preferred`), whose rows
all pass (bad rows raise, no row-sum check); anything else, and any problem found, goes to
:func:`labelscan.io.dataset.read_partition`, which reads the partition in row order and names
an offending row by file, row group and row.
"""

from __future__ import annotations

import numpy as np

from labelscan.io import pages
from labelscan.io.dataset import (PartitionData, _native_or_fsspec, _parquet_file, _range_reader, read_ids,
                                  read_labels)
from labelscan.io.validate import pred_probs_problems, validate_unique_ids
from labelscan.kernels.grouped import ROW_MAJOR_K, GroupedRows, class_order, inverse_permutation


def applies(plan) -> bool:
    """Whether partitions of ``plan`` are read grouped: a list column of at least
    :data:`~labelscan.kernels.grouped.ROW_MAJOR_K` classes that the page decoder reads."""
    return (plan.pred_probs_column is not None and plan.num_classes >= ROW_MAJOR_K
            and pages.preferred(plan.pred_probs_dtype))


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
        refuses, or predictions that are not finite or outside [0, 1]).

    Raises
    ------
    InputError
        Labels that are not class indices, or duplicate ids, naming the row.
    """
    labels = read_labels(plan, spec)
    order = class_order(labels, plan.num_classes)
    positions = inverse_permutation(order)
    rows = np.empty((spec.num_rows, plan.num_classes), dtype=plan.pred_probs_dtype)
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
    if pred_probs_problems(rows):
        return None
    ids = read_ids(plan, spec) if plan.id_column is not None else None
    if ids is not None:
        validate_unique_ids(ids, spec)
    return PartitionData(row_start=spec.row_start, labels=labels, pred_probs=GroupedRows(rows, order, positions),
                         ids=ids)
