"""Decode a prediction list column straight from its parquet pages into a numpy array.

Arrow reads a ``list<float>`` / ``fixed_size_list<float, K>`` column by decoding one
repetition and one definition level per value and assembling list offsets from them:
2-3x the work of the values themselves (a ``fixed_size_list<float32, 10>`` column decodes
at ~77M rows/s on a 16-core host against ~180M rows/s for ten float columns). A prediction
column has no nulls and exactly K values per row, so its levels are the same few bytes
page after page. This module walks a column chunk's pages itself: it decompresses each page
(one :class:`pyarrow.Codec` call), checks the level bytes against level sections already
decoded and found to be "every value present, a new row every K values" (decoding them,
once, the first time a section is seen), and copies the PLAIN or dictionary-encoded values
into the output array.

Anything else — nulls, lists of another length, other encodings or codecs, page checksums
that do not match, bytes it cannot parse — raises :class:`Unsupported`, and the caller reads
the row groups with Arrow instead (which also reports real corruption precisely). The values
are the stored bytes themselves, so both readers give identical arrays.

Its page walk runs in Python and holds the GIL. Alone it reads about as fast as Arrow on 16
cores and faster on few (the 2-core development machine: 10M x 10 in 0.14 s against 0.34 s on
one thread), but in a process whose other threads also run Python (a GPU worker launching CuPy
kernels) it waits for the GIL where Arrow's C++ reader does not (docs/benchmarks.md).
:func:`preferred` therefore turns it on only in processes of at most :data:`MAX_CORES` cores.
"""

from __future__ import annotations

import functools
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from labelscan.io.threads import available_cores
from labelscan.io.thrift import ThriftError, read_struct, read_varint

DATA_PAGE, INDEX_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = 0, 1, 2, 3
PLAIN, PLAIN_DICTIONARY, RLE, RLE_DICTIONARY = 0, 2, 3, 8

CODECS = {"UNCOMPRESSED": None, "SNAPPY": "snappy", "GZIP": "gzip", "BROTLI": "brotli",
          "ZSTD": "zstd", "LZ4": "lz4_raw", "LZ4_RAW": "lz4_raw"}
"""Parquet codecs (as pyarrow's metadata names them) that :class:`pyarrow.Codec` reads.
pyarrow names LZ4_RAW "LZ4"; a Hadoop-framed LZ4 chunk fails to decompress as raw LZ4 and goes
to Arrow's reader."""

PHYSICAL_DTYPES = {"FLOAT": np.dtype("<f4"), "DOUBLE": np.dtype("<f8")}

MAX_CORES = 4
"""The most cores of a process that reads list columns with this module (above: Arrow)."""

MAX_CHECKED_SECTIONS = 256
"""Level sections remembered as valid per process (a few per page size and K in practice; at
most ~40 KB each)."""


def preferred(dtype) -> bool:
    """Whether this process should read list columns of ``dtype`` values with this module
    rather than Arrow (float16 is stored in another parquet type, which only Arrow reads)."""
    return np.dtype(dtype) in PHYSICAL_DTYPES.values() and available_cores() <= MAX_CORES


class Unsupported(Exception):
    """This column chunk needs Arrow's general reader."""


@dataclass(frozen=True)
class ListLeaf:
    """Where a list column's values live in a parquet file (or a flat column's: :func:`flat_leaf`).

    Attributes
    ----------
    column_index : int
        Index of the list's leaf among the file's parquet columns.
    dtype : numpy.dtype
        The values' dtype (little-endian float32 or float64).
    list_size : int
        K, the values of every row.
    max_definition_level, max_repetition_level : int
        Of the leaf (a value present at every level has the maximum definition level).
    column_type : pyarrow.DataType
        The column's Arrow type (``list``, ``large_list`` or ``fixed_size_list``).
    """

    column_index: int
    dtype: np.dtype
    list_size: int
    max_definition_level: int
    max_repetition_level: int
    column_type: pa.DataType


def list_leaf(parquet, column: str, list_size: int) -> ListLeaf | None:
    """The leaf of ``column`` if it is a list of float32/float64 this module can decode, else None.

    Parameters
    ----------
    parquet : pyarrow.parquet.ParquetFile
    column : str
        Top-level list column.
    list_size : int
        K.
    """
    field_type = parquet.schema_arrow.field(column).type
    if not (pa.types.is_list(field_type) or pa.types.is_large_list(field_type)
            or pa.types.is_fixed_size_list(field_type)):
        return None
    leaves = [index for index in range(len(parquet.schema))
              if parquet.schema.column(index).path.split(".")[0] == column]
    if len(leaves) != 1:
        return None
    leaf = parquet.schema.column(leaves[0])
    dtype = PHYSICAL_DTYPES.get(leaf.physical_type)
    if dtype is None or field_type.value_type != pa.from_numpy_dtype(dtype) or leaf.max_repetition_level != 1:
        return None
    return ListLeaf(leaves[0], dtype, list_size, leaf.max_definition_level, leaf.max_repetition_level, field_type)


INTEGER_DTYPES = {"INT32": np.dtype("<i4"), "INT64": np.dtype("<i8")}


def flat_leaf(parquet, column: str, dtypes: dict) -> ListLeaf | None:
    """A flat column (given labels, or one class's predictions) as a leaf of one value a row, or None.

    Its pages are read like a list column's, with no repetition levels and ``list_size`` 1
    (:mod:`labelscan.io.device_pages`).

    Parameters
    ----------
    parquet : pyarrow.parquet.ParquetFile
    column : str
        Top-level column.
    dtypes : dict
        The parquet physical types accepted and their numpy dtypes (:data:`INTEGER_DTYPES`,
        :data:`PHYSICAL_DTYPES`); the column's Arrow type must be that dtype's.
    """
    leaves = [index for index in range(len(parquet.schema)) if parquet.schema.column(index).path == column]
    if len(leaves) != 1:
        return None
    leaf = parquet.schema.column(leaves[0])
    dtype = dtypes.get(leaf.physical_type)
    field_type = parquet.schema_arrow.field(column).type
    if dtype is None or field_type != pa.from_numpy_dtype(dtype) or leaf.max_repetition_level != 0:
        return None
    return ListLeaf(leaves[0], dtype, 1, leaf.max_definition_level, 0, field_type)


def read_list_values(parquet, read_range, row_groups, leaf: ListLeaf, rows_at=None) -> np.ndarray:
    """The values of ``row_groups`` of a list column, row after row (or each row where asked).

    Parameters
    ----------
    parquet : pyarrow.parquet.ParquetFile
    read_range : callable(offset, size) -> bytes
        Reads bytes of the file.
    row_groups : sequence of int
    leaf : ListLeaf
    rows_at : RowScatter, optional
        Write row ``i`` of the row groups to ``rows_at.rows[rows_at.destinations[i]]`` instead
        of returning the values in row order (one copy of each value, no matrix in between).

    Returns
    -------
    numpy.ndarray, shape (rows * K,), ``leaf.dtype``
        The values in row order; with ``rows_at``, ``rows_at.rows`` itself, shape (m, K).

    Raises
    ------
    Unsupported
        When any of the row groups needs Arrow's reader.
    """
    metadata = parquet.metadata
    if any(not 0 <= index < metadata.num_row_groups for index in row_groups):
        raise Unsupported("no such row group")
    ends = np.cumsum([metadata.row_group(index).num_rows * leaf.list_size for index in row_groups])
    total = int(ends[-1]) if len(ends) else 0
    if rows_at is None:
        values = np.empty(total, dtype=leaf.dtype)
        sinks = [ContiguousValues(values[start:stop]) for start, stop in zip([0, *ends[:-1]], ends)]
    else:
        if rows_at.rows.dtype != leaf.dtype or rows_at.rows.shape[1] != leaf.list_size \
                or len(rows_at.destinations) * leaf.list_size != total:
            raise Unsupported("destination rows do not match the row groups")
        values = rows_at.rows
        sinks = [rows_at.shifted(start // leaf.list_size, stop // leaf.list_size)
                 for start, stop in zip([0, *ends[:-1]], ends)]

    def decode(index, sink):
        _decode_chunk(metadata.row_group(index).column(leaf.column_index), read_range, leaf, sink)

    jobs = list(zip(row_groups, sinks))
    if len(jobs) > 1:   # row groups in parallel, as Arrow decodes them (reads and decompression release the GIL)
        list(decode_pool().map(lambda job: decode(*job), jobs))
    else:
        for job in jobs:
            decode(*job)
    return values


@dataclass(frozen=True)
class ContiguousValues:
    """Decoded values written one after the other into ``out`` (shape (num_values,))."""

    out: np.ndarray

    @property
    def num_values(self) -> int:
        return len(self.out)

    def write(self, start: int, values: np.ndarray) -> None:
        """Values ``start .. start + len(values)`` of the chunk.

        Copied as bytes with a memoryview assignment, which keeps the GIL: besides the
        decompression, a page costs no GIL release, and so no wait to take it back behind
        other threads running Python (each such wait may last the interpreter's switch interval).
        """
        memoryview(self.out[start:start + len(values)]).cast("B")[:] = memoryview(values).cast("B")


@dataclass(frozen=True)
class RowScatter:
    """Decoded rows written each to its own row of a matrix (grouping rows as they are decoded).

    Attributes
    ----------
    rows : numpy.ndarray, shape (m, K)
        Destination: a C-contiguous matrix or the transpose of one (K, m).
    destinations : numpy.ndarray, shape (n,), intp
        Row of ``rows`` receiving each decoded row, in decoding order.
    """

    rows: np.ndarray
    destinations: np.ndarray

    @property
    def num_values(self) -> int:
        return len(self.destinations) * self.rows.shape[1]

    def shifted(self, first_row: int, end_row: int) -> "RowScatter":
        """The sink of decoded rows ``first_row .. end_row`` (one row group's)."""
        return RowScatter(self.rows, self.destinations[first_row:end_row])

    def write(self, start: int, values: np.ndarray) -> None:
        """Values ``start .. start + len(values)`` of the decoded rows, flat (a page may begin
        or end inside a row)."""
        list_size = self.rows.shape[1]
        row, phase = divmod(start, list_size)
        done = 0
        if phase:
            done = min(list_size - phase, len(values))
            self.rows[self.destinations[row], phase:phase + done] = values[:done]
            row += 1
        whole = (len(values) - done) // list_size
        if whole:
            self.rows[self.destinations[row:row + whole]] = values[done:done + whole * list_size].reshape(whole, -1)
            done += whole * list_size
            row += whole
        if done < len(values):
            self.rows[self.destinations[row], :len(values) - done] = values[done:]


_pool = None
_pool_lock = threading.Lock()


def decode_pool() -> ThreadPoolExecutor:
    """The process's row-group decoding threads, one per available core (its tasks never wait
    on each other, so tasks of any number of worker threads may share it)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(available_cores(), thread_name_prefix="labelscan-pages")
        return _pool


def _decode_chunk(chunk, read_range, leaf: ListLeaf, sink) -> None:
    """Decode one column chunk into ``sink`` (:class:`ContiguousValues` or :class:`RowScatter`
    of exactly its values), or raise :class:`Unsupported`."""
    if chunk.compression not in CODECS:
        raise Unsupported(f"codec {chunk.compression}")
    if chunk.num_values != sink.num_values:
        raise Unsupported("level entries differ from rows x K (nulls or lists of another length)")
    codec = CODECS[chunk.compression]
    first_page = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    data = _bytes_view(read_range(first_page, chunk.total_compressed_size))
    try:
        _walk_pages(data, codec, leaf, sink)
    except (ThriftError, IndexError, KeyError, TypeError, ValueError, pa.ArrowException) as error:
        raise Unsupported(f"unreadable pages ({error!r})") from error


def column_chunk_pages(data, num_values: int):
    """The pages of a column chunk up to its ``num_values`` level entries.

    Parameters
    ----------
    data : memoryview
        The chunk's bytes (unsigned), from its first page.
    num_values : int
        Level entries of the chunk's data pages together (rows x K for a list column).

    Yields
    ------
    (int, dict, int, memoryview)
        Page type, page header (Thrift field ids), the body's offset in ``data`` and the body
        (checksum verified when the header has one).

    Raises
    ------
    Unsupported
        A page running past the chunk, a checksum mismatch or more entries than ``num_values``.
    ThriftError
        An unreadable header.
    """
    position = counted = 0
    while counted < num_values:
        header, position = read_struct(data, position)
        page_type, compressed_size = header[1], header[3]
        body = data[position:position + compressed_size]
        if len(body) != compressed_size:
            raise Unsupported("column chunk ends inside a page")
        if 4 in header and zlib.crc32(body) != header[4] & 0xFFFFFFFF:
            raise Unsupported("page checksum mismatch")
        if page_type in (DATA_PAGE, DATA_PAGE_V2):
            counted += header[5 if page_type == DATA_PAGE else 8][1]
            if counted > num_values:
                raise Unsupported("more values than rows x K")
        elif page_type not in (DICTIONARY_PAGE, INDEX_PAGE):
            raise Unsupported(f"page type {page_type}")
        yield page_type, header, position, body
        position += compressed_size


def _walk_pages(data, codec, leaf: ListLeaf, sink) -> None:
    """Decode a column chunk's pages into ``sink``."""
    written = 0
    dictionary = None
    for page_type, header, _, body in column_chunk_pages(data, sink.num_values):
        if page_type == DICTIONARY_PAGE:
            dictionary = np.frombuffer(_decompress(body, header[2], codec), leaf.dtype,
                                       count=dictionary_size(header))
        elif page_type in (DATA_PAGE, DATA_PAGE_V2):
            count, encoding, values = _data_page(page_type, header, body, header[2], codec, leaf, written)
            if encoding == PLAIN:
                if len(values) < count * leaf.dtype.itemsize:
                    raise Unsupported("page shorter than its values")
                sink.write(written, np.frombuffer(values, leaf.dtype, count=count))
            else:
                sink.write(written, _dictionary_values(values, encoding, count, dictionary))
            written += count


def dictionary_size(header: dict) -> int:
    """Entries of a dictionary page (raising :class:`Unsupported` unless they are PLAIN)."""
    page = header[7]
    if page.get(2, PLAIN) not in (PLAIN, PLAIN_DICTIONARY):
        raise Unsupported("dictionary page not PLAIN")
    return page[1]


def _decompress(body, uncompressed_size: int, codec):
    if codec is None:
        return body
    return _bytes_view(_codec(codec).decompress(body, uncompressed_size))


@functools.lru_cache(maxsize=None)
def _codec(name: str) -> pa.Codec:
    """One codec object per name (one-shot decompression keeps no state between calls)."""
    return pa.Codec(name)


def _bytes_view(buffer) -> memoryview:
    """Unsigned bytes (pyarrow buffers export signed ones, which index as negative numbers)."""
    return memoryview(buffer).cast("B")


def _data_page(page_type, header, body, uncompressed_size, codec, leaf: ListLeaf, position: int):
    """Check a data page's levels; return ``(value count, encoding, value bytes)``."""
    if page_type == DATA_PAGE:
        count, encoding = v1_header(header)
        raw = _decompress(body, uncompressed_size, codec)
        return count, encoding, raw[_check_v1_levels(raw, leaf, count, position):]
    count, encoding, offset, compressed = v2_layout(header, body, leaf, position)
    values = body[offset:]
    if compressed:
        values = _decompress(values, uncompressed_size - offset, codec)
    return count, encoding, values


def v1_header(header: dict) -> tuple[int, int]:
    """``(level entries, value encoding)`` of a data page v1 (raising unless its levels are RLE)."""
    page = header[5]
    if page.get(3, RLE) != RLE or page.get(4, RLE) != RLE:
        raise Unsupported("levels not RLE")
    return page[1], page[2]


def _check_v1_levels(raw, leaf: ListLeaf, count: int, position: int) -> int:
    """Check the level sections a decompressed data page v1 begins with (those of levels whose
    maximum is not 0: a list has both); return their size."""
    offset = 0
    for kind, max_level in (("repetition", leaf.max_repetition_level), ("definition", leaf.max_definition_level)):
        if max_level:
            section, offset = _length_prefixed(raw, offset)
            _check_levels(kind, section, max_level, count, leaf.list_size, position)
    return offset


def v2_layout(header: dict, body, leaf: ListLeaf, position: int) -> tuple[int, int, int, bool]:
    """Check a data page v2's (uncompressed) levels.

    Returns
    -------
    (int, int, int, bool)
        Level entries, value encoding, the values' offset in ``body`` and whether they are
        compressed.
    """
    page = header[8]
    if page.get(2, 0):
        raise Unsupported("null values")
    count, encoding, definition_size, repetition_size = page[1], page[4], page[5], page[6]
    _check_levels("repetition", body[:repetition_size], leaf.max_repetition_level, count, leaf.list_size,
                  position)
    _check_levels("definition", body[repetition_size:repetition_size + definition_size],
                  leaf.max_definition_level, count, leaf.list_size, position)
    return count, encoding, repetition_size + definition_size, page.get(7, True)


_level_prefixes: dict = {}


def v1_level_prefix(header: dict, body, codec, leaf: ListLeaf, position: int) -> tuple[int, int, bytes]:
    """The bytes a valid data page v1 of this many entries at ``position`` begins with.

    Pages of one entry count and row phase begin with identical level sections; the first
    such page is decompressed here and its levels checked, later ones reuse its bytes (for a
    byte comparison where the page is decompressed: :mod:`labelscan.kernels.cuda_pages`).

    Returns
    -------
    (int, int, bytes)
        Level entries, value encoding, and the level sections with their length prefixes.
    """
    count, encoding = v1_header(header)
    key = (leaf.max_repetition_level, leaf.max_definition_level, leaf.list_size, count, position % leaf.list_size)
    prefix = _level_prefixes.get(key)
    if prefix is None:
        raw = _decompress(body, header[2], codec)
        prefix = bytes(raw[:_check_v1_levels(raw, leaf, count, position)])
        with _checked_lock:
            if len(_level_prefixes) >= MAX_CHECKED_SECTIONS:
                _level_prefixes.clear()
            _level_prefixes[key] = prefix
    return count, encoding, prefix


def _length_prefixed(raw, offset: int):
    """A data page v1 level section (4-byte little-endian length, then the bytes) at ``offset``:
    ``(section, offset after it)``."""
    length = int.from_bytes(raw[offset:offset + 4], "little")
    return raw[offset + 4:offset + 4 + length], offset + 4 + length


def _dictionary_values(values, encoding: int, count: int, dictionary) -> np.ndarray:
    if encoding in (PLAIN_DICTIONARY, RLE_DICTIONARY) and dictionary is not None:
        indices = decode_hybrid(values[1:], values[0], count)
        if count and int(indices.max()) >= len(dictionary):
            raise Unsupported("dictionary index out of range")
        return dictionary[indices]
    raise Unsupported(f"value encoding {encoding}")


_checked_sections: dict = {}
_checked_lock = threading.Lock()


def _check_levels(kind: str, section, max_level: int, count: int, list_size: int, position: int) -> None:
    """Raise :class:`Unsupported` unless ``section`` encodes the levels of ``count`` values, all
    present, starting ``position`` values into rows of ``list_size`` values.

    The last valid section of each (kind, count, phase) is remembered: pages of one size give
    identical level bytes, so most pages cost one byte comparison.
    """
    phase = position % list_size
    key = (kind, max_level, count, list_size, phase)
    if _checked_sections.get(key) == section:
        return
    levels = decode_hybrid(section, max_level.bit_length(), count)
    if kind == "definition":
        expected = np.full(count, max_level)
    else:   # a new row (level 0) every list_size values
        expected = ((np.arange(phase, phase + count) % list_size) != 0).astype(np.int64)
    if not np.array_equal(levels, expected):
        raise Unsupported(f"{kind} levels of nulls or lists of another length")
    with _checked_lock:
        if len(_checked_sections) >= MAX_CHECKED_SECTIONS:
            _checked_sections.clear()
        _checked_sections[key] = bytes(section)


def decode_hybrid(buffer, bit_width: int, count: int) -> np.ndarray:
    """Decode parquet's RLE / bit-packed hybrid encoding.

    Parameters
    ----------
    buffer : bytes-like
    bit_width : int
        0..32.
    count : int
        Values to decode (a last bit-packed group may hold padding beyond it).

    Returns
    -------
    numpy.ndarray, shape (count,), int64
    """
    if not 0 <= bit_width <= 32:
        raise Unsupported(f"bit width {bit_width}")
    if bit_width == 0:
        return np.zeros(count, dtype=np.int64)
    value_bytes = (bit_width + 7) // 8
    runs = []          # (packed, value or None, length)
    packed = []
    position = decoded = 0
    while decoded < count:
        run_start = position
        header, position = read_varint(buffer, position)
        if header & 1:
            groups = header >> 1
            repeats, stretch = _packed_stretch(buffer, run_start, position - run_start, groups * bit_width,
                                               -(-(count - decoded) // max(groups * 8, 1)))
            packed.append(stretch)
            runs.append((True, None, repeats * groups * 8))
            position = run_start + repeats * (position - run_start + groups * bit_width)
            decoded += repeats * groups * 8
        else:
            length = header >> 1
            if not length:
                raise Unsupported("empty run")
            runs.append((False, int.from_bytes(buffer[position:position + value_bytes], "little"), length))
            position += value_bytes
            decoded += length
        if position > len(buffer):
            raise Unsupported("truncated levels")
    unpacked = _unpack(np.concatenate(packed), bit_width) if packed else np.zeros(0, dtype=np.int64)
    if len(runs) == 1 and runs[0][0]:
        return unpacked[:count]
    pieces, start = [], 0
    for is_packed, value, length in runs:
        if is_packed:
            pieces.append(unpacked[start:start + length])
            start += length
        else:
            pieces.append(np.full(length, value, dtype=np.int64))
    return np.concatenate(pieces)[:count]


def _packed_stretch(buffer, start: int, header_size: int, run_bytes: int, most: int):
    """A bit-packed run at ``start`` and the identical-header runs right after it (writers cut
    long literal stretches into runs of equal size), their headers stripped in one step.

    Returns
    -------
    (int, numpy.ndarray of uint8)
        The number of runs and their packed bytes.
    """
    stride = header_size + run_bytes
    repeats = max(1, min((len(buffer) - start) // stride, most))
    block = np.frombuffer(buffer, dtype=np.uint8, count=repeats * stride, offset=start).reshape(repeats, stride) \
        if start + stride <= len(buffer) else None
    if block is None:
        raise Unsupported("truncated bit-packed run")
    if repeats > 1:
        same = (block[:, :header_size] == block[0, :header_size]).all(axis=1)
        repeats = repeats if same.all() else int(np.argmin(same))
    return repeats, block[:repeats, header_size:].ravel()


def _unpack(packed: np.ndarray, bit_width: int) -> np.ndarray:
    """Little-endian bit-packed values of ``bit_width`` bits (whole groups of 8), int64.

    Eight values fill exactly ``bit_width`` bytes, so value ``j`` of every group starts at the
    same byte and bit of its group: eight strided 64-bit windows, shifted and masked.
    """
    if bit_width == 1:
        return np.unpackbits(packed, bitorder="little").astype(np.int64)
    num_groups = len(packed) // bit_width
    padded = np.zeros(len(packed) + 8, dtype=np.uint8)
    padded[:len(packed)] = packed
    values = np.empty((num_groups, 8), dtype=np.uint64)
    mask = np.uint64((1 << bit_width) - 1)
    for j in range(8):
        window = np.ndarray((num_groups,), dtype="<u8", buffer=padded, offset=j * bit_width // 8,
                            strides=(bit_width,))
        np.bitwise_and(window >> np.uint64(j * bit_width % 8), mask, out=values[:, j])
    return values.ravel().view(np.int64)
