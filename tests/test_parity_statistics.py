"""Parity of ``labelscan.estimate_statistics`` and ``labelscan.get_label_quality_scores``.

estimate_statistics vs cleanlab.count (stable oracle, ``oracle.oracle_statistics``):
- confident_thresholds: bit-identical, same dtype (dtype(P) if every class is present, else
  float64 -- spec §2);
- confident_joint (uncalibrated, diagonal >= 1) and calibrated_confident_joint: identical int64;
- joint, noise_matrix, inverse_noise_matrix, py: float64 within 1e-12 (absolute);
- num_label_issues (off_diagonal) and num_label_issues_per_class (default filter): identical;
for every synthetic hard case and num_partitions in {1, 7, 64}.
"""

from __future__ import annotations

import numpy as np
import pytest

try:
    import oracle
    import synthetic
    from _fixtures import labelscan_api
except ImportError:  # tests/ imported as a package
    from tests import oracle, synthetic
    from tests._fixtures import labelscan_api

PARTS = (1, 7, 64)
_ORACLE = {}


def oracle_stats(case):
    if case not in _ORACLE:
        labels, P = synthetic.make(case)
        _ORACLE[case] = oracle.oracle_statistics(labels, P)
    return _ORACLE[case]


def _bits(a):
    a = np.asarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def compare_statistics(expected, got, where=""):
    """List of human-readable differences between two statistics dicts."""
    problems = []
    missing = [k for k in oracle.STAT_KEYS if k not in got]
    if missing:
        return [f"{where}missing keys {missing}"]
    # thresholds: dtype + bits
    t_exp = expected["confident_thresholds"]
    t_got = got["confident_thresholds"]
    if not isinstance(t_got, np.ndarray):
        problems.append(f"{where}confident_thresholds is {type(t_got).__name__}, not ndarray")
        t_got = np.asarray(t_got)
    if t_got.dtype != t_exp.dtype or t_got.shape != t_exp.shape:
        problems.append(f"{where}confident_thresholds dtype/shape {t_got.dtype}{t_got.shape} "
                        f"!= {t_exp.dtype}{t_exp.shape}")
    else:
        bad = np.flatnonzero(_bits(t_got) != _bits(t_exp))
        if len(bad):
            k = int(bad[0])
            problems.append(f"{where}confident_thresholds differ in {len(bad)} classes; first "
                            f"class {k}: expected {t_exp[k]!r} got {t_got[k]!r} "
                            f"(diff {float(t_got[k]) - float(t_exp[k]):.3g})")
    for key in ("confident_joint", "calibrated_confident_joint"):
        e, g = expected[key], np.asarray(got[key])
        if g.dtype != np.int64 or g.shape != e.shape:
            problems.append(f"{where}{key} dtype/shape {g.dtype}{g.shape} != int64{e.shape}")
        elif not np.array_equal(e, g):
            cells = np.argwhere(e != g)
            i, j = (int(x) for x in cells[0])
            problems.append(f"{where}{key}: {len(cells)} cells differ; first [{i},{j}] expected "
                            f"{e[i, j]} got {g[i, j]}; row {i} expected {e[i].tolist()[:12]} got "
                            f"{g[i].tolist()[:12]}")
    for key in ("joint", "noise_matrix", "inverse_noise_matrix", "py"):
        e, g = expected[key], np.asarray(got[key])
        if g.shape != e.shape:
            problems.append(f"{where}{key} shape {g.shape} != {e.shape}")
            continue
        err = np.abs(g.astype(np.float64) - e)
        if not np.all(err <= 1e-12):
            idx = np.unravel_index(int(np.nanargmax(np.where(np.isnan(err), np.inf, err))),
                                   e.shape)
            problems.append(f"{where}{key}: max abs error {np.nanmax(err):.3g} at {idx} "
                            f"(expected {e[idx]!r}, got {g[idx]!r})")
    e, g = expected["num_label_issues"], got["num_label_issues"]
    if not isinstance(g, (int, np.integer)) or int(g) != e:
        problems.append(f"{where}num_label_issues expected {e} got {g!r}")
    e, g = expected["num_label_issues_per_class"], np.asarray(got["num_label_issues_per_class"])
    if g.shape != e.shape or not np.array_equal(e, g):
        problems.append(f"{where}num_label_issues_per_class expected {e.tolist()[:20]} got "
                        f"{g.tolist()[:20]}")
    return problems


# --- oracle self-checks (cleanlab only) ----------------------------------------------------------


@pytest.mark.parametrize("case", ("cont_f32", "missing_class_f16", "ties_f16"))
def test_oracle_statistics_consistent(case):
    labels, P = synthetic.make(case)
    st = oracle_stats(case)
    K = P.shape[1]
    n = np.bincount(labels, minlength=K)
    assert st["confident_joint"].dtype == np.int64
    assert st["calibrated_confident_joint"].dtype == np.int64
    np.testing.assert_array_equal(st["calibrated_confident_joint"].sum(axis=1), n)
    assert np.all(np.diagonal(st["confident_joint"]) >= 1)
    np.testing.assert_allclose(st["joint"].sum(), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(st["py"].sum(), 1.0, rtol=0, atol=1e-12)
    assert st["num_label_issues_per_class"].sum() == oracle.oracle_find_label_issues(labels, P).sum()
    exp_dtype = P.dtype if np.all(n > 0) else np.float64
    assert st["confident_thresholds"].dtype == exp_dtype
    # reference thresholds (independent code path) are bit-identical
    t = oracle.reference_thresholds(labels, P)
    assert t.dtype == exp_dtype
    np.testing.assert_array_equal(_bits(t), _bits(st["confident_thresholds"]))
    # confident_learning count == num_label_issues (spec §9)
    assert oracle.oracle_find_label_issues(labels, P, filter_by="confident_learning").sum() == \
        st["num_label_issues"]
    assert compare_statistics(st, st) == []


# --- labelscan -------------------------------------------------------------------------------


@pytest.mark.parametrize("parts", PARTS)
@pytest.mark.parametrize("case", tuple(synthetic.CASES))
def test_estimate_statistics_parity(case, parts):
    estimate = labelscan_api("estimate_statistics")
    labels, P = synthetic.make(case)
    got = estimate(labels, P, num_partitions=parts)
    problems = compare_statistics(oracle_stats(case), got,
                                  where=f"[case={case} num_partitions={parts}] ")
    assert not problems, "\n".join(problems)


def test_estimate_statistics_threshold_dtype_rule():
    """float32 input: float32 thresholds with all classes present, float64 when one is absent."""
    estimate = labelscan_api("estimate_statistics")
    for case, dt in (("cont_f32", np.float32), ("missing_class_f32", np.float64),
                     ("ties_f16", np.float16), ("missing_class_f16", np.float64),
                     ("cont_f64", np.float64)):
        labels, P = synthetic.make(case)
        got = estimate(labels, P, num_partitions=7)["confident_thresholds"]
        assert np.asarray(got).dtype == dt, (case, np.asarray(got).dtype)


SCORE_CASES = ("cont_f32", "cont_f64", "ties_f16", "missing_class_f32", "missing_class_f16",
               "binary_f32", "binary_f16", "not_normalized_f32", "singleton_f32", "k1000_f32")


@pytest.mark.parametrize("case", SCORE_CASES)
def test_label_quality_scores_parity(case):
    """Bit-identical scores (and dtype) for every method x adjust_pred_probs; cwe + adjust raises
    ValueError like cleanlab."""
    score = labelscan_api("get_label_quality_scores")
    labels, P = synthetic.make(case)
    fail = []
    for method in oracle.RANKERS:
        for adjust in (False, True):
            tag = f"[case={case} method={method} adjust={adjust}]"
            if method == "confidence_weighted_entropy" and adjust:
                with pytest.raises(ValueError):
                    oracle.oracle_scores(labels, P, method, adjust)
                try:
                    score(labels, P, method=method, adjust_pred_probs=adjust)
                except ValueError:
                    pass
                except Exception as exc:
                    fail.append(f"{tag} expected ValueError, got {exc!r}")
                else:
                    fail.append(f"{tag} expected ValueError, labelscan returned")
                continue
            exp = oracle.oracle_scores(labels, P, method, adjust)
            try:
                got = score(labels, P, method=method, adjust_pred_probs=adjust)
            except Exception as exc:
                fail.append(f"{tag} raised {exc!r}")
                continue
            got = np.asarray(got)
            if got.dtype != exp.dtype or got.shape != exp.shape:
                fail.append(f"{tag} dtype/shape {got.dtype}{got.shape} != {exp.dtype}{exp.shape}")
                continue
            bad = np.flatnonzero(_bits(got) != _bits(exp))
            if len(bad):
                i = int(bad[0])
                fail.append(f"{tag} {len(bad)} scores differ; first row {i}: expected {exp[i]!r} "
                            f"got {got[i]!r}")
    assert not fail, "\n".join(fail)


def test_oracle_scores_match_reference():
    """Self-check of the oracle wrapper against the from-spec formulas (cleanlab only)."""
    for case in ("cont_f32", "ties_f16", "missing_class_f32"):
        labels, P = synthetic.make(case)
        for method in oracle.RANKERS:
            for adjust in (False, True):
                if method == "confidence_weighted_entropy" and adjust:
                    continue
                exp = oracle.oracle_scores(labels, P, method, adjust)
                ref = oracle.reference_scores(labels, P, method, adjust)
                assert ref.dtype == exp.dtype, (case, method, adjust)
                np.testing.assert_allclose(ref, exp, rtol=1e-6, atol=0,
                                           err_msg=f"{case} {method} {adjust}")
