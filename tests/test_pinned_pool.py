"""The pool of page-locked regions (labelscan.kernels.pinned), on any machine: regions come from a
stand-in for ``registered_region`` (plain memory maps), so no GPU is needed.

- an array's region goes back to the pool only when no view of it (nor view of a view) is left;
- the smallest free region that fits is reused; none fits: a new one, rounded to huge pages;
- a region handed back while its thread holds the pool's lock (a finalizer run by a garbage
  collection inside `take`) does not deadlock.
"""

import gc
import mmap
import threading

import numpy as np
import pytest

from labelscan.kernels import pinned


@pytest.fixture
def pool(monkeypatch):
    """A fresh pool whose new regions are plain (unregistered) memory maps; the sizes asked for."""
    fresh = pinned._RegionPool()
    asked = []

    def plain_region(nbytes):
        asked.append(nbytes)
        return pinned.Region(mmap.mmap(-1, nbytes), 0, nbytes)

    monkeypatch.setattr(pinned, "POOL", fresh)
    monkeypatch.setattr(pinned, "registered_region", plain_region)
    fresh.asked = asked
    return fresh


def test_views_of_views_keep_the_region_out_of_the_pool(pool):
    view = pinned.pinned_array(3 << 20)[: 1 << 20].view(np.float32).reshape(-1, 4)[1:]
    view[:] = 7
    gc.collect()
    assert pool.free_bytes() == 0   # the array's only reference is through views
    again = pinned.pinned_array(1 << 20)   # so a new region, not the held one
    again[:] = 0
    assert (view == 7).all() and pool.asked == [4 << 20, 2 << 20]
    del view
    gc.collect()
    assert pool.free_bytes() == 4 << 20


def test_the_smallest_fitting_free_region_is_reused(pool):
    large, small = pinned.pinned_array(8 << 20), pinned.pinned_array((3 << 20) + 1)
    large_address, small_address = large.ctypes.data, small.ctypes.data
    del large, small
    gc.collect()
    assert pool.free_bytes() == 12 << 20
    again = pinned.pinned_array(3 << 20)
    assert again.ctypes.data == small_address and again.shape == (3 << 20,) and again.dtype == np.uint8
    bigger = pinned.pinned_array(5 << 20)
    assert bigger.ctypes.data == large_address
    assert pinned.pinned_array(1).shape == (1,) and pool.asked == [8 << 20, 4 << 20, 2 << 20]


def test_a_region_freed_while_the_pool_is_locked_does_not_deadlock(pool):
    """A garbage collection inside ``take`` may run a freed array's finalizer, which puts its
    region back while the same thread holds the pool's lock."""
    region = pinned.Region(mmap.mmap(-1, 2 << 20), 0, 2 << 20)

    def put_while_locked():
        with pool.lock:
            pool.put(region)

    worker = threading.Thread(target=put_while_locked, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive() and pool.free_bytes() == 2 << 20
