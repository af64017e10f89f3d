"""``labelscan.scan`` on a real distributed cluster vs the stable cleanlab oracle.

Synthetic sets are written to parquet (``label`` int64, ``pred_probs``
fixed_size_list<float32|float16|float64, K>, several files, several row groups each), scanned on a
module-scoped ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``, and compared
with cleanlab run on the very same arrays:
- mask(): row order, is_label_issue, label_quality (the rank_by score), predicted_label;
- issues(n=None): the ranked row order, rank, given/predicted label, label_quality;
- summary: the O(K^2) statistics (same checks as test_parity_statistics) and per-class counts.
A last test checks that pred_probs never travel to the client: every object gathered from the
cluster is small (<= 64*K^2 + 1 MiB), their total is far below N*K*itemsize, no (n>K, K) array
arrives, and the client process never allocates anything near the size of pred_probs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

try:
    import oracle
    import synthetic
    from _fixtures import labelscan_api, mismatch
    from test_parity_statistics import compare_statistics
except ImportError:  # tests/ imported as a package
    from tests import oracle, synthetic
    from tests._fixtures import labelscan_api, mismatch
    from tests.test_parity_statistics import compare_statistics

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client():
    # workers must import labelscan from this checkout
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), old) if p)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


_PA_TYPES = {np.dtype(np.float16): pa.float16(), np.dtype(np.float32): pa.float32(),
             np.dtype(np.float64): pa.float64()}


def write_parquet(folder: Path, labels, P, *, fractions=(0.3, 0.5, 0.2), row_group_size=700):
    """Several files (name order = row order), each with several row groups."""
    folder.mkdir(parents=True, exist_ok=True)
    N, K = P.shape
    values = pa.array(np.ascontiguousarray(P).ravel(), type=_PA_TYPES[P.dtype])
    probs = pa.FixedSizeListArray.from_arrays(values, K)
    table = pa.table({"label": pa.array(np.asarray(labels, dtype=np.int64), type=pa.int64()),
                      "pred_probs": probs})
    cuts = np.round(np.cumsum((0.0,) + tuple(fractions)) * N).astype(int)
    cuts[-1] = N
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        pq.write_table(table.slice(int(a), int(b - a)), folder / f"part-{i:03d}.parquet",
                       row_group_size=row_group_size)
    return folder


def _stats_from_summary(summary, statistics=None):
    """The oracle's statistics keys from a summary; ``statistics`` (``ScanResult.statistics()``)
    stands for ``summary["statistics"]`` when wide scans keep K x K matrices in tables."""
    stats = dict(summary.get("statistics", {}) if statistics is None else statistics)
    for k in oracle.STAT_KEYS:
        if k not in stats and k in summary:
            stats[k] = summary[k]
    if "num_label_issues_per_class" not in stats:
        for k in ("num_label_issues_per_class", "num_issues_per_class"):
            if k in summary:
                stats["num_label_issues_per_class"] = summary[k]
                break
    return stats


def _as_oracle_types(stats, expected, fail, where=""):
    """Lists from summary.json -> arrays typed like the oracle's (JSON has no dtypes; the float
    values themselves must be exact: a float16/32/64 value survives a JSON round trip)."""
    out = dict(stats)
    if "confident_thresholds" in out:
        t_exp = expected["confident_thresholds"]
        vals = np.asarray(out["confident_thresholds"], dtype=np.float64)
        if vals.shape != t_exp.shape or not np.array_equal(vals, t_exp.astype(np.float64)):
            fail.append(f"{where}confident_thresholds values {vals.tolist()[:10]} != "
                        f"{t_exp.astype(np.float64).tolist()[:10]}")
        out["confident_thresholds"] = vals.astype(t_exp.dtype) if vals.shape == t_exp.shape \
            else vals
    for k in ("confident_joint", "calibrated_confident_joint", "num_label_issues_per_class"):
        if k in out:
            out[k] = np.asarray(out[k], dtype=np.int64)
    for k in ("joint", "noise_matrix", "inverse_noise_matrix", "py"):
        if k in out:
            out[k] = np.asarray(out[k], dtype=np.float64)
    return out


SCAN_CASES = {
    # id: (case, storage dtype, scan kwargs, rows_per_partition, row_group_size)
    "ties_q16_f32-default": ("ties_q16_f32", np.float32, {}, None, 700),
    "ties_f16-both-nm": ("ties_f16", np.float16,
                         dict(filter_by="both", rank_by="normalized_margin"), 1000, 333),
    "missing_f32-class-cwe": ("missing_class_f32", np.float32,
                              dict(filter_by="prune_by_class",
                                   rank_by="confidence_weighted_entropy"), 1500, 500),
    "dup_f64-cl-sc-adjust": ("dup_rows_f64", np.float64,
                             dict(filter_by="confident_learning", rank_by="self_confidence",
                                  adjust_pred_probs=True), 800, 400),
    "cont_f32-pbnr-frac-minex": ("cont_f32", np.float32,
                                 dict(filter_by="prune_by_noise_rate", frac_noise=0.5,
                                      min_examples_per_class=5), 900, 300),
    "cont_f32-class-frac-nm-adjust": ("cont_f32", np.float32,
                                      dict(filter_by="prune_by_class", frac_noise=0.3,
                                           rank_by="normalized_margin", adjust_pred_probs=True),
                                      1200, 400),
    "binary_f16-lowsc": ("binary_f16", np.float16,
                         dict(filter_by="low_self_confidence", rank_by="self_confidence"), 700, 350),
}


@pytest.mark.parametrize("scan_id", list(SCAN_CASES))
def test_scan_parity(scan_id, client, tmp_path):
    scan = labelscan_api("scan")
    case, dtype, kw, rpp, rgs = SCAN_CASES[scan_id]
    labels, P0 = synthetic.make(case)
    P = P0.astype(dtype)
    if not np.array_equal(P.astype(np.float64), P0.astype(np.float64)):
        pytest.fail(f"{case} does not round-trip to {dtype}")
    src = write_parquet(tmp_path / "in", labels, P, row_group_size=rgs)
    result = scan(str(src), str(tmp_path / "out"), client=client, rows_per_partition=rpp, **kw)

    filter_by = kw.get("filter_by", "prune_by_noise_rate")
    rank_by = kw.get("rank_by", "self_confidence")
    adjust = kw.get("adjust_pred_probs", False)
    fl = dict(filter_by=filter_by, frac_noise=kw.get("frac_noise", 1.0),
              min_examples_per_class=kw.get("min_examples_per_class", 1))
    exp_mask = oracle.oracle_find_label_issues(labels, P, **fl)
    exp_ranked = oracle.oracle_find_label_issues(
        labels, P, **fl, return_indices_ranked_by=rank_by,
        rank_by_kwargs={"adjust_pred_probs": adjust})
    scores = oracle.oracle_scores(labels, P, rank_by, adjust)
    pred = P.argmax(axis=1)
    tag = f"[scan {scan_id}: case={case} dtype={np.dtype(dtype).name} {kw} rpp={rpp}]"
    fail = []

    m = result.mask()
    if len(m) != len(labels):
        fail.append(f"{tag} mask() has {len(m)} rows, expected {len(labels)}")
    else:
        if not np.array_equal(m["row_id"].to_numpy(), np.arange(len(labels))):
            fail.append(f"{tag} mask() rows are not in row order (row_id != arange)")
        msg = mismatch(exp_mask, m["is_label_issue"].to_numpy().astype(bool), labels, P)
        if msg:
            fail.append(f"{tag} mask: {msg}")
        lq = m["label_quality"].to_numpy().astype(np.float64)
        bad = np.flatnonzero(lq != scores.astype(np.float64))
        if len(bad):
            i = int(bad[0])
            fail.append(f"{tag} mask label_quality differs in {len(bad)} rows; first row {i}: "
                        f"expected {scores[i]!r} got {lq[i]!r}")
        bad = np.flatnonzero(m["predicted_label"].to_numpy() != pred)
        if len(bad):
            fail.append(f"{tag} predicted_label != argmax(P) in {len(bad)} rows, first {bad[0]}")

    iss = result.issues(n=None)
    got_ranked = iss["row_id"].to_numpy().astype(np.int64) if len(iss) else np.zeros(0, np.int64)
    msg = mismatch(exp_ranked, got_ranked, labels, P, scores)
    if msg:
        fail.append(f"{tag} issues order: {msg}")
    elif len(iss):
        r = iss["rank"].to_numpy()
        if not (np.array_equal(r, np.arange(len(r))) or np.array_equal(r, np.arange(1, len(r) + 1))):
            fail.append(f"{tag} rank column is not consecutive: {r[:10].tolist()}")
        if not np.array_equal(iss["given_label"].to_numpy(), labels[got_ranked]):
            fail.append(f"{tag} issues given_label mismatch")
        if not np.array_equal(iss["predicted_label"].to_numpy(), pred[got_ranked]):
            fail.append(f"{tag} issues predicted_label mismatch")
        lq = iss["label_quality"].to_numpy().astype(np.float64)
        if not np.array_equal(lq, scores[got_ranked].astype(np.float64)):
            fail.append(f"{tag} issues label_quality mismatch")

    exp_stats = dict(oracle.oracle_statistics(labels, P))
    exp_stats["num_label_issues_per_class"] = np.bincount(
        labels[exp_mask], minlength=P.shape[1]).astype(np.int64)
    got_stats = _as_oracle_types(_stats_from_summary(result.summary, result.statistics()), exp_stats, fail,
                                 where=f"{tag} summary ")
    fail += compare_statistics(exp_stats, got_stats, where=f"{tag} summary ")
    if int(result.summary.get("num_issues", -1)) != int(exp_mask.sum()):
        fail.append(f"{tag} summary num_issues {result.summary.get('num_issues')} != "
                    f"{int(exp_mask.sum())}")
    assert not fail, "\n".join(fail)


def test_scan_output_parts_follow_the_contract(client, tmp_path):
    """issues/part-*.parquet read in name order = rank order; mask/part-*.parquet = row order."""
    scan = labelscan_api("scan")
    labels, P = synthetic.make("ties_f16")
    src = write_parquet(tmp_path / "in", labels, P, row_group_size=250)
    out = tmp_path / "out"
    scan(str(src), str(out), client=client, rows_per_partition=500,
         filter_by="prune_by_noise_rate", rank_by="self_confidence")
    exp_ranked = oracle.oracle_find_label_issues(labels, P,
                                                 return_indices_ranked_by="self_confidence")
    exp_mask = oracle.oracle_find_label_issues(labels, P)
    assert (out / "_SUCCESS").exists()
    parts = sorted((out / "issues").glob("part-*.parquet"))
    got = np.concatenate([pq.read_table(p, columns=["row_id"]).column(0).to_numpy()
                          for p in parts]) if parts else np.zeros(0, np.int64)
    msg = mismatch(exp_ranked, got.astype(np.int64), labels, P)
    assert not msg, f"issues parts in name order: {msg}"
    mparts = sorted((out / "mask").glob("part-*.parquet"))
    tab = pa.concat_tables([pq.read_table(p, columns=["row_id", "is_label_issue"]) for p in mparts])
    np.testing.assert_array_equal(tab.column("row_id").to_numpy(), np.arange(len(labels)))
    msg = mismatch(exp_mask, tab.column("is_label_issue").to_numpy().astype(bool), labels, P)
    assert not msg, f"mask parts in name order: {msg}"


def test_client_never_receives_pred_probs(client, tmp_path, monkeypatch):
    scan = labelscan_api("scan")
    import pickle

    from dask.sizeof import sizeof

    N, K, rows_per_partition = 120_000, 32, 30_000
    labels, P = synthetic.continuous(N, K, np.float32, seed=21, noise=0.05)
    pp_bytes = P.nbytes
    src = write_parquet(tmp_path / "in", labels, P, row_group_size=5000)
    exp_mask = oracle.oracle_find_label_issues(labels, P)
    exp_ranked = oracle.oracle_find_label_issues(labels, P,
                                                 return_indices_ranked_by="self_confidence")

    records = []
    orig = distributed.Client._gather_remote

    async def recording_gather_remote(self, direct, local_worker):
        response = await orig(self, direct, local_worker)
        if response.get("status") == "OK":
            for key, value in response["data"].items():
                shape = getattr(value, "shape", None)
                # dask's sizeof underestimates nested dicts/lists: take the wire size too
                try:
                    wire = len(pickle.dumps(value, protocol=5))
                except Exception:
                    wire = 0
                records.append((str(key)[:80], max(int(sizeof(value)), wire),
                                type(value).__name__, shape, value))
        return response

    monkeypatch.setattr(distributed.Client, "_gather_remote", recording_gather_remote)
    # pyarrow allocations are invisible to tracemalloc: sample the default pool meanwhile
    pool = pa.default_memory_pool()
    arrow_base = pool.bytes_allocated()
    arrow_peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            arrow_peak[0] = max(arrow_peak[0], pool.bytes_allocated() - arrow_base)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    sampler.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        result = scan(str(src), str(tmp_path / "out"), client=client,
                      rows_per_partition=rows_per_partition)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        done.set()
        sampler.join()
        if not was_tracing:
            tracemalloc.stop()
    arrow_peak = arrow_peak[0]

    # the scan itself is right
    m = result.mask(columns=["is_label_issue"])["is_label_issue"].to_numpy().astype(bool)
    assert mismatch(exp_mask, m) == ""
    assert mismatch(exp_ranked, result.issues(n=None)["row_id"].to_numpy().astype(np.int64)) == ""

    assert records, "no gather through Client._gather_remote was recorded (hook not exercised)"
    # O(K^2) states + 1 MiB of metadata, plus what spec §15.2 allows for exact thresholds: the
    # raw values of <= 2 cut pairwise leaves (< 128 values) per class and partition.
    num_parts = 3 + N // rows_per_partition  # 3 files
    bound = 64 * K * K + 2**20 + 2 * K * num_parts * 128 * 16
    sizes = sorted(records, key=lambda r: -r[1])
    top = [(r[0], r[1], r[2], r[3]) for r in sizes[:5]]
    total = sum(r[1] for r in records)
    big = [r[:4] for r in records if r[1] > bound]
    assert not big, f"objects larger than {bound} B gathered to the client: {big}"
    wide = [r[:4] for r in records
            if isinstance(r[4], np.ndarray) and r[4].ndim == 2 and r[4].shape[1] == K
            and r[4].shape[0] > K]
    assert not wide, f"(n, K) arrays gathered to the client: {wide}"
    assert total < pp_bytes / 4, (f"{total} B gathered in {len(records)} objects "
                                  f"(pred_probs are {pp_bytes} B); largest: {top}")
    assert peak - base < 0.75 * pp_bytes, (
        f"client traced-allocation peak {peak - base} B during the scan "
        f"(pred_probs are {pp_bytes} B)")
    assert arrow_peak < 0.75 * pp_bytes, (
        f"client pyarrow pool (sampled) peak {arrow_peak} B during the scan "
        f"(pred_probs are {pp_bytes} B)")
