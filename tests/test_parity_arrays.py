"""Exact parity of ``labelscan.find_label_issues`` with cleanlab 2.9 (stable-argsort oracle).

Sections
1. Oracle self-tests (cleanlab only; they pass without the engine): every sort call site of
   cleanlab's find_label_issues path is covered by the patch, the patch is removed afterwards,
   it is actually exercised, a hand-computed float16 tie case, and agreement with an independent
   from-spec reference on random tie-heavy data.
2. labelscan vs oracle: 7 filters x {mask, 3 rankings x adjust_pred_probs} x synthetic hard cases
   x num_partitions {1, 7, 64} (uneven partitions are made by labelscan itself); K=1000;
   frac_noise, num_to_remove_per_class, min_examples_per_class; error parity.
3. labelscan vs STOCK cleanlab: differences may only be rows tied at a selection cut (or a
   calibration rounding tie), counts equal where the count does not depend on ties.
"""

from __future__ import annotations

import ast
import pathlib
import warnings

import numpy as np
import pytest

try:
    import oracle
    import synthetic
    from _fixtures import OracleCache, labelscan_api, mismatch
except ImportError:  # tests/ imported as a package
    from tests import oracle, synthetic
    from tests._fixtures import OracleCache, labelscan_api, mismatch

FILTERS = oracle.FILTERS
PARTS = (1, 7, 64)
# (return_indices_ranked_by, adjust_pred_probs); None = boolean mask
RANK_VARIANTS = (
    (None, False),
    ("self_confidence", False),
    ("self_confidence", True),
    ("normalized_margin", False),
    ("normalized_margin", True),
    ("confidence_weighted_entropy", False),
)
REJECTED_VARIANT = ("confidence_weighted_entropy", True)  # cleanlab raises ValueError

_CACHE = OracleCache()


def _rank_kwargs(rank, adjust):
    return dict(return_indices_ranked_by=rank,
                rank_by_kwargs={"adjust_pred_probs": True} if adjust else None)


def _oracle(case, **kw):
    labels, P = synthetic.make(case)
    return _CACHE.get(case, oracle.oracle_find_label_issues, labels, P, **kw)


def _check(case, parts, fail, **kw):
    """Run labelscan and the oracle with the same arguments; append a description to ``fail``."""
    find = labelscan_api("find_label_issues")
    labels, P = synthetic.make(case)
    status, expected = _oracle(case, **kw)
    tag = f"[case={case} num_partitions={parts} {kw}]"
    if status == "raise":
        try:
            find(labels, P, num_partitions=parts, **kw)
        except type(expected):
            return
        except Exception as exc:
            fail.append(f"{tag}: cleanlab raises {type(expected).__name__}, labelscan raised "
                        f"{type(exc).__name__}: {exc}")
            return
        fail.append(f"{tag}: cleanlab raises {type(expected).__name__}({expected}); "
                    f"labelscan returned normally")
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = find(labels, P, num_partitions=parts, **kw)
    except Exception as exc:
        fail.append(f"{tag}: labelscan raised {type(exc).__name__}: {exc}")
        return
    scores = None
    rank = kw.get("return_indices_ranked_by")
    if rank is not None:
        adj = bool((kw.get("rank_by_kwargs") or {}).get("adjust_pred_probs", False))
        scores = oracle.oracle_scores(labels, P, rank, adj)
    msg = mismatch(expected, got, labels, P, scores)
    if msg:
        fail.append(f"{tag}:\n{msg}")


def _report(fail):
    if fail:
        pytest.fail(f"{len(fail)} mismatching call(s):\n" + "\n".join(fail), pytrace=False)


# =================================================================================================
# 1. Oracle self-tests
# =================================================================================================

_CLEANLAB_ROOT = pathlib.Path(oracle.cleanlab.__file__).parent
# modules on the find_label_issues / statistics / scores path
_PATH_MODULES = ("filter.py", "rank.py", "count.py", "internal/util.py",
                 "internal/label_quality_utils.py", "internal/validation.py",
                 "internal/latent_algebra.py", "internal/constants.py",
                 "internal/multilabel_utils.py")
_ORDER_SENSITIVE = {"argsort", "argpartition", "partition", "lexsort"}


def _sort_call_sites():
    sites = []
    for rel in _PATH_MODULES:
        tree = ast.parse((_CLEANLAB_ROOT / rel).read_text())
        parents = {}
        for node in ast.walk(tree):
            for ch in ast.iter_child_nodes(node):
                parents[ch] = node
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                if name in _ORDER_SENSITIVE or (name == "sort" and node.keywords):
                    base = ast.unparse(f.value) if isinstance(f, ast.Attribute) else ""
                    fn = node
                    while fn in parents and not isinstance(fn, ast.FunctionDef):
                        fn = parents[fn]
                    fname = fn.name if isinstance(fn, ast.FunctionDef) else "<module>"
                    sites.append((rel, node.lineno, base, name, fname))
    return sites


def test_oracle_covers_every_sort_call_site():
    """Every order-sensitive sort on the path is np.argsort in a patched module, or the one
    ndarray.argsort() in rank.find_top_issues (replaced wholesale)."""
    assert oracle.cleanlab.__version__.startswith("2.9"), oracle.cleanlab.__version__
    sites = _sort_call_sites()
    patched_files = {m.replace("cleanlab.", "").replace(".", "/") + ".py"
                     for m in oracle.PATCHED_MODULES}
    uncovered = []
    for rel, line, base, name, fname in sites:
        if name == "argsort" and base == "np" and rel in patched_files:
            continue
        if name == "argsort" and rel == "rank.py" and fname == "find_top_issues":
            continue
        uncovered.append((rel, line, base, name, fname))
    assert not uncovered, f"sort call sites not covered by stable_cleanlab(): {uncovered}"
    found = sorted((rel, line) for rel, line, *_ in sites)
    expected = sorted([("filter.py", 333), ("filter.py", 489), ("filter.py", 502),
                       ("filter.py", 536), ("filter.py", 856), ("filter.py", 905),
                       ("rank.py", 394), ("rank.py", 461), ("internal/util.py", 222)])
    assert found == expected, f"cleanlab sort call sites changed: {found}"


def test_oracle_patch_is_removed_after_context():
    import cleanlab.experimental.label_issues_batched as lib
    from cleanlab import rank

    orig_fti = rank.find_top_issues
    assert not oracle.patch_is_active()
    with oracle.stable_cleanlab():
        assert oracle.patch_is_active()
        assert oracle.cleanlab.filter.np is not np
        assert rank.find_top_issues is not orig_fti
        assert lib.find_top_issues is rank.find_top_issues
        with oracle.stable_cleanlab():  # re-entrant
            assert oracle.patch_is_active()
        assert oracle.patch_is_active()
    assert not oracle.patch_is_active()
    for name in oracle.PATCHED_MODULES:
        mod = __import__(name, fromlist=["np"])
        assert mod.np is np, name
    assert rank.find_top_issues is orig_fti and lib.find_top_issues is orig_fti
    with pytest.raises(RuntimeError):
        with oracle.stable_cleanlab():
            raise RuntimeError("boom")
    assert not oracle.patch_is_active()


def test_oracle_patch_is_exercised():
    labels, P = synthetic.make("ties_f16")
    with oracle.stable_cleanlab() as proxy:
        before = dict(proxy.argsort_calls)
        for f in ("prune_by_noise_rate", "prune_by_class", "low_self_confidence"):
            oracle.oracle_find_label_issues(labels, P, filter_by=f,
                                            return_indices_ranked_by="self_confidence")
        from cleanlab import rank
        rank.find_top_issues(np.zeros(5), top=3)
        calls = {k: v - before.get(k, 0) for k, v in proxy.argsort_calls.items()}
    for site in ("cleanlab.filter:_prune_by_count", "cleanlab.filter:_prune_by_class",
                 "cleanlab.filter:find_label_issues", "cleanlab.rank:order_label_issues",
                 "cleanlab.internal.util:round_preserving_sum", "cleanlab.rank:find_top_issues"):
        assert calls.get(site, 0) > 0, (site, calls)


def test_oracle_hand_check_round_preserving_sum_tie():
    """Spec §4: [1,28,4,0,2,4,4,3,5,7]/58*64 has equal remainders .414 at columns 2,5,6 and needs
    one extra unit: the stable rule gives it to the HIGHEST column (6)."""
    from cleanlab.internal.util import round_preserving_sum

    row = np.array([1, 28, 4, 0, 2, 4, 4, 3, 5, 7]) / 58 * 64
    expected = np.array([1, 31, 4, 0, 2, 4, 5, 3, 6, 8])
    with oracle.stable_cleanlab():
        got = round_preserving_sum(row)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(oracle.reference_round_row(row), expected)
    # subtracting: equal negative remainders -> the LOWEST column loses first
    row2 = np.array([0.6, 0.6, 0.6, 1.2])  # rounds to 1,1,1,1 = 4, target round(3.0) = 3
    with oracle.stable_cleanlab():
        np.testing.assert_array_equal(round_preserving_sum(row2), [0, 1, 1, 1])
    np.testing.assert_array_equal(oracle.reference_round_row(row2), [0, 1, 1, 1])


def test_oracle_hand_check_tiny_float16_ties():
    """22 float16 rows, K=2, worked by hand from the spec.

    class 0 (rows 0-11): 6x[.875,.125], 4x[.375,.625] (rows 6-9, identical), 2x[.125,.875]
    class 1 (rows 12-21): 8x[.125,.875], 2x[.875,.125]
    t0 = float16(7/12) = 0.5835, t1 = float16(.725) = 0.725 -> rows 6-9 are confident in no class.
    cj = [[6,2],[2,8]] -> calibrated [[9,3],[2,8]] -> prune counts: class 0 loses 3, class 1 loses 2.
    Class 0's 3 smallest P[:,0]: rows 10, 11 (.125) and ONE of the tied rows 6..9 (.375): the
    stable rule takes row 6.  The same row wins the noise-rate cut (margin .25 tied for rows 6..9).
    float16: .375 + 1e-6 == .375, so _reduce_issues keeps row 6 flagged.
    """
    labels, P = synthetic.tiny_tie_case()
    exp_mask = {
        "prune_by_noise_rate": [6, 10, 11, 20, 21],
        "prune_by_class": [6, 10, 11, 20, 21],
        "both": [6, 10, 11, 20, 21],
        "confident_learning": [10, 11, 20, 21],
        "predicted_neq_given": [6, 7, 8, 9, 10, 11, 20, 21],
        "low_normalized_margin": [10, 11, 20, 21],
        "low_self_confidence": [10, 11, 20, 21],
    }
    exp_rank = {
        "prune_by_noise_rate": [10, 11, 20, 21, 6],
        "prune_by_class": [10, 11, 20, 21, 6],
        "both": [10, 11, 20, 21, 6],
        "confident_learning": [10, 11, 20, 21],
        "predicted_neq_given": [10, 11, 20, 21, 6, 7, 8, 9],
        "low_normalized_margin": [10, 11, 20, 21],
        "low_self_confidence": [10, 11, 20, 21],
    }
    from cleanlab import count

    t = count.get_confident_thresholds(labels, P)
    assert t.dtype == np.float16
    np.testing.assert_array_equal(t, np.array([7 / 12, 0.725], dtype=np.float16))
    np.testing.assert_array_equal(count.compute_confident_joint(labels, P, calibrate=False),
                                  [[6, 2], [2, 8]])
    with oracle.stable_cleanlab():
        np.testing.assert_array_equal(count.compute_confident_joint(labels, P), [[9, 3], [2, 8]])
    for f in FILTERS:
        m = oracle.oracle_find_label_issues(labels, P, filter_by=f)
        assert np.flatnonzero(m).tolist() == exp_mask[f], f
        for rank in ("self_confidence", "normalized_margin"):
            r = oracle.oracle_find_label_issues(labels, P, filter_by=f,
                                                return_indices_ranked_by=rank)
            assert r.tolist() == exp_rank[f], (f, rank)


def _random_tie_sets():
    out = []
    for seed in range(24):
        rng = np.random.default_rng(1000 + seed)
        n = int(rng.integers(60, 400))
        k = int(rng.choice([2, 3, 5, 10]))
        kind = seed % 3
        if kind == 0:
            labels, P = synthetic.tie_heavy_float16(n, k, seed=seed, noise=0.3)
        elif kind == 1:
            labels, P = synthetic.quantized_float32(n, k, seed=seed, q=8, noise=0.3)
        else:
            labels, P = synthetic.duplicated_rows(n, k, seed=seed, pool=12)
        if len(np.unique(labels)) < 2:
            continue
        out.append((f"seed{seed}-n{n}-k{k}-{P.dtype}", labels, P))
    return out


def test_oracle_equals_independent_reference_on_ties():
    """Patched cleanlab == a from-spec reimplementation whose ties are explicit (lexsort)."""
    fail = []
    for name, labels, P in _random_tie_sets():
        for f in FILTERS:
            for extra in ({}, {"frac_noise": 0.5}, {"min_examples_per_class": 5}):
                if extra and f not in oracle.PRUNE_FILTERS:
                    continue
                for rank in (None, "self_confidence", "normalized_margin"):
                    exp = oracle.oracle_find_label_issues(labels, P, filter_by=f,
                                                          return_indices_ranked_by=rank, **extra)
                    got = oracle.reference_find_label_issues(labels, P, filter_by=f,
                                                             return_indices_ranked_by=rank,
                                                             **extra)
                    msg = mismatch(exp, got, labels, P)
                    if msg:
                        fail.append(f"{name} {f} {rank} {extra}: {msg}")
    _report(fail)


def test_stock_cleanlab_differs_from_oracle_on_ties():
    """The patch matters on this machine: stock cleanlab breaks some ties differently."""
    differing = []
    for case in ("ties_f16", "ties_q16_f32", "dup_rows_f64"):
        labels, P = synthetic.make(case)
        for f in FILTERS:
            a = oracle.oracle_find_label_issues(labels, P, filter_by=f,
                                                return_indices_ranked_by="self_confidence")
            b = oracle.stock_find_label_issues(labels, P, filter_by=f,
                                               return_indices_ranked_by="self_confidence")
            if not np.array_equal(a, b):
                differing.append((case, f))
    if not differing:
        pytest.skip("numpy's default argsort happened to break every tie stably on this host")


@pytest.mark.parametrize("case", synthetic.SMALL_CASES)
def test_oracle_vs_stock_differs_only_in_ties(case):
    """Validates the tie-only checker used in section 3 (oracle vs stock, no labelscan)."""
    labels, P = synthetic.make(case)
    fail = []
    for f in FILTERS:
        a = oracle.oracle_find_label_issues(labels, P, filter_by=f)
        b = oracle.stock_find_label_issues(labels, P, filter_by=f)
        comparable, probs = oracle.tie_only_problems(labels, P, f, a, b)
        fail += [f"{case} {f}: {p}" for p in probs]
        if comparable and np.array_equal(a, b):
            ra = oracle.oracle_find_label_issues(labels, P, filter_by=f,
                                                 return_indices_ranked_by="self_confidence")
            rb = oracle.stock_find_label_issues(labels, P, filter_by=f,
                                                return_indices_ranked_by="self_confidence")
            s = oracle.oracle_scores(labels, P)
            fail += [f"{case} {f} rank: {p}" for p in oracle.rank_tie_only_problems(s, ra, rb)]
    _report(fail)


def test_synthetic_cases_have_their_property():
    from cleanlab import count

    labels, P = synthetic.make("missing_class_f32")
    assert 3 not in set(labels.tolist())
    assert count.get_confident_thresholds(labels, P).dtype == np.float64
    labels, P = synthetic.make("never_predicted_f32")
    assert not np.any(P.argmax(axis=1) == 2)
    cj = count.compute_confident_joint(labels, P, calibrate=False)
    assert cj[:, 2].sum() > 100  # many rows are "confidently" the never-predicted class
    labels, P = synthetic.make("singleton_f32")
    assert np.bincount(labels)[4] == 1
    labels, P = synthetic.make("singleton_ok_f64")
    assert np.bincount(labels)[1] == 1
    labels, P = synthetic.make("all_correct_f32")
    assert np.all(P.argmax(axis=1) == labels)
    labels, P = synthetic.make("not_normalized_f32")
    s = P.astype(np.float64).sum(axis=1)
    assert s.max() <= 1.0 + 1e-6 and s.min() < 0.6 and np.mean(s < 0.9999) > 0.5
    for name in ("ties_f16", "missing_class_f16", "binary_f16"):
        assert synthetic.make(name)[1].dtype == np.float16
    labels, P = synthetic.make("k1000_f32")
    assert P.shape == (20000, 1000)
    for name in synthetic.CASES:
        labels, P = synthetic.make(name)
        assert labels.dtype == np.int64 and P.ndim == 2 and len(labels) == len(P)
        assert P.min() >= 0 and P.max() <= 1, name
        assert not P.flags.writeable


# =================================================================================================
# 2. labelscan vs the stable oracle
# =================================================================================================


@pytest.mark.parametrize("parts", PARTS)
@pytest.mark.parametrize("filter_by", FILTERS)
@pytest.mark.parametrize("case", synthetic.SMALL_CASES)
def test_find_label_issues_parity(case, filter_by, parts):
    """Mask and every ranking (x adjust_pred_probs) identical to the oracle; the combination
    cleanlab rejects (confidence_weighted_entropy + adjust_pred_probs) must raise ValueError."""
    fail = []
    for rank, adjust in RANK_VARIANTS + (REJECTED_VARIANT,):
        _check(case, parts, fail, filter_by=filter_by, **_rank_kwargs(rank, adjust))
    status, exc = _oracle(case, filter_by=filter_by, **_rank_kwargs(*REJECTED_VARIANT))
    assert status == "raise" and isinstance(exc, ValueError)
    _report(fail)


K1000_CALLS = (
    dict(filter_by="prune_by_noise_rate"),
    dict(filter_by="prune_by_noise_rate", return_indices_ranked_by="self_confidence"),
    dict(filter_by="prune_by_class"),
    dict(filter_by="both", return_indices_ranked_by="normalized_margin"),
    dict(filter_by="low_self_confidence", return_indices_ranked_by="self_confidence"),
)


@pytest.mark.parametrize("parts", PARTS)
def test_find_label_issues_parity_k1000(parts):
    fail = []
    for kw in K1000_CALLS:
        _check("k1000_f32", parts, fail, **kw)
    _report(fail)


OPTION_CASES = ("cont_f32", "ties_f16", "ties_q16_f32", "dup_rows_f64", "missing_class_f16",
                "singleton_f32", "binary_f16")


@pytest.mark.parametrize("parts", PARTS)
@pytest.mark.parametrize("case", OPTION_CASES)
def test_frac_noise_parity(case, parts):
    fail = []
    for frac in (0.5, 0.3):
        for f in oracle.PRUNE_FILTERS:
            _check(case, parts, fail, filter_by=f, frac_noise=frac)
        _check(case, parts, fail, filter_by="prune_by_noise_rate", frac_noise=frac,
               return_indices_ranked_by="self_confidence")
    _report(fail)


@pytest.mark.parametrize("parts", PARTS)
@pytest.mark.parametrize("case", OPTION_CASES)
def test_min_examples_per_class_parity(case, parts):
    fail = []
    for min_ex in (0, 5, 400):
        for f in FILTERS:
            _check(case, parts, fail, filter_by=f, min_examples_per_class=min_ex)
    _report(fail)


def _num_to_remove_vectors(K):
    return (
        [int(3 * (k % 4)) for k in range(K)],
        [5] + [0] * (K - 1),
        [0] * K,
        [40] * K,
    )


@pytest.mark.parametrize("parts", PARTS)
@pytest.mark.parametrize("case", ("cont_f32", "ties_f16", "dup_rows_f64", "binary_f32",
                                  "missing_class_f32"))
def test_num_to_remove_per_class_parity(case, parts):
    """Prune filters honour it (spec §5.3, incl. NaN -> INT_MIN rows for zero-noise classes);
    the other filters must raise ValueError like cleanlab."""
    K = synthetic.make(case)[1].shape[1]
    fail = []
    for r in _num_to_remove_vectors(K):
        for f in FILTERS:  # non-prune filters: ValueError in cleanlab
            _check(case, parts, fail, filter_by=f, num_to_remove_per_class=r)
        _check(case, parts, fail, filter_by="prune_by_class", num_to_remove_per_class=r,
               return_indices_ranked_by="self_confidence")
    _report(fail)


@pytest.mark.parametrize("parts", (1, 7))
@pytest.mark.parametrize("case", ("cont_f32", "ties_f16", "missing_class_f32"))
def test_confident_joint_argument_parity(case, parts):
    """A user-supplied confident_joint is used as-is by the prune filters (not recalibrated) and
    ignored by confident_learning / low_* (spec §1 step 8)."""
    from cleanlab import count

    labels, P = synthetic.make(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = count.compute_confident_joint(labels, P, calibrate=False)  # Fortran-ordered
        with oracle.stable_cleanlab():
            cal = count.compute_confident_joint(labels, P, calibrate=True)
    fail = []
    for cj in (raw, np.ascontiguousarray(cal), raw * 3):
        for f in FILTERS:
            _check(case, parts, fail, filter_by=f, confident_joint=cj)
        _check(case, parts, fail, filter_by="prune_by_noise_rate", confident_joint=cj,
               frac_noise=0.5, return_indices_ranked_by="self_confidence")
    _report(fail)


def test_all_correct_flags_nothing():
    find = labelscan_api("find_label_issues")
    labels, P = synthetic.make("all_correct_f32")
    for f in FILTERS:
        for parts in PARTS:
            m = find(labels, P, filter_by=f, num_partitions=parts)
            assert m.dtype == bool and not m.any(), (f, parts, int(m.sum()))


def test_read_only_inputs_are_not_modified():
    find = labelscan_api("find_label_issues")
    labels, P = synthetic.tie_heavy_float16(1500, 5, seed=77)
    l0, p0 = labels.copy(), P.copy()
    for f in FILTERS:
        find(labels, P, filter_by=f, num_partitions=7,
             return_indices_ranked_by="self_confidence",
             rank_by_kwargs={"adjust_pred_probs": True})
    np.testing.assert_array_equal(labels, l0)
    np.testing.assert_array_equal(P.view(np.uint16), p0.view(np.uint16))


def test_label_dtypes_and_list_input():
    """uint8 / int32 labels and a python list give cleanlab's answer too."""
    labels, P = synthetic.make("ties_f16")
    fail = []
    find = labelscan_api("find_label_issues")
    for lab in (labels.astype(np.uint8), labels.astype(np.int32), labels.tolist()):
        for f in ("prune_by_noise_rate", "low_normalized_margin"):
            for rank in (None, "self_confidence"):
                exp = oracle.oracle_find_label_issues(lab, P, filter_by=f,
                                                      return_indices_ranked_by=rank)
                try:
                    got = find(lab, P, filter_by=f, return_indices_ranked_by=rank,
                               num_partitions=7)
                except Exception as exc:
                    fail.append(f"{type(lab).__name__}/{getattr(lab, 'dtype', '')} {f} {rank}: "
                                f"raised {exc!r}")
                    continue
                msg = mismatch(exp, got, labels, P)
                if msg:
                    fail.append(f"{type(lab).__name__}/{getattr(lab, 'dtype', '')} {f} {rank}: "
                                f"{msg}")
    _report(fail)


def _bad_inputs():
    labels, P = synthetic.tie_heavy_float16(300, 4, seed=3)
    P64 = P.astype(np.float64)
    too_big = P64.copy()
    too_big[5, 1] = 1.0 + 1e-5
    neg = labels.copy()
    neg[3] = -1
    big = labels.copy()
    big[3] = 4
    return [
        ("label >= K", big, P, {}),
        ("negative label", neg, P, {}),
        ("length mismatch", labels[:-1], P, {}),
        ("value > 1+1e-6", labels, too_big, {}),
        ("single non-zero class", np.full_like(labels, 2), P, {}),
        ("unknown filter_by", labels, P, {"filter_by": "nonsense"}),
        ("unknown rank_by", labels, P, {"return_indices_ranked_by": "nonsense"}),
        ("num_to_remove with confident_learning", labels, P,
         {"filter_by": "confident_learning", "num_to_remove_per_class": [1, 1, 1, 1]}),
        ("cwe + adjust", labels, P, {"return_indices_ranked_by": "confidence_weighted_entropy",
                                     "rank_by_kwargs": {"adjust_pred_probs": True}}),
    ]


def test_invalid_inputs_raise_like_cleanlab():
    find = labelscan_api("find_label_issues")
    fail = []
    for name, labels, P, kw in _bad_inputs():
        try:
            oracle.oracle_find_label_issues(labels, P, **kw)
        except Exception as exc:
            expected = type(exc)
        else:
            raise AssertionError(f"cleanlab accepted {name}")
        try:
            find(labels, P, num_partitions=3, **kw)
        except expected:
            continue
        except Exception as exc:
            fail.append(f"{name}: cleanlab raises {expected.__name__}, labelscan "
                        f"{type(exc).__name__}: {exc}")
            continue
        fail.append(f"{name}: cleanlab raises {expected.__name__}, labelscan returned")
    _report(fail)


def test_all_zero_labels_allowed_like_cleanlab():
    find = labelscan_api("find_label_issues")
    labels, P = synthetic.tie_heavy_float16(300, 4, seed=3)
    zeros = np.zeros_like(labels)
    exp = oracle.oracle_find_label_issues(zeros, P)
    got = find(zeros, P, num_partitions=3)
    assert mismatch(exp, got) == ""


# =================================================================================================
# 3. labelscan vs STOCK cleanlab (ties only)
# =================================================================================================

CONTINUOUS_CASES = ("cont_f32", "cont_f64", "dirichlet_f64", "missing_class_f32",
                    "never_predicted_f32", "binary_f32", "not_normalized_f32", "singleton_f32",
                    "singleton_ok_f64")


@pytest.mark.parametrize("case", synthetic.SMALL_CASES)
def test_vs_stock_cleanlab_only_ties_differ(case):
    """Against unpatched cleanlab, masks may differ only in rows tied at a selection cut (same
    E for low_*; identical masks for confident_learning/predicted_neq_given); on continuous data
    with identical calibration the prune filters must give the same count (and mask).  Rankings
    of equal sets may differ only inside groups of equal scores."""
    find = labelscan_api("find_label_issues")
    labels, P = synthetic.make(case)
    fail = []
    continuous = case in CONTINUOUS_CASES
    for f in FILTERS:
        stock = oracle.stock_find_label_issues(labels, P, filter_by=f)
        got = find(labels, P, filter_by=f, num_partitions=7)
        comparable, probs = oracle.tie_only_problems(
            labels, P, f, got, stock,
            require_equal_count=continuous or f not in oracle.PRUNE_FILTERS)
        if comparable and continuous and f in oracle.PRUNE_FILTERS and not np.array_equal(
                got, stock):
            probs.append(f"continuous data, same calibration, masks differ: "
                         f"{mismatch(stock, got, labels, P)}")
        fail += [f"{case} {f}: {p}" for p in probs]
        if comparable and np.array_equal(got, stock):
            rs = oracle.stock_find_label_issues(labels, P, filter_by=f,
                                                return_indices_ranked_by="self_confidence")
            rg = find(labels, P, filter_by=f, return_indices_ranked_by="self_confidence",
                      num_partitions=7)
            s = oracle.oracle_scores(labels, P)
            fail += [f"{case} {f} ranking: {p}" for p in oracle.rank_tie_only_problems(s, rg, rs)]
    _report(fail)


def test_signature_is_cleanlabs():
    """Every parameter of cleanlab 2.9's find_label_issues, with its kind and default."""
    import inspect

    import cleanlab.filter

    import labelscan

    ours = inspect.signature(labelscan.find_label_issues).parameters
    for name, theirs in inspect.signature(cleanlab.filter.find_label_issues).parameters.items():
        assert name in ours, name
        assert (ours[name].kind, ours[name].default) == (theirs.kind, theirs.default), name
    rng = np.random.default_rng(0)
    pred_probs = rng.dirichlet(np.ones(3), 200)
    labels = rng.integers(0, 3, 200)
    np.testing.assert_array_equal(labelscan.find_label_issues(labels, pred_probs, verbose=True, n_jobs=2),
                                  labelscan.find_label_issues(labels, pred_probs))
