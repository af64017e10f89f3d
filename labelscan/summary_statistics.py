"""How a scan's statistics appear in ``summary.json``: inline, or K x K matrices as sparse tables.

Up to :data:`WIDE_CLASSES` classes every statistic is inline (nested lists). Above, each K x K
matrix (``confident_joint``, ``calibrated_confident_joint``, ``joint``, ``noise_matrix``,
``inverse_noise_matrix``, ``prune_counts``) is written to ``statistics/<name>.parquet`` through
the scan's :class:`~labelscan.io.commit.OutputCommit` (whole objects, listed in the manifest) as
its non-zero cells, one row each: ``row``, ``column``, ``value``, in row-major order; and
``summary.json`` holds a reference ``{"path": "statistics/<name>.parquet", "shape": [K, K],
"dtype": "<f8"}``. At K = 10,000 one dense matrix is 800 MB (about 2 GB as JSON); the
confident joint has at most one cell per row plus the diagonal, and every other matrix has
its zeros, so the tables stay O(rows + K). Vectors (``label_counts``, ``confident_thresholds``,
``py``) stay inline.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

WIDE_CLASSES = 256
"""Scans with more classes store their K x K statistics as sparse tables beside ``summary.json``
(at K = 1000 the six matrices inline made a 72 MB ``summary.json``, 1.8 s to write)."""

FOLDER = "statistics"


def summary_statistics(stats, commit) -> tuple[dict, list]:
    """The ``"statistics"`` entry of ``summary.json``, writing the matrices of a wide scan.

    Parameters
    ----------
    stats : labelscan.plan.NoiseStatistics
    commit : labelscan.io.commit.OutputCommit

    Returns
    -------
    statistics : dict
        JSON-ready.
    entries : list of dict
        Manifest entries of the tables written (empty up to :data:`WIDE_CLASSES`).
    """
    if len(stats.label_counts) <= WIDE_CLASSES:
        return stats.as_dict(), []
    statistics, entries = {}, []
    for name, value in stats.__dict__.items():
        if isinstance(value, np.ndarray) and value.ndim == 2:
            entries.append(commit.write_table(f"{FOLDER}/{name}.parquet", sparse_table(value)))
            statistics[name] = {"path": entries[-1]["path"], "shape": list(value.shape), "dtype": value.dtype.str}
        else:
            statistics[name] = value.tolist() if isinstance(value, np.ndarray) else value
    return statistics, entries


def sparse_table(matrix: np.ndarray) -> pa.Table:
    """The non-zero cells of a matrix, row-major: ``row``, ``column`` (int32), ``value`` (its dtype).

    Parameters
    ----------
    matrix : numpy.ndarray, shape (R, C)
        Any memory layout. Zeros are left out (a ``-0.0`` would come back as ``0.0``; the
        statistics hold none).
    """
    rows, columns = np.nonzero(matrix)
    return pa.table({"row": rows.astype(np.int32), "column": columns.astype(np.int32),
                     "value": matrix[rows, columns]})


def dense_matrix(table: pa.Table, shape, dtype, rows=None, columns=None) -> np.ndarray:
    """A matrix (or its ``rows`` x ``columns`` submatrix) from :func:`sparse_table`'s cells.

    Returns
    -------
    numpy.ndarray, shape (len(rows), len(columns)), ``dtype``
    """
    row_index = _positions(shape[0], rows)
    column_index = _positions(shape[1], columns)
    cell_rows = row_index[table.column("row").to_numpy()]
    cell_columns = column_index[table.column("column").to_numpy()]
    kept = (cell_rows >= 0) & (cell_columns >= 0)
    matrix = np.zeros((int(row_index.max(initial=-1)) + 1, int(column_index.max(initial=-1)) + 1),
                      dtype=np.dtype(dtype))
    matrix[cell_rows[kept], cell_columns[kept]] = table.column("value").to_numpy()[kept]
    return matrix


def _positions(size: int, chosen) -> np.ndarray:
    """Where each of ``size`` indices goes in the output (-1: left out), shape (size,)."""
    if chosen is None:
        return np.arange(size)
    positions = np.full(size, -1)
    positions[np.asarray(chosen, dtype=np.intp)] = np.arange(len(chosen))
    return positions


def is_reference(value) -> bool:
    """Whether a ``summary["statistics"]`` value points to a stored table."""
    return isinstance(value, dict) and "path" in value


def read_statistic(out, summary: dict, name: str, storage_options=None, rows=None, columns=None) -> np.ndarray:
    """One statistic of a finished scan as an array, inline or from its table.

    Parameters
    ----------
    out : str
        The scan's output directory (local path or URL).
    summary : dict
        Its ``summary.json``.
    name : str
        A key of ``summary["statistics"]``.
    rows, columns : sequence of distinct int, optional
        For a matrix: the submatrix to return (a stored table is read whole, O(non-zero cells),
        and only the submatrix is made dense).

    Returns
    -------
    numpy.ndarray
    """
    import fsspec
    import pyarrow.parquet as pq

    value = summary["statistics"][name]
    if not is_reference(value):
        array = np.asarray(value)
        if rows is not None:
            array = array[np.asarray(rows, dtype=np.intp)]
        return array if columns is None else array[:, np.asarray(columns, dtype=np.intp)]
    fs, root = fsspec.core.url_to_fs(out, **(storage_options or {}))
    with fs.open(f"{root.rstrip('/')}/{value['path']}", "rb") as handle:
        table = pq.read_table(handle)
    return dense_matrix(table, value["shape"], value["dtype"], rows, columns)
