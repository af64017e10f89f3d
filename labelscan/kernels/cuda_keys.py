"""Fused CUDA kernel of the selection keys: one class block's key images in one pass.

The array code computes a block's keys in ~7 device passes (gather the other columns,
subtract, canonicalize ``-0.0``, three bit operations); this kernel reads each probability
once and writes each image once. The images are those of
:func:`labelscan.stats.order.float_images`: keys ``P_k - P_j`` computed in the input dtype
(float16 through float, rounded once, as numpy does; float32 without flushing subnormals, see
:mod:`labelscan.kernels.cuda_compile`), ``2**(w-1) -/+ magnitude``, NaN as all ones.
"""

from __future__ import annotations

import numpy as np

from labelscan.kernels.cuda_compile import compile_kernel, launch_grid
from labelscan.stats.order import image_dtype

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
"""Device function ``image_of(key)``: :func:`~labelscan.stats.order.float_images` of one key."""

_SOURCE = IMAGE_OF + r"""

extern "C" __global__ void key_images(const TYPE* columns, const long long n, const long long start,
                                      const long long rows, const int k, const long long* others,
                                      const int num_tasks, UTYPE* images) {
    // images[t, r] = image(P[k, start + r] - P[others[t], start + r]); others[t] < 0: image(P[k, .])
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows;
         r += (long long)gridDim.x * blockDim.x) {
        const long long row = start + r;
        const TYPE given = columns[(long long)k * n + row];
        for (int t = 0; t < num_tasks; ++t) {
            const long long other = others[t];
            images[(long long)t * rows + r] = image_of(other < 0 ? given : SUB(given, columns[other * n + row]));
        }
    }
}
"""

MAX_BLOCKS = 8192
"""Most blocks of the key kernel (each thread then walks a few of the class's rows)."""


def key_images(columns, k: int, rows: slice, others: np.ndarray):
    """Key images of the tasks of class ``k`` over its grouped rows of a device partition.

    Parameters
    ----------
    columns : cupy.ndarray, shape (K, n)
        The partition's probabilities, grouped order.
    k : int
        The tasks' class (its column is the given label's probability).
    rows : slice
        The class's grouped rows.
    others : numpy.ndarray, shape (m,), int64
        Per task, the column subtracted from column ``k``; -1 for the probability itself.

    Returns
    -------
    cupy.ndarray, shape (m, rows.stop - rows.start)
        Unsigned integers of the input's width, in :func:`~labelscan.stats.order.float_images` order.
    """
    import cupy

    columns = cupy.ascontiguousarray(columns)
    num_rows = rows.stop - rows.start
    images = cupy.empty((len(others), num_rows), dtype=image_dtype(columns.dtype))
    if num_rows and len(others):
        compile_kernel(_SOURCE, "key_images", columns.dtype)(
            *launch_grid(num_rows, MAX_BLOCKS),
            (columns, np.int64(columns.shape[1]), np.int64(rows.start), np.int64(num_rows), np.int32(k),
             cupy.asarray(np.asarray(others, dtype=np.int64)), np.int32(len(others)), images))
    return images
