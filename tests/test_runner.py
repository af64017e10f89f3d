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


def _wait_then_sum(values, *, offsets, event_name):
    from distributed import Event

    Event(event_name).wait(timeout=60)
    return int(values.sum() + offsets.sum())


def _kill_soon():
    """SIGKILL this worker's process a moment after returning (the reply must get out first)."""
    import os
    import signal
    import threading

    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGKILL)).start()


def _holder_of(name_part, dask_scheduler=None):
    """Address of a worker holding the task whose key contains ``name_part``, or None."""
    for key, task in dask_scheduler.tasks.items():
        if name_part in str(key) and task.who_has:
            return next(iter(task.who_has)).address
    return None


def test_large_broadcast_survives_the_loss_of_its_worker():
    """A large broadcast argument is a task, not scattered data: when the worker holding it
    dies before the map's tasks ran, Dask recomputes it and the map still gives the answer."""
    import time

    from distributed import Event

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as dask_client:
        runner = DaskRunner(dask_client, retries=2)
        offsets = np.arange(BROADCAST_TASK_BYTES // 8 + 1000, dtype=np.int64)
        parts = [np.arange(5) + i for i in range(4)]
        event = Event("labelscan-test-broadcast", client=dask_client)
        pending = runner.map("waiting", _wait_then_sum, parts, offsets=offsets, event_name=event.name)
        holder = None
        for _ in range(200):   # the worker that computed the broadcast task
            holder = dask_client.run_on_scheduler(_holder_of, "waiting-offsets")
            if holder:
                break
            time.sleep(0.05)
        assert holder
        dask_client.run(_kill_soon, workers=[holder])
        for _ in range(200):   # the scheduler has lost the worker (and the broadcast's only copy)
            if holder not in dask_client.scheduler_info()["workers"]:
                break
            time.sleep(0.05)
        assert holder not in dask_client.scheduler_info()["workers"]
        event.set()
        assert runner.gather(pending) == [int(p.sum() + offsets.sum()) for p in parts]


def test_selection_families_and_flag_request_report_their_arrays_to_dask():
    """What makes the runner ship them once as a task of their own (``BROADCAST_TASK_BYTES``):
    without their ``__sizeof__`` Dask sees a few dozen bytes and copies them into every task."""
    from dask.sizeof import sizeof

    from labelscan.passes import FlagRequest
    from labelscan.selection import SelectionTasks

    pairs = 11_718   # class pairs of a K=1000 noise-rate family
    tasks = SelectionTasks("noise_rate", *(np.zeros(pairs, dtype=np.int64) for _ in range(4)), np.dtype(np.float32))
    request = FlagRequest("prune_by_noise_rate", [tasks], "self_confidence", False, np.zeros(1000, np.float32))
    assert sizeof(tasks) >= 4 * 8 * pairs > BROADCAST_TASK_BYTES
    assert sizeof(request) >= sizeof(tasks) + 4000


def test_the_multi_label_request_reports_its_arrays_to_dask():
    """The multi-label flag pass's shared request (every class's families) is sized like the
    multiclass one, so a large one is shipped once, not copied into every flag task."""
    from dask.sizeof import sizeof

    from labelscan.multilabel_passes import ClassFamily, MultiLabelRequest
    from labelscan.selection import SelectionTasks

    per_class = [SelectionTasks("noise_rate", *(np.zeros(2, dtype=np.int64) for _ in range(4)), np.dtype(np.float32))
                 for _ in range(2000)]
    family = ClassFamily.of(per_class, np.float32)
    request = MultiLabelRequest("prune_by_noise_rate", [np.zeros(2)] * 2000, [family], None, "self_confidence", False)
    assert sizeof(family) >= 2 * 4 * 8 * 2 * 2000 > BROADCAST_TASK_BYTES
    assert sizeof(request) >= sizeof(family) + 2000 * 16


def _held_on(worker_address):
    """A state naming the worker it was computed on, and no merges yet."""
    return {"place": worker_address, "crossings": 0, "items": 1}


def _merge_counting_crossings(*states):
    """Sum of the states; counts the inputs that came from another worker than this merge's."""
    from distributed import get_worker

    here = get_worker().address
    return {"place": here, "items": sum(state["items"] for state in states),
            "crossings": sum(state["crossings"] + (state["place"] != here) for state in states)}


def _with_note(state, note):
    return {**state, "note": note}


def test_reduce_by_places_moves_one_state_per_worker():
    """With the items' places, each worker's items are merged there first: one state leaves
    each worker but the root's, instead of up to one per item."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as dask_client:
        runner = DaskRunner(dask_client, retries=0)
        first, second = sorted(dask_client.scheduler_info()["workers"])
        workers = [first, second] * 12   # interleaved: every plain group of 8 spans both workers
        items = [dask_client.submit(_held_on, address, workers=[address], pure=False) for address in workers]
        dask_client.gather(items)
        places = runner.places([*items, "a value"])
        assert places == [*workers, None]
        grouped = runner.gather(runner.reduce("grouped", _merge_counting_crossings, items, places=places[:-1]))
        assert grouped["items"] == len(items) and grouped["crossings"] == 1
        items = [dask_client.submit(_held_on, address, workers=[address], pure=False) for address in workers]
        finished = runner.gather(runner.reduce("finished", _merge_counting_crossings, items, places=places[:-1],
                                               finish=_with_note, finish_args=("planned",)))
        assert finished == {**grouped, "place": finished["place"], "note": "planned"}
        items = [dask_client.submit(_held_on, address, workers=[address], pure=False) for address in workers]
        plain = runner.gather(runner.reduce("plain", _merge_counting_crossings, items))
        assert plain["items"] == len(items) and plain["crossings"] > 1


def test_in_process_places_are_none():
    from labelscan.runner import InProcessRunner

    assert InProcessRunner().places([1, 2]) == [None, None]


def _scaled_then_shifted(total, scale, shift):
    return total * scale + shift


@pytest.mark.parametrize("num_items", [1, 2, 8, 9, 70])
def test_reduce_finishes_in_the_root_merge(client, num_items):
    """``finish(merged, *finish_args)`` (a handle among them) runs in the root merge task, whose
    handle the reduce returns (a task of its own for a single item); the in-process runner
    gives the same value."""
    from labelscan.runner import InProcessRunner

    runner = DaskRunner(client, retries=0)
    scale = client.submit(lambda: 3, pure=False)
    items = [client.submit(lambda value: value, index, pure=False) for index in range(num_items)]
    finished = runner.reduce("sum", _sum_of, items, finish=_scaled_then_shifted, finish_args=(scale, 7))
    assert finished.key.startswith("labelscan-sum-")
    assert runner.gather(finished) == sum(range(num_items)) * 3 + 7
    assert InProcessRunner().reduce("sum", _sum_of, list(range(num_items)), finish=_scaled_then_shifted,
                                    finish_args=(3, 7)) == sum(range(num_items)) * 3 + 7


def _sum_of(*values):
    return sum(values)
