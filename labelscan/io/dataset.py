"""Plan a parquet prediction set into partitions, and read one partition.

Planning reads parquet footers only (plus, for a variable-length ``list``
column, the first row of the first row group, to learn K), so it is cheap on
the client even for object stores. A partition is a run of consecutive row
groups, packed greedily up to ``rows_per_partition`` rows across file
boundaries (thousands of small files make a handful of partitions, not one
each); a row group is never split. Partition ``i`` holds the rows
``[row_start, row_start + num_rows)`` of the global row order (files sorted by
path, then rows in file order). Consecutive files join one partition only when
they store the columns read with the same Arrow types, so a partition's pieces
concatenate without casts.
"""

import contextlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import fsspec
from fsspec.implementations.local import LocalFileSystem
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from labelscan.errors import InputError
from labelscan.io import pages
from labelscan.io.columns import (PredProbsLayout, check_id_column, check_label_column,
                                  columns_problems, decode_columns, decode_ids, decode_labels,
                                  decode_list, list_blocks, list_problems, null_problems, resolve_pred_probs)
from labelscan.io.multilabels import check_multilabel_column
from labelscan.io.sources import fingerprint, resolve_files
from labelscan.io.threads import ensure_decode_threads
from labelscan.io.rejects import Rejections, rejections
from labelscan.io.validate import (label_problems, pred_probs_problems, validate_labels, validate_partition,
                                   validate_unique_ids, value_problems)

CLASS_NAMES_KEY = b"labelscan.class_names"
TARGET_PARTITION_BYTES = 256 * 2**20
"""Most predictions per partition of a CPU scan's default planning (which also asks for a
partition per worker thread, :data:`labelscan.scan.PARTITIONS_PER_THREAD`). Fewer, larger
partitions cost less per row: each task has a fixed cost (scheduling, and per-class steps in
Python), paid K times per partition in some passes. 2-core host, one cluster, the partitions'
rows alternating, medians of five scans: 1M x 100 8 -> 4 partitions 1.83 -> 1.44 s, 200K x 1000
13 -> 4 partitions 1.38 -> 0.97 s, 10M x 10 7 -> 4 partitions 1.28 -> 1.18 s (64 MiB until the
twenty-third session)."""
FIRST_ROW_READ_BUFFER = 2**16
FOOTER_READ_THREADS = 32


@dataclass(frozen=True)
class FilePiece:
    """Consecutive row groups of one file: the part of a partition stored in that file.

    Attributes
    ----------
    path : str
        File path as the plan's fsspec filesystem sees it.
    row_groups : tuple of int
        Consecutive row group indices of that file.
    row_group_rows : tuple of int
        Rows in each of those row groups.
    file_row_start : int
        Row of the file (counted from its first row) where the piece starts.
    """

    path: str
    row_groups: tuple[int, ...]
    row_group_rows: tuple[int, ...]
    file_row_start: int = 0

    @property
    def num_rows(self) -> int:
        """``sum(row_group_rows)``."""
        return sum(self.row_group_rows)


@dataclass(frozen=True)
class PartitionSpec:
    """One partition: consecutive row groups of one or more consecutive files.

    Attributes
    ----------
    index : int
        Partition number, its position in the global row order.
    pieces : tuple of FilePiece
        In global row order; each of another file.
    row_start : int
        Global row index of the partition's first row.
    num_rows : int
        Rows of all pieces.
    """

    index: int
    pieces: tuple[FilePiece, ...]
    row_start: int
    num_rows: int


@dataclass(frozen=True)
class DatasetPlan:
    """A validated description of a parquet prediction set; picklable, shipped to workers.

    Attributes
    ----------
    fs : fsspec.AbstractFileSystem
    partitions : tuple of PartitionSpec
    num_rows : int
        N, rows in the whole set.
    num_classes : int
        K.
    pred_probs_dtype : numpy.dtype
        float16, float32 or float64, as stored (not upcast).
    label_column : str
    pred_probs_column : str or None
        The list column holding predictions, or None.
    pred_probs_columns : tuple of str or None
        The K float columns holding predictions in class order, or None.
    id_column : str or None
    class_names : tuple of str or None
        From the parquet key-value metadata ``labelscan.class_names`` (a JSON list).
    fingerprint : dict
        ``{"files": [{"path", "size", "etag" or "mtime", "rows"}], "num_rows",
        "num_classes", "sha256"}``.
    """

    fs: fsspec.AbstractFileSystem
    partitions: tuple[PartitionSpec, ...]
    num_rows: int
    num_classes: int
    pred_probs_dtype: np.dtype
    label_column: str
    pred_probs_column: str | None
    pred_probs_columns: tuple[str, ...] | None
    id_column: str | None
    class_names: tuple[str, ...] | None
    fingerprint: dict

    def reader(self):
        """This plan without its partition list and fingerprint: all that reading one partition
        needs. Ship it with each partition's task instead of the whole plan, which grows with
        the number of files (≈ 120 bytes a file: every task carrying it makes the graph O(P²))."""
        return replace(self, partitions=(), fingerprint={})


@dataclass
class PartitionData:
    """A decoded, validated partition.

    Attributes
    ----------
    row_start : int
        Global row index of the first row.
    labels : numpy.ndarray
        (n,) int64 given labels in ``[0, K)``.
    pred_probs : numpy.ndarray or list of numpy.ndarray
        (n, K) C-contiguous, of the plan's ``pred_probs_dtype``; may be a
        read-only zero-copy view of Arrow memory. Read with ``row_blocks``: possibly a list
        of such (rows, K) views, one per decoded chunk, in row order.
    ids : numpy.ndarray or None
        (n,) the id column, when the plan has one.
    rejected : Rejections or None
        With ``on_bad_rows="skip"``: the partition's rows left out of ``labels``,
        ``pred_probs`` and ``ids`` (:mod:`labelscan.io.rejects`); None otherwise.
    """

    row_start: int
    labels: np.ndarray
    pred_probs: np.ndarray
    ids: np.ndarray | None
    rejected: Rejections | None = None


@dataclass(frozen=True)
class _FileFooter:
    path: str
    row_group_rows: tuple[int, ...]
    layout: PredProbsLayout
    class_names: tuple[str, ...] | None
    id_type: pa.DataType | None = None
    column_types: tuple = ()


def plan_dataset(urlpath, *, storage_options=None, label_column="label",
                 pred_probs_column="pred_probs", id_column=None, rows_per_partition=None,
                 partition_bytes=TARGET_PARTITION_BYTES, min_partitions=1,
                 multi_label=False):
    """Check a parquet prediction set's schema and split it into partitions.

    Parameters
    ----------
    urlpath : str or list of str
        A file, a directory (every ``*.parquet`` below it, skipping names that
        start with ``_`` or ``.``), a glob, or a list of those; local or fsspec URLs.
    storage_options : dict, optional
        Passed to the fsspec filesystem.
    label_column : str
        Integer column of given labels.
    pred_probs_column : str or sequence of str
        A ``fixed_size_list`` / ``list`` column of floats; a list of K float
        column names; or a prefix ``p`` meaning columns ``p0 .. p{K-1}``.
    id_column : str, optional
        Column carried to the outputs as the example id.
    rows_per_partition : int, optional
        Most rows per partition (a larger row group still makes one partition).
        Default: partitions of about equal rows, as few as hold at most ``partition_bytes`` of
        predictions each (row groups allowing) and at least ``min_partitions``.
    partition_bytes : int
        Most bytes of predictions per partition when ``rows_per_partition`` is not given
        (:data:`TARGET_PARTITION_BYTES`; GPU scans ask for more, see :data:`labelscan.scan.GPU_PARTITION_BYTES`).
    min_partitions : int
        Without ``rows_per_partition``: the fewest partitions (row groups allowing; the
        footers are read once).
    multi_label : bool
        ``label_column`` holds each row's class indices (``list<int>``) or a K-wide 0/1
        vector (:mod:`labelscan.io.multilabels`) instead of one integer.

    Returns
    -------
    DatasetPlan

    Raises
    ------
    InputError
        Unreadable or empty files, missing columns, wrong types, or files
        disagreeing on K, dtype or class names.
    """
    fs, files = resolve_files(urlpath, storage_options)
    with ThreadPoolExecutor(min(FOOTER_READ_THREADS, len(files))) as pool:
        footers = list(pool.map(
            lambda path: _read_footer(fs, path, label_column, pred_probs_column, id_column, multi_label),
            [path for path, _ in files]))
    first = footers[0].layout
    num_classes = first.num_classes or _first_list_length(fs, footers[0])
    for footer in footers[1:]:
        _check_same_layout(footer, first, num_classes)
        if footer.id_type != footers[0].id_type:
            raise InputError(f"id column {id_column!r} has type {footer.id_type}, but the first "
                             f"file's has type {footers[0].id_type}", path=footer.path)
    class_names = _class_names(footers, num_classes)
    rows_per_file = [sum(footer.row_group_rows) for footer in footers]
    if rows_per_partition is not None:
        partitions = _pack_partitions(footers, rows_per_partition)
    else:
        most_rows = max(1, partition_bytes // (num_classes * first.dtype.itemsize))
        total_rows = sum(rows_per_file)
        partitions = _pack_partitions(footers, num_partitions=max(1, min_partitions, -(-total_rows // most_rows)))
    return DatasetPlan(
        fs=fs,
        partitions=partitions,
        num_rows=sum(rows_per_file),
        num_classes=num_classes,
        pred_probs_dtype=first.dtype,
        label_column=label_column,
        pred_probs_column=first.column,
        pred_probs_columns=first.columns,
        id_column=id_column,
        class_names=class_names,
        fingerprint=fingerprint(files, rows_per_file, num_classes),
    )


def _is_corrupt(error):
    """Whether pyarrow rejected the bytes, as opposed to the filesystem failing to deliver them.

    pyarrow reports undecodable data as ``ArrowException`` or a plain ``OSError``;
    failures of the file object (``ConnectionError``, ``FileNotFoundError``, ...)
    are subclasses of ``OSError`` or other types and pass through unchanged.
    """
    return isinstance(error, pa.ArrowException) or type(error) is OSError


@contextlib.contextmanager
def _open_parquet(fs, path, buffer_size=0):
    """Open a parquet file; a file whose footer cannot be decoded raises :class:`InputError`.

    Pages written with checksums (``write_page_checksum=True``) are verified while read, so
    flipped bits in them raise :class:`InputError` instead of passing as other numbers.
    """
    with _native_or_fsspec(fs, path) as handle:
        yield _parquet_file(handle, path, buffer_size)


def _parquet_file(handle, path, buffer_size=0):
    try:
        return pq.ParquetFile(handle, buffer_size=buffer_size, page_checksum_verification=True)
    except Exception as error:
        if _is_corrupt(error):
            raise InputError(f"not a readable parquet file ({error})", path=path) from error
        raise


@contextlib.contextmanager
def _native_or_fsspec(fs, path):
    """A local file opened by pyarrow itself (reads release the GIL: threads decode in parallel),
    any other filesystem's file through fsspec."""
    if isinstance(fs, LocalFileSystem):
        with pa.OSFile(path, "rb") as handle:
            yield handle
    else:
        with fs.open(path, "rb") as handle:
            yield handle


def _read_footer(fs, path, label_column, pred_probs_column, id_column, multi_label=False):
    with _open_parquet(fs, path) as parquet:
        metadata = parquet.metadata
        schema = parquet.schema_arrow
    if metadata.num_rows == 0:
        raise InputError("empty file (0 rows)", path=path)
    (check_multilabel_column if multi_label else check_label_column)(schema, label_column, path)
    id_type = check_id_column(schema, id_column, path)
    layout = resolve_pred_probs(schema, pred_probs_column, path)
    row_group_rows = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    read = [label_column, *([layout.column] if layout.column else layout.columns),
            *([id_column] if id_column is not None else [])]
    column_types = tuple(str(schema.field(name).type) for name in read)
    return _FileFooter(path, row_group_rows, layout, _stored_class_names(metadata, path), id_type,
                       column_types)


def _stored_class_names(metadata, path):
    stored = (metadata.metadata or {}).get(CLASS_NAMES_KEY)
    if stored is None:
        return None
    try:
        names = json.loads(stored)
    except ValueError as error:
        raise InputError(f"metadata {CLASS_NAMES_KEY.decode()} is not JSON", path=path) from error
    if not isinstance(names, list):
        raise InputError(f"metadata {CLASS_NAMES_KEY.decode()} is not a JSON list", path=path)
    return tuple(str(name) for name in names)


def _first_list_length(fs, footer):
    """K of a variable-length list column: the length of the file's first row.

    Reads only the first pages of the first non-empty row group's column chunk.
    """
    row_group = next(index for index, rows in enumerate(footer.row_group_rows) if rows)
    with _open_parquet(fs, footer.path, buffer_size=FIRST_ROW_READ_BUFFER) as parquet:
        batch = next(parquet.iter_batches(batch_size=1, row_groups=[row_group],
                                          columns=[footer.layout.column]))
    first = batch.column(0)[0]
    if not first.is_valid:
        raise InputError("null pred_probs rows", path=footer.path, row_group=row_group, row=0,
                         global_row=0)
    return len(first)


def _check_same_layout(footer, first, num_classes):
    layout = footer.layout
    if layout.num_classes is not None and layout.num_classes != num_classes:
        raise InputError(f"pred_probs has K={layout.num_classes} classes, but the first file "
                         f"has K={num_classes}", path=footer.path)
    if layout.dtype != first.dtype:
        raise InputError(f"pred_probs dtype {layout.dtype} differs from the first file's "
                         f"{first.dtype}", path=footer.path)
    if (layout.column, layout.columns) != (first.column, first.columns):
        raise InputError("pred_probs is stored in different columns than in the first file",
                         path=footer.path)


def _class_names(footers, num_classes):
    named = [footer for footer in footers if footer.class_names is not None]
    if not named:
        return None
    names = named[0].class_names
    for footer in named:
        if footer.class_names != names:
            raise InputError("class names in the metadata differ from those of "
                             f"{named[0].path}", path=footer.path)
    if len(names) != num_classes:
        raise InputError(f"metadata names {len(names)} classes, but pred_probs has "
                         f"K={num_classes}", path=named[0].path)
    return names


def _pack_partitions(footers, rows_per_partition=None, num_partitions=None):
    """Pack consecutive row groups, across files, into runs: greedily of at most
    ``rows_per_partition`` rows (a larger row group forms a run of its own), or into
    ``num_partitions`` runs of about equal rows (a row group goes to the run its middle row falls
    in: runs differ by at most a row group). Empty row groups join their neighbour; a run ends at
    a file whose columns have other Arrow types."""
    partitions = []
    pieces, run_rows, row_start, types, run_share = [], 0, 0, None, None
    total_rows = max(1, sum(sum(footer.row_group_rows) for footer in footers))

    def share(rows):
        """Of ``num_partitions`` equal shares of the rows, the one holding the middle row of a
        row group of ``rows`` rows that comes next."""
        return int((row_start + run_rows + rows / 2) * num_partitions // total_rows)

    def starts_run(rows):
        if num_partitions is None:
            return run_rows + rows > rows_per_partition
        return share(rows) != run_share

    def close_run():
        nonlocal pieces, run_rows, row_start, run_share
        partitions.append(PartitionSpec(index=len(partitions), pieces=tuple(pieces),
                                        row_start=row_start, num_rows=run_rows))
        row_start += run_rows
        pieces, run_rows, run_share = [], 0, None

    for footer in footers:
        if pieces and footer.column_types != types:
            close_run()
        types = footer.column_types
        groups, file_row = [], 0
        for row_group, rows in enumerate(footer.row_group_rows):
            if rows and run_rows and starts_run(rows):
                if groups:
                    pieces.append(_piece(footer.path, groups))
                close_run()
                groups = []
            if rows and not run_rows and num_partitions is not None:
                run_share = share(rows)
            groups.append((row_group, rows, file_row))
            run_rows += rows
            file_row += rows
        pieces.append(_piece(footer.path, groups))
    close_run()
    return tuple(partitions)


def _piece(path, groups):
    """A :class:`FilePiece` of ``(row_group, rows, file_row)`` triples."""
    row_groups, row_group_rows, file_rows = zip(*groups)
    return FilePiece(path=path, row_groups=row_groups, row_group_rows=row_group_rows,
                     file_row_start=file_rows[0])


def _read_table(plan, spec, columns):
    """The ``columns`` of a partition's rows: its pieces read and concatenated, in order."""
    ensure_decode_threads()
    list_column = (plan.pred_probs_column if plan.pred_probs_column in columns and pages.preferred(plan.pred_probs_dtype)
                   else None)
    tables = [_read_piece(plan, piece, columns, list_column) for piece in spec.pieces]
    if len(tables) == 1:
        return tables[0]
    return pa.table({name: pa.chunked_array([chunk for table in tables for chunk in table.column(name).chunks],
                                            type=tables[0].schema.field(name).type)
                     for name in columns})


def _read_piece(plan, piece, columns, list_column=None):
    try:
        table = _decode_list_pages(plan, piece, columns, list_column) if list_column is not None else None
        if table is None:
            table = _decode_row_groups(plan.fs, piece, columns)
    except InputError:
        raise
    except Exception as error:
        if _is_corrupt(error):
            with _open_parquet(plan.fs, piece.path) as parquet:
                bad = _first_undecodable(parquet, piece.row_groups, columns)
            raise InputError(f"cannot decode row group {bad} ({error}){_decode_hint(error)}",
                             path=piece.path, row_group=bad) from error
        raise
    if table.num_rows != piece.num_rows:
        raise InputError(f"file changed since planning: row groups {list(piece.row_groups)} "
                         f"hold {table.num_rows} rows, planned {piece.num_rows}", path=piece.path)
    return table


_PARQUET_FORMAT = ds.ParquetFileFormat(
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True))
_ARROW_LOCAL_FS = pafs.LocalFileSystem()


def _decode_row_groups(fs, piece, columns):
    """A piece's row groups as one table.

    Local files are read as a dataset fragment, whose row groups Arrow decodes in parallel on
    its CPU pool (one ``read_row_groups`` call decodes a single list column on one thread: 2x
    slower per partition, measured); other filesystems go through their fsspec file.
    """
    if isinstance(fs, LocalFileSystem):
        fragment = _PARQUET_FORMAT.make_fragment(piece.path, filesystem=_ARROW_LOCAL_FS,
                                                 row_groups=list(piece.row_groups))
        return fragment.to_table(columns=columns, use_threads=True)
    with _open_parquet(fs, piece.path) as parquet:
        return parquet.read_row_groups(list(piece.row_groups), columns=columns)


def _decode_list_pages(plan, piece, columns, list_column):
    """A piece's row groups as one table, its list column decoded by :mod:`labelscan.io.pages`
    and the other columns by Arrow; None when the list column needs Arrow's reader."""
    with _native_or_fsspec(plan.fs, piece.path) as handle:
        parquet = _parquet_file(handle, piece.path)
        leaf = pages.list_leaf(parquet, list_column, plan.num_classes)
        if leaf is None or (pa.types.is_list(leaf.column_type)
                            and piece.num_rows * leaf.list_size > np.iinfo(np.int32).max):
            return None   # not decodable here, or past 32-bit list offsets (Arrow reads it in chunks)
        try:
            values = pages.read_list_values(parquet, _range_reader(handle), piece.row_groups, leaf)
        except pages.Unsupported:
            return None
        others = [name for name in columns if name != list_column]
        rest = parquet.read_row_groups(list(piece.row_groups), columns=others, use_threads=False) if others else None
    arrays = {list_column: _list_array(values, leaf.column_type, leaf.list_size)}
    if rest is not None:
        arrays.update((name, rest.column(name)) for name in others)
    return pa.table({name: arrays[name] for name in columns})


def _range_reader(handle):
    """``read(offset, size) -> bytes`` of an open file, safe to call from several threads."""
    if hasattr(handle, "read_at"):    # pyarrow files: positional reads, no shared cursor
        return lambda offset, size: handle.read_at(size, offset)
    lock = threading.Lock()

    def read(offset, size):
        with lock:
            handle.seek(offset)
            return handle.read(size)
    return read


def _list_array(values, column_type, list_size):
    """An Arrow list array of ``column_type`` over ``values`` (K per row, no nulls), zero-copy."""
    flat = pa.array(values)
    if pa.types.is_fixed_size_list(column_type):
        return pa.FixedSizeListArray.from_arrays(flat, type=column_type)
    offsets = np.arange(0, len(values) + 1, list_size,
                        dtype=np.int64 if pa.types.is_large_list(column_type) else np.int32)
    array_type = pa.LargeListArray if pa.types.is_large_list(column_type) else pa.ListArray
    return array_type.from_arrays(pa.array(offsets), flat, type=column_type)


NULL_FIXED_SIZE_LIST_MESSAGE = "Expected all lists to be of size"
"""How pyarrow releases without the fix of apache/arrow#35692 fail on null fixed_size_list rows."""


def _decode_hint(error) -> str:
    """What a person can do about a decoding error pyarrow is known to raise on valid files."""
    if NULL_FIXED_SIZE_LIST_MESSAGE in str(error):
        return ("; the file may hold null pred_probs rows, which this pyarrow cannot read back "
                "(apache/arrow#35692): upgrade pyarrow, or store the rows as non-null lists")
    return ""


def _first_undecodable(parquet, row_groups, columns):
    """The first of ``row_groups`` that fails to decode on its own (the first one if none does)."""
    for row_group in row_groups:
        try:
            parquet.read_row_group(row_group, columns=columns)
        except Exception as error:  # noqa: BLE001 - only locating an error already raised
            if _is_corrupt(error):
                return row_group
            raise
    return row_groups[0]


def read_partition(plan, spec, row_sum_tolerance=None, on_bad_rows="error", row_blocks=False):
    """Read, decode and validate one partition.

    Parameters
    ----------
    plan : DatasetPlan
    spec : PartitionSpec
        One of ``plan.partitions``.
    row_sum_tolerance : float, optional
        Also reject rows whose sum differs from 1 by more than this (plus the rounding of
        the stored dtype, :func:`labelscan.io.validate.rounding_allowance`).
    on_bad_rows : {"error", "skip"}
        ``"skip"``: drop the rows failing a row-level check instead of raising, and describe
        them in ``rejected``.
    row_blocks : bool
        Predictions of a list column may come back as the list of their zero-copy chunks
        (:func:`labelscan.io.columns.list_blocks`) instead of one matrix: a consumer that
        reorders the rows anyway saves a copy of the partition (only with ``"error"`` and no
        ``row_sum_tolerance``; invalid input falls back to the checks of the matrix path,
        which name the offending row).

    Returns
    -------
    PartitionData
        ``labels`` (n,) int64, ``pred_probs`` (n, K) of ``plan.pred_probs_dtype``,
        ``ids`` (n,) or None, of the kept rows; ``rejected`` with ``"skip"``.

    Raises
    ------
    InputError
        Naming the file, row group and first offending row.
    """
    table = read_partition_table(plan, spec)
    if on_bad_rows == "skip":
        return _decode_skipping(plan, spec, table, row_sum_tolerance)
    data = _decode(plan, spec, table, row_blocks and plan.pred_probs_column is not None and row_sum_tolerance is None)
    if isinstance(data.pred_probs, list):
        if not label_problems(data.labels, plan.num_classes) and not any(map(pred_probs_problems, data.pred_probs)):
            if data.ids is not None:
                validate_unique_ids(data.ids, spec)
            return data
        data = _decode(plan, spec, table)   # invalid values: the matrix checks name the offending row
    validate_partition(data, plan, spec, row_sum_tolerance)
    return data


def read_partition_table(plan, spec) -> pa.Table:
    """The label, prediction and (if any) id columns of a partition's rows, undecoded."""
    prediction_columns = ([plan.pred_probs_column] if plan.pred_probs_column is not None
                          else list(plan.pred_probs_columns))
    id_columns = [plan.id_column] if plan.id_column is not None else []
    return _read_table(plan, spec, [plan.label_column, *prediction_columns, *id_columns])


def decode_pred_probs(plan, spec, table):
    """The predictions of a partition's table as a C-contiguous (n, K) matrix of the plan's dtype
    (raising for nulls and list rows of another length)."""
    if plan.pred_probs_column is not None:
        return decode_list(table.column(plan.pred_probs_column), plan.num_classes, plan.pred_probs_dtype, spec)
    return decode_columns(table, plan.pred_probs_columns, plan.pred_probs_dtype, spec)


def _decode(plan, spec, table, row_blocks=False):
    """Decode a partition's table (raising for nulls and list rows of another length).

    ``row_blocks``: the list column's predictions as their zero-copy chunks when there are
    several (:func:`labelscan.io.columns.list_blocks`), else as one matrix.
    """
    labels = decode_labels(table.column(plan.label_column), spec)
    blocks = list_blocks(table.column(plan.pred_probs_column), plan.num_classes, spec) if row_blocks else []
    return PartitionData(
        row_start=spec.row_start,
        labels=labels,
        pred_probs=blocks if len(blocks) > 1 else decode_pred_probs(plan, spec, table),
        ids=decode_ids(table.column(plan.id_column), spec) if plan.id_column is not None else None,
    )


def _decode_skipping(plan, spec, table, row_sum_tolerance):
    """Decode the rows passing every row-level check; describe the others in ``rejected``.

    Rows failing a check of the Arrow columns (nulls, list lengths) are dropped before
    decoding, the decoded values are checked next; ids must be unique among the kept rows.
    """
    if plan.pred_probs_column is not None:
        problems = list_problems(table.column(plan.pred_probs_column), plan.num_classes)
    else:
        problems = columns_problems(table, plan.pred_probs_columns)
    problems += null_problems(table.column(plan.label_column), "null_label", "null labels")
    if plan.id_column is not None:
        problems += null_problems(table.column(plan.id_column), "null_id", "null ids")
    positions = np.arange(spec.num_rows)
    if problems:
        positions = np.setdiff1d(positions, np.concatenate([problem.rows for problem in problems]))
        table = table.take(positions)
    data = _decode(plan, spec, table)
    problems += [problem.remapped(positions) for problem in value_problems(data, plan.num_classes,
                                                                          row_sum_tolerance)]
    data.rejected = rejections(spec, problems)
    if len(data.rejected.rows):
        keep = np.isin(positions, data.rejected.rows, invert=True)
        data.labels, data.pred_probs = data.labels[keep], data.pred_probs[keep]
        data.ids = data.ids[keep] if data.ids is not None else None
    if data.ids is not None:
        validate_unique_ids(data.ids, spec, rows=data.rejected.kept_rows())
    return data


def read_ids(plan, spec):
    """Read one partition's id column only (non-null; not yet checked for duplicates).

    Parameters
    ----------
    plan : DatasetPlan
        With an ``id_column``.
    spec : PartitionSpec

    Returns
    -------
    numpy.ndarray
        (n,) ids.
    """
    table = _read_table(plan, spec, [plan.id_column])
    return decode_ids(table.column(plan.id_column), spec)


def read_labels(plan, spec):
    """Read and validate the given labels of one partition.

    Parameters
    ----------
    plan : DatasetPlan
    spec : PartitionSpec

    Returns
    -------
    numpy.ndarray
        (n,) int64 labels in ``[0, K)``.
    """
    table = _read_table(plan, spec, [plan.label_column])
    labels = decode_labels(table.column(plan.label_column), spec)
    validate_labels(labels, plan.num_classes, spec)
    return labels
