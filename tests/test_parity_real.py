"""Exact parity on the 16 real prediction sets in ../shared/data (never copied into the repo).

- 13 x cl_cifar10/<setting>/ : pred_probs.npy float16 (50000, 10), noisy_labels.npy uint8
- 3 x dcai_benchmarks/<set>/ : pred_probs.npy float64 (50000, 10), noisy_labels.npy uint8

For each set and num_partitions in {1, 7, 64}: the mask of all 7 filters and the
self_confidence ranking (for RANKED_FILTERS) must equal the stable oracle exactly.
The folder is located at ``<repo>/../shared/data`` or ``$LABELSCAN_SHARED_DATA``; when it is
missing every test here is skipped with the reason.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

try:
    import oracle
    from _fixtures import labelscan_api, mismatch
except ImportError:  # tests/ imported as a package
    from tests import oracle
    from tests._fixtures import labelscan_api, mismatch

PARTS = (1, 7, 64)
FILTERS = oracle.FILTERS
RANKED_FILTERS = FILTERS


def _data_root() -> Path:
    env = os.environ.get("LABELSCAN_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


DATA_ROOT = _data_root()


def _discover():
    sets = []
    for group in ("cl_cifar10", "dcai_benchmarks"):
        base = DATA_ROOT / group
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            if (d / "pred_probs.npy").is_file() and (d / "noisy_labels.npy").is_file():
                sets.append(f"{group}/{d.name}")
    return sets


SETS = _discover()
_SKIP = pytest.mark.skip(reason=f"real data folder ../shared/data not found: {DATA_ROOT}")
SET_PARAMS = SETS if SETS else [pytest.param("<missing>", marks=_SKIP)]

_ARRAYS = {}
_ORACLE = {}


def load(name):
    if name not in _ARRAYS:
        d = DATA_ROOT / name
        P = np.load(d / "pred_probs.npy")
        raw = np.load(d / "noisy_labels.npy")
        labels = raw.astype(np.int64)
        for a in (P, labels, raw):
            a.flags.writeable = False
        _ARRAYS[name] = (labels, P, raw)
    return _ARRAYS[name]


def oracle_result(name, filter_by, rank=None):
    key = (name, filter_by, rank)
    if key not in _ORACLE:
        labels, P, _ = load(name)
        _ORACLE[key] = oracle.oracle_find_label_issues(labels, P, filter_by=filter_by,
                                                       return_indices_ranked_by=rank)
    return _ORACLE[key]


def test_real_data_folder_is_complete():
    if not SETS:
        pytest.skip(f"real data folder ../shared/data not found: {DATA_ROOT}")
    assert len(SETS) == 16, SETS
    for name in SETS:
        labels, P, raw = load(name)
        assert P.shape == (50000, 10) and labels.shape == (50000,)
        assert P.dtype == (np.float16 if name.startswith("cl_cifar10") else np.float64)


CL010 = {
    "argmax": "predicted_neq_given",
    "conf_joint_only": "confident_learning",
    "cl_pbc": "prune_by_class",
    "cl_pbnr": "prune_by_noise_rate",
    "cl_both": "both",
}


@pytest.mark.parametrize("name", [s for s in SET_PARAMS
                                  if not isinstance(s, str) or s.startswith("cl_cifar10")]
                         or [pytest.param("<missing>", marks=_SKIP)])
def test_oracle_agrees_with_published_cleanlab010_issues(name):
    """Sanity check of data loading/alignment (cleanlab only): README says Jaccard 0.94-1.00."""
    labels, P, _ = load(name)
    d = DATA_ROOT / name
    for stem, f in CL010.items():
        path = d / f"issues_cleanlab010_{stem}.npy"
        if not path.is_file():
            continue
        ref = np.load(path).astype(bool)
        m = oracle_result(name, f)
        union = np.sum(ref | m)
        jac = np.sum(ref & m) / union if union else 1.0
        assert jac >= 0.9, (name, f, jac)


@pytest.mark.parametrize("parts", PARTS)
@pytest.mark.parametrize("name", SET_PARAMS)
def test_real_parity(name, parts):
    find = labelscan_api("find_label_issues")
    labels, P, _ = load(name)
    fail = []
    calls = [(f, None) for f in FILTERS] + [(f, "self_confidence") for f in RANKED_FILTERS]
    for f, rank in calls:
        exp = oracle_result(name, f, rank)
        tag = f"[set={name} num_partitions={parts} filter_by={f} ranked_by={rank}]"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = find(labels, P, filter_by=f, return_indices_ranked_by=rank,
                           num_partitions=parts)
        except Exception as exc:
            fail.append(f"{tag}: raised {type(exc).__name__}: {exc}")
            continue
        scores = oracle.oracle_scores(labels, P) if rank else None
        msg = mismatch(exp, got, labels, P, scores)
        if msg:
            fail.append(f"{tag}:\n{msg}")
    assert not fail, "\n".join(fail)


@pytest.mark.parametrize("name", (SETS[:1] + SETS[-1:]) if SETS else SET_PARAMS)
def test_real_parity_raw_uint8_labels(name):
    """The labels as stored (uint8) give the same answer as cleanlab on the same uint8 array."""
    find = labelscan_api("find_label_issues")
    _, P, raw = load(name)
    for f, rank in (("prune_by_noise_rate", None), ("low_self_confidence", "self_confidence")):
        exp = oracle.oracle_find_label_issues(raw, P, filter_by=f, return_indices_ranked_by=rank)
        got = find(raw, P, filter_by=f, return_indices_ranked_by=rank, num_partitions=7)
        msg = mismatch(exp, got, raw, P)
        assert not msg, f"[set={name} uint8 labels filter_by={f} ranked_by={rank}]\n{msg}"
