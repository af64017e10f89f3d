"""Write objects so that they appear whole or not at all, on any fsspec filesystem.

Every object is serialised in memory first and then stored with one
``fs.pipe_file`` (a single PUT on object stores), so an exception while
serialising leaves nothing at the key. On a local filesystem the bytes go to
``path + ".tmp-<uuid>"`` (written piece by piece, never joined) and are renamed
into place, so no reader ever sees a partial file there either. Serialisation is deterministic: the same table or
object gives the same bytes, so a task re-run after a worker died rewrites
identical objects.
"""

import hashlib
import json
import posixpath
import threading
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from labelscan.errors import DestinationError
from labelscan.io import numpy_parquet
from labelscan.io.column_set import ColumnSet

PARQUET_COMPRESSION = "snappy"
"""Parquet's default codec, read by every engine; a 1.4M-row mask part writes in 21 ms with it
against 30 ms with zstd (6.8 MB against 6.1 MB), the mask being most of what a scan writes."""


def parquet_bytes(tables, row_group_rows=None, statistics=True):
    """Serialise tables with one schema, in order, into one snappy parquet file in memory
    (integer columns delta-encoded, no dictionaries).

    Parameters
    ----------
    tables : iterable of pyarrow.Table
        At least one; all with the schema (and schema metadata) of the first.
        Consumed one at a time, so a generator keeps only one table in memory
        besides the compressed output.
    row_group_rows : int, optional
        Most rows per row group; pyarrow's default when None.
    statistics : bool or list of str
        Columns whose min/max statistics are written: all (True), none, or those named.

    Returns
    -------
    bytes
        Identical for identical tables.

    Notes
    -----
    The writer fills an Arrow buffer, never a Python file object: each write to one would take
    the GIL, and with other threads running Python each waits its turn (a 13M-row mask part:
    0.23 s alone, 13.8 s beside one busy Python thread, 0.37 s with the Arrow buffer on 2 cores:
    ``python -m benchmarks.encode``).
    """
    buffer = pa.BufferOutputStream()
    write_parquet(buffer, tables, row_group_rows, statistics)
    return buffer.getvalue().to_pybytes()


def table_pieces(table, statistics=True) -> list:
    """One table as parquet bytes (``statistics`` as for :func:`parquet_bytes`), identical for
    identical tables, as a list of buffers (for :func:`put_bytes`): encoded with NumPy
    (:func:`labelscan.io.numpy_parquet.file_pieces`: uncompressed pages, ~5x faster) when its
    columns are numbers and booleans without nulls, else by Arrow (:func:`parquet_bytes`).

    Parameters
    ----------
    table : pyarrow.Table or labelscan.io.column_set.ColumnSet
    """
    try:
        return numpy_parquet.file_pieces(table, statistics)
    except numpy_parquet.NotEncodable:
        arrow_table = table.to_arrow() if isinstance(table, ColumnSet) else table
        return [parquet_bytes([arrow_table], statistics=statistics)]


def write_parquet(sink, tables, row_group_rows=None, statistics=True) -> None:
    """Write tables into ``sink`` as :func:`parquet_bytes` serialises them (same options, same
    bytes); ``sink`` is any writable pyarrow accepts (an Arrow stream, a Python file object).

    Raises
    ------
    ValueError
        When ``tables`` is empty.
    """
    writer = None
    for table in tables:
        if writer is None:
            writer = pq.ParquetWriter(sink, table.schema, compression=PARQUET_COMPRESSION, use_dictionary=False,
                                      column_encoding=_integer_encodings(table.schema), write_statistics=statistics)
        writer.write_table(table, row_group_size=row_group_rows)
    if writer is None:
        raise ValueError("parquet_bytes needs at least one table")
    writer.close()


def _integer_encodings(schema) -> dict:
    """Delta encoding for every integer column (row numbers, class indices): 2-3x faster to
    write than dictionary encoding and smaller; other columns stay plain, then snappy."""
    return {field.name: "DELTA_BINARY_PACKED" for field in schema if pa.types.is_integer(field.type)}


def json_bytes(obj):
    """Serialise ``obj`` to JSON with sorted keys and 2-space indent; numpy values become Python ones."""
    return (json.dumps(obj, sort_keys=True, indent=2, default=_numpy_to_python) + "\n").encode()


def _numpy_to_python(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def put_bytes(fs, path, data):
    """Store ``data`` at ``path`` as one whole object.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
    path : str
        Destination as ``fs`` sees it; parent directories are created on local filesystems.
    data : bytes-like or list of bytes-like
        The object, or its pieces in order (:func:`table_pieces`: a column chunk's page is
        a few MB at most): a local file gets them one after the other (one call each: a call
        per MiB made the GIL a queue with 32 threads writing), other filesystems get them
        joined, in one put; hashed meanwhile (:class:`_Digest`).

    Returns
    -------
    dict
        ``{"bytes": len(data), "sha256": hex digest of data}``.

    Raises
    ------
    DestinationError
        ``path`` is a local directory.
    """
    pieces = [memoryview(piece).cast("B") for piece in ([data] if _is_buffer(data) else data)]
    digest = _Digest(pieces)   # hashed while the bytes are stored
    try:
        if isinstance(fs, LocalFileSystem):
            _put_local(fs, path, pieces)
        else:
            fs.pipe_file(path, data if isinstance(data, bytes) else b"".join(pieces))
    finally:
        digest.wait()
    return {"bytes": sum(len(piece) for piece in pieces), "sha256": digest.hexdigest()}


PARALLEL_DIGEST_BYTES = 1 << 20
"""Objects from this size on are hashed on a thread of their own while they are stored (both
release the GIL): a 5M-row mask part (23 MB) costs 13 ms of SHA-256 and 6 ms of writing into
the page cache on the 2-core development machine, one after the other before."""


class _Digest:
    """The SHA-256 of ``pieces`` (bytes-like): on a thread of its own from
    :data:`PARALLEL_DIGEST_BYTES` on, else when asked."""

    def __init__(self, pieces: list):
        self.pieces, self.digest, self.thread = pieces, None, None
        if sum(len(piece) for piece in pieces) >= PARALLEL_DIGEST_BYTES:
            self.thread = threading.Thread(target=self._hash, name="labelscan-sha256", daemon=True)
            self.thread.start()

    def _hash(self) -> None:
        digest = hashlib.sha256()
        for piece in self.pieces:
            digest.update(piece)
        self.digest = digest

    def wait(self) -> None:
        """Return once no thread reads the pieces any more."""
        if self.thread is not None:
            self.thread.join()

    def hexdigest(self) -> str:
        self.wait()
        if self.digest is None:
            self._hash()
        return self.digest.hexdigest()


def _put_local(fs, path: str, pieces: list) -> None:
    """Write ``pieces`` to a staging file beside ``path`` and rename it to ``path``."""
    if fs.isdir(path):   # a rename would move the object inside it
        raise DestinationError(f"{path} is a directory: give the path of a file to write")
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    staging = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(staging, "wb") as file:
            for piece in pieces:
                file.write(piece)
        fs.mv(staging, path)
    finally:
        if fs.exists(staging):
            fs.rm(staging)


def _is_buffer(data) -> bool:
    return isinstance(data, (bytes, bytearray, memoryview))
