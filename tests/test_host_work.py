"""Output encoding outside the worker's thread pool (``labelscan.host-threads``, labelscan/host_work.py)."""

import threading

import dask.config
import distributed
import pytest
from distributed.worker_state_machine import SecedeEvent

import labelscan
from benchmarks.scale import output_digests
from labelscan.host_work import host_threads_setting, host_work
from tests.conftest import write_noisy_set


def _scan_and_count_secedes(source, out, host_threads, **options):
    """Scan on one in-process worker of one thread; the number of tasks that left its pool."""
    options = {"rows_per_partition": 1500, "issues_per_part": 300, **options}
    with dask.config.set({"labelscan.host-threads": host_threads}), \
            distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                               dashboard_address=":0") as client:
        labelscan.scan(str(source), str(out), client=client, **options)
        worker = next(iter(client.cluster.workers.values()))
        return sum(isinstance(event, SecedeEvent) for event in worker.state.stimulus_log)


@pytest.fixture(scope="module")
def noisy_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("host-work-set")
    return write_noisy_set(folder, rows=12_000, classes=5, files=3, row_group_rows=500, seed=3)


def test_host_work_beyond_the_pool_gives_the_same_outputs(noisy_set, tmp_path):
    seceded = _scan_and_count_secedes(noisy_set, tmp_path / "wide", host_threads=3)
    kept = _scan_and_count_secedes(noisy_set, tmp_path / "pool", host_threads=None)
    # every flag task (one per partition) and every rank task (one per issues part) left the pool
    ranked_parts = len(list((tmp_path / "wide" / "issues").glob("*.parquet")))
    assert ranked_parts > 1
    assert seceded == 8 + ranked_parts
    assert kept == 0
    assert output_digests(tmp_path / "wide") == output_digests(tmp_path / "pool")


def test_skipped_rows_and_ids_beyond_the_pool_give_the_same_outputs(tmp_path):
    """Rejected parts are written in the same host work as the mask parts."""
    from test_skip_rows import damaged_set

    damaged_set(tmp_path / "in")
    options = dict(on_bad_rows="skip", id_column="id", rows_per_partition=250, issues_per_part=100)
    seceded = _scan_and_count_secedes(tmp_path / "in", tmp_path / "wide", 4, **options)
    _scan_and_count_secedes(tmp_path / "in", tmp_path / "pool", None, **options)
    digests = output_digests(tmp_path / "pool")
    assert {path.split("/")[0] for path in digests} == {"issues", "mask", "rejected"}
    assert seceded > 12 and output_digests(tmp_path / "wide") == digests


def test_no_spare_cores_keeps_tasks_in_the_pool(noisy_set, tmp_path):
    assert _scan_and_count_secedes(noisy_set, tmp_path / "out", host_threads=1) == 0


def test_host_work_outside_a_worker_runs_in_place():
    with dask.config.set({"labelscan.host-threads": 4}):
        with host_work():
            ran_in = threading.current_thread()
    assert ran_in is threading.current_thread()


@pytest.mark.parametrize("value", [0, -2, "many", 2.5, True])
def test_bad_host_threads_setting_is_refused(value):
    with dask.config.set({"labelscan.host-threads": value}), \
            pytest.raises(ValueError, match="labelscan.host-threads must be a positive integer"):
        host_threads_setting()


def test_host_threads_default_is_null():
    assert host_threads_setting() is None
