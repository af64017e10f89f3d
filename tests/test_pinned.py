"""Page-locked staging memory (labelscan.kernels.pinned): registered huge-page regions, pooled."""

import gc

import numpy as np
import pytest

from labelscan.kernels import pinned
from labelscan.kernels.pinned import HUGE_PAGE_BYTES, POOL, pinned_array
from labelscan.xp import cupy_or_none

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cupy_or_none() is None, reason="needs CuPy and a GPU")]

HOST_MEMORY = 1   # cudaMemoryTypeHost: page-locked memory the device can copy from directly


def test_a_pinned_array_is_registered_aligned_and_copies_both_ways():
    import cupy

    array = pinned_array(5 * (1 << 20) + 3)
    assert array.dtype == np.uint8 and array.shape == (5 * (1 << 20) + 3,) and array.flags.writeable
    assert array.ctypes.data % HUGE_PAGE_BYTES == 0 and not array.any()
    assert cupy.cuda.runtime.pointerGetAttributes(array.ctypes.data).type == HOST_MEMORY
    array[:] = np.arange(array.size) % 251
    stream = cupy.cuda.Stream(non_blocking=True)
    device = cupy.empty(array.size, cupy.uint8)
    device.data.copy_from_host_async(array.ctypes.data, array.nbytes, stream)
    stream.synchronize()
    assert np.array_equal(cupy.asnumpy(device), array)
    back = pinned_array(array.size)
    device.data.copy_to_host_async(back.ctypes.data, back.nbytes, stream)
    stream.synchronize()
    assert np.array_equal(back, array)


def test_a_freed_array_hands_its_region_back_registered_and_the_smallest_fitting_one_is_reused():
    import cupy

    view = pinned_array((3 << 20) + 5)[1024:]
    gc.collect()
    assert cupy.cuda.runtime.pointerGetAttributes(view.ctypes.data).type == HOST_MEMORY   # held by its view
    large, small = pinned_array(8 << 20), pinned_array(4 << 20)
    large_address, small_address = large.ctypes.data, small.ctypes.data
    free_before = POOL.free_bytes()
    del large, small
    gc.collect()
    assert POOL.free_bytes() == free_before + (12 << 20)
    assert cupy.cuda.runtime.pointerGetAttributes(small_address).type == HOST_MEMORY   # still registered
    again = pinned_array(3 << 20)   # both fit: the smaller one is taken
    assert again.ctypes.data == small_address and again.shape == (3 << 20,)
    bigger = pinned_array(6 << 20)
    assert bigger.ctypes.data == large_address
    fresh = pinned_array(9 << 20)   # none fits: a new region
    assert fresh.ctypes.data not in (small_address, large_address) and fresh.ctypes.data % HUGE_PAGE_BYTES == 0


def test_plain_memory_is_not_registered():
    import cupy

    assert cupy.cuda.runtime.pointerGetAttributes(np.zeros(1 << 20, np.uint8).ctypes.data).type != HOST_MEMORY


def test_memory_cuda_will_not_register_comes_from_cuda_host_alloc(monkeypatch, caplog):
    import cupy

    def refuse(pointer, size, flags):
        raise cupy.cuda.runtime.CUDARuntimeError(801)   # cudaErrorNotSupported

    monkeypatch.setattr(cupy.cuda.runtime, "hostRegister", refuse)
    monkeypatch.setattr(pinned, "POOL", pinned._RegionPool())   # no free region to take
    array = pinned_array(1 << 20)
    assert array.shape == (1 << 20,) and array.dtype == np.uint8
    assert cupy.cuda.runtime.pointerGetAttributes(array.ctypes.data).type == HOST_MEMORY
    assert "registration failed" in caplog.text and pinned.POOL.registration_refused
    caplog.clear()
    assert pinned_array(1 << 20).shape == (1 << 20,) and "registration failed" not in caplog.text   # asked once
