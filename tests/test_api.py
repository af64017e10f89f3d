"""The Python face's ergonomics: path-like locations, ScanResult's argument checks, the output
parts' column statistics, in-memory evaluation's label check, ``python -m labelscan``, the
report's stage order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_noisy_set

import labelscan
from labelscan.errors import InputError, UsageError
from labelscan.progress import in_run_order


@pytest.fixture(scope="module")
def finished(tmp_path_factory, threaded_client):
    """A scan of a small noisy set, started with ``pathlib.Path`` locations."""
    folder = tmp_path_factory.mktemp("api")
    (folder / "in").mkdir()
    write_noisy_set(str(folder / "in"), rows=4_000, classes=3, files=2, row_group_rows=1_000, seed=2)
    result = labelscan.scan(folder / "in", folder / "out", client=threaded_client)
    return folder / "out", result


def test_path_like_locations(finished):
    out, result = finished
    reopened = labelscan.open_scan(out)
    assert reopened.num_issues == result.num_issues > 0
    assert result.summary["input"]["path"] == str(out.parent / "in")


@pytest.mark.parametrize("n", [-5, "5", 2.5, True])
def test_issues_refuses_what_is_not_a_count(finished, n):
    with pytest.raises(UsageError, match="non-negative integer"):
        finished[1].issues(n)


def test_issues_and_mask_columns(finished):
    result = finished[1]
    assert len(result.issues(3)) == 3 and len(result.issues(0)) == 0
    assert len(result.issues(None)) == result.num_issues
    assert list(result.mask(columns=["row_id"]).columns) == ["row_id"]
    with pytest.raises(UsageError, match=r"no column \['nope'\] in mask/"):
        result.mask(columns=["row_id", "nope"])


def test_statistics_of_the_output_parts(finished):
    """Mask parts carry min/max statistics for their row keys only (row ranges prune row groups;
    the other columns hold every value everywhere), ranked issue parts for every column."""
    import pyarrow.parquet as pq

    out, _ = finished

    def with_statistics(path):
        row_group = pq.ParquetFile(path).metadata.row_group(0)
        return {row_group.column(i).path_in_schema for i in range(row_group.num_columns)
                if row_group.column(i).is_stats_set}

    assert with_statistics(out / "mask" / "part-00000.parquet") == {"row_id"}
    issues = pq.ParquetFile(out / "issues" / "part-00000.parquet")
    assert with_statistics(out / "issues" / "part-00000.parquet") == set(issues.schema_arrow.names)


def test_in_memory_evaluation_refuses_labels_outside_the_classes():
    rng = np.random.default_rng(1)
    pred_probs = rng.dirichlet(np.ones(2), 100)
    labels = rng.integers(0, 2, 100)
    mask = labelscan.find_label_issues(labels, pred_probs)
    for wrong, where in [(labels + 5, "outside \\[0, 2\\)"), (labels - 1, "outside \\[0, 2\\)")]:
        with pytest.raises(InputError, match=where):
            labelscan.evaluate.evaluate(mask, wrong, labels=labels, pred_probs=pred_probs)
    with pytest.raises(InputError, match="outside \\[0, K\\)"):
        labelscan.evaluate.evaluate(mask, labels - 1, labels=labels)
    assert labelscan.evaluate.evaluate(mask, labels, labels=labels, pred_probs=pred_probs)["num_true_errors"] == 0


def test_python_dash_m_runs_the_command_line():
    result = subprocess.run([sys.executable, "-m", "labelscan", "--help"], capture_output=True, text=True,
                            cwd=Path(labelscan.__file__).parent.parent, check=False)
    assert result.returncode == 0 and "scan" in result.stdout


def test_stages_in_run_order():
    timings = {"total": 3, "rank": 1, "cluster": 0, "cutoffs": 1, "read": 1, "unique-ids": 1, "zeta": 0}
    assert in_run_order(timings) == ["cluster", "read", "cutoffs", "unique-ids", "rank", "zeta", "total"]
