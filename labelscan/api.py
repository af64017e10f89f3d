"""``labelscan.scan``: the Python face of a scan, and the result object it returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from labelscan import config
from labelscan.errors import UsageError
from labelscan.io.commit import read_manifest
from labelscan.io.locations import as_strings, checked_locations
from labelscan.io.redact import redact_url, scrubbed
from labelscan.options import ScanOptions
from labelscan.multilabel_scan import run_multilabel_scan
from labelscan.scan import run_scan


@dataclass
class ScanResult:
    """A finished scan's outputs.

    Attributes
    ----------
    out : str
        Output directory (local path or URL).
    summary : dict
        Contents of ``summary.json`` (statistics, counts, timings).
    storage_options : dict or None
    """

    out: str
    summary: dict
    storage_options: dict | None = None

    def __repr__(self) -> str:
        return (f"ScanResult(out={redact_url(self.out)!r}, num_rows={self.summary['num_rows']}, "
                f"num_issues={self.summary['num_issues']})")

    @property
    def num_issues(self) -> int:
        return int(self.summary["num_issues"])

    def _read_parts(self, folder: str, columns=None, limit=None) -> pd.DataFrame:
        import fsspec
        import pyarrow.parquet as pq

        frames, rows = [], 0
        with scrubbed(self.storage_options, [self.out]):
            fs, root = fsspec.core.url_to_fs(self.out, **(self.storage_options or {}))
            for path in sorted(fs.glob(f"{root.rstrip('/')}/{folder}/part-*.parquet")):
                with fs.open(path, "rb") as handle:
                    parquet = pq.ParquetFile(handle)
                    unknown = sorted(set(columns or ()) - set(parquet.schema_arrow.names))
                    if unknown:
                        raise UsageError(f"no column {unknown} in {folder}/; its columns: "
                                         f"{parquet.schema_arrow.names}")
                    frame = parquet.read(columns=columns).to_pandas()
                frames.append(frame)
                rows += len(frame)
                if limit is not None and rows >= limit:
                    break
        if not frames:
            return pd.DataFrame()
        table = pd.concat(frames, ignore_index=True)
        return table if limit is None else table.head(limit)

    def issues(self, n: int | None = 100) -> pd.DataFrame:
        """The ``n`` worst-ranked issues (all of them with ``n=None``), as a DataFrame.

        Raises
        ------
        UsageError
            ``n`` is not a non-negative integer or None.
        """
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0):
            raise UsageError(f"n must be a non-negative integer or None, not {n!r}")
        return self._read_parts("issues", limit=n)

    def statistics(self) -> dict:
        """``summary["statistics"]`` with every statistic as a NumPy array (scalars as they are).

        The K x K matrices of a scan of more than 256 classes are made dense from their
        ``statistics/<name>.parquet`` tables (800 MB each at K = 10,000: mind the size);
        :func:`labelscan.summary_statistics.read_statistic` gives a submatrix.
        """
        from labelscan.summary_statistics import is_reference, read_statistic

        with scrubbed(self.storage_options, [self.out]):
            return {name: (read_statistic(self.out, self.summary, name, self.storage_options)
                           if is_reference(value) or isinstance(value, list) else value)
                    for name, value in self.summary["statistics"].items()}

    def mask(self, columns=None) -> pd.DataFrame:
        """The row-aligned mask of the whole dataset (loads every mask part: mind the size)."""
        return self._read_parts("mask", columns=columns)


def scan(input_path, out_path, *, label_column="label", pred_probs_column="pred_probs", id_column=None,
         filter_by="prune_by_noise_rate", frac_noise=1.0, num_to_remove_per_class=None,
         min_examples_per_class=1, rank_by="self_confidence", adjust_pred_probs=False,
         client=None, scheduler=None, storage_options=None, rows_per_partition=None,
         overwrite=False, cache=None, retries=None, issues_per_part=None, progress=None,
         tie_break="stable", backend="auto", resume=False, class_names=None, row_sum_tolerance=None,
         on_bad_rows="error", multi_label=False) -> ScanResult:
    """Find label issues in a parquet prediction set with Confident Learning, on Dask.

    Gives exactly cleanlab 2.9's ``find_label_issues`` answer (ties broken by row order) and
    writes the outputs atomically under ``out_path`` (``_SUCCESS`` last).

    Parameters
    ----------
    input_path : str or list of str
        Parquet file, directory, glob or list of them; local or any fsspec URL.
    out_path : str
        Output directory (local or fsspec URL).
    label_column : str
        Integer given-label column.
    pred_probs_column : str or list of str
        A list/fixed_size_list column, K float columns, or a column-name prefix.
    id_column : str, optional
        Carried into the outputs.
    filter_by, frac_noise, num_to_remove_per_class, min_examples_per_class :
        cleanlab's ``find_label_issues`` options.
    rank_by : {"self_confidence", "normalized_margin", "confidence_weighted_entropy"}
        Score that ranks the issues (``label_quality`` column).
    adjust_pred_probs : bool
        Subtract the confident thresholds before scoring.
    client : distributed.Client, optional
        Use this cluster. Default: connect to ``scheduler``, else start a ``LocalCluster``
        (closed after the scan).
    scheduler : str, optional
        Scheduler address or scheduler-file path.
    storage_options : dict, optional
        fsspec options for input and output.
    rows_per_partition : int, optional
        Rows per partition (whole row groups); default: the ``labelscan.rows-per-partition``
        setting (:mod:`labelscan.config`), whose default makes partitions of about equal rows,
        at most 256 MiB of predictions each (:func:`labelscan.scan.cpu_partition_bytes`).
    overwrite : bool
        Replace another scan's outputs at ``out_path``.
    resume : bool
        Keep the mask, issues and rejected parts that an interrupted (or finished) run of the same scan
        (same configuration and input) already wrote, instead of writing them again; every
        other part is recomputed. The passes before the write run in full either way (the
        ranking needs every partition). See ``docs/storage.md``.
    cache : {"auto", True, False}, optional
        Keep decoded partitions in worker memory between passes ("auto": the first partitions
        that fit in 40% of it, GPU scans in 60% of the devices' memory; each pass re-reads the
        others).
        Default: the ``labelscan.cache`` setting ("auto").
    retries : int, optional
        Retries of each task (worker loss). Default: the ``labelscan.retries`` setting (2).
    issues_per_part : int, optional
        Rows per ranked issues part. Default: the ``labelscan.issues-per-part`` setting (4,000,000).
    progress : callable(stage, seconds), optional
        Called when each stage finishes.
    tie_break : {"stable", "numpy"}
        Order of equal remainders when rounding the calibrated confident joint; ``"numpy"``
        reproduces stock cleanlab run on the same machine.
    backend : {"auto", "numpy", "cupy"}
        Per-partition work on CPU (NumPy) or GPU (CuPy); ``"auto"`` uses the GPU when every
        worker has one. Without a client and with a local GPU, a ``LocalCUDACluster`` is started.
    class_names : list of str, optional
        K class names recorded in ``summary.json``, instead of those in the parquet metadata.
    row_sum_tolerance : float, optional
        Reject rows whose ``pred_probs`` sum differs from 1 by more than this (plus the
        rounding of the stored dtype: float16 input passes with any tolerance >= 0).
        Default None: rows are not required to sum to 1, as in cleanlab.
    on_bad_rows : {"error", "skip"}
        ``"error"`` (default): the first bad row stops the scan with an
        :class:`~labelscan.errors.InputError` (exit code 3) naming its file, row group and
        row; nothing is written. ``"skip"``: rows failing a row-level check (nulls, NaN/inf,
        values outside [0, 1], labels outside [0, K), row sums with ``row_sum_tolerance``) are
        left out, exactly as if deleted from the arrays given to cleanlab, and listed in
        ``OUT/rejected/``; ``mask/`` keeps a row for each (``docs/outputs.md``). Bad files,
        repeated ids, and a set with no good row still raise ``InputError``.
    multi_label : bool
        The label column holds each row's class indices (``list<int>``) or a K-wide 0/1 vector,
        and pred_probs one probability per class (rows need not sum to 1): cleanlab's
        ``find_label_issues(..., multi_label=True)`` answer, one-vs-rest per class
        (:mod:`labelscan.multilabel_scan`; outputs in ``docs/outputs.md``). CPU only.

    Returns
    -------
    ScanResult
    """
    retries = int(config.get("retries", retries))
    cache = config.cache_setting(config.get("cache", cache))
    issues_per_part = int(config.get("issues-per-part", issues_per_part))
    rows_per_partition = config.get("rows-per-partition", rows_per_partition)
    options = ScanOptions(
        filter_by=filter_by, frac_noise=frac_noise,
        num_to_remove_per_class=None if num_to_remove_per_class is None else tuple(num_to_remove_per_class),
        min_examples_per_class=min_examples_per_class, rank_by=rank_by, adjust_pred_probs=adjust_pred_probs,
        tie_break=tie_break)
    input_path, out_path = as_strings(input_path, out_path)
    urls = [out_path, *([input_path] if isinstance(input_path, str) else list(input_path))]
    with scrubbed(storage_options, urls):   # no credential in a log line or an exception message
        input_path = checked_locations(input_path, out_path)
        run = run_multilabel_scan if multi_label else run_scan
        summary = run(input_path, out_path, options=options, label_column=label_column,
                           pred_probs_column=pred_probs_column, id_column=id_column,
                           storage_options=storage_options, client=client, scheduler=scheduler,
                           rows_per_partition=rows_per_partition, overwrite=overwrite, cache=cache,
                           retries=retries, issues_per_part=issues_per_part, report=progress, backend=backend,
                           resume=resume, class_names=class_names, row_sum_tolerance=row_sum_tolerance,
                           on_bad_rows=on_bad_rows)
    return ScanResult(out=out_path, summary=summary, storage_options=storage_options)


def open_scan(out_path, storage_options=None) -> ScanResult:
    """Open a finished scan (verifies ``_SUCCESS`` and every checksum); ``out_path`` a path,
    path-like object or URL."""
    import json
    import os

    import fsspec

    out_path = os.fspath(out_path)
    with scrubbed(storage_options, [out_path]):
        read_manifest(out_path, storage_options=storage_options, verify=True)
        fs, root = fsspec.core.url_to_fs(out_path, **(storage_options or {}))
        with fs.open(f"{root.rstrip('/')}/summary.json", "r") as handle:
            summary = json.load(handle)
    return ScanResult(out=out_path, summary=summary, storage_options=storage_options)
