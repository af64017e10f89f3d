"""Selection histograms summed over partitions, dense or sparse.

A refine round's histogram has ``tasks × 2**bits`` cells (up to 8M). A partition of a
many-class set fills few of them: at K=1000, 8,000 rows hold ~150,000 key images against
8M cells, and a dense per-partition histogram costs more to zero, convert and add than
counting the images. Such partitions send the cells they fill (:class:`SparseHistogram`);
merges stay sparse while that is smaller, and the driver densifies once per round. Dense
histograms of device partitions stay on their GPU: merges on a worker add them there, and
only what the bin choice reads of the merged one is copied to the host (:class:`DenseBlocks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelscan.xp import array_module, to_host

SPARSE_FILL = 1 / 8
"""A histogram stays sparse while it lists at most this fraction of its cells."""


@dataclass
class SparseHistogram:
    """Counts of some cells of a ``shape`` histogram (a cell may be listed more than once).

    Attributes
    ----------
    cells : numpy.ndarray, shape (m,), intp
        Flat cell index (row-major in ``shape``).
    counts : numpy.ndarray, shape (m,), int64
    shape : tuple of int
        ``(tasks, bins)``.
    """

    cells: np.ndarray
    counts: np.ndarray
    shape: tuple

    @classmethod
    def of_cells(cls, cells: np.ndarray, shape: tuple) -> "SparseHistogram":
        """The histogram of a list of cell indices (one entry per counted item)."""
        cells, counts = np.unique(cells, return_counts=True)
        return cls(cells=cells, counts=counts.astype(np.int64), shape=tuple(shape))

    @property
    def num_cells(self) -> int:
        return int(np.prod(self.shape))

    def dense(self, dtype=np.int64) -> np.ndarray:
        """The full ``shape`` histogram."""
        totals = np.bincount(self.cells, weights=self.counts, minlength=self.num_cells)
        return totals.astype(dtype).reshape(self.shape)   # exact: counts stay far below 2**53


def is_sparse_enough(num_items: int, num_cells: int, fill: float = SPARSE_FILL) -> bool:
    """Whether listing ``num_items`` cells beats a dense histogram of ``num_cells`` (at most a
    ``fill`` fraction of them listed)."""
    return num_items <= fill * num_cells


def merge(*histograms):
    """Sum of partition histograms of one shape, dense arrays (NumPy or CuPy) and
    :class:`SparseHistogram` s (a tree-reduce step).

    Dense, in the dense inputs' dtype (int64 when all are sparse), when any input is dense or
    the listed cells outgrow :data:`SPARSE_FILL`; sparse otherwise. On the device when any
    dense input is (host inputs join it by one copy each), else on the host.
    """
    sparse = [h for h in histograms if isinstance(h, SparseHistogram)]
    dense = sorted((h for h in histograms if not isinstance(h, SparseHistogram)),
                   key=lambda h: array_module(h) is np)   # a device histogram first
    if sparse and not dense:
        listed = sum(len(h.cells) for h in sparse)
        if is_sparse_enough(listed, sparse[0].num_cells):
            return SparseHistogram(cells=np.concatenate([h.cells for h in sparse]),
                                   counts=np.concatenate([h.counts for h in sparse]), shape=sparse[0].shape)
    total = dense[0].copy() if dense else sparse.pop().dense()
    xp = array_module(total)
    for counts in dense[1:]:
        total += xp.asarray(counts)
    if xp is not np:   # few sparse inputs beside dense device ones: densified, then one copy each
        for histogram in sparse:
            total += xp.asarray(histogram.dense(total.dtype))
        return total
    flat = total.reshape(-1)
    for histogram in sparse:
        np.add.at(flat, histogram.cells, histogram.counts.astype(total.dtype))
    return total


class DenseBlocks:
    """A dense ``(A, B)`` histogram (NumPy or CuPy) read as ``A × (B / block)`` blocks of
    ``block`` bins: block totals, then one block per row, each copied to the host alone."""

    def __init__(self, counts, block: int):
        num_tasks, num_bins = counts.shape
        self.blocks = counts.reshape(num_tasks, num_bins // block, block)

    def totals(self) -> np.ndarray:
        """Rows per block, shape (A, B / block), int64."""
        return to_host(self.blocks.sum(axis=2, dtype=np.int64))

    def bins_of(self, block_index: np.ndarray) -> np.ndarray:
        """The bins of block ``block_index[a]`` of each row ``a``, shape (A, block), int64."""
        xp = array_module(self.blocks)
        rows = xp.arange(len(block_index))
        return to_host(self.blocks[rows, xp.asarray(block_index)]).astype(np.int64)


class ListedBlocks:
    """:class:`DenseBlocks` of a :class:`SparseHistogram`, from its listed cells alone
    (``O(listed)``, not ``O(A × B)``). ``B`` and ``block`` are powers of two."""

    def __init__(self, histogram: SparseHistogram, block: int):
        self.histogram = histogram
        self.block = block
        self.num_tasks, num_bins = histogram.shape
        self.blocks_per_row = num_bins // block
        self.block_of_cell = histogram.cells >> _log2(block)   # row * blocks_per_row + block in the row

    def totals(self) -> np.ndarray:
        num_blocks = self.num_tasks * self.blocks_per_row
        totals = np.bincount(self.block_of_cell, weights=self.histogram.counts, minlength=num_blocks)
        return totals.astype(np.int64).reshape(self.num_tasks, self.blocks_per_row)   # exact below 2**53

    def bins_of(self, block_index: np.ndarray) -> np.ndarray:
        chosen_blocks = np.arange(self.num_tasks) * self.blocks_per_row + block_index
        inside = self.block_of_cell == chosen_blocks[self.block_of_cell >> _log2(self.blocks_per_row)]
        # cell = (row * blocks_per_row + block) * block + bin: row * block + bin, without the block
        cells = self.histogram.cells[inside]
        rows = cells >> _log2(self.blocks_per_row * self.block)
        bins = np.bincount((rows << _log2(self.block)) | (cells & (self.block - 1)),
                           weights=self.histogram.counts[inside], minlength=self.num_tasks * self.block)
        return bins.astype(np.int64).reshape(self.num_tasks, self.block)


def _log2(power_of_two: int) -> int:
    if power_of_two & (power_of_two - 1):
        raise ValueError(f"{power_of_two} is not a power of two")
    return power_of_two.bit_length() - 1
