"""Which parquet columns hold labels and predictions, and how to decode them into numpy.

``pred_probs`` may be stored as one list column (``fixed_size_list`` or ``list``
/ ``large_list`` of float16/32/64) or as K float columns, named explicitly or
by a prefix (``"pred_probs_"`` means ``pred_probs_0 .. pred_probs_{K-1}``).
The float dtype is kept as stored: exact parity with cleanlab on float16 needs
float16 arithmetic.

Decoding asserts ``null_count == 0`` before flattening a list column: a null
list slot flattens to nothing and would silently shift every later row.
``flatten()`` (unlike ``.values``) honours slice offsets.
"""

import collections
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labelscan.errors import InputError, UsageError
from labelscan.io.validate import RowProblem, raise_first

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class PredProbsLayout:
    """Where a file keeps its predictions.

    Attributes
    ----------
    column : str or None
        The list column, or None when predictions are K columns.
    columns : tuple of str or None
        The K float columns in class order, or None for a list column.
    dtype : numpy.dtype
        float16, float32 or float64.
    num_classes : int or None
        K; None for a variable-length ``list`` column (known only from the data).
    """

    column: str | None
    columns: tuple[str, ...] | None
    dtype: np.dtype
    num_classes: int | None


def resolve_pred_probs(schema, pred_probs_column, path):
    """Find the prediction columns in a file's schema.

    Parameters
    ----------
    schema : pyarrow.Schema
    pred_probs_column : str or sequence of str
        A list column's name, K column names, or a prefix of K numbered columns.
    path : str
        The file, for error messages.

    Returns
    -------
    PredProbsLayout
    """
    if not isinstance(pred_probs_column, str):
        return _columns_layout(schema, tuple(pred_probs_column), path)
    if pred_probs_column in schema.names:
        return _list_layout(schema.field(pred_probs_column), path)
    numbered = {}
    pattern = re.compile(re.escape(pred_probs_column) + r"(\d+)")
    for name in schema.names:
        match = pattern.fullmatch(name)
        if match:
            numbered[int(match.group(1))] = name
    if not numbered:
        raise InputError(f"missing pred_probs column (no column named {pred_probs_column!r} "
                         f"and none with that prefix)", path=path)
    if sorted(numbered) != list(range(len(numbered))):
        raise InputError(f"pred_probs columns with prefix {pred_probs_column!r} are not numbered "
                         f"0..K-1 (found suffixes {sorted(numbered)})", path=path)
    return _columns_layout(schema, tuple(numbered[k] for k in range(len(numbered))), path)


def _list_layout(field, path):
    kind = field.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind)):
        raise InputError(f"pred_probs column {field.name!r} has type {kind}; expected a list "
                         f"of floats or K float columns", path=path)
    dtype = _float_dtype(kind.value_type, f"pred_probs column {field.name!r}", path)
    num_classes = kind.list_size if pa.types.is_fixed_size_list(kind) else None
    return PredProbsLayout(column=field.name, columns=None, dtype=dtype, num_classes=num_classes)


def repeated_names(names) -> list:
    """The names given more than once in ``names``, sorted."""
    return sorted(name for name, count in collections.Counter(names).items() if count > 1)


def _columns_layout(schema, names, path):
    repeated = repeated_names(names)
    if repeated:
        raise UsageError(f"pred_probs columns {repeated} given more than once")
    missing = [name for name in names if name not in schema.names]
    if missing:
        raise InputError(f"missing pred_probs columns {missing}", path=path)
    dtypes = {_float_dtype(schema.field(name).type, f"pred_probs column {name!r}", path)
              for name in names}
    if len(dtypes) > 1:
        raise InputError(f"pred_probs columns mix dtypes {sorted(map(str, dtypes))}", path=path)
    return PredProbsLayout(column=None, columns=names, dtype=dtypes.pop(), num_classes=len(names))


def _float_dtype(arrow_type, what, path):
    if not pa.types.is_floating(arrow_type):
        raise InputError(f"{what} holds {arrow_type}; expected float16, float32 or float64",
                         path=path)
    return np.dtype(arrow_type.to_pandas_dtype())


def check_label_column(schema, label_column, path):
    """Raise :class:`InputError` unless ``label_column`` exists and has an integer type."""
    if label_column not in schema.names:
        raise InputError(f"missing label column {label_column!r}", path=path)
    kind = schema.field(label_column).type
    if not pa.types.is_integer(kind):
        raise InputError(f"label column {label_column!r} has type {kind}; expected an integer type",
                         path=path)


def check_id_column(schema, id_column, path):
    """Raise :class:`InputError` unless ``id_column`` (when given) exists and holds scalars.

    Returns
    -------
    pyarrow.DataType or None
        The id column's type (files must agree on it), None without an id column.
    """
    if id_column is None:
        return None
    if id_column not in schema.names:
        raise InputError(f"missing id column {id_column!r}", path=path)
    kind = schema.field(id_column).type
    if pa.types.is_nested(kind) or pa.types.is_null(kind):
        raise InputError(f"id column {id_column!r} has type {kind}; expected scalar values "
                         f"(integers, strings, ...)", path=path)
    return kind


def decode_ids(chunked, spec):
    """Ids as numpy, rejecting null ids.

    Parameters
    ----------
    chunked : pyarrow.ChunkedArray
        (n,) any scalar type.
    spec : PartitionSpec
        Where the rows came from, to name null rows.

    Returns
    -------
    numpy.ndarray
        (n,) of the column's numpy type (object for strings).
    """
    raise_first(spec, null_problems(chunked, "null_id", "null ids"))
    return chunked.to_numpy()


def decode_labels(chunked, spec):
    """Labels as numpy.

    Parameters
    ----------
    chunked : pyarrow.ChunkedArray
        (n,) any integer type.
    spec : PartitionSpec
        Where the rows came from, to name null rows.

    Returns
    -------
    numpy.ndarray
        (n,) int64.
    """
    raise_first(spec, null_problems(chunked, "null_label", "null labels"))
    return chunked.to_numpy().astype(np.int64, copy=False)


def decode_list(chunked, num_classes, dtype, spec):
    """Predictions stored in one list column, as a C-contiguous matrix.

    Parameters
    ----------
    chunked : pyarrow.ChunkedArray
        (n,) ``fixed_size_list``, ``list`` or ``large_list`` of floats.
    num_classes : int
        K; every row must hold exactly K values.
    dtype : numpy.dtype
        The values' dtype.
    spec : PartitionSpec
        Where the rows came from, to name offending rows.

    Returns
    -------
    numpy.ndarray
        (n, K) of ``dtype``; a zero-copy (read-only) view when ``chunked`` has one chunk.
    """
    blocks = list_blocks(chunked, num_classes, spec)
    if len(blocks) == 1:
        return blocks[0]
    if not blocks:
        return np.empty((0, num_classes), dtype)
    return np.concatenate(blocks)


def list_blocks(chunked, num_classes, spec):
    """Predictions stored in one list column, as one zero-copy (read-only) matrix per chunk
    (parameters as :func:`decode_list`).

    Returns
    -------
    list of numpy.ndarray
        (rows of the chunk, K) each, in row order.
    """
    raise_first(spec, list_problems(chunked, num_classes))
    return [chunk.flatten().to_numpy(zero_copy_only=False).reshape(-1, num_classes) for chunk in chunked.chunks]


def decode_columns(table, names, dtype, spec):
    """Predictions stored as K float columns, as a C-contiguous matrix.

    Parameters
    ----------
    table : pyarrow.Table
        (n rows) holding ``names``.
    names : tuple of str
        The K columns in class order.
    dtype : numpy.dtype
    spec : PartitionSpec
        Where the rows came from, to name null rows.

    Returns
    -------
    numpy.ndarray
        (n, K) of ``dtype``.
    """
    raise_first(spec, columns_problems(table, names))
    pred_probs = np.empty((table.num_rows, len(names)), dtype)
    for k, name in enumerate(names):
        column = table.column(name)
        start = 0
        for chunk in column.chunks:
            pred_probs[start:start + len(chunk), k] = chunk.to_numpy()
            start += len(chunk)
    return pred_probs


def null_problems(chunked, reason, message):
    """Null rows of a column.

    Parameters
    ----------
    chunked : pyarrow.ChunkedArray
        (n,)
    reason : str
        One of :data:`labelscan.io.validate.REASONS`.
    message : str

    Returns
    -------
    list of RowProblem
        Empty, or the null rows.
    """
    if not chunked.null_count:
        return []
    return [RowProblem(reason, message, np.flatnonzero(chunked.is_null().to_numpy()))]


def list_problems(chunked, num_classes):
    """Rows of a list column that do not hold K non-null values.

    Parameters
    ----------
    chunked : pyarrow.ChunkedArray
        (n,) ``fixed_size_list``, ``list`` or ``large_list`` of floats.
    num_classes : int
        K.

    Returns
    -------
    list of RowProblem
        ``null_pred_probs`` (null rows), ``pred_probs_length`` (another number of values),
        ``null_in_pred_probs`` (null values inside a row), each when found.
    """
    problems = null_problems(chunked, "null_pred_probs", "null pred_probs rows")
    wrong_length, null_inside, offset = [], [], 0
    for chunk in chunked.chunks:
        if not pa.types.is_fixed_size_list(chunk.type):
            lengths = pc.list_value_length(chunk).to_numpy(zero_copy_only=False)
            wrong = np.flatnonzero(chunk.is_valid().to_numpy(zero_copy_only=False) & (lengths != num_classes))
            wrong_length += [(offset + row, int(lengths[row])) for row in wrong]
        values = chunk.flatten()
        if values.null_count:
            parents = pc.list_parent_indices(chunk).to_numpy()
            null_inside.append(offset + np.unique(parents[values.is_null().to_numpy(zero_copy_only=False)]))
        offset += len(chunk)
    if wrong_length:
        problems.append(RowProblem("pred_probs_length", f"pred_probs row holds {wrong_length[0][1]} values, "
                                                        f"expected {num_classes}",
                                   np.asarray([row for row, _ in wrong_length])))
    if null_inside:
        problems.append(RowProblem("null_in_pred_probs", "null values inside pred_probs rows",
                                   np.concatenate(null_inside)))
    return problems


def columns_problems(table, names):
    """Rows with a null in one of the K prediction columns (one problem per column holding nulls).

    Parameters
    ----------
    table : pyarrow.Table
        (n rows) holding ``names``.
    names : tuple of str

    Returns
    -------
    list of RowProblem
        ``null_in_pred_probs`` problems.
    """
    return [problem for name in names
            for problem in null_problems(table.column(name), "null_in_pred_probs",
                                         f"null values in pred_probs column {name!r}")]
