"""Multi-label given labels in parquet: the column's type, decoding, and reading a partition.

A multi-label set stores each row's given labels in one column, either

- ``list<int>`` / ``large_list<int>``: the row's class indices (any order; a row may have
  none; a repeated index counts once, as in cleanlab's ``MultiLabelBinarizer``), or
- ``fixed_size_list<int|bool, K>``: the row's K-wide multi-hot 0/1 vector.

Both decode to an (n, K) boolean multi-hot matrix. Predictions are read and validated as for a
single-label set (:mod:`labelscan.io.columns`, :mod:`labelscan.io.validate`); rows need not sum
to 1.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labelscan.errors import InputError
from labelscan.io.columns import decode_ids
from labelscan.io.validate import row_error, validate_pred_probs, validate_unique_ids


def check_multilabel_column(schema, label_column, path):
    """Raise :class:`InputError` unless ``label_column`` is a list of integers (or booleans, K-wide)."""
    if label_column not in schema.names:
        raise InputError(f"missing label column {label_column!r}", path=path)
    kind = schema.field(label_column).type
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind)
    is_fixed = pa.types.is_fixed_size_list(kind)
    value = kind.value_type if is_list or is_fixed else None
    if not ((is_list and pa.types.is_integer(value))
            or (is_fixed and (pa.types.is_integer(value) or pa.types.is_boolean(value)))):
        raise InputError(f"multi-label column {label_column!r} has type {kind}; expected list<int> (class "
                         "indices) or fixed_size_list<int, K> (a 0/1 vector)", path=path)


def decode_multilabels(chunked, num_classes: int, spec) -> np.ndarray:
    """Multi-hot matrix of a multi-label column.

    Parameters
    ----------
    chunked : pyarrow.ChunkedArray
        (n,) ``list<int>`` of class indices or ``fixed_size_list<int|bool, K>`` of 0/1.
    num_classes : int
        K (from pred_probs).
    spec : PartitionSpec
        Where the rows came from, to name offending rows.

    Returns
    -------
    numpy.ndarray, shape (n, K), bool
    """
    if chunked.null_count:
        raise row_error(spec, "null multi-label rows", np.flatnonzero(chunked.is_null().to_numpy()))
    blocks, offset = [], 0
    for chunk in chunked.chunks:
        values = chunk.flatten()
        if values.null_count:
            rows = np.flatnonzero(pc.list_parent_indices(chunk).to_numpy()[values.is_null().to_numpy()])
            raise row_error(spec, "null class indices inside multi-label rows", offset + np.unique(rows))
        blocks.append(_multi_hot(chunk, values.to_numpy(zero_copy_only=False), num_classes, spec, offset))
        offset += len(chunk)
    return np.concatenate(blocks) if blocks else np.zeros((0, num_classes), dtype=bool)


def _multi_hot(chunk, values, num_classes, spec, offset):
    if pa.types.is_fixed_size_list(chunk.type):
        if chunk.type.list_size != num_classes:
            raise InputError(f"multi-label column holds {chunk.type.list_size}-wide vectors, but pred_probs "
                             f"has K={num_classes}", path=spec.path)
        matrix = values.reshape(-1, num_classes)
        bad = ((matrix != 0) & (matrix != 1)).any(axis=1)
        if bad.any():
            raise row_error(spec, "multi-hot label vectors must hold only 0 and 1", offset + np.flatnonzero(bad))
        return matrix.astype(bool)
    rows = pc.list_parent_indices(chunk).to_numpy()
    outside = (values < 0) | (values >= num_classes)
    if outside.any():
        raise row_error(spec, f"class indices outside [0, {num_classes})", offset + np.unique(rows[outside]))
    matrix = np.zeros((len(chunk), num_classes), dtype=bool)
    matrix[rows, values.astype(np.int64)] = True
    return matrix


def read_multilabel_partition(plan, spec):
    """Read, decode and validate one partition of a multi-label set.

    Parameters
    ----------
    plan : DatasetPlan
        Planned with ``multi_label=True``.
    spec : PartitionSpec

    Returns
    -------
    tuple
        ``(row_start, multi_hot (n, K) bool, pred_probs (n, K), ids (n,) or None)``.

    Raises
    ------
    InputError
        Naming the file, row group and first offending row.
    """
    from labelscan.io.dataset import decode_pred_probs, read_partition_table

    table = read_partition_table(plan, spec)
    pred_probs = decode_pred_probs(plan, spec, table)
    multi_hot = decode_multilabels(table.column(plan.label_column), plan.num_classes, spec)
    validate_pred_probs(pred_probs, spec)
    ids = None
    if plan.id_column is not None:
        ids = decode_ids(table.column(plan.id_column), spec)
        validate_unique_ids(ids, spec)
    return spec.row_start, multi_hot, pred_probs, ids
