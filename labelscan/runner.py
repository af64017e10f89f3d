"""Where the engine's per-partition steps run: in this process, or on a Dask cluster.

The engine is written once against :class:`Runner`: ``map`` a function over partitions,
``submit`` one task, tree-``reduce`` small states, ``gather`` small results. Values returned by
``map`` stay where they were computed (worker memory on Dask); only what the engine
``gather``s travels to the driver.

``reduce`` consumes its items: on Dask it releases the client's hold on them once the merge
tasks are submitted, and its merge tasks run ahead of pending per-partition tasks
(:data:`REDUCE_PRIORITY`), so a map + reduce over P partitions keeps about
``threads × split_every`` partial states in worker memory instead of all P of them.
"""

from __future__ import annotations

import time
import uuid
import weakref

DEFAULT_SPLIT_EVERY = 8
"""Fan-in of tree reductions."""

REDUCE_PRIORITY = 1
"""Dask priority of tree-merge tasks (per-partition tasks have 0): a merge whose inputs are
ready runs before further inputs are computed, and frees them."""

BROADCAST_TASK_BYTES = 100_000
"""Broadcast arguments of ``map`` larger than this travel as a task of their own, under a
unique key. Dask's ``Client.map`` puts such keyword arguments in the graph under the
argument's *name* (``sizeof > 1e5``, distributed 2026.8): two maps passing a large ``active=``
collide on the key ``"active"`` and the scheduler fails (an ``assert ts.priority``) or hangs;
K=1000 selection rounds hit it. A task (not ``scatter``) keeps the value recomputable when the
worker holding it dies."""

STOP_TIMEOUT = 300.0
"""Most seconds a failed run waits for its tasks already executing on workers to end."""


class InProcessRunner:
    """Runs every step eagerly in the calling process (used for in-memory arrays); priorities
    change nothing here."""

    def map(self, name, function, *per_partition, priority=0, **broadcast):
        return [function(*args, **broadcast) for args in zip(*per_partition)]

    def submit(self, name, function, *args, priority=0, **kwargs):
        return function(*args, **kwargs)

    def reduce(self, name, function, items, split_every=DEFAULT_SPLIT_EVERY, priority=REDUCE_PRIORITY,
               places=None, finish=None, finish_args=()):
        merged = _tree(lambda group_name, group, last: function(*group), name, items, split_every)
        return merged if finish is None else finish(merged, *finish_args)

    def gather(self, handles):
        return handles

    def places(self, handles) -> list:
        """Where each of ``handles`` is held: nowhere apart in one process."""
        return [None] * len(handles)

    def wait(self, handles) -> None:
        """Everything is computed already."""

    def release(self, handles) -> None:
        """Nothing to free in process."""


class DaskRunner:
    """Runs steps as named tasks on a ``distributed.Client``.

    Parameters
    ----------
    client : distributed.Client
    retries : int
        Passed to every submission (annotations would be dropped by Dask's planner).
    """

    def __init__(self, client, retries: int = 2):
        self.client = client
        self.retries = retries
        self._futures = weakref.WeakSet()   # every future still referenced, for stop()

    @staticmethod
    def _keys(name, count):
        # one per call (the same step runs in several rounds); the leading digit makes Dask's
        # key_split always drop it, so the dashboard shows the step's name
        token = "0" + uuid.uuid4().hex[:15]
        return [f"labelscan-{name}-{token}-{i}" for i in range(count)]

    def map(self, name, function, *per_partition, priority=0, **broadcast):
        """One task per partition: ``function(*args, **broadcast)``.

        ``priority``: Dask's task priority (higher runs first among ready tasks; tasks of equal
        priority run in submission order)."""
        count = len(per_partition[0])
        if not count:
            return []
        futures = self.client.map(function, *per_partition, key=self._keys(name, count),
                                  retries=self.retries, pure=False, priority=priority,
                                  **self._broadcast(name, broadcast))
        self._futures.update(futures)
        return futures

    def _broadcast(self, name: str, arguments: dict) -> dict:
        """``arguments`` with each large value replaced by the future of a task returning it
        (see :data:`BROADCAST_TASK_BYTES`)."""
        from dask.sizeof import sizeof

        return {argument: self.submit(f"{name}-{argument}", _identity, value)
                if sizeof(value) > BROADCAST_TASK_BYTES else value for argument, value in arguments.items()}

    def submit(self, name, function, *args, priority=0, **kwargs):
        future = self.client.submit(function, *args, key=self._keys(name, 1)[0], retries=self.retries,
                                    pure=False, priority=priority, **kwargs)
        self._futures.add(future)
        return future

    def reduce(self, name, function, items, split_every=DEFAULT_SPLIT_EVERY, priority=REDUCE_PRIORITY,
               places=None, finish=None, finish_args=()):
        """Tree-merge ``items`` (futures or values); the items are consumed (released).

        ``places``: per item, where it will be computed (:meth:`places` of its inputs), for a
        ``function`` whose result does not depend on the order of its items: the items of each
        place are merged there first, so one state per place travels instead of one per item
        (a GPU worker's dense cutoff histogram is 24 MB at 10 classes).

        ``finish``: ``finish(merged, *finish_args)`` (arguments: values or handles) is run by the
        root merge task itself (by a task of its own for a single item), and the handle is that
        of its result: one task level (a scheduler round trip, 2-4 ms) sooner than a task
        submitted after the merge."""
        def merge(group_name, group, last):
            arguments = (function, *group) if not last or finish is None else (
                _merged_then, function, len(group), finish, *group, *finish_args)
            future = self.client.submit(*arguments, key=self._keys(group_name, 1)[0],
                                        retries=self.retries, pure=False, priority=priority)
            self._futures.add(future)
            return future

        items = list(items)
        groups = [items] if places is None else _by_place(items, places)
        if len(groups) == 1:
            root = _tree(merge, name, items, split_every, finish_root=True)
        else:
            root = _tree(merge, name, [_tree(merge, name, group, split_every) for group in groups], split_every,
                         finish_root=True)
        if len(items) > 1:   # the merge tasks hold them now; each is freed once merged
            self.release([item for item in items if item is not root])
        elif finish is not None:   # no merge task to finish in
            root = self.submit(name, finish, root, *finish_args, priority=priority)
        return root

    def gather(self, handles):
        """The results; on failure, :meth:`stop` this runner's other tasks before raising."""
        try:
            return self.client.gather(handles)
        except BaseException:
            self.stop()
            raise

    def places(self, handles) -> list:
        """Per handle, the address of a worker holding its result (the first in address order),
        or ``None`` for a value or a result not held anywhere (yet): one scheduler round trip."""
        from distributed import Future

        futures = [handle for handle in handles if isinstance(handle, Future)]
        holders = self.client.who_has(futures) if futures else {}
        return [min(holders.get(handle.key) or [None]) if isinstance(handle, Future) else None
                for handle in handles]

    def wait(self, handles) -> None:
        """Wait until the futures among ``handles`` (a list; values are skipped) are computed; on
        failure, :meth:`stop` this runner's other tasks before raising."""
        from distributed import Future, wait

        futures = [handle for handle in handles if isinstance(handle, Future)]
        try:
            wait(futures)
            for future in futures:
                if future.status == "error":
                    future.result()   # raises the task's error
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Cancel this runner's unfinished tasks and wait until none still executes on a worker.

        A task that already started runs to its end (a thread cannot be interrupted); waiting
        for it keeps a failed run from writing objects after the call has returned (a rerun's
        ``begin`` could otherwise be followed by a late object of the failed run). Best effort:
        errors while stopping are swallowed, the run's own error matters.
        """
        try:
            pending = [future for future in list(self._futures) if not future.done()]
            if not pending:
                return
            keys = {future.key for future in pending}
            self.client.cancel(pending, force=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not any(self.client.run(_executing_keys, keys).values()):
                    return
                time.sleep(0.05)
        except Exception:  # noqa: BLE001 - never hide the error that stopped the run
            return

    def release(self, handles) -> None:
        """Drop the client's references so workers can free the data."""
        for handle in handles if isinstance(handles, list) else [handles]:
            if hasattr(handle, "release"):
                handle.release()


def _identity(value):
    """``value`` itself (a task holding a broadcast argument)."""
    return value


def _executing_keys(keys, dask_worker=None) -> list:
    """Keys of ``keys`` whose task is executing on this worker (cancelled ones included)."""
    state = dask_worker.state
    return [task.key for task in (*state.executing, *state.long_running) if task.key in keys]


def _by_place(items: list, places: list) -> list:
    """``items`` grouped by their place (a group per distinct place, in order of first item)."""
    groups = {}
    for item, place in zip(items, places, strict=True):
        groups.setdefault(place, []).append(item)
    return list(groups.values())


def _merged_then(function, num_items: int, finish, *values):
    """``finish(function(*items), *finish_args)`` of ``values = (*items, *finish_args)``: a root
    merge and what follows it, in one task."""
    return finish(function(*values[:num_items]), *values[num_items:])


def _tree(combine, name, items, split_every, finish_root=False):
    """Merge ``items`` by groups of ``split_every`` with ``combine(name, group, last)``, level after
    level, down to one; ``last`` is true for the root's merge when ``finish_root``."""
    items = list(items)
    if not items:
        raise ValueError("nothing to reduce")
    while len(items) > 1:
        last = finish_root and len(items) <= split_every
        items = [combine(name, items[i:i + split_every], last) if len(items[i:i + split_every]) > 1
                 else items[i] for i in range(0, len(items), split_every)]
    return items[0]
