"""``labelscan demo``: plant label errors in a synthetic parquet set, scan it, score what was found.

The data come from :mod:`labelscan.demo_data` (a known noise matrix; every file keeps the
``true_label`` column), so the flagged rows can be scored against the planted errors
(``given label != true label``). The scan is a real one: same engine, same outputs, on a
``LocalCluster`` (or the client given).
"""

from __future__ import annotations

import math
import time

import numpy as np

from labelscan.cluster import default_local_cluster_kwargs, get_client
from labelscan.errors import UsageError

DEFAULT_ROWS = 200_000
DEFAULT_CLASSES = 10
DEFAULT_NOISE_RATE = 0.2
DEFAULT_OUT = "labelscan-demo"
FILES = 4
"""The demo set is written as this many files (several partitions even for small demos)."""
MAX_ROWS_PER_FILE = 250_000


def local_cluster_overrides(workers: int | None) -> dict:
    """``LocalCluster`` keyword overrides for ``workers`` worker processes sharing the cores.

    Parameters
    ----------
    workers : int or None
        None keeps :func:`labelscan.cluster.default_local_cluster_kwargs` (one process, every core).

    Returns
    -------
    dict
        Overrides for :func:`labelscan.cluster.get_client`.
    """
    if workers is None:
        return {}
    if workers < 1:
        raise UsageError("workers must be at least 1")
    defaults = default_local_cluster_kwargs()
    return {"n_workers": workers,
            "threads_per_worker": max(1, defaults["threads_per_worker"] // workers),
            "memory_limit": max(1, defaults["memory_limit"] // workers)}


def run_demo(rows: int = DEFAULT_ROWS, classes: int = DEFAULT_CLASSES, *,
             noise_rate: float = DEFAULT_NOISE_RATE, seed: int = 0, out: str = DEFAULT_OUT,
             workers: int | None = None, client=None, progress=None, top: int = 10) -> dict:
    """Generate a noisy dataset under ``out/data``, scan it to ``out/scan`` and score the result.

    Parameters
    ----------
    rows : int
        N, rows of the synthetic set.
    classes : int
        K, at least 2.
    noise_rate : float
        Probability, in [0, 1], that a given label differs from the true one.
    seed : int
        Seed of the noise model and of the examples.
    out : str
        Demo directory (local path or fsspec URL). ``data/`` and ``scan/`` under it are replaced.
    workers : int, optional
        Worker processes of the local cluster (default: one process using every core).
        Ignored when ``client`` is given.
    client : distributed.Client, optional
        Run the scan on this cluster instead of a local one.
    progress : callable(stage, seconds), optional
        Called as each stage finishes (``generate``, the scan's stages, ``evaluate``).
    top : int
        Number of top-ranked issues returned in ``top_issues``.

    Returns
    -------
    dict
        ``data`` and ``scan`` (output URLs), ``num_rows``, ``num_classes``, ``noise_rate``,
        ``seed``, ``num_issues`` (flagged rows), ``num_planted`` (rows with given != true),
        ``true_positives``, ``precision``, ``recall``, ``f1`` (flagged vs planted; NaN when
        undefined), ``noise_matrix_mae`` (mean absolute difference between the estimated
        and the planted noise matrix), ``timings`` (seconds per stage, and ``total``),
        ``top_issues`` (pandas.DataFrame of the ``top`` worst issues with their
        ``true_label``) and ``summary`` (the scan's ``summary.json``).
    """
    from labelscan.api import scan
    from labelscan.demo_data import write_demo_dataset

    if rows < 1:
        raise UsageError("rows must be positive")
    started = time.perf_counter()
    timings = {}

    def lap(stage, seconds):
        timings[stage] = round(seconds, 6)
        if progress is not None:
            progress(stage, seconds)

    out = out.rstrip("/") or out
    data_url, scan_url = f"{out}/data", f"{out}/scan"
    rows_per_file = min(MAX_ROWS_PER_FILE, max(1, math.ceil(rows / FILES)))
    clock = time.perf_counter()
    written = write_demo_dataset(data_url, rows, classes, seed=seed, noise_rate=noise_rate,
                                 rows_per_file=rows_per_file, overwrite=True)
    lap("generate", time.perf_counter() - clock)

    with get_client(client, None, **local_cluster_overrides(None if client else workers)) as dask_client:
        result = scan(data_url, scan_url, client=dask_client, overwrite=True, progress=progress)
    for stage, seconds in result.summary["timings"].items():
        if stage != "total":
            timings[stage] = seconds

    clock = time.perf_counter()
    given, true = _read_labels(written["paths"])
    mask = result.mask(columns=["row_id", "is_label_issue"])
    flagged = np.zeros(len(given), dtype=bool)
    flagged[mask["row_id"].to_numpy()] = mask["is_label_issue"].to_numpy()
    planted = given != true
    scores = _precision_recall(flagged, planted)
    estimated = np.asarray(result.statistics()["noise_matrix"], dtype=np.float64)
    top_issues = result.issues(top)
    if len(top_issues):
        top_issues["true_label"] = true[top_issues["row_id"].to_numpy()]
    lap("evaluate", time.perf_counter() - clock)
    timings["total"] = round(time.perf_counter() - started, 6)

    return {
        "data": data_url,
        "scan": scan_url,
        "num_rows": int(rows),
        "num_classes": int(classes),
        "noise_rate": float(noise_rate),
        "seed": int(seed),
        "num_issues": int(flagged.sum()),
        "num_planted": int(planted.sum()),
        **scores,
        "noise_matrix_mae": float(np.abs(estimated - written["noise_matrix"]).mean()),
        "timings": timings,
        "top_issues": top_issues,
        "summary": result.summary,
    }


def _read_labels(paths):
    """Given and true labels of the demo files, in global row order."""
    import fsspec
    import pyarrow.parquet as pq

    given, true = [], []
    for url in paths:
        with fsspec.open(url, "rb") as handle:
            table = pq.read_table(handle, columns=["label", "true_label"])
        given.append(table.column("label").to_numpy())
        true.append(table.column("true_label").to_numpy())
    return np.concatenate(given), np.concatenate(true)


def _precision_recall(flagged: np.ndarray, planted: np.ndarray) -> dict:
    true_positives = int(np.count_nonzero(flagged & planted))
    num_flagged, num_planted = int(flagged.sum()), int(planted.sum())
    precision = true_positives / num_flagged if num_flagged else math.nan
    recall = true_positives / num_planted if num_planted else math.nan
    f1 = (2 * precision * recall / (precision + recall)
          if num_flagged and num_planted and (precision + recall) > 0 else math.nan)
    return {"true_positives": true_positives, "precision": precision, "recall": recall, "f1": f1}

