"""Page-locked staging memory (labelscan.kernels.pinned): registered huge-page regions."""

import gc

import numpy as np
import pytest

from labelscan.kernels.pinned import HUGE_PAGE_BYTES, pinned_array
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


def test_a_view_keeps_the_registration_and_a_freed_array_is_unregistered():
    import cupy

    view = pinned_array(3 << 20)[1024:]
    gc.collect()
    assert cupy.cuda.runtime.pointerGetAttributes(view.ctypes.data).type == HOST_MEMORY
    array = pinned_array(4 << 20)
    address = array.ctypes.data
    del array
    gc.collect()
    with pytest.raises(cupy.cuda.runtime.CUDARuntimeError, match="NotRegistered"):
        cupy.cuda.runtime.hostUnregister(address)   # the finalizer did it already


def test_plain_memory_is_not_registered():
    import cupy

    assert cupy.cuda.runtime.pointerGetAttributes(np.zeros(1 << 20, np.uint8).ctypes.data).type != HOST_MEMORY


def test_memory_cuda_will_not_register_comes_from_cuda_host_alloc(monkeypatch, caplog):
    import cupy

    def refuse(pointer, size, flags):
        raise cupy.cuda.runtime.CUDARuntimeError(801)   # cudaErrorNotSupported

    monkeypatch.setattr(cupy.cuda.runtime, "hostRegister", refuse)
    array = pinned_array(1 << 20)
    assert array.shape == (1 << 20,) and array.dtype == np.uint8
    assert cupy.cuda.runtime.pointerGetAttributes(array.ctypes.data).type == HOST_MEMORY
    assert "registration failed" in caplog.text
