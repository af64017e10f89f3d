"""Parquet files of flat tables of numbers and booleans, encoded with NumPy.

Arrow's parquet writer encodes about 6 ns a value a column on one core (a 13M-row mask part:
0.3-0.4 s), which makes writing the outputs the host-bound part of a GPU scan. The columns
labelscan writes are few and plain: row numbers (ranges, delta-encoded to almost nothing),
class indices (dictionary-encoded: the values themselves are the indices, bit-packed), flags
(bit-packed booleans) and scores (plain floats). This writer encodes those with whole-array
NumPy operations into uncompressed pages, the file metadata with
:func:`labelscan.io.thrift.write_struct`, and the Arrow schema into the footer as Arrow's
writer does, so every reader gets the same table back (``pq.read_table`` returns the
written table, field types and nullability included). Deterministic: the same table gives
the same bytes.

Tables it does not handle (nulls, other types, no rows) raise :class:`NotEncodable`; callers
write those with Arrow (:func:`labelscan.io.atomic.table_pieces`).
"""

import base64

import numpy as np
import pyarrow as pa

from labelscan import __version__
from labelscan.io import parquet_encodings as encodings
from labelscan.io.column_set import ColumnSet, Consecutive
from labelscan.io.parquet_encodings import PLAIN, RLE
from labelscan.io.thrift import BINARY, BOOLEAN_TRUE, BYTE, I16, I32, I64, LIST, STRUCT, write_struct

ROW_GROUP_ROWS = 1 << 20
"""Rows per row group (Arrow's default): readers prune row groups by the row-key statistics."""

MAGIC = b"PAR1"

# parquet-format enums
BOOLEAN, INT32, INT64, FLOAT, DOUBLE = 0, 1, 2, 4, 5
REQUIRED, OPTIONAL = 0, 1
DATA_PAGE, DICTIONARY_PAGE = 0, 2
UNCOMPRESSED = 0
CONVERTED_INT = {8: 15, 16: 16}   # INT_8, INT_16
LOGICAL_INTEGER = 10              # LogicalType union member IntType

PHYSICAL = {np.dtype(np.bool_): (BOOLEAN, None), np.dtype(np.int8): (INT32, "<i4"),
            np.dtype(np.int16): (INT32, "<i4"), np.dtype(np.int32): (INT32, "<i4"),
            np.dtype(np.int64): (INT64, "<i8"), np.dtype(np.float32): (FLOAT, "<f4"),
            np.dtype(np.float64): (DOUBLE, "<f8")}
"""NumPy dtype -> (parquet physical type, little-endian storage dtype of its PLAIN values)."""

DICTIONARY_WIDEST = 16
"""Widest dictionary index: integer columns of values in ``[0, 2**16)`` may be dictionary-encoded."""


class NotEncodable(ValueError):
    """A table this writer does not encode (nulls, a type besides bool/int8-64/float32/64, no rows)."""


def file_pieces(table, statistics=True, row_group_rows: int = ROW_GROUP_ROWS) -> list:
    """One parquet file of ``table``, as the buffers that make it up in order.

    Each column is encoded whole (a few NumPy calls a column, whatever its row groups: each
    call releases and takes back the GIL, which costs a wait when other threads run Python)
    and cut into row groups of ``row_group_rows`` rows, one data page a column chunk. The
    pieces are views of the encoded columns, not joined: a caller writing them to a file
    (:func:`labelscan.io.atomic.put_bytes`) skips a copy of the whole file.

    Parameters
    ----------
    table : pyarrow.Table or labelscan.io.column_set.ColumnSet
        (n rows, n >= 1) columns of bool, int8/16/32/64, float32/64, without nulls; a
        ColumnSet's ranges (:class:`~labelscan.io.column_set.Consecutive`) are encoded from
        their ends and its narrow integer columns as their stored type.
    statistics : bool or list of str
        Columns whose min/max statistics are written: all (True), none, or those named.
    row_group_rows : int
        Most rows per row group, a multiple of 128.

    Returns
    -------
    list of bytes-like
        Byte buffers (``memoryview(piece).nbytes`` bytes each); the same table gives the same
        bytes.

    Raises
    ------
    NotEncodable
    """
    if row_group_rows % encodings.BLOCK_VALUES:
        raise ValueError(f"row_group_rows must be a multiple of {encodings.BLOCK_VALUES}, not {row_group_rows}")
    schema, arrays = _schema_and_arrays(table)
    wanted = set(schema.names) if statistics is True else set(statistics or ())
    starts = np.arange(0, table.num_rows, row_group_rows)
    ends = np.minimum(starts + row_group_rows, table.num_rows)
    columns = [_Column(field, values, starts, ends, field.name in wanted) for field, values in zip(schema, arrays)]
    pieces, row_groups, offset = [MAGIC], [], len(MAGIC)
    for group in range(len(starts)):
        chunks = []
        group_offset = offset
        for column in columns:
            chunk = column.chunk(group, offset)
            chunks.append(chunk)
            pieces += chunk.pieces
            offset += chunk.size
        size = offset - group_offset
        row_groups.append([(1, LIST, (STRUCT, [chunk.metadata for chunk in chunks])),
                           (2, I64, size), (3, I64, int(ends[group] - starts[group])),
                           (5, I64, group_offset), (6, I64, size), (7, I16, group)])
    footer = write_struct(_file_metadata(schema, table.num_rows, columns, row_groups))
    return pieces + [footer, len(footer).to_bytes(4, "little"), MAGIC]


def _schema_and_arrays(table) -> tuple:
    """``(schema, arrays)`` of a table or ColumnSet with rows and columns this writer encodes."""
    if table.num_rows == 0:
        raise NotEncodable("a table without rows")
    if isinstance(table, ColumnSet):
        try:
            schema = table.schema()
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            raise NotEncodable(str(error)) from error
        arrays = list(table.columns.values())
    else:
        schema, arrays = table.schema, [column for column in table.columns]
    for field, values in zip(schema, arrays):
        numeric = pa.types.is_boolean(field.type) or pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        if not numeric or np.dtype(field.type.to_pandas_dtype()) not in PHYSICAL:
            raise NotEncodable(f"column {field.name!r} of type {field.type}")
        if isinstance(values, pa.ChunkedArray) and values.null_count:
            raise NotEncodable(f"column {field.name!r} has nulls")
    return schema, [values.to_numpy() if isinstance(values, pa.ChunkedArray) else values for values in arrays]


class _Chunk:
    """One column chunk's bytes (``pieces``, ``size`` bytes) and its ColumnChunk struct (``metadata``)."""

    def __init__(self, pieces: list, size: int, metadata: list):
        self.pieces, self.size, self.metadata = pieces, size, metadata


class _Column:
    """One column, encoded whole: its chunk in each row group (:meth:`chunk`)."""

    def __init__(self, field: pa.Field, values, starts: np.ndarray, ends: np.ndarray, statistics: bool):
        self.field, self.starts, self.ends = field, starts, ends
        stored = np.dtype(field.type.to_pandas_dtype())
        self.physical, self.storage = PHYSICAL[stored]
        integer = self.physical in (INT32, INT64)
        if isinstance(values, Consecutive):
            steps = encodings.DeltaBinaryPacked.consecutive(values.first, starts, ends)
        else:
            steps = _consecutive_steps(values, starts, ends) if integer else None
        if steps is not None:   # row numbers, ranks: delta pages of width 0, bounds from the ends
            self.values, self.dictionary, self.bounds = steps, None, steps.progression_bounds(stored)
        else:
            self.bounds = _group_bounds(values, starts) if statistics or integer else None
            self.dictionary = self._dictionary_entries(values) if integer else None
            self.values = self._encoder(values)
        self.statistics = _statistics(*self.bounds, self.storage) if statistics else [None] * len(starts)

    def _dictionary_entries(self, values: np.ndarray):
        """The dictionary ``0..max`` when the values are small non-negative integers (class
        indices) and every row group's dictionary page is at most its indices' size, else None."""
        low, high = int(self.bounds[0].min()), int(self.bounds[1].max())
        if low < 0 or high >= 1 << DICTIONARY_WIDEST:
            return None
        width = encodings.packed_width(high, DICTIONARY_WIDEST)
        dictionary_bits = (high + 1) * np.dtype(self.storage).itemsize * 8 * len(self.starts)
        if dictionary_bits > len(values) * width:
            return None
        self.dictionary_width = width
        return np.arange(high + 1).astype(self.storage).tobytes()

    def _encoder(self, values: np.ndarray):
        if self.physical == BOOLEAN:
            return encodings.Booleans(values, self.starts, self.ends)
        if self.dictionary is not None:
            return encodings.DictionaryIndices(values, self.dictionary_width, self.starts, self.ends)
        if self.physical in (INT32, INT64):
            try:
                return encodings.DeltaBinaryPacked(values, self.starts, self.ends)
            except encodings.TooWide:
                pass
        return encodings.Plain(values, self.storage, self.starts, self.ends)

    def chunk(self, group: int, offset: int) -> _Chunk:
        """The column's chunk of row group ``group``, starting at byte ``offset`` of the file."""
        num_values = int(self.ends[group] - self.starts[group])
        pieces, used = [], {self.values.encoding}
        dictionary_offset = None
        if self.dictionary is not None:
            dictionary_offset = offset
            pieces += _page(DICTIONARY_PAGE, [(1, I32, len(self.dictionary) // np.dtype(self.storage).itemsize),
                                              (2, I32, PLAIN)], [self.dictionary])
            used.add(PLAIN)
        data_offset = offset + sum(len(piece) for piece in pieces)
        body = self.values.page(group)
        if self.field.nullable:   # every value present: one run of definition level 1
            levels = encodings.repeated_run(1, num_values, 1)
            body = [len(levels).to_bytes(4, "little"), levels, *body]
            used.add(RLE)
        pieces += _page(DATA_PAGE, [(1, I32, num_values), (2, I32, self.values.encoding), (3, I32, RLE),
                                    (4, I32, RLE)], body)
        size = sum(len(piece) for piece in pieces)
        metadata = [(1, I32, self.physical), (2, LIST, (I32, sorted(used))),
                    (3, LIST, (BINARY, [self.field.name])), (4, I32, UNCOMPRESSED), (5, I64, num_values),
                    (6, I64, size), (7, I64, size), (9, I64, data_offset), (11, I64, dictionary_offset),
                    (12, STRUCT, self.statistics[group])]
        return _Chunk(pieces, size, [(2, I64, 0), (3, STRUCT, metadata)])   # file_offset: deprecated, 0


def _page(page_type: int, header_fields: list, body: list) -> list:
    """A page's header (uncompressed: both sizes the body's) and body pieces."""
    size = sum(len(piece) for piece in body)
    header_field = 7 if page_type == DICTIONARY_PAGE else 5
    return [write_struct([(1, I32, page_type), (2, I32, size), (3, I32, size), (header_field, STRUCT, header_fields)]),
            *body]


def _consecutive_steps(values: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """The column's DELTA_BINARY_PACKED encoder when its values look like consecutive integers
    (last - first = n - 1, checked in O(1)) and every row group's deltas are one constant
    (checked exactly by the encoder), else None: such a column skips the passes that find its
    bounds and weigh a dictionary."""
    if int(values[-1]) - int(values[0]) != len(values) - 1:
        return None
    try:
        encoder = encodings.DeltaBinaryPacked(values, starts, ends)
    except encodings.TooWide:
        return None
    return encoder if encoder.width == 0 else None


def _group_bounds(values: np.ndarray, starts: np.ndarray):
    """``(mins, maxs)`` of each row group's values, NaN ignored (NaN where all are)."""
    if values.dtype.kind == "f":
        return np.fmin.reduceat(values, starts), np.fmax.reduceat(values, starts)
    if values.dtype.kind == "b":
        values = values.view(np.uint8)
    return np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)


def _statistics(lows: np.ndarray, highs: np.ndarray, storage) -> list:
    """Each row group's Statistics struct fields: null count, and min/max values when any
    value is not NaN (float zeros as -0.0 / +0.0, as parquet-format asks)."""
    if lows.dtype.kind == "f":
        lows, highs = np.where(lows == 0, -0.0, lows), np.where(highs == 0, 0.0, highs)
    present = ~np.isnan(lows) if lows.dtype.kind == "f" else np.ones(len(lows), bool)
    item = np.dtype(storage or np.uint8).itemsize
    low_bytes, high_bytes = (memoryview(bounds.astype(storage or np.uint8)).cast("B") for bounds in (lows, highs))
    return [[(3, I64, 0)] + ([(5, BINARY, bytes(high_bytes[group * item:(group + 1) * item])),
                              (6, BINARY, bytes(low_bytes[group * item:(group + 1) * item]))] if present[group] else [])
            for group in range(len(lows))]


def _file_metadata(arrow_schema: pa.Schema, num_rows: int, columns: list, row_groups: list) -> list:
    schema = [[(4, BINARY, "schema"), (5, I32, len(arrow_schema))]]
    for column in columns:
        field = column.field
        element = [(1, I32, column.physical), (3, I32, OPTIONAL if field.nullable else REQUIRED),
                   (4, BINARY, field.name)]
        if pa.types.is_integer(field.type) and field.type.bit_width < 32:
            element += [(6, I32, CONVERTED_INT[field.type.bit_width]),
                        (10, STRUCT, [(LOGICAL_INTEGER, STRUCT, [(1, BYTE, field.type.bit_width),
                                                                 (2, BOOLEAN_TRUE, True)])])]
        schema.append(element)
    key_values = [*(arrow_schema.metadata or {}).items(),
                  (b"ARROW:schema", base64.b64encode(arrow_schema.serialize().to_pybytes()))]
    return [(1, I32, 2), (2, LIST, (STRUCT, schema)), (3, I64, num_rows),
            (4, LIST, (STRUCT, row_groups)),
            (5, LIST, (STRUCT, [[(1, BINARY, key), (2, BINARY, value)] for key, value in key_values])),
            (6, BINARY, f"labelscan version {__version__}"),
            (7, LIST, (STRUCT, [[(1, STRUCT, [])] for _ in arrow_schema]))]
