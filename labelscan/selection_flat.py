"""A partition's selection keys as one flat array of task segments (host partitions of many classes).

:mod:`labelscan.selection` keeps a partition's key images per class block (tasks × rows of the
class). With hundreds of classes a block holds few rows, and each refine round pays a few
numpy calls per block: at K=1000 in 12 partitions, 30,000 calls per round cost more than the
counting itself. Here every task's images over its class's rows are one *segment* of a single
array, and a round is a few passes over that array whatever the number of classes.

A segment is one task over the consecutive grouped rows of its class, so its images are in
row order. Callers give per-segment parameters (interval start, width, cutoff) and the
functions spread them over the images with the segment index of each image.

Device partitions keep their images (and row ids) on the GPU: :mod:`labelscan.kernels.cuda_flat`
writes the images and counts the refine rounds; resolving and selecting (once per scan) run
the array code below in CuPy. Segment metadata stays on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelscan.xp import array_module, to_host


@dataclass
class FlatKeys:
    """Key images of one task family over one partition, segment after segment.

    Attributes
    ----------
    images : numpy.ndarray or cupy.ndarray, shape (E,)
        Order-preserving images of the keys; segment ``s`` is ``images[bounds[s]:bounds[s + 1]]``.
    task_ids : numpy.ndarray, shape (S,)
        Task of each segment.
    bounds : numpy.ndarray, shape (S + 1,), intp
    first_rows : numpy.ndarray, shape (S,), intp
        Grouped row of each segment's first image. A segment covers one class's grouped rows,
        which grouped order keeps in row order: its images are in row order too.
    num_rows : int
        Rows of the partition (``n``).
    """

    images: np.ndarray
    task_ids: np.ndarray
    bounds: np.ndarray
    first_rows: np.ndarray
    num_rows: int

    @property
    def xp(self):
        """Array namespace of the images."""
        return array_module(self.images)

    def per_segment(self, values: np.ndarray):
        """Host per-segment ``values`` where the images are."""
        return self.xp.asarray(values)

    def segment_of_images(self) -> np.ndarray:
        """Segment of each image, shape (E,), intp (host keys; device kernels search the bounds)."""
        return np.repeat(np.arange(len(self.task_ids)), np.diff(self.bounds))

    def segments_at(self, positions):
        """Segment of the images at ``positions``, shape like them (where the images are)."""
        return self.xp.searchsorted(self.per_segment(self.bounds[1:]), positions, side="right")

    def grouped_rows(self, segments, positions):
        """Grouped row of the images at ``positions`` (in segments ``segments``), shape like them."""
        return self.per_segment(self.first_rows)[segments] + (positions - self.per_segment(self.bounds)[segments])


def flat_cells(keys: FlatKeys, task_rows: np.ndarray, lo: np.ndarray, width: np.ndarray,
               last: np.ndarray, bits: int) -> np.ndarray:
    """Histogram cell of every image inside its segment's interval.

    Parameters
    ----------
    keys : FlatKeys
    task_rows : numpy.ndarray, shape (S,)
        Histogram row of each segment's task, ``-1`` for tasks not refined this round.
    lo, width : numpy.ndarray, shape (S,)
        Each segment's interval ``[lo, lo + 2**width)`` (uint64, int).
    last : numpy.ndarray, shape (S,)
        Largest offset inside each interval, in the images' dtype.
    bits : int
        The interval is split into ``2**bits`` bins.

    Returns
    -------
    numpy.ndarray, shape (m,), intp
        ``task_row * 2**bits + bin`` of each image inside its interval (images outside are left out).
    """
    segments = keys.segment_of_images()
    images = keys.images
    live = task_rows >= 0
    if not live.all():
        keep = live[segments]
        images, segments = images[keep], segments[keep]
    dtype = images.dtype
    image_width = dtype.itemsize * 8
    if not lo.any() and (width == image_width).all():   # first round: the top bits, no offsets
        cells = (images >> dtype.type(image_width - bits)).astype(np.intp)
    else:
        offset = images - lo.astype(dtype)[segments]
        inside = offset <= last[segments]
        segments = segments[inside]
        cells = (offset[inside] >> np.maximum(width - bits, 0).astype(dtype)[segments]).astype(np.intp)
    cells += (task_rows << bits)[segments]
    return cells


def flat_resolve(keys: FlatKeys, wanted: np.ndarray, lo: np.ndarray, last: np.ndarray):
    """Images inside their segment's interval, for the wanted segments.

    Parameters
    ----------
    wanted : numpy.ndarray, shape (S,), bool
    lo, last : numpy.ndarray, shape (S,)
        Interval start and largest offset of each segment (images' dtype).

    Returns
    -------
    segments, images : numpy.ndarray
        Segment and image of every image inside its interval (on the host).
    """
    if keys.xp is not np:
        from labelscan.kernels.cuda_flat import flat_inside

        positions = keys.xp.flatnonzero(flat_inside(keys.images, keys.bounds, wanted, lo, last))
        return to_host(keys.segments_at(positions)), to_host(keys.images[positions])
    segments = keys.segment_of_images()
    positions = np.flatnonzero(wanted[segments])
    segments = segments[positions]
    images = keys.images[positions]
    inside = (images - lo.astype(images.dtype)[segments]) <= last[segments]
    return segments[inside], images[inside]


def flat_select(keys: FlatKeys, limit: np.ndarray, everything: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """Grouped rows selected by any segment: images below the segment's limit, every image of
    an ``everything`` segment, and the first ``quota`` images equal to the limit (a segment's
    images are in row order).

    Parameters
    ----------
    limit : numpy.ndarray, shape (S,)
        Cutoff image of each segment (images' dtype).
    everything : numpy.ndarray, shape (S,), bool
    quota : numpy.ndarray, shape (S,), int64

    Returns
    -------
    numpy.ndarray or cupy.ndarray (where the images are), shape (n,), bool
    """
    xp = keys.xp
    if xp is np:
        segments = keys.segment_of_images()
        below = (keys.images < limit[segments]) | everything[segments]
        positions = np.flatnonzero(below)
        selected = np.zeros(keys.num_rows, dtype=bool)
        selected[keys.grouped_rows(segments[positions], positions)] = True
    else:
        from labelscan.kernels.cuda_flat import flat_select_below

        selected = flat_select_below(keys.images, keys.bounds, keys.first_rows, limit, everything, keys.num_rows)
    for segment in np.flatnonzero((quota > 0) & ~everything):
        start, stop = int(keys.bounds[segment]), int(keys.bounds[segment + 1])
        tied = start + xp.flatnonzero(keys.images[start:stop] == limit[segment])[: int(quota[segment])]
        selected[keys.grouped_rows(xp.full(len(tied), segment), tied)] = True
    return selected
