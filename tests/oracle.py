"""Exact test oracle for labelscan: cleanlab 2.9 with every argsort made stable.

Why a patched cleanlab and not stock cleanlab
---------------------------------------------
cleanlab breaks ties with ``np.argsort(x)`` (default kind).  On numpy 2.x/x86 that dispatches to
SIMD sorts that are not stable and whose tie order depends on the CPU feature level
(CLEANLAB_SPEC.md §0.1, §15.5).  The canonical answer labelscan promises is therefore
"cleanlab 2.9.0 with every argsort stable": rows with equal keys are taken in ascending global
row index, and the K-length rounding in ``round_preserving_sum`` gives +1 to the highest column
among equal remainders and -1 to the lowest column.

How the patch works
-------------------
``stable_cleanlab()`` swaps the module-global name ``np`` inside the cleanlab modules that sort
(``cleanlab.filter``, ``cleanlab.rank``, ``cleanlab.count``, ``cleanlab.internal.util``,
``cleanlab.internal.label_quality_utils``) for a proxy module object whose ``argsort`` is
``numpy.argsort(..., kind="stable")``; every other attribute is delegated to numpy.  The call
sites this covers in cleanlab 2.9.0 (all of them on the ``find_label_issues`` path):

    filter.py:333  np.argsort(scores)[:num_errors]                  low_* selection
    filter.py:489  np.argsort(label_quality_scores)[:num_errors]    multilabel low_* (unused here)
    filter.py:502  cl_error_indices[np.argsort(...)]                multilabel ranking (unused here)
    filter.py:536  label_issues_idx[np.argsort(...)]                multilabel ranking (unused here)
    filter.py:856  np.argsort(class_probs)                          prune_by_class
    filter.py:905  np.argsort(-margin)                              prune_by_noise_rate
    rank.py:461    label_issues_idx[np.argsort(...)]                order_label_issues (ranking)
    internal/util.py:222  np.argsort(floats - ints)                 round_preserving_sum (calibration)

The one method-call form, ``rank.py:394 quality_scores.argsort()[:top]`` inside
``rank.find_top_issues`` (ndarray methods cannot be patched), is covered by replacing
``find_top_issues`` itself in ``cleanlab.rank`` and in every module that imported it by name
(``cleanlab.experimental.label_issues_batched``).  ``tests/test_parity_arrays.py`` re-scans the
cleanlab sources so that a new sort call site in another cleanlab version fails loudly.

Everything is restored on exit (also on exceptions); nesting is allowed (re-entrant, counted).
cleanlab is always called with ``n_jobs=1`` (no process pool; results do not depend on n_jobs,
spec §10, and a forked pool would not see the patch reliably anyway).

Besides the patched oracle this module offers:
- ``stock_find_label_issues`` (unpatched cleanlab, for the tie-only-difference tests),
- ``reference_*``: a small, independent from-spec numpy implementation (no argsort-based tie
  breaking at all: ties are resolved by explicit lexsort keys) used to self-test the oracle.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import types
import warnings
from collections import Counter

import numpy
import numpy as np

import cleanlab
import cleanlab.count
import cleanlab.filter
import cleanlab.internal.label_quality_utils
import cleanlab.internal.util
import cleanlab.rank

FILTERS = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
    "low_normalized_margin",
    "low_self_confidence",
)
PRUNE_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both")
LOW_FILTERS = ("low_normalized_margin", "low_self_confidence")
RANKERS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")

# Modules whose global ``np`` is replaced by the stable proxy.
PATCHED_MODULES = (
    "cleanlab.filter",
    "cleanlab.rank",
    "cleanlab.count",
    "cleanlab.internal.util",
    "cleanlab.internal.label_quality_utils",
)
# Modules that hold a by-name reference to rank.find_top_issues.
FIND_TOP_ISSUES_HOLDERS = ("cleanlab.rank", "cleanlab.experimental.label_issues_batched")


class _StableNumpy(types.ModuleType):
    """A stand-in for the ``numpy`` module whose ``argsort`` is stable.

    Attribute access falls through to numpy (``__getattr__`` is only consulted for names that are
    not found on the proxy itself), so ``np.ndarray``, ``np.zeros`` ... behave as usual.
    """

    def __init__(self):
        super().__init__("numpy")
        self.__dict__["argsort_calls"] = Counter()

    def __getattr__(self, name):
        return getattr(numpy, name)

    def argsort(self, a, axis=-1, kind=None, order=None, **kwargs):
        self.argsort_calls[_caller()] += 1
        return numpy.argsort(a, axis=axis, kind="stable", order=order, **kwargs)


def _caller():
    import sys

    f = sys._getframe(2)
    return f"{f.f_globals.get('__name__', '?')}:{f.f_code.co_name}"


def _stable_find_top_issues(quality_scores, *, top=10):
    _PROXY.argsort_calls["cleanlab.rank:find_top_issues"] += 1
    if top is None or top > len(quality_scores):
        top = len(quality_scores)
    return numpy.argsort(quality_scores, kind="stable")[:top]


_PROXY = _StableNumpy()
_LOCK = threading.RLock()
_DEPTH = 0
_SAVED: list = []


def _modules(names):
    out = []
    for name in names:
        try:
            out.append(importlib.import_module(name))
        except Exception:  # pragma: no cover - optional module missing
            pass
    return out


@contextlib.contextmanager
def stable_cleanlab():
    """Context manager: inside it, every argsort on cleanlab's find_label_issues path is stable.

    Yields the proxy; ``proxy.argsort_calls`` counts calls per ``module:function``.
    """
    global _DEPTH
    with _LOCK:
        if _DEPTH == 0:
            saved = []
            for mod in _modules(PATCHED_MODULES):
                saved.append((mod, "np", mod.__dict__["np"]))
                mod.np = _PROXY
            for mod in _modules(FIND_TOP_ISSUES_HOLDERS):
                if "find_top_issues" in mod.__dict__:
                    saved.append((mod, "find_top_issues", mod.__dict__["find_top_issues"]))
                    mod.find_top_issues = _stable_find_top_issues
            _SAVED[:] = saved
        _DEPTH += 1
        try:
            yield _PROXY
        finally:
            _DEPTH -= 1
            if _DEPTH == 0:
                for mod, attr, value in reversed(_SAVED):
                    setattr(mod, attr, value)
                _SAVED.clear()


def patch_is_active() -> bool:
    """True if any trace of the patch is present in cleanlab's modules."""
    for mod in _modules(PATCHED_MODULES):
        if mod.__dict__.get("np") is not numpy:
            return True
    for mod in _modules(FIND_TOP_ISSUES_HOLDERS):
        f = mod.__dict__.get("find_top_issues")
        if f is _stable_find_top_issues:
            return True
    return False


# ------------------------------------------------------------------------------------------------
# Oracle entry points
# ------------------------------------------------------------------------------------------------


def _kwargs(filter_by, frac_noise, num_to_remove_per_class, min_examples_per_class,
            confident_joint, return_indices_ranked_by, rank_by_kwargs):
    return dict(
        filter_by=filter_by,
        frac_noise=frac_noise,
        num_to_remove_per_class=num_to_remove_per_class,
        min_examples_per_class=min_examples_per_class,
        confident_joint=confident_joint,
        return_indices_ranked_by=return_indices_ranked_by,
        rank_by_kwargs={} if rank_by_kwargs is None else dict(rank_by_kwargs),
        n_jobs=1,
    )


def oracle_find_label_issues(labels, pred_probs, filter_by="prune_by_noise_rate", frac_noise=1.0,
                             num_to_remove_per_class=None, min_examples_per_class=1,
                             confident_joint=None, return_indices_ranked_by=None,
                             rank_by_kwargs=None, n_jobs=None):
    """cleanlab.filter.find_label_issues under ``stable_cleanlab()`` (n_jobs is forced to 1)."""
    kw = _kwargs(filter_by, frac_noise, num_to_remove_per_class, min_examples_per_class,
                 confident_joint, return_indices_ranked_by, rank_by_kwargs)
    with stable_cleanlab(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cleanlab.filter.find_label_issues(labels, pred_probs, **kw)


def stock_find_label_issues(labels, pred_probs, filter_by="prune_by_noise_rate", frac_noise=1.0,
                            num_to_remove_per_class=None, min_examples_per_class=1,
                            confident_joint=None, return_indices_ranked_by=None,
                            rank_by_kwargs=None, n_jobs=None):
    """Unpatched cleanlab (default-kind argsort: tie order is CPU dependent)."""
    assert not patch_is_active(), "stock_find_label_issues called inside stable_cleanlab()"
    kw = _kwargs(filter_by, frac_noise, num_to_remove_per_class, min_examples_per_class,
                 confident_joint, return_indices_ranked_by, rank_by_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cleanlab.filter.find_label_issues(labels, pred_probs, **kw)


def oracle_scores(labels, pred_probs, method="self_confidence", adjust_pred_probs=False):
    """cleanlab.rank.get_label_quality_scores (no sorting involved; patched for uniformity)."""
    with stable_cleanlab(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cleanlab.rank.get_label_quality_scores(
            labels, pred_probs, method=method, adjust_pred_probs=adjust_pred_probs)


def oracle_statistics(labels, pred_probs):
    """The dict ``labelscan.estimate_statistics`` must reproduce, from cleanlab.count functions.

    confident_joint is uncalibrated (diagonal clipped >= 1); calibrated_confident_joint and
    everything derived from it go through cleanlab's calibration rounding under the stable patch.
    """
    from cleanlab import count

    labels_arr = np.asarray(labels)
    K = pred_probs.shape[1]
    with stable_cleanlab(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thresholds = count.get_confident_thresholds(labels_arr, pred_probs)
        cj = count.compute_confident_joint(labels_arr, pred_probs, calibrate=False)
        ccj = count.compute_confident_joint(labels_arr, pred_probs, calibrate=True)
        joint = count.estimate_joint(labels_arr, pred_probs)
        py, nm, inv = count.estimate_latent(ccj, labels_arr)
        nli = count.num_label_issues(labels_arr, pred_probs)
        mask = cleanlab.filter.find_label_issues(labels_arr, pred_probs, n_jobs=1)
    per_class = np.bincount(labels_arr[mask].astype(np.int64), minlength=K).astype(np.int64)
    return {
        "confident_thresholds": np.asarray(thresholds),
        "confident_joint": np.asarray(cj),
        "calibrated_confident_joint": np.asarray(ccj),
        "joint": np.asarray(joint, dtype=np.float64),
        "noise_matrix": np.asarray(nm, dtype=np.float64),
        "inverse_noise_matrix": np.asarray(inv, dtype=np.float64),
        "py": np.asarray(py, dtype=np.float64),
        "num_label_issues": int(nli),
        "num_label_issues_per_class": per_class,
    }


STAT_KEYS = (
    "confident_thresholds",
    "confident_joint",
    "calibrated_confident_joint",
    "joint",
    "noise_matrix",
    "inverse_noise_matrix",
    "py",
    "num_label_issues",
    "num_label_issues_per_class",
)


# ------------------------------------------------------------------------------------------------
# Independent from-spec reference (self-test of the oracle only; small inputs)
# ------------------------------------------------------------------------------------------------
# Written from CLEANLAB_SPEC.md §2-§8 without sorting through argsort's tie order: every
# selection uses np.lexsort with the row index as explicit secondary key.


def _select_smallest(key, c):
    """Indices of the c smallest keys, ties -> lower index (NaN last, like numpy)."""
    idx = np.arange(len(key))
    isnan = np.isnan(key.astype(np.float64))
    k = np.where(isnan, 0, key)
    order = np.lexsort((idx, k, isnan))
    return order[:c]


def reference_thresholds(labels, P):
    K = P.shape[1]
    vals = []
    present = np.zeros(K, bool)
    for k in range(K):
        sel = labels == k
        if sel.any():
            present[k] = True
            vals.append(np.mean(P[:, k][sel]))  # numpy scalar of dtype(P) (pairwise sum)
        else:
            vals.append(2)
    if present.all():
        t = np.array(vals, dtype=P.dtype)
    else:
        t = np.array([float(v) for v in vals], dtype=np.float64)
    return np.clip(t, 2e-6, None)


def reference_confident_joint(labels, P, t):
    """Uncalibrated cj (diag clipped, Fortran order) and the sorted off-diagonal indices."""
    N, K = P.shape
    thr = t - 1e-6  # in t's dtype
    B = P >= thr
    nb = B.sum(axis=1)
    guess = np.where(nb > 1, P.argmax(axis=1), B.argmax(axis=1))
    conf = nb > 0
    cj = np.zeros((K, K), dtype=np.int64)
    np.add.at(cj, (labels[conf], guess[conf]), 1)
    if conf.any():
        cj = np.asfortranarray(cj)
    d = np.diagonal(cj).copy()
    cj[np.arange(K), np.arange(K)] = np.maximum(d, 1)
    off = np.flatnonzero(conf & (guess != labels))
    return cj, off


def reference_round_row(row):
    """Largest-remainder rounding; ties: +1 to the highest column, -1 to the lowest column."""
    f = np.asarray(row, dtype=np.float64)
    r = np.round(f)
    target = np.round(np.sum(f))
    cur = np.round(np.sum(r))
    cols = np.arange(len(f))
    while abs(cur - target) > 1e-6:
        d = np.round(target - cur)
        inc = -1 if d < 0 else 1
        m = min(int(abs(d)), len(f))
        rem = f - r
        if inc == 1:
            order = np.lexsort((-cols, -rem))  # largest remainder first, then highest column
        else:
            order = np.lexsort((cols, rem))  # most negative first, then lowest column
        for i in order[:m]:
            r[i] += inc
        cur = np.round(np.sum(r))
    return r.astype(int)


def reference_round_rows(M):
    return np.array([reference_round_row(row) for row in np.asarray(M)], dtype=int).reshape(
        np.shape(M))


def reference_calibrate(cj, n):
    R = cj.sum(axis=1)
    X = (cj.T / np.clip(R, 1e-100, None) * n).T
    X = X / np.clip(np.sum(X), 1e-100, None) * sum(n)
    return reference_round_rows(X)


def reference_prune_count_matrix(ccj, min_ex, frac_noise):
    M = ccj.T
    d = np.diagonal(M)
    d2 = np.maximum(d, min_ex)
    inc = d2 - d
    cnt = np.maximum(np.count_nonzero(M, axis=0) - 1.0, 1.0)
    M1 = M - inc / cnt
    M1[M1 < 0] = 0
    np.fill_diagonal(M1, d2)
    M2 = M1 * frac_noise
    np.fill_diagonal(M2, np.diagonal(M1))
    np.fill_diagonal(M2, np.diagonal(M1) + np.sum(M1 - M2, axis=0))
    return reference_round_rows(M2.astype(int)).astype(int)


def reference_keep(labels, P):
    Q = np.array(P, copy=True)
    Q[np.arange(len(labels)), labels] += 1e-6
    return Q.argmax(axis=1) == labels


def reference_scores(labels, P, method="self_confidence", adjust_pred_probs=False):
    if adjust_pred_probs:
        if method == "confidence_weighted_entropy":
            raise ValueError("adjust_pred_probs is not supported for confidence_weighted_entropy")
        t = reference_thresholds(labels, P)
        A = P - t
        A += t.max()
        A /= A.sum(axis=1, keepdims=True)
        P = A
    N, K = P.shape
    sc = P[np.arange(N), labels]
    if method == "self_confidence":
        return sc
    if method == "normalized_margin":
        other = np.array(P, copy=True)
        other[np.arange(N), labels] = -np.inf
        return (sc - other.max(axis=1) + 1) / 2
    if method == "confidence_weighted_entropy":
        from scipy.special import xlogy

        H = -np.sum(xlogy(P, P), axis=1) / np.log(K)
        x = H / np.clip(sc, 1e-6, None)
        return np.log(x + 1) / np.clip(x, 1e-6, None)
    raise ValueError(method)


def reference_find_label_issues(labels, P, filter_by="prune_by_noise_rate", frac_noise=1.0,
                                min_examples_per_class=1, return_indices_ranked_by=None,
                                rank_by_kwargs=None):
    """From-spec stable reimplementation (no num_to_remove_per_class / confident_joint args)."""
    labels = np.asarray(labels).astype(np.int64)
    N, K = P.shape
    n = np.bincount(labels, minlength=K)
    t = reference_thresholds(labels, P)
    cj, off = reference_confident_joint(labels, P, t)
    keep = reference_keep(labels, P)
    mask = np.zeros(N, bool)
    if filter_by in LOW_FILTERS:
        offm = np.zeros(N, bool)
        offm[off] = True
        E = int(np.sum(offm & ~keep))
        s = reference_scores(labels, P, filter_by[4:])
        mask[_select_smallest(s, E)] = True
    elif filter_by in PRUNE_FILTERS:
        pcm = reference_prune_count_matrix(reference_calibrate(cj, n), min_examples_per_class,
                                           frac_noise)
        by_class = np.zeros(N, bool)
        by_rate = np.zeros(N, bool)
        for k in range(K):
            rows = np.flatnonzero(labels == k)
            nk = len(rows)
            if nk <= min_examples_per_class or nk <= 1:  # len(mask) > 1 quirk
                continue
            Pk = P[rows]
            c = nk - pcm[k, k]
            if c >= 1:
                by_class[rows[_select_smallest(Pk[:, k], c)]] = True
            for j in range(K):
                c = pcm[j, k]
                if j != k and c > 0:
                    margin = Pk[:, j] - Pk[:, k]
                    neg = -margin
                    neg = np.where(neg == 0, 0, neg)  # -0.0 == +0.0
                    by_rate[rows[_select_smallest(neg, c)]] = True
        mask = {"prune_by_class": by_class, "prune_by_noise_rate": by_rate,
                "both": by_class & by_rate}[filter_by]
        mask = mask & ~keep
    elif filter_by == "confident_learning":
        mask[off] = True
        mask &= ~keep
    elif filter_by == "predicted_neq_given":
        mask = (P.argmax(axis=1) != labels) & ~keep
    else:
        raise AssertionError(filter_by)
    if return_indices_ranked_by is None:
        return mask
    s = reference_scores(labels, P, return_indices_ranked_by, **(rank_by_kwargs or {}))
    idx = np.flatnonzero(mask)
    return idx[_select_smallest(s[idx], len(idx))]


# ------------------------------------------------------------------------------------------------
# Explaining differences with STOCK (unpatched) cleanlab: they may only come from ties
# ------------------------------------------------------------------------------------------------


def _capture_calibration_input(labels, P):
    """The float matrix cleanlab hands to round_preserving_row_totals during calibration."""
    from cleanlab import count

    captured = {}
    orig = count.round_preserving_row_totals

    def spy(M):
        captured.setdefault("X", np.array(M, dtype=np.float64, copy=True))
        return orig(M)

    count.round_preserving_row_totals = spy
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            count.compute_confident_joint(np.asarray(labels), P, calibrate=True)
    finally:
        count.round_preserving_row_totals = orig
    return captured["X"]


def calibration_differences(labels, P):
    """(ccj_stock, ccj_stable, problems): problems lists rows whose difference is NOT a tie."""
    from cleanlab import count

    labels = np.asarray(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ccj_stock = count.compute_confident_joint(labels, P, calibrate=True)
        with stable_cleanlab():
            ccj_stable = count.compute_confident_joint(labels, P, calibrate=True)
    problems = []
    if not np.array_equal(ccj_stock, ccj_stable):
        X = _capture_calibration_input(labels, P)
        for i in np.flatnonzero((ccj_stock != ccj_stable).any(axis=1)):
            cells = np.flatnonzero(ccj_stock[i] != ccj_stable[i])
            rem = X[i, cells] - np.round(X[i, cells])
            if ccj_stock[i].sum() != ccj_stable[i].sum() or len(np.unique(rem)) != 1:
                problems.append(f"ccj row {i}: cells {cells.tolist()} remainders {rem.tolist()} "
                                f"stock {ccj_stock[i, cells].tolist()} "
                                f"stable {ccj_stable[i, cells].tolist()}")
    return ccj_stock, ccj_stable, problems


def _kth(values, c):
    """c-th smallest value (1-based), ties irrelevant."""
    return np.sort(values, kind="stable")[c - 1]


def tie_only_problems(labels, P, filter_by, mask_a, mask_b, *, min_examples_per_class=1,
                      frac_noise=1.0, require_equal_count=False):
    """Check that two masks for the same filter differ only among rows tied at a selection cut.

    Returns (comparable, problems).  ``comparable`` is False when stock and stable cleanlab
    calibrate differently (then rows cannot be compared; the calibration difference itself is
    checked to be a pure rounding tie and its problems are returned).
    """
    from cleanlab.filter import _keep_at_least_n_per_class

    labels = np.asarray(labels).astype(np.int64)
    mask_a = np.asarray(mask_a, bool)
    mask_b = np.asarray(mask_b, bool)
    problems = []
    diff = np.flatnonzero(mask_a != mask_b)
    count_problem = []
    if require_equal_count and mask_a.sum() != mask_b.sum():
        count_problem = [f"counts differ: {int(mask_a.sum())} vs {int(mask_b.sum())}"]
    if filter_by not in PRUNE_FILTERS:
        problems += count_problem
    if filter_by in ("confident_learning", "predicted_neq_given"):
        if len(diff):
            problems.append(f"{filter_by} involves no sort but rows differ: {diff[:10].tolist()}")
        return True, problems
    N, K = P.shape
    if filter_by in LOW_FILTERS:
        if mask_a.sum() != mask_b.sum():
            problems.append(f"E differs: {int(mask_a.sum())} vs {int(mask_b.sum())}")
        if len(diff):
            s = oracle_scores(labels, P, filter_by[4:])
            cut = max(s[mask_a].max(), s[mask_b].max())
            bad = diff[s[diff] != cut]
            if len(bad):
                problems.append(f"rows {bad[:10].tolist()} differ but their score is not the cut "
                                f"score {cut!r}")
        return True, problems
    ccj_stock, ccj_stable, cal_problems = calibration_differences(labels, P)
    if not np.array_equal(ccj_stock, ccj_stable):
        return False, problems + cal_problems
    problems += count_problem  # same calibration: the count may only differ through ties
    with stable_cleanlab(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pcm = _keep_at_least_n_per_class(ccj_stable.T, n=min_examples_per_class,
                                         frac_noise=frac_noise)
    for r in diff:
        k = int(labels[r])
        rows = np.flatnonzero(labels == k)
        nk = len(rows)
        tied = False
        if nk > max(min_examples_per_class, 1):
            if filter_by in ("prune_by_class", "both"):
                c = nk - pcm[k, k]
                if 1 <= c < nk and P[r, k] == _kth(P[rows, k], c):
                    tied = True
            if filter_by in ("prune_by_noise_rate", "both"):
                for j in range(K):
                    c = int(pcm[j, k])
                    if j == k or c <= 0 or c >= nk:
                        continue
                    neg = -(P[rows, j] - P[rows, k])
                    if -(P[r, j] - P[r, k]) == _kth(neg, c):
                        tied = True
                        break
        if not tied:
            problems.append(f"row {r} (label {k}) differs ({bool(mask_a[r])} vs "
                            f"{bool(mask_b[r])}) but is not tied at any selection cut")
            if len(problems) > 10:
                break
    return True, problems


def rank_tie_only_problems(scores, ranked_a, ranked_b):
    """Two rankings of the same issue set may differ only inside groups of equal scores."""
    a = np.asarray(ranked_a)
    b = np.asarray(ranked_b)
    if len(a) != len(b) or not np.array_equal(np.sort(a), np.sort(b)):
        return ["different sets of rows"]
    sa, sb = scores[a], scores[b]
    bad = np.flatnonzero(~((sa == sb) | (np.isnan(sa) & np.isnan(sb))))
    if len(bad):
        p = int(bad[0])
        return [f"position {p}: row {a[p]} score {sa[p]!r} vs row {b[p]} score {sb[p]!r}"]
    if np.any(np.diff(sa.astype(np.float64)) < 0):
        return ["ranking is not ascending in score"]
    return []
