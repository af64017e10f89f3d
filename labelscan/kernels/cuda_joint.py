"""Fused CUDA kernel of the confident-joint pass (one read of the partition, one thread per row).

The generic array code (:mod:`labelscan.kernels.grouped`) makes ~20 passes over the (K, n)
columns for this step; this kernel reads each probability once. Exactness: every comparison
widens both sides to double (exact for float16/32/64), so ``P >= t - 1e-6`` is decided as
numpy decides it with ``t - 1e-6`` computed on the host in cleanlab's dtype; the given label's
bump ``p + 1e-6`` is one addition in the input dtype (float16: rounded from float, as numpy
does). Rows holding NaN take the generic path (scans reject NaN).

Grouped partitions hold each class's rows contiguously: a row's given label is found among the
K class starts, so no per-row label array is built or read (one H100, 100M×10: 6.0 -> 3.7 ms,
2.1× the HBM floor, ``benchmarks.gpu``'s kernel timing). The threads of a warp mostly count
the same joint cell: the warp's threads agree on their cells first (``__match_any_sync``) and
one thread per distinct cell adds the count (no 32-way serialized atomics).
"""

from __future__ import annotations

import numpy as np

from labelscan.kernels.cuda_compile import compile_kernel, launch_grid

_SOURCE = r"""
__device__ __forceinline__ void count_cell(unsigned long long* counts, const int cell) {
    // one atomic per distinct cell of the warp's active threads (cell < 0: nothing to count)
    const unsigned peers = __match_any_sync(__activemask(), cell);
    if (cell >= 0 && (threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&counts[cell], (unsigned long long)__popc(peers));
}

__device__ __forceinline__ int label_of(const long long* class_starts, const int K, const long long i) {
    // the class k with class_starts[k] <= i < class_starts[k + 1] (grouped rows of one class are contiguous)
    int low = 0, high = K;
    while (high - low > 1) {
        const int middle = (low + high) >> 1;
        if (__ldg(&class_starts[middle]) <= i) low = middle; else high = middle;
    }
    return low;
}

extern "C" __global__ void row_facts(const TYPE* columns, const long long* class_starts, const double* thresholds,
                                     const long long n, const int K, const TYPE bump,
                                     PREDICTED* predicted, bool* off_diagonal, bool* keep,
                                     unsigned long long* joint) {
    // joint: K * K confident-joint cells, then the count of off-diagonal rows whose given label
    // is not the argmax
    extern __shared__ unsigned long long block_joint[];
    const bool shared = K * K + 1 <= SHARED_CELLS;
    unsigned long long* counts = shared ? block_joint : joint;
    if (shared) {
        for (int c = threadIdx.x; c <= K * K; c += blockDim.x) block_joint[c] = 0;
        __syncthreads();
    }
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const int y = label_of(class_starts, K, i);
        const TYPE given = columns[(long long)y * n + i];
        const double bumped = TO_DOUBLE(ADD(given, bump));
        double best = 0.0;
        int argmax = 0, first_above = 0, num_above = 0;
        bool beaten = false;
        for (int j = 0; j < K; ++j) {
            const double p = TO_DOUBLE(columns[(long long)j * n + i]);
            if (p > best || j == 0) { best = p; argmax = j; }
            if (p >= thresholds[j]) { if (num_above == 0) first_above = j; ++num_above; }
            if (j < y) beaten |= p >= bumped;
            else if (j > y) beaten |= p > bumped;
        }
        const int guess = num_above > 1 ? argmax : first_above;
        const bool off = num_above > 0 && guess != y;
        predicted[i] = (PREDICTED)argmax;
        off_diagonal[i] = off;
        keep[i] = !beaten;
        count_cell(counts, num_above > 0 ? y * K + guess : -1);
        count_cell(counts, off && beaten ? K * K : -1);
    }
    if (shared) {
        __syncthreads();
        for (int c = threadIdx.x; c <= K * K; c += blockDim.x)
            if (block_joint[c]) atomicAdd(&joint[c], block_joint[c]);
    }
}
"""

SHARED_CELLS = 4096
"""Per-block counts live in shared memory up to this many cells (K ≤ 63)."""
MAX_BLOCKS = 4096
"""Most blocks of the joint kernel: every block adds its shared counts to the global ones once."""


def fused_row_facts(part, thresholds: np.ndarray, predicted_dtype: np.dtype):
    """Per-row facts, joint counts and the off-diagonal issue count of a device partition, in one kernel.

    Parameters
    ----------
    part : labelscan.kernels.grouped.GroupedPartition
        CuPy columns, no NaN.
    thresholds : numpy.ndarray, shape (K,)
        Confident thresholds in cleanlab's dtype.
    predicted_dtype : numpy.dtype
        int16 or int32.

    Returns
    -------
    predicted, off_diagonal, given_is_argmax : cupy.ndarray, shape (n,)
    joint_counts : numpy.ndarray, shape (K, K), int64
    num_off_diagonal_issues : int
        Rows off the diagonal whose given label is not the argmax.
    """
    import cupy

    num_classes, num_rows = part.columns.shape
    columns = cupy.ascontiguousarray(part.columns)
    limits = cupy.asarray((thresholds - 1e-6).astype(np.float64))  # cleanlab's t - 1e-6, widened exactly
    bump = part.dtype.type(1e-6)  # numpy adds the python float 1e-6 in the input dtype
    predicted = cupy.empty(num_rows, dtype=predicted_dtype)
    off_diagonal = cupy.empty(num_rows, dtype=bool)
    keep = cupy.empty(num_rows, dtype=bool)
    num_cells = num_classes * num_classes + 1
    counts = cupy.zeros(num_cells, dtype=np.uint64)
    shared = 8 * num_cells if num_cells <= SHARED_CELLS else 0
    if num_rows:
        kernel = compile_kernel(_SOURCE, "row_facts", part.dtype, SHARED_CELLS=SHARED_CELLS,
                                PREDICTED="short" if np.dtype(predicted_dtype) == np.int16 else "int")
        kernel(*launch_grid(num_rows, MAX_BLOCKS),
               (columns, cupy.asarray(part.class_starts.astype(np.int64)), limits, np.int64(num_rows),
                np.int32(num_classes), bump,
                predicted, off_diagonal, keep, counts),
               shared_mem=shared)
    host_counts = counts.get().astype(np.int64)
    joint_counts = host_counts[:-1].reshape(num_classes, num_classes)
    return predicted, off_diagonal, keep, joint_counts, int(host_counts[-1])
