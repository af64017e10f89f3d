"""The few parts of Thrift's compact protocol that parquet page headers and footers use.

A page header is a Thrift struct; :func:`read_struct` turns one into nested dicts keyed by
field id (``{1: page_type, 2: uncompressed_size, 3: compressed_size, ...}``). Strings and
doubles (page statistics) are skipped: only the integers, booleans and nested structs a
page walker needs are kept. :func:`write_struct` writes one (the footers and page headers of
:mod:`labelscan.io.numpy_parquet`).
"""

from __future__ import annotations

BOOLEAN_TRUE, BOOLEAN_FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)


WINDOW = 256
"""Bytes copied to parse a struct (a page header takes 20-60); longer structs copy the rest."""


class ThriftError(ValueError):
    """Bytes that are not a compact-protocol struct this reader understands."""


def read_varint(buffer, position: int) -> tuple[int, int]:
    """An unsigned LEB128 integer at ``position``: ``(value, next position)``."""
    value = shift = 0
    while True:
        if position >= len(buffer):
            raise ThriftError("truncated varint")
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ThriftError("varint longer than 64 bits")


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def read_struct(buffer, position: int = 0) -> tuple[dict, int]:
    """The struct at ``position``: ``({field id: value}, position after its stop byte)``.

    Parses a copy of the next :data:`WINDOW` bytes (indexing ``bytes`` is several times faster
    than indexing a memoryview of pinned memory), or of the rest of ``buffer`` for a struct
    longer than that; nested structs without recursion, integers inline (a page header: 8 -> 4
    microseconds on the 2-core machine).

    Raises
    ------
    ThriftError
        Truncated bytes or a type this reader does not know.
    """
    window = bytes(buffer[position:position + WINDOW])
    try:
        fields, used = _read_fields(window)
    except (IndexError, ThriftError):
        if len(window) < WINDOW:   # the bytes end inside the struct
            raise ThriftError("truncated struct") from None
        try:   # a struct longer than the window
            fields, used = _read_fields(bytes(buffer[position:]))
        except IndexError:
            raise ThriftError("truncated struct") from None
    if position + used > len(buffer):   # a string or double past the end
        raise ThriftError("truncated struct")
    return fields, position + used


def _read_fields(data: bytes) -> tuple[dict, int]:
    """:func:`read_struct` of ``data`` from its start (IndexError when it ends inside the struct).

    Integers, strings and booleans, the field values of a page header, are read inline."""
    position = field_id = 0
    fields: dict = {}
    parents: list = []
    while True:
        header = data[position]
        position += 1
        if header == 0:
            if not parents:
                return fields, position
            parent, field_id = parents.pop()
            parent[field_id] = fields
            fields = parent
            continue
        kind, delta = header & 0x0F, header >> 4
        if delta:
            field_id += delta
        else:
            raw, position = read_varint(data, position)
            field_id = _zigzag(raw)
        if I16 <= kind <= I64:
            raw = data[position]
            if raw < 0x80:
                position += 1
            else:
                raw, position = read_varint(data, position)
            fields[field_id] = (raw >> 1) ^ -(raw & 1)
        elif kind == STRUCT:
            parents.append((fields, field_id))
            fields, field_id = {}, 0
        elif kind == BINARY:   # page statistics' min and max: skipped
            length, position = read_varint(data, position)
            fields[field_id], position = None, position + length
        elif kind == BOOLEAN_TRUE or kind == BOOLEAN_FALSE:
            fields[field_id] = kind == BOOLEAN_TRUE
        else:
            fields[field_id], position = _read_value(data, position, kind)


def _read_value(buffer, position: int, kind: int):
    if kind in (BOOLEAN_TRUE, BOOLEAN_FALSE):
        return kind == BOOLEAN_TRUE, position
    if kind == BYTE:
        return buffer[position], position + 1
    if kind in (I16, I32, I64):
        raw, position = read_varint(buffer, position)
        return _zigzag(raw), position
    if kind == DOUBLE:
        return None, position + 8
    if kind == BINARY:
        length, position = read_varint(buffer, position)
        return None, position + length
    if kind in (LIST, SET):
        header = buffer[position]
        position += 1
        size, element_kind = header >> 4, header & 0x0F
        if size == 15:
            size, position = read_varint(buffer, position)
        items = []
        for _ in range(size):
            item, position = _read_value(buffer, position, element_kind)
            items.append(item)
        return items, position
    if kind == STRUCT:
        return read_struct(buffer, position)
    raise ThriftError(f"unsupported compact-protocol type {kind}")


def write_varint(value: int) -> bytes:
    """Unsigned LEB128 bytes of a non-negative integer."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def zigzag_varint(value: int) -> bytes:
    """Varint bytes of a signed 64-bit integer, zigzag-mapped (compact-protocol integers)."""
    return write_varint((value << 1) ^ (value >> 63))


def write_struct(fields) -> bytes:
    """Compact-protocol bytes of a struct (the writing side of :func:`read_struct`).

    Parameters
    ----------
    fields : iterable of (int, int, object)
        ``(field id, type, value)`` in increasing field id; a None value leaves the field out.
        Values by type: ``BOOLEAN_TRUE`` a bool; ``BYTE``/``I16``/``I32``/``I64`` an int;
        ``BINARY`` bytes or str; ``LIST`` ``(element type, items)``; ``STRUCT`` nested fields.
    """
    out = bytearray()
    last_id = 0
    for field_id, kind, value in fields:
        if value is None:
            continue
        if kind == BOOLEAN_TRUE:
            kind = BOOLEAN_TRUE if value else BOOLEAN_FALSE
        delta = field_id - last_id
        out += bytes([delta << 4 | kind]) if 0 < delta <= 15 else bytes([kind]) + zigzag_varint(field_id)
        if kind not in (BOOLEAN_TRUE, BOOLEAN_FALSE):
            out += _value_bytes(kind, value)
        last_id = field_id
    out.append(0)
    return bytes(out)


def _value_bytes(kind: int, value) -> bytes:
    if kind == BYTE:
        return bytes([value & 0xFF])
    if kind in (I16, I32, I64):
        return zigzag_varint(int(value))
    if kind == BINARY:
        data = value.encode() if isinstance(value, str) else bytes(value)
        return write_varint(len(data)) + data
    if kind == LIST:
        element_kind, items = value
        header = bytes([len(items) << 4 | element_kind]) if len(items) < 15 else \
            bytes([0xF0 | element_kind]) + write_varint(len(items))
        return header + b"".join(_value_bytes(element_kind, item) for item in items)
    if kind == STRUCT:
        return write_struct(value)
    raise ThriftError(f"unsupported compact-protocol type {kind}")
