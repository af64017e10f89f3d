"""Fused CUDA kernels of flat selection keys (:mod:`labelscan.selection_flat`) on a device partition.

Per-class-block array code launches a dozen kernels per block and round, and counts a round
by sorting its cells (200K×1000 on an H100: 20 s of cutoff rounds; a 12.5M-row partition of
10 classes: 10.8 ms a 16-bit round). Flat keys are one array of task segments; these kernels
write all of a partition's key images in one launch and count one refine round in another,
whatever the number of classes (4.7 ms for that partition). The key kernel gives a thread one
row of a class and writes the row's image in each of the class's segments (the class's
probability read once); the other kernels give a thread one image, whose segment it finds by
binary search in the segment bounds. The histogram's atomic additions are aggregated per warp
(neighbouring images of a segment mostly fall in the same bin).
"""

from __future__ import annotations

import numpy as np

from labelscan.kernels.cuda_compile import compile_kernel, launch_grid

IMAGE_OF = r"""
__device__ __forceinline__ UTYPE image_of(const TYPE key) {
    // 2^(w-1) -/+ magnitude (so -0.0 and +0.0 share an image); NaN: all ones
    const UTYPE sign = (UTYPE)((UTYPE)1 << (8 * sizeof(UTYPE) - 1));
    if (ISNAN(key)) return (UTYPE)~(UTYPE)0;
    const UTYPE bits = BITS(key);
    const UTYPE magnitude = (UTYPE)(bits & (UTYPE)~sign);
    return (bits & sign) ? (UTYPE)(sign - magnitude) : (UTYPE)(sign + magnitude);
}
"""
"""Device function ``image_of(key)``: :func:`~labelscan.stats.order.float_images` of one key
(``P_k - P_j`` computed in the input dtype: float16 through float, rounded once, as numpy
does; float32 without flushing subnormals, see :mod:`labelscan.kernels.cuda_compile`)."""

_SEGMENT_OF = r"""
__device__ __forceinline__ int segment_of(const long long* bounds, const int num_segments, const long long e) {
    // the segment s with bounds[s] <= e < bounds[s + 1]
    int low = 0, high = num_segments;
    while (high - low > 1) {
        const int middle = (low + high) >> 1;
        if (bounds[middle] <= e) low = middle; else high = middle;
    }
    return low;
}
"""

_SOURCE = IMAGE_OF + _SEGMENT_OF + r"""
extern "C" __global__ void flat_key_images(const TYPE* columns, const long long n, const long long* group_rows,
                                           const int num_groups, const long long* first_rows,
                                           const long long* classes, const int* first_segments,
                                           const long long* bounds, const long long* others, UTYPE* images) {
    // one thread a row of a group (consecutive segments of one class, over the class's rows): the
    // row's image in every segment s of the group, image(P[class, row] - P[others[s], row])
    // (others[s] < 0: of P[class, row]); the class's probability is read once for all of them
    const long long total = group_rows[num_groups];
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int g = segment_of(group_rows, num_groups, e);
        const long long offset = e - group_rows[g];
        const long long row = first_rows[g] + offset;
        const TYPE given = columns[classes[g] * n + row];
        for (int s = first_segments[g]; s < first_segments[g + 1]; ++s)
            images[bounds[s] + offset] = image_of(others[s] < 0 ? given : SUB(given, columns[others[s] * n + row]));
    }
}

extern "C" __global__ void flat_histogram(const UTYPE* images, const long long* bounds, const int num_segments,
                                          const long long* task_rows, const UTYPE* lo, const UTYPE* last,
                                          const int* shift, const int bits, unsigned int* counts) {
    // counts[task_rows[s] << bits | (image - lo[s]) >> shift[s]] for images inside [lo, lo + last]
    const long long total = bounds[num_segments];
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int s = segment_of(bounds, num_segments, e);
        long long cell = -1;
        if (task_rows[s] >= 0) {
            const UTYPE offset = (UTYPE)(images[e] - lo[s]);
            if (offset <= last[s]) cell = (task_rows[s] << bits) + (long long)(offset >> shift[s]);
        }
        const unsigned peers = __match_any_sync(__activemask(), cell);
        if (cell >= 0 && (threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&counts[cell], (unsigned)__popc(peers));
    }
}

extern "C" __global__ void flat_inside(const UTYPE* images, const long long* bounds, const int num_segments,
                                       const bool* wanted, const UTYPE* lo, const UTYPE* last, bool* inside) {
    // inside[e]: image e's segment is wanted and the image lies in [lo, lo + last]
    const long long total = bounds[num_segments];
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int s = segment_of(bounds, num_segments, e);
        inside[e] = wanted[s] && (UTYPE)(images[e] - lo[s]) <= last[s];
    }
}

extern "C" __global__ void flat_select_below(const UTYPE* images, const long long* bounds, const int num_segments,
                                             const long long* first_rows, const UTYPE* limit,
                                             const bool* everything, bool* selected) {
    // selected[grouped row of e] = true for images below their segment's limit (or of an `everything` segment)
    const long long total = bounds[num_segments];
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int s = segment_of(bounds, num_segments, e);
        if (everything[s] || images[e] < limit[s]) selected[first_rows[s] + (e - bounds[s])] = true;
    }
}
"""

_FLOAT_OF_IMAGE = {2: np.float16, 4: np.float32, 8: np.float64}
MAX_BLOCKS = 16384
"""Most blocks of the flat kernels (one thread per image up to 4M images)."""


def flat_key_images(columns, bounds: np.ndarray, first_rows: np.ndarray, classes: np.ndarray,
                    others: np.ndarray):
    """All key images of a partition's task segments, segment after segment.

    Parameters
    ----------
    columns : cupy.ndarray, shape (K, n)
        The partition's probabilities, grouped order.
    bounds : numpy.ndarray, shape (S + 1,)
        Segment ``s`` fills images ``bounds[s]:bounds[s + 1]`` (non-empty segments).
    first_rows, classes, others : numpy.ndarray, shape (S,)
        Per segment: its first grouped row, its task's class and the column subtracted from the
        class's (``-1``: the probability itself). Every segment of a class covers the class's
        rows (same first row and length), as :func:`labelscan.selection.partition_keys` makes them.

    Returns
    -------
    cupy.ndarray, shape (bounds[-1],)
        Unsigned images of the input's width.
    """
    import cupy

    from labelscan.stats.order import image_dtype

    columns = cupy.ascontiguousarray(columns)
    total = int(bounds[-1])
    images = cupy.empty(total, dtype=image_dtype(columns.dtype))
    if total:
        # groups: runs of consecutive segments of one class (they share its rows)
        classes = np.asarray(classes, dtype=np.int64)
        first_segments = np.flatnonzero(np.r_[True, classes[1:] != classes[:-1]])
        group_rows = np.zeros(len(first_segments) + 1, dtype=np.int64)
        np.cumsum(np.diff(bounds)[first_segments], out=group_rows[1:])
        device = [cupy.asarray(values) for values in (
            group_rows, np.asarray(first_rows, dtype=np.int64)[first_segments], classes[first_segments],
            np.r_[first_segments, len(classes)].astype(np.int32), np.asarray(bounds, dtype=np.int64),
            np.asarray(others, dtype=np.int64))]
        compile_kernel(_SOURCE, "flat_key_images", columns.dtype)(
            *launch_grid(int(group_rows[-1]), MAX_BLOCKS),
            (columns, np.int64(columns.shape[1]), device[0], np.int32(len(first_segments)), *device[1:], images))
    return images


def flat_histogram(images, bounds: np.ndarray, task_rows: np.ndarray, lo: np.ndarray, last: np.ndarray,
                   shift: np.ndarray, bits: int, num_task_rows: int):
    """One refine round's counts over flat device images (the device twin of
    :func:`labelscan.selection_flat.flat_cells` followed by a count).

    Parameters
    ----------
    images : cupy.ndarray, shape (E,)
    bounds : numpy.ndarray, shape (S + 1,)
    task_rows : numpy.ndarray, shape (S,)
        Histogram row of each segment's task, ``-1`` for tasks not refined this round.
    lo, last : numpy.ndarray, shape (S,)
        Each segment's interval start and largest offset inside it (images' dtype).
    shift : numpy.ndarray, shape (S,)
        Bits an offset is shifted right to give its bin.
    bits : int
    num_task_rows : int
        Rows of the histogram.

    Returns
    -------
    cupy.ndarray, shape (num_task_rows * 2**bits,), uint32
    """
    import cupy

    counts = cupy.zeros(num_task_rows << bits, dtype=np.uint32)
    if num_task_rows:
        dtype = images.dtype
        _launch("flat_histogram", images, bounds, cupy.asarray(np.asarray(task_rows, dtype=np.int64)),
                cupy.asarray(lo.astype(dtype)), cupy.asarray(last.astype(dtype)),
                cupy.asarray(shift.astype(np.int32)), np.int32(bits), counts)
    return counts


def _launch(name: str, images, bounds: np.ndarray, *arguments) -> None:
    """Run kernel ``name`` over every image (``arguments`` follow the segment bounds)."""
    import cupy

    if len(images):
        compile_kernel(_SOURCE, name, _FLOAT_OF_IMAGE[images.dtype.itemsize])(
            *launch_grid(len(images), MAX_BLOCKS),
            (images, cupy.asarray(np.asarray(bounds, dtype=np.int64)), np.int32(len(bounds) - 1), *arguments))


def flat_inside(images, bounds: np.ndarray, wanted: np.ndarray, lo: np.ndarray, last: np.ndarray):
    """Which images of wanted segments lie inside their segment's interval, shape (E,), bool (device).

    ``wanted``, ``lo``, ``last``: per segment, shape (S,), host (``lo``/``last`` in the images' dtype).
    """
    import cupy

    inside = cupy.zeros(len(images), dtype=bool)
    dtype = images.dtype
    _launch("flat_inside", images, bounds, cupy.asarray(wanted.astype(bool)), cupy.asarray(lo.astype(dtype)),
            cupy.asarray(last.astype(dtype)), inside)
    return inside


def flat_select_below(images, bounds: np.ndarray, first_rows: np.ndarray, limit: np.ndarray,
                      everything: np.ndarray, num_rows: int):
    """Grouped rows holding an image below its segment's ``limit`` or in an ``everything``
    segment, shape (num_rows,), bool (device). Per-segment arguments: shape (S,), host."""
    import cupy

    selected = cupy.zeros(num_rows, dtype=bool)
    _launch("flat_select_below", images, bounds, cupy.asarray(np.asarray(first_rows, dtype=np.int64)),
            cupy.asarray(limit.astype(images.dtype)), cupy.asarray(everything.astype(bool)), selected)
    return selected
