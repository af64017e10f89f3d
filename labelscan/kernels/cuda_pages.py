"""CUDA kernels that decode a prediction column's parquet pages on the GPU.

The host reads the column chunks' bytes, walks their page headers and sends the bytes to the
device as they are stored (:mod:`labelscan.io.device_pages`). Two kernels then finish the
decoding there:

- :data:`SNAPPY_SOURCE`: one block per snappy-compressed page (or dictionary page) expands it
  into a scratch region of the same device buffer. Every thread parses the same element tags
  (broadcast loads, no shuffles); a long element (the literals of float bytes, tens of KB) is
  copied by the whole block between two barriers, a short one (the back-references that
  compress level bytes) by the first warp alone. An overlapping back-reference reads
  ``out[op - offset + i % offset]``, bytes written before it. Every read and write is
  bounds-checked: corrupt bytes set a status, never fault. (One warp a page, the earlier
  design, copied an 800 KB page of float literals 32 bytes at a time: ~16 ms for a 5M x 10
  partition on an H200, docs/benchmarks.md.)
- :data:`VALUES_SOURCE`: one block per data page compares the page's level bytes with the
  level sections the host checked for pages of its entry count and row phase
  (:func:`labelscan.io.pages.v1_level_prefix`), then copies its PLAIN values, or expands its
  RLE / bit-packed dictionary indices and gathers the dictionary's values, into the output.

A nonzero status of any page makes :func:`labelscan.io.device_pages.decode_on_device` give
:class:`labelscan.io.pages.Unsupported`: the caller then reads the partition with Arrow on the
host, whose errors name the file and row group.
"""

from __future__ import annotations

import numpy as np

from labelscan.io.pages import Unsupported
from labelscan.kernels.cuda_compile import launch_grid

COPY_SOURCE = r"""
__device__ __forceinline__ void copy_bytes(unsigned char* to, const unsigned char* from, const long long size,
                                           const long long period, const int first, const int stride) {
    // to[i] = from[i % period] for i in [0, size) by the threads first, first + stride, ...: four
    // loads in flight a thread (byte loads, since neither side's alignment is known). A period
    // of at least size is a plain copy; a shorter one repeats bytes lying before `to`.
    long long i = first;
    if (period >= size) {
        for (; i + 3 * stride < size; i += 4 * stride) {
            const unsigned char a = from[i], b = from[i + stride], c = from[i + 2 * stride], d = from[i + 3 * stride];
            to[i] = a; to[i + stride] = b; to[i + 2 * stride] = c; to[i + 3 * stride] = d;
        }
        for (; i < size; i += stride) to[i] = from[i];
    } else {
        for (; i < size; i += stride) to[i] = from[i % period];
    }
}
"""

SNAPPY_SOURCE = COPY_SOURCE + r"""
extern "C" __global__ void snappy_pages(unsigned char* buffer, const long long* sources,
                                        const long long* source_sizes, const long long* outputs,
                                        const long long* output_sizes, int* status) {
    // one block per page; every thread parses the same element tags (broadcast loads)
    const int page = blockIdx.x;
    const unsigned char* in = buffer + sources[page];
    const long long in_size = source_sizes[page];
    unsigned char* out = buffer + outputs[page];
    const long long out_size = output_sizes[page];
    long long ip = 0, op = 0;
    int error = 0;
    unsigned long long length = 0;
    for (int shift = 0;; shift += 7) {          // preamble: the uncompressed length, a varint
        if (ip >= in_size || shift > 35) { error = 1; break; }
        const unsigned char byte = in[ip++];
        length |= (unsigned long long)(byte & 0x7f) << shift;
        if (byte < 0x80) break;
    }
    if (!error && length != (unsigned long long)out_size) error = 2;
    while (!error && ip < in_size) {
        const unsigned int tag = in[ip];
        long long size;
        const unsigned char* from;
        long long period;
        if ((tag & 3) == 0) {                   // literal
            size = (tag >> 2) + 1;
            ip += 1;
            if (size > 60) {                     // its length - 1 in the next size - 60 bytes
                const int extra = (int)size - 60;
                if (ip + extra > in_size) { error = 3; break; }
                size = 0;
                for (int b = 0; b < extra; ++b) size |= (long long)in[ip + b] << (8 * b);
                size += 1;
                ip += extra;
            }
            if (ip + size > in_size || op + size > out_size) { error = 4; break; }
            from = in + ip;
            period = size;
            ip += size;
        } else {                                // back-reference
            unsigned int offset;
            if ((tag & 3) == 1) {
                if (ip + 2 > in_size) { error = 5; break; }
                size = ((tag >> 2) & 7) + 4;
                offset = ((tag >> 5) << 8) | in[ip + 1];
                ip += 2;
            } else if ((tag & 3) == 2) {
                if (ip + 3 > in_size) { error = 5; break; }
                size = (tag >> 2) + 1;
                offset = in[ip + 1] | ((unsigned int)in[ip + 2] << 8);
                ip += 3;
            } else {
                if (ip + 5 > in_size) { error = 5; break; }
                size = (tag >> 2) + 1;
                offset = in[ip + 1] | ((unsigned int)in[ip + 2] << 8) | ((unsigned int)in[ip + 3] << 16)
                         | ((unsigned int)in[ip + 4] << 24);
                ip += 5;
            }
            if (offset == 0 || offset > op || op + size > out_size) { error = 6; break; }
            from = out + op - offset;
            period = offset;
        }
        if (size >= BLOCK_COPY) {               // long (a literal of float bytes): the whole block
            __syncthreads();                    // the first warp's bytes so far are visible
            copy_bytes(out + op, from, size, period, threadIdx.x, blockDim.x);
            __syncthreads();
        } else if (threadIdx.x < 32) {          // short (a back-reference of level bytes): one warp
            copy_bytes(out + op, from, size, period, threadIdx.x, 32);
            __syncwarp();
        }
        op += size;
    }
    if (!error && op != out_size) error = 7;
    if (threadIdx.x == 0 && error) status[page] = error;
}
"""

VALUES_SOURCE = COPY_SOURCE + r"""
extern "C" __global__ void page_values(const unsigned char* buffer, const long long* pages,
                                       const long long* page_sizes, const long long* level_sizes,
                                       const long long* references, const long long* dictionary_encoded,
                                       const long long* dictionaries, const long long* dictionary_sizes,
                                       const long long* counts, const long long* first_values,
                                       unsigned char* values, int* status) {
    // one block per data page: its level bytes equal the checked ones, then its values
    const int page = blockIdx.x;
    const unsigned char* content = buffer + pages[page];
    const long long size = page_sizes[page];
    const long long levels = level_sizes[page];
    const long long count = counts[page];
    unsigned char* out = values + first_values[page] * ITEMSIZE;
    int mismatch = levels > size;
    for (long long i = threadIdx.x; i < levels && !mismatch; i += blockDim.x)
        mismatch |= content[i] != buffer[references[page] + i];
    if (__syncthreads_or(mismatch)) { if (threadIdx.x == 0) status[page] = 8; return; }
    if (!dictionary_encoded[page]) {
        if (levels + count * ITEMSIZE > size) { if (threadIdx.x == 0) status[page] = 9; return; }
        copy_bytes(out, content + levels, count * ITEMSIZE, count * ITEMSIZE, threadIdx.x, blockDim.x);
        return;
    }
    // RLE / bit-packed hybrid dictionary indices: every thread walks the same run headers
    const unsigned char* dictionary = buffer + dictionaries[page];
    const long long dictionary_size = dictionary_sizes[page];
    long long position = levels + 1, done = 0;
    const int width = levels < size ? content[levels] : 99;
    int error = width > 32 ? 10 : 0;
    const long long width_bytes = (width + 7) / 8;
    while (!error && done < count) {
        unsigned long long header = 0;
        for (int shift = 0;; shift += 7) {
            if (position >= size || shift > 35) { error = 11; break; }
            const unsigned char byte = content[position++];
            header |= (unsigned long long)(byte & 0x7f) << shift;
            if (byte < 0x80) break;
        }
        if (error) break;
        long long run = (long long)(header >> 1) * ((header & 1) ? 8 : 1);
        if (run == 0) { error = 12; break; }
        const long long take = run < count - done ? run : count - done;
        const long long run_bytes = (header & 1) ? (long long)(header >> 1) * width : width_bytes;
        if (position + run_bytes > size) { error = 13; break; }
        unsigned long long repeated = 0;
        if (!(header & 1))
            for (int b = 0; b < width_bytes; ++b) repeated |= (unsigned long long)content[position + b] << (8 * b);
        for (long long i = threadIdx.x; i < take; i += blockDim.x) {
            unsigned long long index = repeated;
            if (header & 1) {                   // value i: width bits at bit i * width, little-endian
                const long long bit = i * width;
                unsigned long long window = 0;
                for (int b = 0; b < 5 && (bit >> 3) + b < run_bytes; ++b)
                    window |= (unsigned long long)content[position + (bit >> 3) + b] << (8 * b);
                index = (window >> (bit & 7)) & ((1ull << width) - 1);
            }
            if (index >= (unsigned long long)dictionary_size) { error = 14; break; }
            for (int b = 0; b < ITEMSIZE; ++b) out[(done + i) * ITEMSIZE + b] = dictionary[index * ITEMSIZE + b];
        }
        position += run_bytes;
        done += take;
    }
    if (__syncthreads_or(error) && threadIdx.x == 0) status[page] = error ? error : 14;
}
"""

VALUES_THREADS = 256
"""Threads of a data page's block."""

SNAPPY_THREADS = 256
"""Threads of a compressed page's block."""

SNAPPY_BLOCK_COPY = 512
"""Bytes from which a literal or back-reference is copied by the page's whole block (shorter
ones by its first warp alone, with no block-wide barrier)."""

SNAPPY_TABLES = ("sources", "source_sizes", "outputs", "output_sizes")
"""The compressed pages' tables, in the order :data:`SNAPPY_SOURCE` takes them."""

DATA_TABLES = ("pages", "page_sizes", "level_sizes", "references", "dictionary_encoded", "dictionaries",
               "dictionary_sizes", "counts", "first_values")
"""The data pages' tables, in the order :data:`VALUES_SOURCE` takes them."""

_KERNELS: dict = {}


def _kernel(source: str, name: str, **defines):
    """The ``cupy.RawKernel`` ``name`` of ``source`` with ``#define`` lines (compiled once per process)."""
    import cupy

    key = (name, tuple(sorted(defines.items())))
    if key not in _KERNELS:
        header = "".join(f"#define {macro} {value}\n" for macro, value in sorted(defines.items()))
        _KERNELS[key] = cupy.RawKernel(header + source, name)
    return _KERNELS[key]


def launch_decode(uploads: list, device_size: int, snappy_pages: dict, data_pages: dict, num_values: int, dtype):
    """Queue the upload of a partition's pages and the kernels decoding them on the current
    stream, without waiting for them (:func:`labelscan.io.device_pages.decode_on_device` waits
    once for several columns).

    Parameters
    ----------
    uploads : list of numpy.ndarray, shape (m_i,), uint8
        The bytes the page tables point into, one after the other from the device buffer's
        start (the stored pages, preferably from pinned memory, then the checked level sections).
    device_size : int
        Bytes of the device buffer: ``sum(m_i)`` and the scratch regions decompressed pages go to.
    snappy_pages : dict of numpy.ndarray, shape (p,)
        ``sources``, ``source_sizes``, ``outputs``, ``output_sizes`` (int64 byte offsets and
        sizes in the buffer) of the compressed pages.
    data_pages : dict of numpy.ndarray, shape (d,)
        ``pages``, ``page_sizes`` (a data page's decompressed bytes in the buffer),
        ``level_sizes``, ``references`` (its level sections and where the checked copy lies),
        ``dictionary_encoded`` (0 or 1), ``dictionaries``, ``dictionary_sizes`` (offset and
        entries of its dictionary), ``counts`` and ``first_values`` (its values and the first
        one's index in the output).
    num_values : int
        Values of the output (rows x K).
    dtype : numpy.dtype
        The values' dtype (float32 or float64).

    Returns
    -------
    values : cupy.ndarray, shape (num_values,), ``dtype``
        Valid once the kernels are done and every page decoded.
    status : cupy.ndarray, shape (p + d,), int32
        Each page's status code (0: decoded), to check with :func:`decode_failure`.

    Raises
    ------
    labelscan.io.pages.Unsupported
        When the device lacks the memory for the buffer beside the values.
    """
    import cupy

    try:
        return _run_kernels(uploads, device_size, snappy_pages, data_pages, num_values, dtype)
    except cupy.cuda.memory.OutOfMemoryError as error:   # Arrow's reader needs the values alone
        raise Unsupported(f"device memory ({error})") from error


def decode_failure(status):
    """``[pages that failed, the first one's status]`` (cupy int64, shape (2,), not waited for)."""
    import cupy

    if not status.size:   # no pages: none failed
        return cupy.zeros(2, dtype=np.int64)
    failed = status != 0
    return cupy.stack([cupy.count_nonzero(failed), status[cupy.argmax(failed)]]).astype(np.int64)


def failure_message(failed: int, first_status: int) -> str:
    """What :func:`decode_failure`'s figures say, for :class:`~labelscan.io.pages.Unsupported`."""
    return f"{failed} pages did not decode on the device (first: status {first_status})"


def _run_kernels(uploads: list, device_size: int, snappy_pages: dict, data_pages: dict, num_values: int, dtype):
    """Upload the bytes and launch both kernels (see :func:`launch_decode`): ``(values, status)``."""
    import cupy

    buffer = cupy.empty(max(device_size, 1), dtype=np.uint8)
    values = cupy.empty(num_values, dtype=dtype)
    start = 0
    for upload in uploads:
        buffer[start:start + len(upload)].set(upload)
        start += len(upload)
    num_snappy, num_data = len(snappy_pages["sources"]), len(data_pages["pages"])
    status = cupy.zeros(num_snappy + num_data, dtype=np.int32)
    # every page table in one upload: one small copy instead of thirteen
    tables = cupy.asarray(np.concatenate([np.asarray(snappy_pages[name], dtype=np.int64) for name in SNAPPY_TABLES]
                                         + [np.asarray(data_pages[name], dtype=np.int64) for name in DATA_TABLES]))
    snappy_tables = tables[:num_snappy * len(SNAPPY_TABLES)].reshape(len(SNAPPY_TABLES), num_snappy)
    data_tables = tables[num_snappy * len(SNAPPY_TABLES):].reshape(len(DATA_TABLES), num_data)
    if num_snappy:
        _kernel(SNAPPY_SOURCE, "snappy_pages", BLOCK_COPY=SNAPPY_BLOCK_COPY)(
            (num_snappy,), (SNAPPY_THREADS,), (buffer, *snappy_tables, status))
    if num_data:
        _kernel(VALUES_SOURCE, "page_values", ITEMSIZE=np.dtype(dtype).itemsize)(
            (num_data,), (VALUES_THREADS,), (buffer, *data_tables, values, status[num_snappy:]))
    return values, status


BOUNDS_SOURCE = r"""
extern "C" __global__ void outside_bounds(const TYPE* values, const long long n, const double lower,
                                          const double upper, int* found) {
    // *found = 1 when a value is not within [lower, upper] (NaN is not)
    int outside = 0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const double value = (double)values[i];
        outside |= !(value >= lower && value <= upper);
    }
    if (__syncthreads_or(outside) && threadIdx.x == 0) *found = 1;
}
"""
"""One pass over a column's values (a flushed float32 subnormal compares as 0, within the same
bounds as the value itself)."""

C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int32): "int",
           np.dtype(np.int64): "long long"}

BOUNDS_BLOCKS = 1024
"""Blocks of the bounds pass (each thread then walks a stretch of values)."""


def outside_bounds(values, lower: float, upper: float):
    """1 when a value lies outside ``[lower, upper]`` (NaN does), else 0: cupy int32, shape (1,),
    not waited for.

    Parameters
    ----------
    values : cupy.ndarray
        Contiguous, float32, float64, int32 or int64.
    lower, upper : float
    """
    import cupy

    found = cupy.zeros(1, dtype=np.int32)
    if values.size:
        grid, block = launch_grid(values.size, BOUNDS_BLOCKS)
        _kernel(BOUNDS_SOURCE, "outside_bounds", TYPE=C_TYPES[np.dtype(values.dtype)])(
            grid, block, (values, np.int64(values.size), np.float64(lower), np.float64(upper), found))
    return found

