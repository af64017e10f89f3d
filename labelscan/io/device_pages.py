"""Read a partition's predictions and labels onto the GPU and decode their pages there.

On a GPU worker, decoding parquet on the host bounds every scan: Arrow decodes a
``fixed_size_list<float32, 10>`` column at ~77M rows/s on a 16-core host, and several GPUs of
one host share its cores. This reader leaves the decoding to the device instead. The host
reads the column chunks' stored bytes of a partition's predictions and labels, in one batch,
straight into pinned memory (positional reads: no decoding, the GIL released), walks each
chunk's page headers as soon as it is read (:func:`labelscan.io.pages.column_chunk_pages`; a
few microseconds of Python a page) and checks each distinct level section once
(:func:`labelscan.io.pages.v1_level_prefix`); one host→device copy per column sends the bytes,
and :mod:`labelscan.kernels.cuda_pages` decompresses (snappy), checks every page's levels
against the checked bytes and writes the PLAIN or dictionary-encoded values; the host waits
once for both columns. Predictions stored as K float columns arrive class after class and are
transposed on the device; int32/int64 labels are decoded the same way, other labels and ids
(small columns) are read by Arrow. The values are the stored bytes themselves, so they equal
Arrow's bit for bit.

Anything else — another codec, nulls, other encodings, pages that fail to decode, values or
labels that fail validation — raises :class:`~labelscan.io.pages.Unsupported`, and the caller
reads the partition with Arrow on the host (which also names the file, row group and row of
bad input). Configuration: ``labelscan.gpu-page-decoding`` (on by default).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from dataclasses import dataclass, field

import numpy as np
from fsspec.implementations.local import LocalFileSystem

from labelscan import config
from labelscan.io import pages
from labelscan.errors import InputError
from labelscan.io.dataset import PartitionData, _native_or_fsspec, _parquet_file, _range_reader, read_ids, read_labels
from labelscan.io.validate import LOWER_BOUND, UPPER_BOUND, validate_unique_ids

DEVICE_CODECS = {"SNAPPY": "snappy", "UNCOMPRESSED": None}
"""Parquet codecs whose pages the device decodes (pyarrow's default and none)."""

SCRATCH_ALIGNMENT = 8
"""Byte alignment of every decompressed page in the device buffer."""

logger = logging.getLogger(__name__)
_reported_reasons: set = set()
_reported_lock = threading.Lock()


def enabled() -> bool:
    """Whether GPU workers decode predictions on the device (``labelscan.gpu-page-decoding``)."""
    return bool(config.get("gpu-page-decoding"))


@dataclass
class _Chunk:
    """A column chunk to read: where its bytes lie in the file and go in the upload."""

    path: str
    file_offset: int
    size: int
    codec: str | None
    first_value: int
    num_values: int
    leaf: pages.ListLeaf
    upload_offset: int = 0


@dataclass
class _PageTables:
    """The page tables of a partition, offsets into one device buffer (see
    :func:`labelscan.kernels.cuda_pages.launch_decode`), built chunk by chunk."""

    snappy: dict = field(default_factory=lambda: {name: [] for name in
                                                  ("sources", "source_sizes", "outputs", "output_sizes")})
    data: dict = field(default_factory=lambda: {name: [] for name in
                                                ("pages", "page_sizes", "level_sizes", "references",
                                                 "dictionary_encoded", "dictionaries", "dictionary_sizes",
                                                 "counts", "first_values")})
    scratch_size: int = 0
    references: dict = field(default_factory=dict)   # level-section bytes -> offset among them

    def expand(self, source: int, size: int, uncompressed: int, codec) -> tuple[tuple[bool, int], int]:
        """Where a stored region's bytes will lie decompressed (``codec`` None: as stored), and
        their size: ``((in scratch, offset), size)``."""
        if codec is None:
            return (False, source), size
        output = self.scratch_size
        self.scratch_size += -(-uncompressed // SCRATCH_ALIGNMENT) * SCRATCH_ALIGNMENT
        for name, value in zip(("sources", "source_sizes", "outputs", "output_sizes"),
                               (source, size, output, uncompressed)):
            self.snappy[name].append(value)
        return (True, output), uncompressed

    def reference(self, prefix: bytes) -> int:
        return self.references.setdefault(prefix, sum(map(len, self.references)))

    def arrays(self, upload_size: int) -> tuple[dict, dict, int]:
        """The tables as int64 arrays with final offsets, and the device buffer's size.

        Buffer layout: the uploaded chunks (``upload_size`` bytes), the level sections, then
        the scratch regions. Scratch offsets are recorded relative to the scratch regions'
        start: a location ``(True, o)`` becomes ``scratch_start + o``, ``(False, o)`` stays ``o``.
        """
        references_size = sum(map(len, self.references))
        scratch_start = -(-(upload_size + references_size) // SCRATCH_ALIGNMENT) * SCRATCH_ALIGNMENT
        snappy = {name: np.asarray(values, dtype=np.int64) for name, values in self.snappy.items()}
        snappy["outputs"] += scratch_start
        data = {name: np.asarray([_place(value, scratch_start) for value in values] if name in _LOCATIONS else values,
                                 dtype=np.int64)
                for name, values in self.data.items()}
        data["references"] += upload_size
        return snappy, data, scratch_start + self.scratch_size


_LOCATIONS = ("pages", "dictionaries")


def _place(location: tuple[bool, int], scratch_start: int) -> int:
    in_scratch, offset = location
    return scratch_start + offset if in_scratch else offset


def _plan_chunk(tables: _PageTables, data: memoryview, chunk: _Chunk) -> None:
    """Add one column chunk's pages (its bytes ``data``, uploaded at ``chunk.upload_offset``)."""
    base, codec, leaf = chunk.upload_offset, chunk.codec, chunk.leaf
    itemsize = leaf.dtype.itemsize
    written, dictionary = 0, None
    for page_type, header, offset, body in pages.column_chunk_pages(data, chunk.num_values):
        if page_type == pages.DICTIONARY_PAGE:
            entries = pages.dictionary_size(header)
            if header[2] < entries * itemsize:
                raise pages.Unsupported("dictionary page shorter than its entries")
            dictionary = tables.expand(base + offset, len(body), header[2], codec)[0], entries
            continue
        if page_type == pages.INDEX_PAGE:
            continue
        if page_type == pages.DATA_PAGE:
            count, encoding, prefix = pages.v1_level_prefix(header, body, codec, leaf, written)
            location, page_size = tables.expand(base + offset, len(body), header[2], codec)
        else:   # levels stored uncompressed before the values, which may be compressed
            count, encoding, values_offset, compressed = pages.v2_layout(header, body, leaf, written)
            prefix = b""
            location, page_size = tables.expand(base + offset + values_offset, len(body) - values_offset,
                                                header[2] - values_offset, codec if compressed else None)
        dictionary_encoded = encoding in (pages.PLAIN_DICTIONARY, pages.RLE_DICTIONARY)
        if encoding != pages.PLAIN and not (dictionary_encoded and dictionary is not None):
            raise pages.Unsupported(f"value encoding {encoding}")
        dictionary_location, entries = dictionary if dictionary_encoded else ((False, 0), 0)
        row = {"pages": location, "page_sizes": page_size, "level_sizes": len(prefix),
               "references": tables.reference(prefix), "dictionary_encoded": int(dictionary_encoded),
               "dictionaries": dictionary_location, "dictionary_sizes": entries, "counts": count,
               "first_values": chunk.first_value + written}
        for name, value in row.items():
            tables.data[name].append(value)
        written += count


def _column_chunks(plan, spec, leaves_ofs) -> list:
    """The column chunks of a partition's output columns, where their values go, for several
    outputs at once (each file's footer read once for all of them).

    The values of output column ``c`` (one leaf) for partition rows ``[r, r + m)`` start at
    value ``(c * n + r) * list_size``: one column's values, then the next one's (a single list
    column: row after row).

    Returns
    -------
    list
        For each of ``leaves_ofs``: its list of :class:`_Chunk`, or the
        :class:`~labelscan.io.pages.Unsupported` saying why the device does not decode it.
    """
    outputs = [[] for _ in leaves_ofs]
    row = 0
    for piece in spec.pieces:
        with _native_or_fsspec(plan.fs, piece.path) as handle:
            parquet = _parquet_file(handle, piece.path)
        for position, leaves_of in enumerate(leaves_ofs):
            if isinstance(outputs[position], list):
                try:
                    outputs[position] += _piece_chunks(parquet, piece, leaves_of(parquet), spec.num_rows, row)
                except pages.Unsupported as refusal:
                    outputs[position] = refusal
        row += sum(piece.row_group_rows)
    return outputs


def _piece_chunks(parquet, piece, leaves, num_rows: int, row: int) -> list:
    """The chunks of one file's row groups of the partition (its first row ``row`` of ``num_rows``)."""
    if not leaves:
        raise pages.Unsupported("not a column the device decodes")
    chunks = []
    for index, rows in zip(piece.row_groups, piece.row_group_rows):
        for column, leaf in enumerate(leaves):
            chunk = parquet.metadata.row_group(index).column(leaf.column_index)
            if chunk.compression not in DEVICE_CODECS:
                raise pages.Unsupported(f"codec {chunk.compression}")
            if chunk.num_values != rows * leaf.list_size:
                raise pages.Unsupported("level entries differ from rows x K (nulls or lists of another length)")
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            chunks.append(_Chunk(piece.path, start, chunk.total_compressed_size, DEVICE_CODECS[chunk.compression],
                                 (column * num_rows + row) * leaf.list_size, rows * leaf.list_size, leaf))
        row += rows
    return chunks


def _read_into(fs, chunk: _Chunk, destination: memoryview) -> None:
    """Read a chunk's stored bytes into ``destination`` (positional reads straight into it for local
    files where the OS has ``preadv``; other files through their filesystem and one copy)."""
    if isinstance(fs, LocalFileSystem) and hasattr(os, "preadv"):
        descriptor = os.open(chunk.path, os.O_RDONLY)
        try:
            done = 0
            while done < chunk.size:
                read = os.preadv(descriptor, [destination[done:]], chunk.file_offset + done)
                if read <= 0:
                    raise pages.Unsupported("file shorter than its metadata says")
                done += read
        finally:
            os.close(descriptor)
        return
    with _native_or_fsspec(fs, chunk.path) as handle:
        stored = _range_reader(handle)(chunk.file_offset, chunk.size)
    if len(stored) != chunk.size:
        raise pages.Unsupported("file shorter than its metadata says")
    destination[:] = memoryview(stored).cast("B")


@dataclass
class StoredPages:
    """A partition's pages of one column as the device decodes them.

    Attributes
    ----------
    uploads : list of numpy.ndarray, shape (m_i,), uint8
        The stored chunks, then the checked level sections: the device buffer's first bytes.
    device_size : int
        Bytes of the device buffer (uploads and decompression scratch).
    snappy_pages, data_pages : dict of numpy.ndarray
        Page tables (:func:`labelscan.kernels.cuda_pages.launch_decode`).
    num_values : int
        Values of the column (rows x K for predictions).
    dtype : numpy.dtype
        Their dtype.
    """

    uploads: list
    device_size: int
    snappy_pages: dict
    data_pages: dict
    num_values: int
    dtype: np.dtype


def stored_columns(plan, spec, allocate, leaves_ofs) -> list:
    """Read a partition's column chunks of several outputs (one column, or K) and tabulate their pages.

    One staging allocation and one batch of positional reads for all of them; each chunk's
    pages are tabulated as soon as it is read, while later chunks (of this output or the next)
    are being read.

    Parameters
    ----------
    plan : labelscan.io.dataset.DatasetPlan
    spec : labelscan.io.dataset.PartitionSpec
    allocate : callable(int) -> numpy.ndarray of uint8
        Host memory for the stored bytes (pinned staging memory on a GPU worker), called once.
    leaves_ofs : list of callable(pyarrow.parquet.ParquetFile) -> list of labelscan.io.pages.ListLeaf or None
        For each output, the leaves of its columns in a file, in order (None: not decodable
        here), e.g. :func:`prediction_leaves`.

    Returns
    -------
    list
        For each output, its :class:`StoredPages` (uploads are views of the one allocation),
        or the :class:`~labelscan.io.pages.Unsupported` saying why it needs Arrow's reader.

    Raises
    ------
    Unsupported
        When the first output is refused (the others go with it: nothing is read), or a read
        fails (a file shorter than its metadata says): the partition needs Arrow's reader.
    """
    outputs = _column_chunks(plan, spec, leaves_ofs)
    if isinstance(outputs[0], pages.Unsupported):
        raise outputs[0]
    sizes = [sum(chunk.size for chunk in output) if isinstance(output, list) else 0 for output in outputs]
    upload = allocate(sum(sizes))
    uploads = np.split(upload, np.cumsum(sizes)[:-1])   # each output's chunks, one after the other
    reads = []
    for output, output_upload in zip(outputs, uploads):
        offset = 0
        for chunk in output if isinstance(output, list) else ():
            chunk.upload_offset, offset = offset, offset + chunk.size
            data = memoryview(output_upload)[chunk.upload_offset:offset]
            reads.append(pages.decode_pool().submit(_read_into, plan.fs, chunk, data))
    pending = iter(reads)
    try:
        return [_tabulate(output, pending, output_upload) if isinstance(output, list) else output
                for output, output_upload in zip(outputs, uploads)]
    finally:   # no read left writing into the staging memory once this returns or raises
        futures.wait(reads)


def _tabulate(chunks, reads, upload) -> StoredPages | pages.Unsupported:
    """One output's page tables (its chunks read into ``upload`` one after the other, each at
    its ``upload_offset``), each chunk's tabulated once its read (the next of ``reads``) is done."""
    tables, refusal, view = _PageTables(), None, memoryview(upload)
    for chunk in chunks:
        next(reads).result()
        if refusal is None:
            try:
                _plan_chunk(tables, view[chunk.upload_offset:chunk.upload_offset + chunk.size], chunk)
            except (pages.ThriftError, IndexError, KeyError, TypeError, ValueError) as error:
                refusal = pages.Unsupported(f"unreadable pages ({error!r})")
    if refusal is not None:
        return refusal
    snappy, data, device_size = tables.arrays(len(upload))
    references = np.frombuffer(b"".join(tables.references), dtype=np.uint8)
    return StoredPages([upload, references], device_size, snappy, data, sum(chunk.num_values for chunk in chunks),
                       chunks[0].leaf.dtype)


def stored_pages(plan, spec, allocate, leaves_of) -> StoredPages:
    """:func:`stored_columns` of one output, raising its :class:`~labelscan.io.pages.Unsupported`."""
    (stored,) = stored_columns(plan, spec, allocate, [leaves_of])
    if isinstance(stored, pages.Unsupported):   # its pages did not parse
        raise stored
    return stored


def prediction_leaves(plan):
    """``leaves_of`` of the plan's predictions: its list column, or its K float columns (whose
    values then come column after column)."""
    if plan.pred_probs_column is not None:
        return lambda parquet: _all_or_none([pages.list_leaf(parquet, plan.pred_probs_column, plan.num_classes)])
    return lambda parquet: _all_or_none([pages.flat_leaf(parquet, name, pages.PHYSICAL_DTYPES)
                                         for name in plan.pred_probs_columns])


def label_leaves(plan):
    """``leaves_of`` of the plan's label column (int32 or int64)."""
    return lambda parquet: _all_or_none([pages.flat_leaf(parquet, plan.label_column, pages.INTEGER_DTYPES)])


def _all_or_none(leaves: list):
    return None if any(leaf is None for leaf in leaves) else leaves


def read_column_on_device(plan, spec, leaves_of, lower: float, upper: float):
    """A partition's values of one column (or K) decoded on the current GPU, all within ``[lower, upper]``.

    Parameters
    ----------
    plan : labelscan.io.dataset.DatasetPlan
    spec : labelscan.io.dataset.PartitionSpec
    leaves_of : callable
        See :func:`stored_pages`.
    lower, upper : float
        Bounds every value must lie within (NaN does not).

    Returns
    -------
    cupy.ndarray, shape (columns x rows x values a row,), the columns' dtype

    Raises
    ------
    Unsupported
        When the partition needs Arrow's reader, a value is out of bounds (which the host
        reader then names), or the device lacks the memory to decode it (about three times the
        values: the stored bytes, the decompressed pages and the values; Arrow's reader needs
        the values alone).
    """
    from labelscan.kernels.device import pinned_buffer

    (values,) = decode_on_device([stored_pages(plan, spec, pinned_buffer, leaves_of)], [(lower, upper)])
    if isinstance(values, pages.Unsupported):
        raise values
    return values


def decode_on_device(outputs: list, bounds: list) -> list:
    """Decode tabulated outputs on the current GPU and check their values' bounds, waiting once
    for all of them.

    Parameters
    ----------
    outputs : list of StoredPages or labelscan.io.pages.Unsupported
        As :func:`stored_columns` returns them.
    bounds : list of (float, float)
        For each output, the bounds every value must lie within (NaN does not).

    Returns
    -------
    list
        For each output, its values (cupy.ndarray, shape (values,)) or the
        :class:`~labelscan.io.pages.Unsupported` saying why the host reader must read it: refused
        before, pages that did not decode, values out of bounds (which the host reader then
        names), or the device lacking the memory to decode it (about three times the values:
        the stored bytes, the decompressed pages and the values; Arrow's reader needs the
        values alone).
    """
    import cupy

    from labelscan.kernels.cuda_pages import decode_failure, failure_message, launch_decode, outside_bounds

    results, checks = list(outputs), {}
    for position, (stored, (lower, upper)) in enumerate(zip(outputs, bounds)):
        if isinstance(stored, pages.Unsupported):
            continue
        try:
            values, status = launch_decode(stored.uploads, stored.device_size, stored.snappy_pages,
                                           stored.data_pages, stored.num_values, stored.dtype)
        except pages.Unsupported as refusal:
            # uploads queued before the refusal end before their staging memory can go back to the pool
            cupy.cuda.get_current_stream().synchronize()
            results[position] = refusal
            continue
        results[position] = values
        checks[position] = cupy.concatenate([decode_failure(status), outside_bounds(values, lower, upper)])
    if checks:   # pages failed, the first one's status, values out of bounds: one wait for every output
        for position, (failed, first_status, outside) in zip(checks, cupy.stack(list(checks.values())).get()):
            if failed:
                results[position] = pages.Unsupported(failure_message(int(failed), int(first_status)))
            elif outside:
                results[position] = pages.Unsupported("values out of bounds (the host reader names the row)")
    return results


def read_partition_on_device(plan, spec) -> PartitionData | None:
    """A partition read and validated on the current GPU, or None when it needs the host reader
    (which then reads it from scratch: :func:`labelscan.io.dataset.read_partition`).

    Predictions (a list column or K float columns) and int32/int64 labels are decoded on the
    device; labels of other types are read by Arrow, ids too.

    Parameters
    ----------
    plan : labelscan.io.dataset.DatasetPlan
    spec : labelscan.io.dataset.PartitionSpec

    Returns
    -------
    PartitionData or None
        ``labels`` (n,) int64 and ``pred_probs`` (n, K) on the device, ``ids`` (host) or None.
    """
    if np.dtype(plan.pred_probs_dtype) not in pages.PHYSICAL_DTYPES.values():
        return None
    from labelscan.kernels.device import pinned_buffer

    try:   # predictions and labels read in one batch, decoded with one wait
        outputs = stored_columns(plan, spec, pinned_buffer, [prediction_leaves(plan), label_leaves(plan)])
        values, labels = decode_on_device(outputs, [(LOWER_BOUND, UPPER_BOUND), (0, plan.num_classes - 1)])
        if isinstance(values, pages.Unsupported):
            raise values
        if isinstance(labels, pages.Unsupported):
            labels = read_labels(plan, spec)   # other types; or invalid labels, which it names
        else:
            labels = labels.astype(np.int64)
    except (InputError, pages.Unsupported) as error:
        report_host_read(spec, error)
        return None
    ids = read_ids(plan, spec) if plan.id_column is not None else None
    if ids is not None:
        validate_unique_ids(ids, spec)
    if plan.pred_probs_column is not None:
        pred_probs = values.reshape(spec.num_rows, plan.num_classes)
    else:   # K columns, one after the other
        pred_probs = values.reshape(plan.num_classes, spec.num_rows).T.copy(order="C")
    return PartitionData(row_start=spec.row_start, labels=labels, pred_probs=pred_probs, ids=ids)


def report_host_read(spec, reason: Exception) -> None:
    """Log (a warning, once per kind of reason and worker process) that a partition goes to
    Arrow's reader instead of being decoded on the device: a scan still gives the same answer,
    only slower, so the person watching its workers' logs learns why.

    Parameters
    ----------
    spec : labelscan.io.dataset.PartitionSpec
    reason : Exception
        What refused the device decoding (its text up to the first parenthesis is the kind).
    """
    kind = f"{type(reason).__name__}: {str(reason).split('(')[0].strip()}"
    with _reported_lock:
        if kind in _reported_reasons:
            return
        _reported_reasons.add(kind)
    first = spec.pieces[0]
    logger.warning("partition of rows %d..%d (from %s, row group %d) read by Arrow on the host, not decoded on "
                   "the GPU: %s; later partitions refused for the same reason are not reported "
                   "(labelscan.gpu-page-decoding, docs/operations.md)", spec.row_start,
                   spec.row_start + spec.num_rows - 1, first.path, first.row_groups[0], reason)
