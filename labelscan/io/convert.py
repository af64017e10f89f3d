"""Convert in-memory style inputs (``.npy`` or ``.csv`` arrays) into a partitioned parquet set.

Inputs are streamed: ``.npy`` files are read in row slices straight from the
file (any fsspec URL; the header gives shape and dtype, so nothing is loaded
whole), ``.csv`` files block by block with ``pyarrow.csv.open_csv``. Memory
holds one row group of arrays plus one compressed output file.

``.npy`` predictions keep their dtype (float16/32/64); ``.csv`` predictions are
parsed as float64 (correctly rounded, so text written with ``repr`` precision
round-trips exactly). A CSV of predictions or labels may start with a header
line (detected: a first line that does not parse as numbers); a CSV of ids
must start with a header line.
"""

import csv
import io
import itertools

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from labelscan.errors import InputError, UsageError
from labelscan.io.partset import PartSetWriter, prediction_table
from labelscan.io.redact import redact_url

NPY_BLOCK_BYTES = 16 * 2**20
CSV_BLOCK_BYTES = 16 * 2**20


def convert_arrays(pred_probs_path, labels_path, out_dir, *, rows_per_file=1_000_000,
                   row_group_rows=250_000, ids_path=None, class_names=None, storage_options=None,
                   overwrite=False):
    """Write arrays of predictions and labels as ``out_dir/part-00000.parquet``, ...

    Parameters
    ----------
    pred_probs_path : str
        ``.npy`` of shape (N, K) float16/32/64, or ``.csv`` with K columns.
    labels_path : str
        ``.npy`` of shape (N,) integers, or ``.csv`` with one column.
    out_dir : str
        Output directory, local path or fsspec URL.
    rows_per_file : int
        Most rows per output file.
    row_group_rows : int
        Most rows per row group.
    ids_path : str, optional
        ``.npy`` of shape (N,) or ``.csv`` with one column and a header line;
        stored as column ``id``.
    class_names : sequence of str, optional
        K names, stored in the key-value metadata ``labelscan.class_names``.
    storage_options : dict, optional
        For every path (inputs and output).
    overwrite : bool
        Replace ``part-*.parquet`` files already in ``out_dir``.

    Returns
    -------
    list of str
        URLs of the written files, in row order.

    Raises
    ------
    InputError
        Missing or unreadable inputs, wrong shapes or dtypes, or inputs of different lengths.
    UsageError
        Bad sizes, or ``class_names`` not of length K.
    """
    if rows_per_file < 1 or row_group_rows < 1:
        raise UsageError("rows_per_file and row_group_rows must be positive")
    storage_options = storage_options or {}
    sources = {
        "pred_probs": _open_source(pred_probs_path, storage_options, "pred_probs"),
        "labels": _open_source(labels_path, storage_options, "labels"),
    }
    if ids_path is not None:
        sources["ids"] = _open_source(ids_path, storage_options, "ids")
    num_classes = sources["pred_probs"].num_columns
    if class_names is not None and len(class_names) != num_classes:
        raise UsageError(f"{len(class_names)} class names given for K={num_classes} classes")
    _check_same_length({name: source.num_rows for name, source in sources.items()
                        if source.num_rows is not None})
    readers = {name: _RowReader(source) for name, source in sources.items()}
    writer = PartSetWriter(out_dir, storage_options=storage_options, overwrite=overwrite)
    blocks = _aligned_blocks(readers, rows_per_file, min(row_group_rows, rows_per_file))
    try:
        for _, file_blocks in itertools.groupby(blocks, key=lambda item: item[0]):
            writer.write(_block_table(block, class_names) for _, block in file_blocks)
    except BaseException:
        writer.remove_written()
        raise
    if not writer.urls:
        raise InputError("inputs hold no rows", path=pred_probs_path)
    return writer.urls


def _check_same_length(lengths, rows_before=0):
    """Raise :class:`InputError` unless all inputs have the same number of rows.

    Parameters
    ----------
    lengths : dict of str to int
        Rows per input (after ``rows_before`` rows they all had).
    rows_before : int
    """
    if len(set(lengths.values())) > 1:
        shortest = min(lengths, key=lengths.get)
        raise InputError(f"inputs have different numbers of rows: {shortest} ends after "
                         f"{rows_before + lengths[shortest]} rows, "
                         f"{max(lengths, key=lengths.get)} has more")


def _block_table(block, class_names):
    columns = {"id": block["ids"]} if "ids" in block else None
    return prediction_table(block["labels"], block["pred_probs"], columns=columns,
                            class_names=class_names)


def _aligned_blocks(readers, rows_per_file, row_group_rows):
    """Yield ``(file_index, {name: rows})`` row groups until the inputs end together."""
    rows_read = 0
    for file_index in itertools.count():
        for start in range(0, rows_per_file, row_group_rows):
            wanted = min(row_group_rows, rows_per_file - start)
            block = {name: reader.read(wanted) for name, reader in readers.items()}
            _check_same_length({name: len(rows) for name, rows in block.items()}, rows_read)
            got = len(block["pred_probs"])
            if got:
                yield file_index, block
            rows_read += got
            if got < wanted:
                return


class _RowReader:
    """Reads exactly ``n`` rows at a time (fewer only at the end) from a source's blocks."""

    def __init__(self, source):
        self._blocks = source.blocks()
        self._pending = []
        self._pending_rows = 0

    def read(self, n):
        """Up to ``n`` next rows as one array; fewer only when the source is exhausted."""
        while self._pending_rows < n and (block := next(self._blocks, None)) is not None:
            self._pending.append(block)
            self._pending_rows += len(block)
        if not self._pending:
            return np.empty(0)
        rows = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        head, tail = rows[:n], rows[n:]
        self._pending = [tail] if len(tail) else []
        self._pending_rows = len(tail)
        return head


def _open_source(urlpath, storage_options, role):
    """The source reading the ``role`` input at ``urlpath``.

    Raises
    ------
    UsageError
        ``urlpath`` is neither a ``.npy`` nor a ``.csv`` file.
    InputError
        There is no such file, or it does not hold a ``role`` array.
    """
    fs, path = fsspec.core.url_to_fs(urlpath, **storage_options)
    if path.endswith(".npy"):
        source_class = _NpySource
    elif path.endswith(".csv"):
        source_class = _CsvSource
    else:
        raise UsageError(f"{urlpath}: expected a .npy or .csv file")
    try:
        return source_class(fs, path, role)
    except FileNotFoundError as error:
        raise InputError(f"no such {role} file", path=redact_url(urlpath)) from error


def _check_shape(ndim, dtype, role, path):
    if role == "pred_probs":
        if ndim != 2 or dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
            raise InputError(f"pred_probs must be a 2-D float16/32/64 array, got {ndim}-D "
                             f"{dtype}", path=path)
    elif ndim != 1:
        raise InputError(f"{role} must be a 1-D array, got {ndim}-D", path=path)
    elif role == "labels" and dtype.kind not in "iu":
        raise InputError(f"labels must be integers, got {dtype}", path=path)


class _NpySource:
    """A ``.npy`` file read in row slices through fsspec (C order only)."""

    def __init__(self, fs, path, role):
        self.fs, self.path = fs, path
        with fs.open(path, "rb") as handle:
            try:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                self.shape, fortran_order, self.dtype = read_header(handle)
            except ValueError as error:
                raise InputError(f"not a readable .npy file ({error})", path=path) from error
            self.data_offset = handle.tell()
        _check_shape(len(self.shape), self.dtype, role, path)
        if fortran_order and len(self.shape) > 1:
            raise InputError("Fortran-ordered .npy files are not supported; save "
                             "np.ascontiguousarray(array)", path=path)
        self.num_columns = self.shape[1] if len(self.shape) > 1 else 1
        self.num_rows = self.shape[0]

    def blocks(self):
        """Yield consecutive row slices, native byte order."""
        row_bytes = self.dtype.itemsize * self.num_columns
        block_rows = max(1, NPY_BLOCK_BYTES // row_bytes)
        native = self.dtype.newbyteorder("=")
        with self.fs.open(self.path, "rb") as handle:
            handle.seek(self.data_offset)
            for start in range(0, self.shape[0], block_rows):
                rows = min(block_rows, self.shape[0] - start)
                data = handle.read(rows * row_bytes)
                if len(data) != rows * row_bytes:
                    raise InputError(f"truncated .npy file: expected {self.shape[0]} rows",
                                     path=self.path)
                block = np.frombuffer(data, self.dtype).reshape(rows, *self.shape[1:])
                yield block.astype(native, copy=False)


class _CsvSource:
    """A headerless or headed ``.csv`` file streamed block by block (length unknown up front)."""

    num_rows = None

    def __init__(self, fs, path, role):
        self.fs, self.path, self.role = fs, path, role
        with fs.open(path, "rt", newline="") as handle:
            first = next(csv.reader(io.StringIO(handle.readline())), None)
        if not first:
            raise InputError("empty CSV file", path=path)
        self.num_columns = len(first)
        self.has_header = role == "ids" or not all(map(_is_number, first))
        if role != "pred_probs" and self.num_columns != 1:
            raise InputError(f"{role} CSV must have one column, found {self.num_columns}",
                             path=path)

    def _column_types(self):
        if self.role == "ids":
            return {}
        kind = pa.float64() if self.role == "pred_probs" else pa.int64()
        return {f"f{j}": kind for j in range(self.num_columns)}

    def blocks(self):
        """Yield consecutive row blocks: (n, K) float64 predictions, or (n,) labels / ids."""
        read_options = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, autogenerate_column_names=True,
                                         skip_rows=int(self.has_header))
        convert_options = pacsv.ConvertOptions(column_types=self._column_types())
        with self.fs.open(self.path, "rb") as handle:
            try:
                for batch in pacsv.open_csv(handle, read_options=read_options,
                                            convert_options=convert_options):
                    yield self._to_numpy(batch)
            except pa.ArrowInvalid as error:
                raise InputError(f"cannot parse CSV ({error})", path=self.path) from error

    def _to_numpy(self, batch):
        if self.role == "pred_probs":
            return np.column_stack([column.to_numpy() for column in batch.columns])
        return batch.column(0).to_numpy(zero_copy_only=False)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True
