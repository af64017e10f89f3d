"""The Dask runner on a real LocalCluster: large broadcast arguments of concurrent maps."""

import numpy as np
import pytest
from distributed import Client, LocalCluster

from labelscan.runner import BROADCAST_TASK_BYTES, DaskRunner


def _offset_sum(values, *, offsets):
    return int(values.sum() + offsets.sum())


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as dask_client:
        yield dask_client


def test_concurrent_maps_with_large_broadcasts_of_one_name(client):
    """Dask's Client.map keys a large keyword argument by its name: two maps in flight with
    different large ``offsets=`` collided (scheduler assertion, then a hang). The runner
    passes them as tasks of their own, under unique keys."""
    runner = DaskRunner(client, retries=0)
    parts = [np.arange(10) * i for i in range(4)]
    first = np.ones(BROADCAST_TASK_BYTES // 8 + 1000, dtype=np.int64)
    second = 2 * first
    pending = runner.map("first", _offset_sum, parts, offsets=first)
    later = runner.map("second", _offset_sum, parts, offsets=second)
    assert runner.gather(pending) == [int(p.sum() + first.sum()) for p in parts]
    assert runner.gather(later) == [int(p.sum() + second.sum()) for p in parts]


def test_small_broadcasts_stay_in_the_tasks(client):
    runner = DaskRunner(client, retries=0)
    assert runner.gather(runner.map("small", _offset_sum, [np.arange(3)], offsets=np.arange(4))) == [9]
