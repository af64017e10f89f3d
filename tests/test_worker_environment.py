"""Worker processes labelscan starts: glibc's allocator keeping a bounded amount of freed memory
(or, asked for glibc's defaults, left adaptive), Arrow decoding on every core, the objects of the
imports frozen out of full garbage collections.

Dask's nanny spawns workers with ``MALLOC_TRIM_THRESHOLD_=65536`` and ``OMP_NUM_THREADS=1``;
the first turns off glibc's adaptive mmap threshold (numpy temporaries page-fault again on every
allocation), the second sizes Arrow's CPU pool to one thread. Measured effect in
docs/benchmarks.md; these tests pin the mechanisms on a real ``LocalCluster``.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import Client, LocalCluster

from labelscan.io import plan_dataset, read_partition
from labelscan.io.dataset import _decode_hint
from labelscan.io.threads import available_cores


def _worker_values(client, function):
    return list(client.run(function).values())


REPOSITORY = Path(__file__).resolve().parents[1]

WORKER_TRIM_SETTING = """
import os
from distributed import Client, LocalCluster
from labelscan.cluster import local_cluster

def trim():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")

def malloc():
    return [os.environ.get(name) for name in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")]

if __name__ == "__main__":
    with local_cluster(n_workers=1, threads_per_worker=1, memory_limit="1GB", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        print("labelscan kept", list(client.run(malloc).values()))
    with local_cluster(worker_malloc={}, n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        print("labelscan", list(client.run(trim).values()))
    # the mechanism it undoes: a plain LocalCluster sets the variable
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        print("dask", list(client.run(trim).values()))
"""


def test_labelscan_workers_keep_a_quarter_of_their_memory_limit_or_glibcs_defaults(tmp_path):
    """In a fresh interpreter: Dask's nanny writes the variable into its own process's
    environment, so a cluster started earlier in this test process would leak it."""
    script = tmp_path / "trim.py"
    script.write_text(WORKER_TRIM_SETTING)
    environment = {key: value for key, value in os.environ.items() if key != "MALLOC_TRIM_THRESHOLD_"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), environment.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=environment,
                            timeout=120, check=True)
    assert "labelscan kept [['1', '4294967296', '250000000']]" in result.stdout
    assert "labelscan [None]" in result.stdout
    assert "dask ['65536']" in result.stdout


def test_reading_a_partition_sizes_arrows_pool_to_the_cores(tmp_path):
    table = pa.table({"label": np.arange(8) % 2,
                      "pred_probs": pa.FixedSizeListArray.from_arrays(pa.array(np.full(16, 0.5, np.float32)), 2)})
    pq.write_table(table, tmp_path / "part-0.parquet")
    plan = plan_dataset(str(tmp_path))

    def read_and_report():
        read_partition(plan, plan.partitions[0])
        return pa.cpu_count()

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        assert _worker_values(client, pa.cpu_count) == [1]      # the nanny's OMP_NUM_THREADS=1
        assert _worker_values(client, read_and_report) == [available_cores()]


def test_decode_errors_of_null_fixed_size_lists_say_what_to_do():
    error = pa.ArrowInvalid("Expected all lists to be of size=4 but index 77 had size=0")
    assert "apache/arrow#35692" in _decode_hint(error)
    assert _decode_hint(pa.ArrowInvalid("Couldn't deserialize thrift")) == ""


def test_gpu_worker_malloc_settings_reach_the_workers_and_stay_out_of_this_process():
    """What ``local_cuda_cluster`` spawns its workers with (shown on a LocalCluster: same
    nanny): the workers see :data:`GPU_WORKER_MALLOC`, and the environment the nanny wrote
    into this process is put back."""
    from labelscan.cluster import GPU_WORKER_MALLOC, worker_environment

    before = {name: os.environ.get(name) for name in GPU_WORKER_MALLOC}

    def malloc_settings():
        return {name: os.environ.get(name) for name in GPU_WORKER_MALLOC}

    with worker_environment(GPU_WORKER_MALLOC):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None)
    with cluster, Client(cluster) as client:
        assert _worker_values(client, malloc_settings) == [GPU_WORKER_MALLOC]
        assert {name: os.environ.get(name) for name in GPU_WORKER_MALLOC} == before


def test_worker_settings_reach_the_workers_and_stay_out_of_this_process():
    """``worker_environment``'s Dask settings (how ``local_cuda_cluster`` gives its workers
    ``labelscan.host-threads``) reach spawned workers, and only them."""
    import dask.config

    from labelscan.cluster import worker_environment

    with worker_environment({}, {"labelscan.host-threads": 3}):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None)
    with cluster, Client(cluster) as client:
        assert _worker_values(client, lambda: dask.config.get("labelscan.host-threads")) == [3]
        assert dask.config.get("labelscan.host-threads") is None


def test_gpu_workers_share_the_host_cores():
    """One worker per GPU the cluster uses: the GPUs it is given, else every GPU found."""
    from labelscan.cluster import cores_per_gpu_worker
    from labelscan.io.threads import available_cores

    cores = available_cores()
    assert cores_per_gpu_worker("0", lambda: 4) == cores
    assert cores_per_gpu_worker("0,1", lambda: 4) == max(1, cores // 2)
    assert cores_per_gpu_worker(None, lambda: 2) == max(1, cores // 2)
    assert cores_per_gpu_worker(None, lambda: 0) == cores
    assert cores_per_gpu_worker("0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", lambda: 1) == 1


def _frozen_objects_and_preload():
    import gc

    import dask

    return gc.get_freeze_count(), dask.config.get("distributed.worker.preload")


def test_labelscan_workers_freeze_their_imports():
    """The workers labelscan starts preload :mod:`labelscan.worker_setup`: the objects alive
    after its imports (labelscan's task modules among them) are frozen; a plain LocalCluster's
    are not, and the setting is undone once the workers are up."""
    import dask

    from labelscan.cluster import local_cluster

    before = dask.config.get("distributed.worker.preload")
    with local_cluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        (frozen, preload), = _worker_values(client, _frozen_objects_and_preload)
        imported = _worker_values(client, lambda: "labelscan.scan" in sys.modules)
    assert frozen > 10_000 and "labelscan.worker_setup" in preload and imported == [True]
    assert dask.config.get("distributed.worker.preload") == before
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        (frozen, preload), = _worker_values(client, _frozen_objects_and_preload)
    assert frozen == 0 and "labelscan.worker_setup" not in preload


def test_workers_in_this_process_leave_its_objects_alone():
    import gc

    from labelscan.cluster import local_cluster

    frozen = gc.get_freeze_count()
    with local_cluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        assert _worker_values(client, _frozen_objects_and_preload)[0][0] == frozen


def test_cpu_worker_malloc_reads_memory_limits_as_localcluster_takes_them():
    from distributed.system import MEMORY_LIMIT

    from labelscan.cluster import cpu_worker_malloc

    def kept(memory_limit, n_workers=1):
        return int(cpu_worker_malloc(memory_limit, n_workers)["MALLOC_TRIM_THRESHOLD_"])

    total = MEMORY_LIMIT   # the host's memory as LocalCluster reads it (cgroup and rlimit bounds included)
    assert kept("2.5GB") == 625_000_000
    assert kept(4_000_000_000) == 1_000_000_000
    assert kept(0.5) == int(total * 0.5 * 0.25)
    assert kept("auto", 2) == kept(None, 2) == kept(0, 2) == int(total / 2 * 0.25)
