"""Worker processes killed at random points of every pass: byte-identical outputs (issue 6).

A real ``LocalCluster(n_workers=2, processes=True)``. For each seed of a fixed list, a
scheduler plugin picks a stage (``read``, ``counts``, ``thresholds``, ``joint``,
``cutoffs-resolve`` (the exact selection), ``flag`` = the mask write, ``rank`` = the issues write), the n-th task of that stage to start
and a delay, and SIGKILLs the worker process running that task (its nanny starts a new one).
Every file of the scan must then equal a clean run's: parquet parts by sha256,
``summary.json`` without its ``timings``, the ``_SUCCESS`` manifest without the entry of
``summary.json``; no stray file (a staging file of a killed write) may remain.

Kills in the ``thresholds`` .. ``rank`` stages of a cached scan also destroy the decoded
partitions (``labelscan-read`` results) held by the killed worker: Dask recomputes them from
their recipe. Task functions are slowed down by a few milliseconds on the workers (a worker
plugin, so restarted workers too) so that every stage lasts long enough to be hit.

The count of kills survived is printed in the terminal summary and written to
``<pytest basetemp>/reliability.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import labelscan
from labelscan.demo_data import make_noisy_dataset

distributed = pytest.importorskip("distributed")

ROWS, CLASSES, FILES, ROW_GROUP_ROWS = 4_800, 4, 3, 200
SCAN = {"rows_per_partition": 400, "issues_per_part": 150}      # 12 partitions, several issues parts
NUM_PARTITIONS = ROWS // SCAN["rows_per_partition"]
STAGES = ("read", "counts", "thresholds", "joint", "cutoffs-resolve", "flag", "mask", "rank")
UNCACHED_STAGES = ("counts", "thresholds", "joint", "cutoffs-resolve", "flag", "mask", "rank", "joint")   # no read
SLOWED = {"labelscan.passes": ("prepare", "label_counts", "threshold_pieces", "row_facts"),
          "labelscan.selection": ("histogram", "resolve_pieces"),
          "labelscan.scan": ("flag_partition", "write_mask", "write_ranked")}
TASK_SECONDS = 0.02
DEFAULT_SEEDS = list(range(2 * len(STAGES)))   # every stage twice, cached and not
SLOW_SEEDS = list(range(2 * len(STAGES), 8 * len(STAGES)))


def kill_plan(seed: int) -> dict:
    """Stage, cache setting, which task of the stage (n-th to start) and the delay after it starts."""
    rng = np.random.default_rng(seed)
    cache = (seed // len(STAGES)) % 2 == 0
    stage = (STAGES if cache else UNCACHED_STAGES)[seed % len(STAGES)]
    tasks = {"rank": 3}.get(stage, NUM_PARTITIONS)
    return {"seed": seed, "stage": stage, "cache": cache,
            "nth": int(rng.integers(1, tasks + 1)), "delay": float(rng.uniform(0, TASK_SECONDS))}


def stage_of(key) -> str | None:
    """``labelscan-<stage>-<token>-<i>`` -> ``<stage>``."""
    if not isinstance(key, str) or not key.startswith("labelscan-"):
        return None
    return key[len("labelscan-"):].rsplit("-", 2)[0]


class Killer(distributed.diagnostics.plugin.SchedulerPlugin):
    """Kills the worker process running the ``nth`` task of ``stage``, ``delay`` s after it starts."""

    name = "labelscan-killer"

    def __init__(self, scheduler, stage, nth, delay):
        self.scheduler, self.stage, self.nth, self.delay = scheduler, stage, nth, delay
        self.started = 0
        self.fired = None
        self.timer = None
        self.runs = {}   # stage -> tasks sent to a worker (more than once when recomputed)

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "processing":
            self.runs[stage_of(key)] = self.runs.get(stage_of(key), 0) + 1
        if self.fired is not None or finish != "processing" or stage_of(key) != self.stage:
            return
        self.started += 1
        if self.started < self.nth:
            return
        worker = self.scheduler.tasks[key].processing_on
        self.fired = {"key": key, "worker": worker.address, "pid": worker.pid}
        self.timer = threading.Timer(self.delay, os.kill, (worker.pid, signal.SIGKILL))
        self.timer.start()


def slow_tasks_plugin(seconds):
    """A worker plugin slowing labelscan's per-partition task functions by ``seconds`` each."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class SlowTasks(WorkerPlugin):
        name = "labelscan-slow-tasks"

        def setup(self, worker):
            import functools
            import importlib
            import time

            for module_name, names in SLOWED.items():
                module = importlib.import_module(module_name)
                for name in names:
                    original = getattr(module, name)
                    if getattr(original, "_slowed", False):
                        continue

                    def slowed(*args, __original=original, **kwargs):
                        time.sleep(seconds)
                        return __original(*args, **kwargs)

                    slowed = functools.wraps(original)(slowed)
                    slowed._slowed = True
                    setattr(module, name, slowed)

    return SlowTasks()


def outputs(folder: Path) -> dict:
    """What must match a clean run: every part's digest, the summary but timings, the manifest
    but summary.json's entry (its digest covers the timings)."""
    found = {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
             if path.is_file()}
    summary = json.loads(found.pop("summary.json"))
    summary.pop("timings")
    manifest = json.loads(found.pop("_SUCCESS"))
    manifest["files"] = [entry for entry in manifest["files"] if entry["path"] != "summary.json"]
    return {"parts": {name: hashlib.sha256(data).hexdigest() for name, data in found.items()},
            "summary": summary, "manifest": manifest}


@pytest.fixture(scope="module")
def cluster():
    # LocalCluster closes a worker's nanny for good when, lost-worker-timeout (15 s) after the
    # worker was removed, no worker of that name is registered: with a kill every ~2 s that
    # moment can fall while the same worker restarts again. Keep the nannies.
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                     memory_limit="1GiB") as local, distributed.Client(local) as client:
        client.register_plugin(slow_tasks_plugin(TASK_SECONDS))
        yield local, client


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults-data")
    data = make_noisy_dataset(ROWS, CLASSES, noise_rate=0.25, seed=11)
    bounds = np.linspace(0, ROWS, FILES + 1).astype(int)
    for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        table = pa.table({"label": data["labels"][start:stop],
                          "pred_probs": pa.FixedSizeListArray.from_arrays(
                              pa.array(data["pred_probs"][start:stop].ravel()), CLASSES)})
        pq.write_table(table, folder / f"part-{index}.parquet", row_group_size=ROW_GROUP_ROWS)
    return folder


@pytest.fixture(scope="module")
def references(cluster, dataset, tmp_path_factory):
    """Clean runs, cached and not: their outputs (identical but for ``cached_partitions``)."""
    client = cluster[1]
    found = {}
    for cache in (True, False):
        out = tmp_path_factory.mktemp("reference") / "out"
        labelscan.scan(str(dataset), str(out), client=client, cache=cache, **SCAN)
        found[cache] = outputs(out)
    assert found[True]["parts"] == found[False]["parts"]
    return found


@pytest.fixture(scope="module")
def kill_log(reliability_figures):
    log = []
    yield log
    survived = [entry for entry in log if entry["survived"]]
    reliability_figures["worker kills survived (byte-identical outputs)"] = (
        f"{len(survived)} of {len(log)}; by stage " + json.dumps(
            {stage: sum(entry["stage"] == stage for entry in survived) for stage in STAGES}))
    reliability_figures["cached partitions lost with a killed worker and re-read"] = (
        f"{sum(entry['reads_recomputed'] or 0 for entry in survived)} partitions in "
        f"{sum(bool(entry['reads_recomputed']) for entry in survived)} runs")


def wait_for_running_workers(local, count=2, timeout=60.0):
    """Wait until the scheduler lists ``count`` running workers (a killed worker's nanny starts a
    new process)."""
    deadline = time.monotonic() + timeout
    while True:
        running = [worker for worker in list(local.scheduler.workers.values())
                   if worker.status.name == "running"]
        if len(running) >= count:
            return
        if time.monotonic() > deadline:
            nannies = {name: getattr(worker, "status", None) for name, worker in local.workers.items()}
            pytest.fail(f"{len(running)} of {count} workers running after {timeout} s; nannies {nannies}")
        time.sleep(0.05)


def run_with_kill(plan, cluster, dataset, references, out, kill_log):
    local, client = cluster
    wait_for_running_workers(local)
    killer = Killer(local.scheduler, plan["stage"], plan["nth"], plan["delay"])
    local.scheduler.add_plugin(killer, name=Killer.name)
    try:
        labelscan.scan(str(dataset), str(out), client=client, cache=plan["cache"], retries=2, **SCAN)
    finally:
        local.scheduler.remove_plugin(name=Killer.name)
        if killer.timer is not None:
            killer.timer.join()
    entry = {**plan, "fired": killer.fired, "survived": False,
             "reads_recomputed": killer.runs.get("read", 0) - NUM_PARTITIONS if plan["cache"] else None}
    kill_log.append(entry)
    assert killer.fired is not None, f"no task of stage {plan['stage']} reached #{plan['nth']}"
    workers = client.run(os.getpid)
    assert killer.fired["pid"] not in workers.values(), "the worker was not killed"
    got = outputs(out)
    reference = references[plan["cache"]]
    assert sorted(got["parts"]) == sorted(reference["parts"]), "stray or missing files"
    assert got["parts"] == reference["parts"]
    assert got["summary"] == reference["summary"]
    assert got["manifest"] == reference["manifest"]
    labelscan.open_scan(str(out))   # every checksum verified
    if plan["cache"] and plan["stage"] in ("thresholds", "joint", "cutoffs-resolve", "flag"):
        # the killed worker held cached partitions: they were read again from their recipe
        assert entry["reads_recomputed"] > 0, killer.runs
    entry["survived"] = True


@pytest.mark.parametrize("seed", DEFAULT_SEEDS)
def test_worker_killed_outputs_identical(seed, cluster, dataset, references, tmp_path, kill_log):
    run_with_kill(kill_plan(seed), cluster, dataset, references, tmp_path / "out", kill_log)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_worker_killed_outputs_identical_more_seeds(seed, cluster, dataset, references, tmp_path, kill_log):
    run_with_kill(kill_plan(seed), cluster, dataset, references, tmp_path / "out", kill_log)


def test_kill_plans_cover_every_stage_cached_and_not():
    plans = [kill_plan(seed) for seed in DEFAULT_SEEDS]
    assert {(plan["stage"], plan["cache"]) for plan in plans} == (
        {(stage, True) for stage in STAGES} | {(stage, False) for stage in UNCACHED_STAGES})
