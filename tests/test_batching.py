"""Dask's message batching intervals (labelscan/batching.py) on real local clusters."""

import time

import dask
import pytest

distributed = pytest.importorskip("distributed")

from labelscan import batching  # noqa: E402

DASK_CLIENT_INTERVAL = 0.01   # distributed 2026.8's own intervals
DASK_WORKER_INTERVAL = 0.002


def worker_intervals(client) -> set:
    return set(client.run(lambda dask_worker: dask_worker.batched_stream.interval).values())


def scheduler_intervals(client) -> set:
    def intervals(dask_scheduler):
        return [stream.interval for stream in [*dask_scheduler.stream_comms.values(),
                                               *dask_scheduler.client_comms.values()]]

    return set(client.run_on_scheduler(intervals))


@pytest.fixture
def cluster():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as local:
        yield local


def test_cluster_in_this_process_gets_short_intervals_on_every_stream(cluster):
    with distributed.Client(cluster) as client:
        assert batching.in_process_cluster(client)
        batching.shorten_batching(client)
        assert client.scheduler_comm.interval == batching.LOCAL_INTERVAL
        assert worker_intervals(client) == {batching.LOCAL_INTERVAL}
        assert scheduler_intervals(client) == {batching.LOCAL_INTERVAL}
        cluster.scale(2)   # a worker and a client that join later
        client.wait_for_workers(2)
        with distributed.Client(cluster):
            deadline = time.monotonic() + 10   # the new client's stream is set just after it joins
            while scheduler_intervals(client) != {batching.LOCAL_INTERVAL} and time.monotonic() < deadline:
                time.sleep(0.01)
            assert scheduler_intervals(client) == {batching.LOCAL_INTERVAL}
        assert worker_intervals(client) == {batching.LOCAL_INTERVAL}
        assert client.submit(sum, [1, 2]).result() == 3


def test_shared_scheduler_keeps_its_batching(cluster):
    with distributed.Client(cluster.scheduler_address) as client:   # as a remote scheduler's client
        assert not batching.in_process_cluster(client)
        batching.shorten_batching(client)
        assert client.scheduler_comm.interval == batching.LOCAL_INTERVAL   # this client's own stream
        assert worker_intervals(client) == {DASK_WORKER_INTERVAL}
        with dask.config.set({"labelscan.batch-interval": "1ms"}):   # a duration: any cluster
            batching.shorten_batching(client)
        assert worker_intervals(client) == {0.001}


def test_null_setting_leaves_dask_alone(cluster):
    with distributed.Client(cluster) as client, dask.config.set({"labelscan.batch-interval": None}):
        batching.shorten_batching(client)
        assert client.scheduler_comm.interval == DASK_CLIENT_INTERVAL
        assert worker_intervals(client) == {DASK_WORKER_INTERVAL}


def test_importing_labelscan_leaves_distributed_unimported():
    """The in-memory API needs no Dask cluster: the batching module (which imports distributed)
    is imported by a scan, not by ``import labelscan``."""
    import subprocess
    import sys

    code = "import sys, labelscan; print('distributed' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
