"""Parquet value encodings, vectorised with NumPy: DELTA_BINARY_PACKED integers, the
RLE/bit-packed hybrid (dictionary indices, definition levels) and bit-packed booleans.

Every bit width used is a power of two (0, 1, 2, 4, 8, 16 or 32), so that packing is a few
whole-array shifts and no per-value loop; a width is written into the data, so any width at
least the needed one is valid for every reader (parquet-format ``Encodings.md``).
"""

import numpy as np

from labelscan.io.thrift import write_varint, zigzag_varint

PLAIN, RLE, DELTA_BINARY_PACKED, RLE_DICTIONARY = 0, 3, 5, 8
"""parquet-format ``Encoding`` values."""

BLOCK_VALUES = 128
MINIBLOCKS = 4
MINIBLOCK_VALUES = BLOCK_VALUES // MINIBLOCKS
PACKED_WIDTHS = (0, 1, 2, 4, 8, 16, 32)


class TooWide(ValueError):
    """Values that need more than 32 bits (deltas) or 16 bits (dictionary indices)."""


def packed_width(span: int, widest: int = 32) -> int:
    """The smallest of :data:`PACKED_WIDTHS` holding ``0..span``.

    Raises
    ------
    TooWide
        ``span`` needs more than ``widest`` bits.
    """
    for width in PACKED_WIDTHS:
        if width <= widest and span < 1 << width:
            return width
    raise TooWide(f"values spanning {span} need more than {widest} bits")


def bit_pack(values: np.ndarray, width: int) -> np.ndarray:
    """Values below ``2**width`` packed LSB first (parquet's bit-packing order).

    Parameters
    ----------
    values : numpy.ndarray, shape (n,)
        Non-negative integers; n a multiple of 8.
    width : int
        One of :data:`PACKED_WIDTHS`.

    Returns
    -------
    numpy.ndarray, shape (n * width // 8,), uint8
    """
    if width == 0:
        return np.zeros(0, np.uint8)
    if width == 1:
        return np.packbits(values.astype(np.bool_), bitorder="little")
    if width >= 8:
        return values.astype(f"<u{width // 8}").view(np.uint8)
    per_byte = 8 // width
    lanes = values.astype(np.uint8).reshape(-1, per_byte)
    packed = lanes[:, 0].copy()
    for lane in range(1, per_byte):
        packed |= lanes[:, lane] << np.uint8(lane * width)
    return packed


class Plain:
    """PLAIN values of a column of fixed-width numbers: their little-endian bytes."""

    encoding = PLAIN

    def __init__(self, values: np.ndarray, storage: str, starts: np.ndarray, ends: np.ndarray):
        self.bytes = memoryview(values.astype(storage, copy=False)).cast("B")
        self.item, self.starts, self.ends = np.dtype(storage).itemsize, starts, ends

    def page(self, group: int) -> list:
        return [self.bytes[self.starts[group] * self.item:self.ends[group] * self.item]]


class Booleans:
    """PLAIN booleans: bit-packed, LSB first (row groups start at multiples of 8 rows)."""

    encoding = PLAIN

    def __init__(self, values: np.ndarray, starts: np.ndarray, ends: np.ndarray):
        self.bits = memoryview(np.packbits(values, bitorder="little"))
        self.starts, self.ends = starts, ends

    def page(self, group: int) -> list:
        return [self.bits[self.starts[group] // 8:-(-self.ends[group] // 8)]]


class DictionaryIndices:
    """RLE_DICTIONARY indices of a column whose values are their own indices (``0 <= v < 2**16``):
    ``<bit width>`` and one bit-packed run of the hybrid (row groups start at multiples of 8 rows)."""

    encoding = RLE_DICTIONARY

    def __init__(self, values: np.ndarray, width: int, starts: np.ndarray, ends: np.ndarray):
        whole = len(values) // 8 * 8
        tail = np.zeros(8 if whole < len(values) else 0, values.dtype)
        tail[:len(values) - whole] = values[whole:]
        self.packed = memoryview(np.concatenate([bit_pack(values[:whole], width), bit_pack(tail, width)]))
        self.width, self.starts, self.ends = width, starts, ends

    def page(self, group: int) -> list:
        start, end = self.starts[group], self.ends[group]
        return [bytes([self.width]), write_varint(-(-(end - start) // 8) << 1 | 1),
                self.packed[start * self.width // 8:-(-end // 8) * self.width]]


class DeltaBinaryPacked:
    """DELTA_BINARY_PACKED pages of an integer column cut into row groups.

    A page is a header ``<128> <4> <count> <first value>`` (varints, the first value zigzag)
    and a block per 128 deltas: its min delta (zigzag varint), four miniblock widths and each
    used miniblock's 32 deltas minus the min delta, bit-packed. Every block here uses the
    column's min delta and width, so the full blocks of every row group come from one packing
    of the whole column; miniblocks past a page's last delta have width 0 and no data.
    Row groups start at multiples of 128 rows.

    Raises
    ------
    TooWide
        Deltas of a row group spread over 2**32 or more.
    """

    encoding = DELTA_BINARY_PACKED

    def __init__(self, values: np.ndarray, starts: np.ndarray, ends: np.ndarray):
        values = values.astype(np.int64, copy=False)
        deltas = np.diff(values)   # deltas[i] = values[i + 1] - values[i]; a group's: [start, end - 1)
        with_deltas = np.flatnonzero(ends - starts >= 2)
        bounds = np.stack([starts[with_deltas], ends[with_deltas] - 1], axis=1).reshape(-1)[:-1]
        min_delta, width = 0, 0
        if len(with_deltas):
            counted = deltas[:ends[with_deltas[-1]] - 1]   # the last segment of reduceat runs to the end
            min_delta = int(np.minimum.reduceat(counted, bounds)[::2].min())
            width = packed_width(int(np.maximum.reduceat(counted, bounds)[::2].max()) - min_delta)
        self._layout(values[starts], starts, ends, min_delta, width)
        if self.width:
            relative = (deltas - self.min_delta).view(np.uint64)
            relative[ends[:-1] - 1] = 0   # the deltas across row groups are no group's
            whole_blocks = len(deltas) // BLOCK_VALUES * BLOCK_VALUES
            rows = bit_pack(relative[:whole_blocks], self.width).reshape(-1, BLOCK_VALUES * self.width // 8)
            header_rows = np.broadcast_to(np.frombuffer(self.block_header, np.uint8),
                                          (len(rows), len(self.block_header)))
            self.blocks = memoryview(np.hstack([header_rows, rows]).reshape(-1))
            self.last_blocks = self._last_blocks(relative)

    @classmethod
    def consecutive(cls, first: int, starts: np.ndarray, ends: np.ndarray) -> "DeltaBinaryPacked":
        """The encoder of the integers ``first, first + 1, ...`` (``ends[-1]`` of them), made
        from their ends alone: the bytes :class:`DeltaBinaryPacked` gives for the array."""
        encoder = cls.__new__(cls)
        encoder._layout(first + starts, starts, ends, min_delta=1 if (ends - starts >= 2).any() else 0, width=0)
        return encoder

    def _layout(self, first_values: np.ndarray, starts: np.ndarray, ends: np.ndarray, min_delta: int, width: int):
        """Each group's first value and block counts, the block header, and no packed deltas."""
        self.min_delta, self.width = min_delta, width
        self.first_values = first_values.tolist()
        self.starts, self.ends = starts.tolist(), ends.tolist()
        self.block_header = zigzag_varint(self.min_delta) + bytes([self.width] * MINIBLOCKS)
        # per group: deltas end - start - 1; full blocks all but the last block (never full here)
        self.full_values = [(end - start - 2) // BLOCK_VALUES * BLOCK_VALUES if end - start > 1 else 0
                            for start, end in zip(self.starts, self.ends)]
        self.blocks, self.last_blocks = None, [b""] * len(self.starts)

    def _last_blocks(self, relative: np.ndarray) -> list:
        """Each group's packed last block (its used miniblocks), all groups packed at once."""
        tail_starts = np.array(self.starts) + np.array(self.full_values)
        tail_lengths = np.maximum(np.array(self.ends) - 1 - tail_starts, 0)
        offsets = np.arange(BLOCK_VALUES)
        positions = np.minimum(tail_starts[:, None] + offsets, len(relative) - 1)
        tails = np.where(offsets < tail_lengths[:, None], relative[positions], np.uint64(0))
        packed = bit_pack(tails.reshape(-1), self.width).reshape(len(tails), -1)
        used_bytes = -(-tail_lengths // MINIBLOCK_VALUES) * MINIBLOCK_VALUES * self.width // 8
        return [packed[group, :used].tobytes() for group, used in enumerate(used_bytes.tolist())]

    def progression_bounds(self, dtype) -> tuple:
        """``(mins, maxs)`` of each row group, shape (G,) in ``dtype``, from its first value and
        count: only for a width of 0 (every group's deltas one constant, the min delta)."""
        assert self.width == 0, "bounds from the ends need constant deltas"
        firsts = np.array(self.first_values, dtype=np.int64)
        lasts = firsts + (np.array(self.ends) - np.array(self.starts) - 1) * self.min_delta
        return np.minimum(firsts, lasts).astype(dtype), np.maximum(firsts, lasts).astype(dtype)

    def page(self, group: int) -> list:
        start, end = self.starts[group], self.ends[group]
        header = (write_varint(BLOCK_VALUES) + write_varint(MINIBLOCKS) + write_varint(end - start)
                  + zigzag_varint(self.first_values[group]))
        if end - start == 1:
            return [header]
        num_full = self.full_values[group] // BLOCK_VALUES
        block_bytes = len(self.block_header) + BLOCK_VALUES * self.width // 8
        first = start // BLOCK_VALUES * block_bytes
        full = self.block_header * num_full if self.blocks is None else self.blocks[first:first + num_full * block_bytes]
        used = -(-(end - 1 - start - self.full_values[group]) // MINIBLOCK_VALUES)
        last = zigzag_varint(self.min_delta) + bytes([self.width] * used + [0] * (MINIBLOCKS - used))
        return [header, full, last, self.last_blocks[group]]


def repeated_run(value: int, count: int, width: int) -> bytes:
    """One RLE run of the hybrid: ``varint(count << 1)`` and ``value`` in ``ceil(width / 8)`` bytes."""
    return write_varint(count << 1) + int(value).to_bytes(-(-width // 8), "little")
