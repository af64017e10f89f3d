"""Page-locked staging memory (labelscan.kernels.pinned) on a GPU: registered huge-page regions, pooled,
and device results copied back through them."""

import gc

import numpy as np
import pytest

from labelscan.kernels import pinned
from labelscan.kernels.pinned import HUGE_PAGE_BYTES, pinned_array
from labelscan.xp import cupy_or_none

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cupy_or_none() is None, reason="needs CuPy and a GPU")]

HOST_MEMORY = 1   # cudaMemoryTypeHost: page-locked memory the device can copy from directly


_TEST_POOLS = []
"""Every pool a test used, kept for the life of the process: their regions stay registered and must
never be unmapped."""


@pytest.fixture
def empty_pool(monkeypatch):
    """A pool of its own for the test (the process's holds the regions of earlier tests, freed
    whenever they are collected)."""
    pool = pinned._RegionPool()
    _TEST_POOLS.append(pool)
    monkeypatch.setattr(pinned, "POOL", pool)
    return pool


def test_a_pinned_array_is_registered_aligned_and_copies_both_ways(empty_pool):
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


def test_a_freed_array_hands_its_region_back_still_registered(empty_pool):
    """(The pool's reuse rules: tests/test_pinned_pool.py.)"""
    import cupy

    array = pinned_array(4 << 20)
    address = array.ctypes.data
    del array
    gc.collect()
    assert empty_pool.free_bytes() == 4 << 20
    assert cupy.cuda.runtime.pointerGetAttributes(address).type == HOST_MEMORY
    assert pinned_array(3 << 20).ctypes.data == address


@pytest.mark.parametrize("shape, dtype", [((0,), np.float32), ((5,), np.bool_), ((1001,), np.int16),
                                          ((300, 7), np.float64)])
def test_device_results_come_back_through_pooled_page_locked_memory(empty_pool, shape, dtype):
    import cupy

    from labelscan.kernels.device import to_host_pinned

    values = np.random.default_rng(3).random(shape) > 0.5 if dtype is np.bool_ else \
        (np.random.default_rng(3).random(shape) * 1000).astype(dtype)
    on_device = cupy.asarray(values)
    host = to_host_pinned(on_device[:, ::-1] if len(shape) == 2 else on_device)   # non-contiguous too
    expected = values[:, ::-1] if len(shape) == 2 else values
    assert isinstance(host, np.ndarray) and host.dtype == dtype and host.shape == expected.shape
    np.testing.assert_array_equal(host, expected)
    if host.nbytes:
        assert cupy.cuda.runtime.pointerGetAttributes(host.ctypes.data).type == HOST_MEMORY
    del host
    gc.collect()
    assert empty_pool.free_bytes() >= HUGE_PAGE_BYTES   # its region went back to the pool
    assert to_host_pinned(values) is values   # host arrays as they are


def test_plain_memory_is_not_registered():
    import cupy

    assert cupy.cuda.runtime.pointerGetAttributes(np.zeros(1 << 20, np.uint8).ctypes.data).type != HOST_MEMORY


def test_memory_cuda_will_not_register_comes_from_cuda_host_alloc(monkeypatch, caplog):
    import cupy

    def refuse(pointer, size, flags):
        raise cupy.cuda.runtime.CUDARuntimeError(801)   # cudaErrorNotSupported

    monkeypatch.setattr(cupy.cuda.runtime, "hostRegister", refuse)
    monkeypatch.setattr(pinned, "POOL", pinned._RegionPool())   # no free region to take (none registered after)
    array = pinned_array(1 << 20)
    assert array.shape == (1 << 20,) and array.dtype == np.uint8
    assert cupy.cuda.runtime.pointerGetAttributes(array.ctypes.data).type == HOST_MEMORY
    assert "registration failed" in caplog.text and pinned.POOL.registration_refused
    caplog.clear()
    assert pinned_array(1 << 20).shape == (1 << 20,) and "registration failed" not in caplog.text   # asked once
