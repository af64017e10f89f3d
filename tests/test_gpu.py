"""GPU backend: CuPy partitions give exactly the NumPy (hence cleanlab 2.9) answer.

Every test here needs CuPy and a CUDA device; without them the module is skipped (CI has no
GPU). The NumPy backend is checked against cleanlab by the parity suite; these tests check
that the CuPy backend returns identical masks, rankings, statistics and output files.
Run on the lent GPU machine: ``python -m pytest -m gpu tests/test_gpu.py``.
"""

import os
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import labelscan
from benchmarks.scale import output_digests
import synthetic
from labelscan.io.threads import available_cores
from labelscan.xp import cupy_or_none
from test_skip_rows import damaged_set

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(cupy_or_none() is None, reason="needs CuPy and a CUDA device"),
]

FILTERS = ["prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given", "low_normalized_margin", "low_self_confidence"]
RANKINGS = [None, ("self_confidence", False), ("normalized_margin", False),
            ("self_confidence", True), ("normalized_margin", True), ("confidence_weighted_entropy", False)]
CASES = ["continuous_f32", "tie_f16", "missing_class", "never_predicted", "binary", "binary_f16",
         "not_normalized", "all_correct", "singleton", "subnormal_f32"]


def _case(name):
    makers = {
        "continuous_f32": lambda: synthetic.continuous(6000, 10, np.float32, seed=1),
        "tie_f16": lambda: synthetic.tie_heavy_float16(6000, 10, seed=2),
        "missing_class": lambda: synthetic.missing_class(4000, 8, seed=3),
        "never_predicted": lambda: synthetic.never_predicted(3000, 3, seed=4),
        "binary": lambda: synthetic.binary(4000, seed=5),
        "binary_f16": lambda: synthetic.binary_float16(4000, seed=6),
        "not_normalized": lambda: synthetic.not_normalized(4000, 10, seed=7),
        "all_correct": lambda: synthetic.all_correct(3000, 10, seed=8),
        "singleton": lambda: synthetic.singleton_class(4000, 6, seed=9),
        "subnormal_f32": lambda: synthetic.subnormal_float32(4000, 5, seed=10),
    }
    return makers[name]()


def _both_backends(labels, pred_probs, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = labelscan.find_label_issues(labels, pred_probs, backend="numpy", **kwargs)
        gpu = labelscan.find_label_issues(labels, pred_probs, backend="cupy", **kwargs)
    return cpu, gpu


def _ranking_kwargs(ranking):
    if ranking is None:
        return {}
    method, adjust = ranking
    if method == "confidence_weighted_entropy":
        pytest.importorskip("scipy")
    return {"return_indices_ranked_by": method, "rank_by_kwargs": {"adjust_pred_probs": adjust}}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("filter_by", FILTERS)
@pytest.mark.parametrize("num_partitions", [1, 7])
def test_masks_identical(case, filter_by, num_partitions):
    labels, pred_probs = _case(case)
    cpu, gpu = _both_backends(labels, pred_probs, filter_by=filter_by, num_partitions=num_partitions)
    np.testing.assert_array_equal(gpu, cpu)


@pytest.mark.parametrize("case", ["continuous_f32", "tie_f16", "missing_class", "binary_f16", "subnormal_f32"])
@pytest.mark.parametrize("ranking", RANKINGS[1:])
@pytest.mark.parametrize("filter_by", ["prune_by_noise_rate", "both", "low_self_confidence"])
def test_rankings_identical(case, ranking, filter_by):
    labels, pred_probs = _case(case)
    cpu, gpu = _both_backends(labels, pred_probs, filter_by=filter_by, num_partitions=7,
                              **_ranking_kwargs(ranking))
    np.testing.assert_array_equal(gpu, cpu)


@pytest.mark.parametrize("num_classes", [2, 10, 100, 1000])
def test_many_class_counts(num_classes):
    labels, pred_probs = synthetic.continuous(max(20 * num_classes, 4000), num_classes, np.float32,
                                              seed=num_classes)
    for filter_by in ("prune_by_noise_rate", "both", "low_normalized_margin"):
        cpu, gpu = _both_backends(labels, pred_probs, filter_by=filter_by, num_partitions=3,
                                  return_indices_ranked_by="self_confidence")
        np.testing.assert_array_equal(gpu, cpu)


def test_statistics_identical():
    labels, pred_probs = synthetic.tie_heavy_float16(8000, 10, seed=11)
    cpu = labelscan.estimate_statistics(labels, pred_probs, num_partitions=7, backend="numpy")
    gpu = labelscan.estimate_statistics(labels, pred_probs, num_partitions=7, backend="cupy")
    for name, value in cpu.items():
        np.testing.assert_array_equal(np.asarray(gpu[name]), np.asarray(value), err_msg=name)
        assert np.asarray(gpu[name]).dtype == np.asarray(value).dtype, name


def _real_sets():
    roots = [os.environ.get("LABELSCAN_SHARED_DATA"), Path(__file__).resolve().parents[1] / "gpu-data",
             Path(__file__).resolve().parents[2] / "shared" / "data"]
    for root in roots:
        if root and Path(root).is_dir():
            return sorted(p.parent for p in Path(root).glob("*/*/pred_probs.npy"))
    return []


@pytest.mark.parametrize("folder", _real_sets() or [pytest.param(None, marks=pytest.mark.skip(
    reason="real data folder not found (set LABELSCAN_SHARED_DATA)"))], ids=lambda p: p and p.name)
def test_real_sets_identical(folder):
    pred_probs = np.load(folder / "pred_probs.npy")
    labels = np.load(folder / "noisy_labels.npy").astype(np.int64)
    for filter_by in FILTERS:
        cpu, gpu = _both_backends(labels, pred_probs, filter_by=filter_by, num_partitions=7,
                                  return_indices_ranked_by="self_confidence")
        np.testing.assert_array_equal(gpu, cpu, err_msg=filter_by)


def test_scan_outputs_identical_on_cuda_cluster(tmp_path):
    from distributed import Client, LocalCluster

    from labelscan.cluster import local_cuda_cluster

    labels, pred_probs = synthetic.continuous(200_000, 10, np.float32, seed=12)
    data = tmp_path / "in"
    data.mkdir()
    for index, start in enumerate(range(0, len(labels), 50_000)):
        rows = slice(start, start + 50_000)
        table = pa.table({"label": labels[rows], "pred_probs": pa.FixedSizeListArray.from_arrays(
            pa.array(pred_probs[rows].ravel()), 10)})
        pq.write_table(table, data / f"part-{index}.parquet", row_group_size=12_500)
    with local_cuda_cluster() as cluster, Client(cluster) as client:
        gpu = labelscan.scan(str(data), str(tmp_path / "gpu"), client=client, backend="cupy",
                             rows_per_partition=25_000)
        host_threads = client.run(_host_threads_and_secedes)
    with LocalCluster(n_workers=1, threads_per_worker=2) as cluster, Client(cluster) as client:
        cpu = labelscan.scan(str(data), str(tmp_path / "cpu"), client=client, backend="numpy",
                             rows_per_partition=25_000)
    # labelscan's GPU workers encode outputs on the host's cores per GPU, beyond their 8 threads
    cores_per_gpu = available_cores() // len(host_threads)
    for setting, nthreads, seceded in host_threads.values():
        assert setting == cores_per_gpu
        assert seceded > 0 if cores_per_gpu > nthreads else seceded == 0
    assert gpu.summary["backend"] == "cupy" and cpu.summary["backend"] == "numpy"
    # same partitioning on both clusters (the default plan depends on the worker threads)
    assert gpu.summary["num_partitions"] == cpu.summary["num_partitions"] == 8
    assert output_digests(tmp_path / "gpu") == output_digests(tmp_path / "cpu")
    assert gpu.summary["statistics"] == cpu.summary["statistics"]



def test_ranges_of_device_issues_ranked_as_on_cpu(tmp_path):
    """Issues kept on the device by the flag pass are split into many ranked ranges (their score
    histogram and range slices searched on the device) exactly as host issues are."""
    from distributed import Client, LocalCluster

    from labelscan.cluster import local_cuda_cluster

    labels, pred_probs = synthetic.continuous(40_000, 10, np.float32, seed=5)
    data = tmp_path / "in"
    data.mkdir()
    pq.write_table(pa.table({"label": labels, "pred_probs": pa.FixedSizeListArray.from_arrays(
        pa.array(pred_probs.ravel()), 10)}), data / "part-0.parquet", row_group_size=5_000)
    options = dict(rows_per_partition=10_000, issues_per_part=1_500, rank_by="normalized_margin")
    with local_cuda_cluster() as cluster, Client(cluster) as client:
        labelscan.scan(str(data), str(tmp_path / "gpu"), client=client, backend="cupy", **options)
    with LocalCluster(n_workers=1, threads_per_worker=2) as cluster, Client(cluster) as client:
        labelscan.scan(str(data), str(tmp_path / "cpu"), client=client, backend="numpy", **options)
    digests = output_digests(tmp_path / "cpu")
    assert len([path for path in digests if path.startswith("issues/")]) > 2
    assert output_digests(tmp_path / "gpu") == digests


def test_device_and_host_issue_runs_merge_alike():
    """:func:`labelscan.outcome.merge_ranked` on the device takes runs of device arrays, host
    arrays or both, and gives the host merge's arrays."""
    import cupy

    from labelscan.outcome import merge_ranked
    from labelscan.stats.order import float_images

    rng = np.random.default_rng(3)
    runs = []
    for start, size in ((0, 700), (700, 0), (900, 1_300)):
        quality = np.sort(rng.choice(np.linspace(0, 1, 50, dtype=np.float32), size))
        runs.append({"row_id": np.arange(start, start + size, dtype=np.int64),
                     "given_label": rng.integers(0, 10, size).astype(np.int16),
                     "label_quality": quality, "image": float_images(quality).astype(np.uint64),
                     "id": np.asarray([f"r{row}" for row in range(start, start + size)], dtype=object)})
    expected = merge_ranked(runs)
    on_device = [{name: cupy.asarray(values) if values.dtype != object else values for name, values in run.items()}
                 for run in runs]
    for mixed in (on_device, [on_device[0], runs[1], runs[2]]):
        merged = merge_ranked(mixed, on_device=True)
        assert list(merged) == list(expected)
        for name, values in expected.items():
            assert isinstance(merged[name], np.ndarray) and merged[name].dtype == values.dtype, name
            np.testing.assert_array_equal(merged[name], values, err_msg=name)


LAYOUTS = {   # input sets whose predictions the GPU workers decode on the device, or leave to Arrow
    "list": ("pred_probs", {}),
    "list-v2-uncompressed": ("pred_probs", {"data_page_version": "2.0", "compression": "none"}),
    "list-small-dictionary": ("pred_probs", {"dictionary_pagesize_limit": 4_000, "data_page_size": 20_000}),
    "columns": ("p", {}),
    "list-zstd": ("pred_probs", {"compression": "zstd"}),   # Arrow's reader
}


def _write_layout(folder, labels, pred_probs, layout):
    column, options = LAYOUTS[layout]
    folder.mkdir(parents=True)
    for index, start in enumerate(range(0, len(labels), 30_000)):
        rows = slice(start, start + 30_000)
        if column == "p":
            columns = {f"p{k}": pred_probs[rows, k] for k in range(pred_probs.shape[1])}
        else:
            columns = {column: pa.FixedSizeListArray.from_arrays(pa.array(pred_probs[rows].ravel()),
                                                                 pred_probs.shape[1])}
        pq.write_table(pa.table({"label": labels[rows], **columns}), folder / f"part-{index}.parquet",
                       row_group_size=7_500, **options)
    return column


def test_scans_of_every_layout_identical_with_gpu_page_decoding(tmp_path):
    from distributed import Client, LocalCluster

    from labelscan.cluster import local_cuda_cluster

    labels, pred_probs = synthetic.continuous(90_000, 7, np.float32, seed=13)
    columns = {layout: _write_layout(tmp_path / layout, labels, pred_probs, layout) for layout in LAYOUTS}
    options = {"rows_per_partition": 22_500, "filter_by": "both"}
    with local_cuda_cluster() as cluster, Client(cluster) as client:
        for layout, column in columns.items():
            labelscan.scan(str(tmp_path / layout), str(tmp_path / "gpu" / layout), client=client, backend="cupy",
                           pred_probs_column=column, **options)
    with LocalCluster(n_workers=1, threads_per_worker=2) as cluster, Client(cluster) as client:
        for layout, column in columns.items():
            labelscan.scan(str(tmp_path / layout), str(tmp_path / "cpu" / layout), client=client, backend="numpy",
                           pred_probs_column=column, **options)
    for layout in LAYOUTS:
        assert output_digests(tmp_path / "gpu" / layout) == output_digests(tmp_path / "cpu" / layout), layout


def test_bad_input_on_gpu_workers_is_refused_as_on_cpu_and_nothing_written(tmp_path):
    """Every case of the bad-input corpus, scanned by GPU workers (whose partitions go through
    GPU page decoding first): the CPU run's exit code and message, and no destination."""
    from distributed import Client

    from labelscan.cluster import local_cuda_cluster
    from test_bad_input import corpus, digests, scan_cli

    with local_cuda_cluster() as cluster, Client(cluster):
        for name, case in corpus.CASES.items():
            data = corpus.build(name, tmp_path / name / "in")
            out = tmp_path / name / "out"
            result = scan_cli(data, out, cluster.scheduler_address, *case.args, "--backend", "cupy")
            assert result.exit_code == case.exit_code, (name, result.output)
            assert case.message in result.output, (name, result.output)
            if case.exit_code == 3:
                (line,) = [line for line in result.output.splitlines() if line.startswith("error: ")]
                if case.file is not None:
                    assert f" in {data / case.file}" in line, (name, line)
                if case.located() is not None:
                    assert case.located() in line, (name, line)
            assert digests(out) is None, name


def _host_threads_and_secedes(dask_worker):
    """A worker's ``labelscan.host-threads``, its thread count and how many of its tasks left its pool."""
    import dask.config
    from distributed.worker_state_machine import SecedeEvent

    return (dask.config.get("labelscan.host-threads"), dask_worker.state.nthreads,
            sum(isinstance(event, SecedeEvent) for event in dask_worker.state.stimulus_log))


def test_partial_device_cache_gives_the_same_outputs(tmp_path, monkeypatch):
    """cache="auto" keeps the first partitions that fit in its share of the device memory and
    re-reads the others: the outputs of a scan keeping all of them."""
    import importlib

    from distributed import Client
    from test_planning import _write_set

    scan_module = importlib.import_module("labelscan.scan")
    folder = _write_set(tmp_path / "in", files=6, rows=700, classes=5)
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        kept = labelscan.scan(str(folder), str(tmp_path / "all"), client=client, backend="cupy", cache=True,
                              rows_per_partition=700)
        budget = 2.5 * 700 * (5 * 4 + scan_module.GROUPED_ROW_BYTES) / scan_module.GPU_CACHE_FRACTION
        monkeypatch.setattr(scan_module, "worker_device_memory", lambda client: budget)
        partial = labelscan.scan(str(folder), str(tmp_path / "partial"), client=client, backend="cupy",
                                 rows_per_partition=700)
    assert (kept.summary["num_cached_partitions"], partial.summary["num_cached_partitions"]) == (6, 2)
    assert output_digests(tmp_path / "partial") == output_digests(tmp_path / "all")


def _reads_null_fixed_size_lists() -> bool:
    """Whether this pyarrow reads null ``fixed_size_list`` rows back from parquet
    (apache/arrow#35692; the lent GPU machine's pyarrow does not)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"p": pa.FixedSizeListArray.from_arrays(pa.array([0.5, 0.5, 0.0, 0.0]), 2,
                                                                    mask=pa.array([False, True]))}), buffer)
    try:
        pq.read_table(io.BytesIO(buffer.getvalue()))
    except pa.ArrowInvalid:
        return False
    return True

@pytest.mark.parametrize("filter_by,rank_by", [("prune_by_noise_rate", "self_confidence"),
                                               ("both", "normalized_margin"),
                                               ("low_normalized_margin", "confidence_weighted_entropy")])
def test_skipped_bad_rows_give_identical_outputs_on_cuda_cluster(tmp_path, filter_by, rank_by):
    """``on_bad_rows="skip"`` on the damaged set of ``test_skip_rows.py``: every bad-row kind, and
    a whole file of bad rows, so some partitions keep no row at all."""
    from distributed import Client, LocalCluster

    from labelscan.cluster import local_cuda_cluster

    labels, _, _, bad = damaged_set(tmp_path / "in", null_lists=_reads_null_fixed_size_lists())
    options = dict(on_bad_rows="skip", id_column="id", rows_per_partition=125, filter_by=filter_by,
                   rank_by=rank_by)
    with local_cuda_cluster() as cluster, Client(cluster) as client:
        gpu = labelscan.scan(str(tmp_path / "in"), str(tmp_path / "gpu"), client=client, backend="cupy", **options)
    with LocalCluster(n_workers=1, threads_per_worker=2) as cluster, Client(cluster) as client:
        cpu = labelscan.scan(str(tmp_path / "in"), str(tmp_path / "cpu"), client=client, backend="numpy", **options)
    assert gpu.summary["backend"] == "cupy" and cpu.summary["backend"] == "numpy"
    digests = output_digests(tmp_path / "cpu")
    assert {path.split("/")[0] for path in digests} == {"issues", "mask", "rejected"}
    assert output_digests(tmp_path / "gpu") == digests
    rejected = sum(len(rows) for rows in bad.values())
    assert cpu.summary["num_rows_rejected"] == rejected and cpu.summary["num_rows_scanned"] == len(labels) - rejected
    for key in ("num_partitions", "num_rows", "num_rows_scanned", "num_rows_rejected", "num_rows_rejected_per_reason",
                "num_issues", "num_issues_per_class", "statistics", "health"):
        assert gpu.summary[key] == cpu.summary[key], key


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_to_device_joins_row_blocks(dtype):
    from labelscan.kernels.device import to_device

    rng = np.random.default_rng(0)
    blocks = [rng.random((rows, 7)).astype(dtype) for rows in (5, 0, 1000, 3)]
    whole = np.concatenate(blocks)
    assert (to_device(blocks).get() == whole).all()
    assert to_device(blocks).shape == whole.shape
    assert (to_device(whole[:, 2]).get() == whole[:, 2]).all()       # strided single array
    assert to_device([whole[:0]]).shape == (0, 7)
