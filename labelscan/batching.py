"""Dask's message batching, shortened on clusters that run in this process.

A scan is a chain of short steps: at 10M rows about twenty task levels one after the other and
eight round trips to the driver, most tasks taking a few milliseconds. Dask batches the messages
that carry them (``distributed`` 2026.8: the client's stream to the scheduler every 10 ms, the
scheduler's to each worker every 5 ms, a worker's to the scheduler and the scheduler's to a
client every 2 ms): a message sent less than an interval after the previous one waits for the
interval's end. On a 2-core machine, a step and its reply took 18 ms with those intervals and
11 ms with all of them at 0.5 ms; one task level 6.3 ms and 2.9 ms (``docs/benchmarks.md``).

Batching saves a busy scheduler work; a cluster that runs in this process (a ``LocalCluster``
or ``LocalCUDACluster`` whose client is this one's: labelscan's own, a notebook's, a benchmark's)
serves this process alone. Setting ``labelscan.batch-interval``:

- ``auto`` (default): :data:`LOCAL_INTERVAL` on every stream of a cluster in this process; on
  any other cluster (a scheduler shared with others) only this client's own stream;
- a duration (``"1ms"``, seconds as a number): on every stream of any cluster;
- null: Dask's intervals everywhere.

The intervals are attributes of Dask's ``BatchedSend`` streams (not a Dask setting): set on the
streams that exist, and by two plugins on those of workers and clients that join later
(restarted workers included). Outputs never depend on them.
"""

from __future__ import annotations

import logging
import weakref

from dask.utils import parse_timedelta
from distributed import Scheduler
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from labelscan import config

LOCAL_INTERVAL = 0.0005
"""Seconds between batches of every stream of a cluster in this process (setting ``auto``)."""

PLUGIN_NAME = "labelscan-batching"

logger = logging.getLogger(__name__)
_applied: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # client -> interval set


def shorten_batching(client) -> None:
    """Apply ``labelscan.batch-interval`` to ``client`` and its cluster (once per client).

    Best effort: a Dask without these streams keeps its own batching (logged), never fails a scan.
    """
    setting = config.get("batch-interval")
    if setting is None:
        return
    everywhere = setting != "auto" or in_process_cluster(client)
    interval = LOCAL_INTERVAL if setting == "auto" else parse_timedelta(setting, default="s")
    if _applied.get(client) == (interval, everywhere):
        return
    try:
        _set_interval(client.scheduler_comm, interval)
        if everywhere:
            client.register_plugin(WorkerBatching(interval), name=PLUGIN_NAME)
            client.register_plugin(SchedulerBatching(interval), name=PLUGIN_NAME)
    except Exception as error:  # noqa: BLE001 - a latency setting never fails a scan
        logger.warning("labelscan: Dask's batching intervals left as they are: %s", error)
        return
    _applied[client] = (interval, everywhere)


def in_process_cluster(client) -> bool:
    """Whether ``client``'s cluster runs its scheduler in this process (``LocalCluster`` and kin)."""
    return isinstance(getattr(getattr(client, "cluster", None), "scheduler", None), Scheduler)


def _set_interval(stream, interval: float) -> None:
    """Set a ``distributed.batched.BatchedSend``'s interval (raises when Dask has none there)."""
    if not hasattr(stream, "interval"):
        raise AttributeError(f"{type(stream).__name__} has no batching interval")
    stream.interval = interval


class WorkerBatching(WorkerPlugin):
    """Sets each worker's stream to the scheduler to ``interval`` seconds."""

    def __init__(self, interval: float):
        self.interval = interval

    def setup(self, worker):
        _set_interval(worker.batched_stream, self.interval)


class SchedulerBatching(SchedulerPlugin):
    """Sets the scheduler's streams to workers and clients to ``interval`` seconds, now and as
    they join."""

    def __init__(self, interval: float):
        self.interval = interval

    async def start(self, scheduler):
        for stream in [*scheduler.stream_comms.values(), *scheduler.client_comms.values()]:
            _set_interval(stream, self.interval)

    def add_worker(self, scheduler, worker):
        _set_interval(scheduler.stream_comms[worker], self.interval)

    def add_client(self, scheduler, client):
        # the client's stream is made after this hook returns
        scheduler.loop.add_callback(self._set_client_stream, scheduler, client)

    def _set_client_stream(self, scheduler, client):
        if client in scheduler.client_comms:
            _set_interval(scheduler.client_comms[client], self.interval)
