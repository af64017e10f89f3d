"""Dataset health (labelscan.health) against cleanlab 2.9's ``cleanlab.dataset``.

Oracle: cleanlab under ``oracle.stable_cleanlab()`` (stable argsorts, so the calibrated joint is
the canonical one) with pandas' ``DataFrame.sort_values`` made stable: cleanlab sorts its tables
with pandas' default quicksort, whose order of *equal* scores is machine-dependent; labelscan keeps
equal scores in class (pair) order, which is what a stable sort gives. Every value is compared
exactly (the tolerance asked for is 1e-9; the functions are bit-identical).
"""

from __future__ import annotations

import contextlib
import json
import warnings

import numpy as np
import pandas as pd
import pytest

import cleanlab.dataset

try:
    import oracle
    import synthetic
    from test_parity_real import DATA_ROOT, SET_PARAMS, _SKIP
except ImportError:  # tests/ imported as a package
    from tests import oracle, synthetic
    from tests.test_parity_real import DATA_ROOT, SET_PARAMS, _SKIP

from labelscan import health

CASES = ("cont_f32", "dirichlet_f64", "ties_f16", "missing_class_f32", "never_predicted_f32", "binary_f16",
         "singleton_f32")


@contextlib.contextmanager
def stable_pandas_sort():
    """``DataFrame.sort_values`` with ``kind="stable"`` (restored on exit)."""
    original = pd.DataFrame.sort_values

    def sort_values(self, *args, **kwargs):
        kwargs["kind"] = "stable"
        return original(self, *args, **kwargs)

    pd.DataFrame.sort_values = sort_values
    try:
        yield
    finally:
        pd.DataFrame.sort_values = original


@contextlib.contextmanager
def cleanlab_oracle():
    with oracle.stable_cleanlab(), stable_pandas_sort(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def assert_same_summary(expected: dict, got: dict):
    assert got["overall_label_health_score"] == expected["overall_label_health_score"]
    np.testing.assert_array_equal(got["joint"], expected["joint"])
    for key in ("classes_by_label_quality", "overlapping_classes"):
        pd.testing.assert_frame_equal(got[key], expected[key], check_exact=True)


@pytest.mark.parametrize("num_partitions", [1, 7])
@pytest.mark.parametrize("case", CASES)
def test_health_summary_matches_cleanlab(case, num_partitions):
    labels, pred_probs = synthetic.make(case)
    with cleanlab_oracle():
        expected = cleanlab.dataset.health_summary(labels, pred_probs, verbose=False)
    got = health.health_summary(labels, pred_probs, verbose=False, num_partitions=num_partitions)
    assert_same_summary(expected, got)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_each_function_and_input_mode_matches_cleanlab(asymmetric):
    labels, pred_probs = synthetic.make("cont_f64")
    num_classes = pred_probs.shape[1]
    names = [f"class {k}" for k in range(num_classes)]
    from cleanlab.count import compute_confident_joint, estimate_joint

    with cleanlab_oracle():
        joint = estimate_joint(labels, pred_probs)
        confident_joint = compute_confident_joint(labels, pred_probs, calibrate=False)
        calls = {
            "rank": lambda module, **kw: module.rank_classes_by_label_quality(**kw),
            "overlap": lambda module, **kw: module.find_overlapping_classes(asymmetric=asymmetric, **kw),
            "score": lambda module, **kw: module.overall_label_health_score(verbose=False, **kw),
        }
        modes = [
            dict(labels=labels, pred_probs=pred_probs, class_names=names),
            dict(joint=joint, num_examples=len(labels)),
            dict(labels=labels, pred_probs=pred_probs, confident_joint=confident_joint),   # calibrated
            dict(confident_joint=confident_joint, num_examples=len(labels)),               # used as is
            dict(confident_joint=np.ascontiguousarray(confident_joint)),                   # C order
        ]
        for name, call in calls.items():
            for mode in modes:
                if name == "score":
                    mode = {k: v for k, v in mode.items() if k != "class_names"}
                try:
                    expected = call(cleanlab.dataset, **mode)
                except ValueError as error:
                    with pytest.raises(ValueError, match="num_examples is None"):
                        call(health, **mode)
                    assert "num_examples" in str(error)
                    continue
                got = call(health, **mode)
                if isinstance(expected, pd.DataFrame):
                    pd.testing.assert_frame_equal(got, expected, check_exact=True)
                else:
                    assert got == expected, (name, sorted(mode))
        summary_modes = [dict(labels=labels, pred_probs=pred_probs, joint=joint),
                         dict(confident_joint=confident_joint, num_examples=len(labels)),
                         dict(labels=labels, pred_probs=pred_probs, confident_joint=confident_joint)]
        for mode in summary_modes:
            expected = cleanlab.dataset.health_summary(asymmetric=asymmetric, verbose=False, **mode)
            assert_same_summary(expected, health.health_summary(asymmetric=asymmetric, verbose=False, **mode))


def test_multi_label_is_refused_like_cleanlab():
    labels, pred_probs = synthetic.make("cont_f32")
    for name in ("rank_classes_by_label_quality", "find_overlapping_classes", "overall_label_health_score",
                 "health_summary"):
        with pytest.raises(ValueError) as expected:
            getattr(cleanlab.dataset, name)(labels, pred_probs, multi_label=True)
        with pytest.raises(ValueError) as got:
            getattr(health, name)(labels, pred_probs, multi_label=True)
        assert str(got.value) == str(expected.value)


def test_verbose_prints_the_overall_score(capsys):
    labels, pred_probs = synthetic.make("cont_f32")
    score = health.overall_label_health_score(labels, pred_probs)
    assert f"{score:.2f}" in capsys.readouterr().out


def test_summary_section_and_from_statistics(tmp_path):
    labels, pred_probs = synthetic.make("ties_f16")
    statistics = __import__("labelscan").estimate_statistics(labels, pred_probs, num_partitions=3)
    section = health.summary_section({**statistics, "label_counts": np.bincount(labels, minlength=10)},
                                     max_pairs=5)
    json.dumps(section)   # JSON-ready
    with cleanlab_oracle():
        expected = cleanlab.dataset.health_summary(labels, pred_probs, verbose=False)
    assert section["overall_label_health_score"] == expected["overall_label_health_score"]
    ranked = pd.DataFrame(section["classes_by_label_quality"])
    np.testing.assert_array_equal(ranked["class_index"], expected["classes_by_label_quality"]["Class Index"])
    np.testing.assert_array_equal(ranked["label_quality_score"],
                                  expected["classes_by_label_quality"]["Label Quality Score"])
    pairs = expected["overlapping_classes"]
    nonzero = pairs[pairs["Joint Probability"] > 0]
    assert section["num_overlapping_pairs"] == len(nonzero)
    top = pd.DataFrame(section["overlapping_classes"])
    np.testing.assert_array_equal(top["joint_probability"], nonzero["Joint Probability"].head(5))
    np.testing.assert_array_equal(top[["class_index_a", "class_index_b"]].to_numpy(),
                                  nonzero[["Class Index A", "Class Index B"]].head(5).to_numpy())


def test_scan_writes_health_into_summary(tmp_path, threaded_client):
    import pyarrow as pa
    import pyarrow.parquet as pq

    import labelscan

    labels, pred_probs = synthetic.make("cont_f32")
    folder = tmp_path / "in"
    folder.mkdir()
    table = pa.table({"label": labels, "pred_probs": pa.FixedSizeListArray.from_arrays(
        pa.array(pred_probs.ravel()), pred_probs.shape[1])})
    pq.write_table(table, folder / "part-0.parquet", row_group_size=600)
    labelscan.scan(str(folder), str(tmp_path / "out"), client=threaded_client, rows_per_partition=600)
    with cleanlab_oracle():
        expected = cleanlab.dataset.health_summary(labels, pred_probs, verbose=False)
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["health"]["overall_label_health_score"] == expected["overall_label_health_score"]
    assert_same_summary(expected, health.from_summary(written))
    assert_same_summary(expected, health.from_summary(labelscan.open_scan(str(tmp_path / "out")).summary))


_REAL = {}


def _real(name):
    if name not in _REAL:
        folder = DATA_ROOT / name
        _REAL[name] = (np.load(folder / "noisy_labels.npy").astype(np.int64), np.load(folder / "pred_probs.npy"))
    return _REAL[name]


@pytest.mark.parametrize("name", SET_PARAMS)
def test_health_on_real_sets(name):
    labels, pred_probs = _real(name)
    with cleanlab_oracle():
        expected = cleanlab.dataset.health_summary(labels, pred_probs, verbose=False)
    assert_same_summary(expected, health.health_summary(labels, pred_probs, verbose=False, num_partitions=7))


def test_real_data_skip_reason_names_the_folder():
    if SET_PARAMS and SET_PARAMS[0] != "<missing>":
        pytest.skip("real data present")
    assert str(DATA_ROOT) in _SKIP.kwargs["reason"]
