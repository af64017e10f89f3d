"""Compiling labelscan's CUDA kernels for each input float dtype.

Every kernel source names its element types by placeholders that :func:`compile_kernel`
replaces per dtype, so the float16/32/64 variants share one source. Arithmetic on float16
goes through float and rounds back once (``__float2half_rn``), as numpy's half loops do;
kernels compile with ``--fmad=false`` so no multiply-add is contracted.

CuPy compiles every kernel with ``-ftz=true`` (a later option overrides ours): float32
operations flush subnormal inputs and results to zero, where numpy keeps them. So float32
values never go through a float32 operation here: ``TO_DOUBLE`` widens the bits exactly,
``ADD``/``SUB`` compute in double and round to float32 (correctly rounded: 53 ≥ 2·24 + 2
bits, and a subnormal difference or sum of two float32 is exact) with the rounding done on
the bits (``f32_round``), and ``BITS`` of a sum or difference is read from that double.
"""

from __future__ import annotations

import numpy as np

TYPE_PLACEHOLDERS = {
    # dtype: TYPE, UTYPE (same-width unsigned), TO_DOUBLE(x), ARITHMETIC(a, b) (ADD/SUB with op
    # + or -: the result in TYPE), BITS(x), ISNAN(x)
    np.dtype(np.float16): {
        "TYPE": "__half", "UTYPE": "unsigned short", "TO_DOUBLE": "((double)__half2float({0}))",
        "ARITHMETIC": "__float2half_rn(__half2float({0}) {op} __half2float({1}))",
        "BITS": "__half_as_ushort({0})", "ISNAN": "__hisnan({0})"},
    np.dtype(np.float32): {
        "TYPE": "float", "UTYPE": "unsigned int", "TO_DOUBLE": "f32_to_double({0})",
        "ARITHMETIC": "f32_round(f32_to_double({0}) {op} f32_to_double({1}))",
        "BITS": "__float_as_uint({0})", "ISNAN": "isnan({0})"},
    np.dtype(np.float64): {
        "TYPE": "double", "UTYPE": "unsigned long long", "TO_DOUBLE": "({0})",
        "ARITHMETIC": "(({0}) {op} ({1}))",
        "BITS": "((unsigned long long)__double_as_longlong({0}))", "ISNAN": "isnan({0})"},
}
_COMPILED: dict = {}
THREADS_PER_BLOCK = 256
"""Threads of every labelscan kernel's blocks (8 warps)."""

FLOAT32_HELPERS = r"""
__device__ __forceinline__ double f32_to_double(const float x) {
    // exact widening without a float32 operation (a flushing cvt would zero subnormals)
    const unsigned int bits = __float_as_uint(x);
    if ((bits & 0x7f800000u) != 0) return (double)x;
    const double magnitude = scalbn((double)(bits & 0x007fffffu), -149);
    return (bits >> 31) ? -magnitude : magnitude;
}

__device__ __forceinline__ float f32_round(const double value) {
    // float32 nearest to value (ties to even); subnormal results built from their bits
    if (fabs(value) >= 1.1754943508222875e-38 || value != value) return __double2float_rn(value);
    const unsigned int mantissa = (unsigned int)rint(scalbn(fabs(value), 149));
    return __uint_as_float((signbit(value) ? 0x80000000u : 0u) | mantissa);
}
"""


def _define_macros(dtype: np.dtype) -> str:
    """``#define`` lines for the dtype's type names and function-like placeholders."""
    names = TYPE_PLACEHOLDERS[np.dtype(dtype)]
    lines = [f"#define TYPE {names['TYPE']}", f"#define UTYPE {names['UTYPE']}"]
    lines += [f"#define {macro}(x) {names[macro].format('x')}" for macro in ("TO_DOUBLE", "BITS", "ISNAN")]
    lines += [f"#define {macro}(x, y) {names['ARITHMETIC'].format('x', 'y', op=op)}"
              for macro, op in (("ADD", "+"), ("SUB", "-"))]
    return "\n".join(lines)


def compile_kernel(source: str, name: str, dtype, **defines):
    """The ``cupy.RawKernel`` ``name`` of ``source`` for input ``dtype`` (compiled once per process).

    Parameters
    ----------
    source : str
        CUDA C source using ``TYPE``, ``UTYPE``, ``TO_DOUBLE``, ``ADD``, ``SUB``, ``BITS`` and
        ``ISNAN``.
    name : str
        The ``extern "C"`` kernel to load.
    dtype : numpy.dtype
        float16, float32 or float64.
    **defines
        Further ``#define NAME value`` lines (part of the cache key).
    """
    import cupy

    key = (source, name, np.dtype(dtype), tuple(sorted(defines.items())))
    if key not in _COMPILED:
        header = ["#include <cuda_fp16.h>", FLOAT32_HELPERS, _define_macros(dtype)]
        header += [f"#define {macro} {value}" for macro, value in sorted(defines.items())]
        _COMPILED[key] = cupy.RawKernel("\n".join(header) + "\n" + source, name, options=("--fmad=false",))
    return _COMPILED[key]


def launch_grid(num_items: int, max_blocks: int) -> tuple:
    """``(grid, block)`` shapes of a grid-stride kernel over ``num_items`` items.

    Parameters
    ----------
    num_items : int
        Items (rows, images) the kernel's grid-stride loop covers.
    max_blocks : int
        Most blocks: enough to fill the device; fewer means each thread loops more (and a
        kernel with per-block shared counts merges fewer blocks).

    Returns
    -------
    grid, block : tuple of int, shape (1,)
        One block at least, of :data:`THREADS_PER_BLOCK` threads.
    """
    blocks = -(-num_items // THREADS_PER_BLOCK)
    return (max(1, min(blocks, max_blocks)),), (THREADS_PER_BLOCK,)
