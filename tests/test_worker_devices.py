"""The workers' GPUs are asked once per worker process (labelscan.worker_devices)."""

import pytest

distributed = pytest.importorskip("distributed")

from labelscan.backend import cluster_backend  # noqa: E402
from labelscan.worker_devices import worker_device_memories  # noqa: E402


def test_workers_are_asked_once_per_process():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        asked = []
        run = client.run
        client.run = lambda *args, **kwargs: asked.append(kwargs.get("workers")) or run(*args, **kwargs)
        first = worker_device_memories(client)
        assert set(first) == set(client.scheduler_info()["workers"])
        assert worker_device_memories(client) == first
        assert cluster_backend(client, "auto") in ("numpy", "cupy")
        assert len(asked) == 1 and sorted(asked[0]) == sorted(first)
        client.restart()   # new worker processes: asked again
        client.wait_for_workers(2)
        assert set(worker_device_memories(client)) == set(client.scheduler_info()["workers"])
        assert len(asked) == 2
