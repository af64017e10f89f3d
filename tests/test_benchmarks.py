"""The benchmark modules' own logic, on tiny inputs (their measurements live in docs/benchmarks.md)."""

import json

import pytest

from benchmarks import device_reads, encode, host_writes, malloc, reader, staging
from benchmarks.cpu import Recorder, interleaved_rounds, paired_ratio, timed_runs
from benchmarks.scale import before_run, add_speedups
from labelscan.io import pages
from labelscan.xp import cupy_or_none


def test_reader_benchmark_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(pages, "MAX_CORES", pages.MAX_CORES)   # restored after the benchmark's choices
    out = tmp_path / "reader.json"
    reader.main(["--size", "20Kx10", "--threads", "1,2", "--repeat", "1", "--jobs", "1",
                 "--data-dir", str(tmp_path), "--out", str(out)])
    records = json.loads(out.read_text())
    assert {(r["benchmark"], r["metric"]) for r in records} >= {
        ("read_arrow", "rows_per_second_2_threads"), ("read_pages", "seconds_1_threads")}
    assert pages.MAX_CORES in reader.DECODERS.values()


def test_device_reads_benchmark_times_the_host_part_everywhere(tmp_path):
    out = tmp_path / "device-reads.json"
    device_reads.main(["--size", "20Kx10", "--repeat", "1", "--jobs", "1", "--data-dir", str(tmp_path),
                       "--out", str(out)])
    found = {record["metric"]: record["value"] for record in json.loads(out.read_text())}
    assert found["partition_rows"] == 20_000 and found["stored_bytes"] > 20_000 * 10 * 4 * 0.8
    assert found["host_seconds"] > 0


def test_timed_runs_call_before_ahead_of_each_run_untimed():
    calls = []
    seconds, result = timed_runs(lambda: calls.append("run") or len(calls), 3, before=lambda: calls.append("sync"))
    assert calls == ["sync", "run"] * 3 and len(seconds) == 3 and result == 6


def test_rounds_interleave_the_runs_and_stop_a_run_at_its_budget():
    calls = []
    timed = interleaved_rounds({"a": lambda: calls.append("a") or len(calls), "b": lambda: calls.append("b")},
                               3, {"b": 0.0})
    assert calls == ["a", "b", "a", "a"]   # b's budget is spent after its first round
    assert len(timed["a"]["seconds"]) == 3 and len(timed["b"]["seconds"]) == 1 and timed["a"]["result"] == 4


def test_paired_ratio_is_the_median_of_the_rounds_ratios():
    assert paired_ratio([10.0, 30.0, 8.0], [1.0, 2.0, 4.0]) == 10.0
    assert paired_ratio([6.0, 9.0], [2.0]) == 3.0   # rounds the denominator did not run are left out


def test_cpu_benchmark_runs_in_rounds_and_records_paired_ratios(tmp_path):
    from benchmarks import cpu

    out = tmp_path / "cpu.json"
    cpu.main(["--sizes", "20Kx10", "--memory-size", "none", "--repeat", "2", "--threads", "1",
              "--data-dir", str(tmp_path), "--out", str(out)])
    found = {(r["benchmark"], r["metric"]): r for r in json.loads(out.read_text())}
    assert found[("labelscan", "seconds")]["repeats"] == found[("cleanlab", "seconds")]["repeats"] == 2
    assert found[("comparison", "speedup_vs_cleanlab_paired")]["value"] > 0
    assert found[("cleanlab", "mask_rows_differing")]["value"] == 0


def test_speedups_are_against_one_gpu_whatever_the_order():
    recorder = Recorder({}, {})
    add_speedups(recorder, "1Bx10", {4: 20.0, 2: 30.0, 1: 60.0}, {4: {"a": "x"}, 2: {"a": "x"}, 1: {"a": "x"}})
    found = {(r["benchmark"], r["metric"]): r["value"] for r in recorder.records}
    assert found[("labelscan_4gpu", "speedup_vs_1gpu")] == 3.0
    assert found[("labelscan_2gpu", "speedup_vs_1gpu")] == 2.0
    assert found[("labelscan_2gpu", "outputs_identical_to_1gpu")] is True
    assert ("labelscan_1gpu", "speedup_vs_1gpu") not in found


def test_speedups_without_one_gpu_use_the_fewest():
    recorder = Recorder({}, {})
    add_speedups(recorder, "1Bx10", {4: 20.0, 2: 30.0}, {4: {"a": "x"}, 2: {"a": "y"}})
    found = {(r["benchmark"], r["metric"]): r["value"] for r in recorder.records}
    assert found[("labelscan_4gpu", "speedup_vs_2gpu")] == 1.5
    assert found[("labelscan_4gpu", "outputs_identical_to_2gpu")] is False


def test_encode_benchmark_runs_and_checks_the_bytes(tmp_path):
    out = tmp_path / "encode.json"
    encode.main(["--rows", "20000", "--busy", "0,1", "--repeat", "1", "--out", str(out)])
    records = json.loads(out.read_text())
    metrics = {(r["benchmark"], r["metric"]) for r in records}
    assert metrics >= {("encode_arrow_buffer", "seconds_1_busy_threads"), ("encode_python_file", "seconds_0_busy_threads"),
                       ("encode", "bytes")}


def test_host_writes_benchmark_records_every_step_and_leaves_no_parts(tmp_path):
    out = tmp_path / "host-writes.json"
    parts = tmp_path / "parts"
    parts.mkdir()
    host_writes.main(["--rows", "20000", "--threads", "1,2", "--calls-per-thread", "2", "--dir", str(parts),
                      "--out", str(out)])
    records = json.loads(out.read_text())
    metrics = {(r["benchmark"], r["metric"]): r for r in records}
    for step in ("encode", "sha256", "put_bytes"):
        for threads in (1, 2):
            assert metrics[(f"host_writes_{step}", f"per_call_seconds_{threads}_threads")]["repeats"] == 2 * threads
    assert metrics[("host_writes", "part_bytes")]["value"] > 0
    assert list(parts.iterdir()) == []


def test_malloc_benchmark_runs_on_cpu(tmp_path):
    """Both settings on the CPU cluster, each recorded."""
    out = tmp_path / "malloc.json"
    malloc.main(["--cpu", "--size", "20Kx10", "--repeat", "1", "--jobs", "1", "--data-dir", str(tmp_path),
                 "--out", str(out)])
    records = json.loads(out.read_text())
    assert {(r["benchmark"], r["metric"]) for r in records} >= {
        ("malloc_glibc_cpu", "seconds"), ("malloc_labelscan_cpu", "stage_flag")}


def test_scale_runs_start_from_an_empty_destination_unless_rerun(tmp_path):
    out = tmp_path / "out"
    (out / "mask").mkdir(parents=True)
    (out / "mask" / "part-00000.parquet").write_bytes(b"old")
    before_run(out, "rerun")   # the scan replaces the old outputs itself, timed
    assert (out / "mask" / "part-00000.parquet").exists()
    before_run(out, "fresh")
    assert not out.exists()
    before_run(out, "fresh")   # nothing to remove


@pytest.mark.gpu
@pytest.mark.skipif(cupy_or_none() is None, reason="needs CuPy and a GPU")
def test_staging_benchmark_times_both_ways_of_pinning(tmp_path):
    out = tmp_path / "staging.json"
    staging.main(["--mib", "4", "--threads", "2", "--repeat", "1", "--out", str(out)])
    found = {(record["benchmark"], record["metric"]): record["value"] for record in json.loads(out.read_text())}
    for method in ("cuda_host_alloc", "registered_huge_pages"):
        assert found[(method, "seconds_1_thread")] > 0 and found[(method, "wall_seconds_2_threads")] > 0
        assert found[(method, "h2d_gb_per_second")] > 0
    assert found[("staging", "buffer_bytes")] == 4 << 20


@pytest.mark.gpu
@pytest.mark.skipif(cupy_or_none() is None, reason="needs CuPy and a GPU")
def test_gpu_benchmark_runs_its_measurements_in_interleaved_rounds(tmp_path):
    from benchmarks import gpu

    out = tmp_path / "gpu.json"
    gpu.main(["--sizes", "200Kx10", "--cpu-sizes", "200Kx10", "--cleanlab-sizes", "200Kx10", "--kernel-rows", "",
              "--repeat", "2", "--cleanlab-budget", "0", "--data-dir", str(tmp_path / "data"), "--out", str(out)])
    records = json.loads(out.read_text())
    found = {(record["benchmark"], record["metric"]): record for record in records}
    assert found[("labelscan_gpu", "seconds")]["repeats"] == 2
    assert found[("cleanlab", "seconds")]["repeats"] == 1   # its budget spent in the first round
    assert found[("labelscan_gpu", "mask_rows_differing")]["value"] == 0
    assert found[("labelscan_gpu", "speedup_vs_cleanlab_paired")]["value"] > 0
    assert found[("labelscan_gpu", "speedup_vs_labelscan_cpu_paired")]["value"] > 0
    assert found[("labelscan_gpu", "first_scan_seconds")]["value"] > 0


def test_ab_benchmark_times_two_trees_in_alternating_processes(tmp_path):
    import shutil

    from benchmarks import ab

    baseline = tmp_path / "baseline"
    shutil.copytree(ab.REPOSITORY / "labelscan", baseline / "labelscan")
    out = tmp_path / "ab.json"
    records = ab.compare(ab.parse_arguments(["--baseline", str(baseline), "--size", "20Kx10", "--rounds", "1",
                                           "--scans", "2", "--warmup", "0", "--data-dir", str(tmp_path / "data"),
                                           "--out", str(out)]))
    found = {(record["benchmark"], record["metric"]): record for record in records}
    assert found[("baseline", "seconds")]["value"] > 0 and found[("candidate", "seconds")]["value"] > 0
    assert found[("candidate", "round0_seconds")]["repeats"] == 2
    assert ("baseline", "round0_stage_read") in found
    assert found[("comparison", "candidate_vs_baseline_paired")]["value"] > 0
    assert json.loads(out.read_text()) == records



def test_ab_baseline_from_a_revision_or_an_archive(tmp_path):
    import subprocess
    import tarfile

    from benchmarks import ab

    if subprocess.run(["git", "-C", str(ab.REPOSITORY), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    (tmp_path / "from-revision").mkdir()
    tree = ab.baseline_tree("HEAD", tmp_path / "from-revision")
    assert (tree / "labelscan" / "scan.py").is_file()
    archive = tmp_path / "baseline.tgz"
    with tarfile.open(archive, "w:gz") as handle:
        handle.add(tree / "labelscan", arcname="labelscan")
    (tmp_path / "from-archive").mkdir()
    assert (ab.baseline_tree(str(archive), tmp_path / "from-archive") / "labelscan" / "scan.py").is_file()


def test_timeline_names_each_task_by_its_stage():
    from benchmarks.timeline import prefix_spans, task_prefix, task_records

    assert task_prefix("labelscan-cutoffs-resolve-0fecefcf0ff2747d-3") == "cutoffs-resolve"
    assert task_prefix(("labelscan-read-035134e995874426", 0)) == "read"
    assert task_prefix("labelscan-counts-layout-09b845c3b34fd4e9-0") == "counts-layout"
    stream = [{"key": "labelscan-read-035134e995874426-1", "worker": "w", "thread": 7,
               "startstops": [{"action": "transfer", "start": 100.0, "stop": 100.5},
                              {"action": "compute", "start": 100.5, "stop": 100.75}]},
              {"key": "labelscan-read-035134e995874426-0", "worker": "w", "thread": 8,
               "startstops": [{"action": "compute", "start": 100.25, "stop": 101.0}]}]
    records = task_records(stream, 0, 100.0)
    assert [record["start_ms"] for record in records] == [250.0, 500.0]
    assert {record["prefix"] for record in records} == {"read"}
    assert prefix_spans(records) == {(0, "read"): (250.0, 1000.0)}


def test_timeline_records_a_scan_on_a_local_cluster(tmp_path):
    from benchmarks import timeline

    out = tmp_path / "timeline.json"
    records = timeline.run(timeline.parse_arguments(["--size", "20Kx10", "--scans", "1", "--warmup", "0",
                                                     "--data-dir", str(tmp_path / "data"), "--out", str(out)]))
    tasks = [record for record in records if record["benchmark"] == "task"]
    assert {"read", "joint", "flag", "rank"} <= {record["prefix"] for record in tasks}
    assert all(0 <= record["start_ms"] <= record["stop_ms"] for record in tasks)
    found = {(record["benchmark"], record["metric"]) for record in records}
    assert ("span", "read_ms") in found and ("scan", "seconds") in found
    assert json.loads(out.read_text()) == records
