"""Fused CUDA kernel of the confident-joint pass (one read of the partition, one thread per row).

The generic array code (:mod:`labelscan.kernels.grouped`) makes ~20 passes over the (K, n)
columns for this step; this kernel reads each probability once. Exactness: every comparison
widens both sides to double (exact for float16/32/64), so ``P >= t - 1e-6`` is decided as
numpy decides it with ``t - 1e-6`` computed on the host in cleanlab's dtype; the given label's
bump ``p + 1e-6`` is one addition in the input dtype (float16: rounded from float, as numpy
does). Rows holding NaN take the generic path (scans reject NaN).
"""

from __future__ import annotations

import numpy as np

_SOURCE = r"""
#include <cuda_fp16.h>
extern "C" __global__ void row_facts(const TYPE* columns, const long long* labels, const double* thresholds,
                                     const long long n, const int K, const TYPE bump,
                                     short_or_int* predicted, bool* off_diagonal, bool* keep,
                                     unsigned long long* joint) {
    extern __shared__ unsigned long long block_joint[];
    const bool shared = K * K <= SHARED_CELLS;
    if (shared) {
        for (int c = threadIdx.x; c < K * K; c += blockDim.x) block_joint[c] = 0;
        __syncthreads();
    }
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const int y = (int)labels[i];
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
        predicted[i] = (short_or_int)argmax;
        off_diagonal[i] = num_above > 0 && guess != y;
        keep[i] = !beaten;
        if (num_above > 0) {
            if (shared) atomicAdd(&block_joint[y * K + guess], 1ULL);
            else atomicAdd(&joint[(long long)y * K + guess], 1ULL);
        }
    }
    if (shared) {
        __syncthreads();
        for (int c = threadIdx.x; c < K * K; c += blockDim.x)
            if (block_joint[c]) atomicAdd(&joint[c], block_joint[c]);
    }
}
"""

SHARED_CELLS = 4096
"""Per-block joint counts live in shared memory up to this many cells (K ≤ 64)."""

_TYPES = {
    np.dtype(np.float16): ("__half", "__half2float({})", "__float2half_rn(__half2float({}) + __half2float({}))"),
    np.dtype(np.float32): ("float", "(double)({})", "(({}) + ({}))"),
    np.dtype(np.float64): ("double", "({})", "(({}) + ({}))"),
}
_KERNELS: dict = {}


def _kernel(dtype: np.dtype, predicted_dtype: np.dtype):
    import cupy

    key = (dtype, predicted_dtype)
    if key not in _KERNELS:
        type_name, to_double, add = _TYPES[dtype]
        source = (_SOURCE.replace("TYPE", type_name)
                  .replace("short_or_int", "short" if predicted_dtype == np.int16 else "int")
                  .replace("SHARED_CELLS", str(SHARED_CELLS)))
        source = source.replace("TO_DOUBLE(ADD(given, bump))", to_double.format(add.format("given", "bump")))
        source = source.replace("TO_DOUBLE(columns[(long long)j * n + i])",
                                to_double.format("columns[(long long)j * n + i]"))
        _KERNELS[key] = cupy.RawKernel(source, "row_facts", options=("--fmad=false",))
    return _KERNELS[key]


def fused_row_facts(part, thresholds: np.ndarray, predicted_dtype: np.dtype):
    """Per-row facts and joint counts of a device partition in one kernel.

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
    """
    import cupy

    num_classes, num_rows = part.columns.shape
    limits = cupy.asarray((thresholds - 1e-6).astype(np.float64))  # cleanlab's t - 1e-6, widened exactly
    bump = part.dtype.type(1e-6)  # numpy adds the python float 1e-6 in the input dtype
    predicted = cupy.empty(num_rows, dtype=predicted_dtype)
    off_diagonal = cupy.empty(num_rows, dtype=bool)
    keep = cupy.empty(num_rows, dtype=bool)
    joint = cupy.zeros(num_classes * num_classes, dtype=np.uint64)
    threads = 256
    blocks = max(1, min((num_rows + threads - 1) // threads, 4096))
    shared = 8 * num_classes * num_classes if num_classes * num_classes <= SHARED_CELLS else 0
    if num_rows:
        _kernel(part.dtype, np.dtype(predicted_dtype))(
            (blocks,), (threads,),
            (part.columns, part.labels, limits, np.int64(num_rows), np.int32(num_classes), bump,
             predicted, off_diagonal, keep, joint),
            shared_mem=shared)
    joint_counts = joint.get().astype(np.int64).reshape(num_classes, num_classes)
    return predicted, off_diagonal, keep, joint_counts
