"""Rows dropped from a scan with ``on_bad_rows="skip"``, and where they came from.

Row-level problems (:data:`labelscan.io.validate.REASONS`) found while a partition is read are, with
``on_bad_rows="error"``, raised as :class:`~labelscan.errors.InputError`; with
``on_bad_rows="skip"`` the rows are dropped and described by a :class:`Rejections`
that travels with the partition: the scan's statistics, selections and ranking see only
the kept rows (still numbered by their global input row), the row-aligned ``mask/``
parts get the rejected rows back with null scores, and ``rejected/`` lists them.
Problems of a whole file (missing columns, wrong types, another K, undecodable or
empty files) and ids repeated across kept rows are errors in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from labelscan.io.validate import REASONS, locate_row


@dataclass
class Rejections:
    """The rows of one partition that a skipping scan drops.

    Attributes
    ----------
    row_start : int
        Global row of the partition's first row.
    num_rows : int
        Rows of the partition as stored (kept and rejected).
    rows : numpy.ndarray
        (m,) int64 sorted local rows rejected.
    table : pyarrow.Table
        (m rows) the ``rejected/`` part: ``row_id`` (global row), ``file``, ``row_group``,
        ``row`` (within the row group), ``file_row`` (within the file), ``reason``.
    """

    row_start: int
    num_rows: int
    rows: np.ndarray
    table: pa.Table

    def kept_rows(self) -> np.ndarray:
        """(n,) int64 sorted local rows kept."""
        kept = np.ones(self.num_rows, dtype=bool)
        kept[self.rows] = False
        return np.flatnonzero(kept)

    def counts(self) -> dict:
        """Rejected rows per reason, ``{reason: count}`` (reasons with none left out)."""
        reasons, counts = np.unique(self.table.column("reason").to_numpy(zero_copy_only=False),
                                    return_counts=True)
        return {str(reason): int(count) for reason, count in zip(reasons, counts)}


def rejections(spec, problems: list) -> Rejections:
    """Rejections of a partition from the problems its checks found.

    Parameters
    ----------
    spec : PartitionSpec
    problems : list of labelscan.io.validate.RowProblem
        Rows local to the partition, in check order; a row found by several gets the first reason.

    Returns
    -------
    Rejections
    """
    reason_of = np.full(spec.num_rows, -1, dtype=np.int8)
    for problem in reversed(problems):
        reason_of[problem.rows] = REASONS.index(problem.reason)
    rows = np.flatnonzero(reason_of >= 0)
    located = [locate_row(spec, int(row)) for row in rows]
    file_rows = _file_rows(spec, rows)
    table = pa.table({
        "row_id": pa.array(spec.row_start + rows, pa.int64()),
        "file": pa.array([path for path, _, _ in located], pa.string()).dictionary_encode(),
        "row_group": pa.array([group for _, group, _ in located], pa.int32()),
        "row": pa.array([row for _, _, row in located], pa.int64()),
        "file_row": pa.array(file_rows, pa.int64()),
        "reason": pa.array([REASONS[code] for code in reason_of[rows]], pa.string()).dictionary_encode(),
    })
    return Rejections(row_start=spec.row_start, num_rows=spec.num_rows, rows=rows.astype(np.int64), table=table)


def _file_rows(spec, rows: np.ndarray) -> np.ndarray:
    """Row of each local row within its own file, shape (m,)."""
    piece_ends = np.cumsum([piece.num_rows for piece in spec.pieces])
    piece_of = np.searchsorted(piece_ends, rows, side="right")
    piece_starts = piece_ends - [piece.num_rows for piece in spec.pieces]
    file_starts = np.asarray([piece.file_row_start for piece in spec.pieces], dtype=np.int64)
    return rows - piece_starts[piece_of] + file_starts[piece_of]


def kept_row_ids(row_start: int, num_kept: int, rejected: Rejections | None) -> np.ndarray:
    """Global row of each of the ``num_kept`` kept rows of a partition, shape (n,), int64."""
    if rejected is None:
        return np.arange(row_start, row_start + num_kept, dtype=np.int64)
    return row_start + rejected.kept_rows()


def rejected_per_reason(counts: list) -> dict:
    """Sum of per-partition ``{reason: rows}`` counts, every reason of :data:`REASONS` present."""
    return {reason: sum(count.get(reason, 0) for count in counts) for reason in REASONS}


def with_rejected_rows(table: pa.Table, rejected: Rejections) -> pa.Table:
    """A mask part of the kept rows, widened to every input row of the partition.

    Parameters
    ----------
    table : pyarrow.Table
        (n rows) ``row_id``, [``id``], ``is_label_issue``, ``label_quality``,
        ``predicted_label`` of the kept rows, in row order.
    rejected : Rejections

    Returns
    -------
    pyarrow.Table
        (``rejected.num_rows`` rows) in input order; a rejected row has its ``row_id``,
        ``is_label_issue`` False, and null ``id``, ``label_quality`` and ``predicted_label``.
    """
    if not len(rejected.rows):
        return table
    position = np.full(rejected.num_rows, -1, dtype=np.int64)
    position[rejected.kept_rows()] = np.arange(table.num_rows)
    widened = table.take(pa.array(position, mask=position < 0))
    row_ids = pa.array(np.arange(rejected.row_start, rejected.row_start + rejected.num_rows, dtype=np.int64))
    widened = widened.set_column(widened.schema.get_field_index("row_id"), "row_id", row_ids)
    flags = widened.column("is_label_issue").fill_null(False)
    return widened.set_column(widened.schema.get_field_index("is_label_issue"), "is_label_issue", flags)
