"""Selection histograms summed over partitions, dense or sparse.

A refine round's histogram has ``tasks × 2**bits`` cells (up to 8M). A partition of a
many-class set fills few of them: at K=1000, 8,000 rows hold ~150,000 key images against
8M cells, and a dense per-partition histogram costs more to zero, convert and add than
counting the images. Such partitions send the cells they fill (:class:`SparseHistogram`);
merges stay sparse while that is smaller, and the driver densifies once per round. Dense
histograms of device partitions stay on their GPU: merges on a worker add them there, and
only the merged histogram is copied to the host (:func:`host_dense`).
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


def is_sparse_enough(num_items: int, num_cells: int) -> bool:
    """Whether listing ``num_items`` cells beats a dense histogram of ``num_cells``."""
    return num_items <= SPARSE_FILL * num_cells


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


def host_dense(histogram, dtype=np.int64) -> np.ndarray:
    """A merged histogram as a dense host array (a device histogram copied once; sparse ones
    in ``dtype``)."""
    return histogram.dense(dtype) if isinstance(histogram, SparseHistogram) else to_host(histogram)
