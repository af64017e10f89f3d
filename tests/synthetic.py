"""Deterministic synthetic datasets for the parity tests (the hard cases of CLEANLAB_SPEC.md §16).

Every generator takes a ``seed`` and returns ``(labels, pred_probs)`` with ``labels`` int64 (N,)
and ``pred_probs`` (N, K) in the dtype named by the case; values are in [0, 1] (no value exceeds
1, so cleanlab's validation and its entropy score accept them).  Rows need not sum exactly to 1.

``make(name)`` returns a cached, read-only copy of a named case from ``CASES`` (read-only so that
an engine that writes into its input fails loudly instead of corrupting the next test).
"""

from __future__ import annotations

import functools

import numpy as np


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _noisy_problem(n, k, seed, noise=0.2, sharp=3.0, spread=1.0, class_weights=None):
    """True labels, given (noisy) labels and float64 probabilities of a mediocre classifier."""
    rng = np.random.default_rng(seed)
    p_cls = None if class_weights is None else np.asarray(class_weights) / np.sum(class_weights)
    y_true = rng.choice(k, size=n, p=p_cls)
    # per-class difficulty so the confident thresholds differ between classes
    difficulty = rng.uniform(0.5, 1.5, size=k)
    z = rng.normal(0.0, spread, size=(n, k))
    z[np.arange(n), y_true] += sharp * difficulty[y_true]
    P = _softmax(z)
    flip = rng.random(n) < noise
    other = (y_true + rng.integers(1, k, size=n)) % k if k > 1 else y_true
    labels = np.where(flip, other, y_true).astype(np.int64)
    return labels, P, rng


def _cast(P, dtype):
    P = np.asarray(P, dtype=np.float64)
    out = P.astype(dtype)
    return np.minimum(out, np.asarray(1, dtype=dtype))


def continuous(n=4000, k=10, dtype=np.float32, seed=0, noise=0.2):
    """Continuous random probabilities (softmax of Gaussian logits), float32 or float64."""
    labels, P, _ = _noisy_problem(n, k, seed, noise=noise)
    return labels, _cast(P, dtype)


def dirichlet(n=4000, k=10, dtype=np.float64, seed=0, noise=0.25):
    """Dirichlet rows, mass concentrated on the true class."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, size=n)
    alpha = np.full((n, k), 0.3)
    alpha[np.arange(n), y_true] = rng.uniform(1.0, 6.0, size=n)
    P = rng.gamma(alpha)
    P /= P.sum(axis=1, keepdims=True)
    flip = rng.random(n) < noise
    labels = np.where(flip, rng.integers(0, k, size=n), y_true).astype(np.int64)
    return labels, _cast(P, dtype)


def tie_heavy_float16(n=4000, k=10, seed=0, noise=0.2):
    """float16 probabilities: exact ties everywhere, and the 1e-6 tolerances vanish."""
    labels, P, _ = _noisy_problem(n, k, seed, noise=noise, sharp=2.5)
    return labels, _cast(P, np.float16)


def quantized_float32(n=4000, k=10, seed=0, q=16, noise=0.2):
    """float32 probabilities quantised to multiples of 1/q: massive exact ties in every key."""
    labels, P, _ = _noisy_problem(n, k, seed, noise=noise, sharp=2.5)
    Q = np.round(P * q) / q
    # keep at least one non-zero entry per row (the argmax of the unrounded row)
    am = P.argmax(axis=1)
    zero = Q.sum(axis=1) == 0
    Q[np.flatnonzero(zero), am[zero]] = 1.0 / q
    return labels, _cast(Q, np.float32)


def coarse_grid_many_classes(n=12_000, k=80, seed=11):
    """Many classes, few rows each (flat selection keys), probabilities on a 1/32 grid: noise-rate
    and per-class cuts fall inside runs of tied keys, so tie quotas split them."""
    rng = np.random.default_rng(seed)
    true_classes = rng.integers(0, k, n)
    labels = np.where(rng.random(n) < 0.8, true_classes, rng.integers(0, k, n))
    weights = rng.integers(0, 4, (n, k)).astype(np.float64)
    weights[np.arange(n), true_classes] += 40
    return labels, (np.round(weights / weights.sum(axis=1, keepdims=True) * 32) / 32).astype(np.float32)


def duplicated_rows(n=4000, k=6, seed=0, pool=40, dtype=np.float64):
    """float64 rows drawn (with label) from a small pool: ties at every cutoff in any dtype."""
    rng = np.random.default_rng(seed)
    labels0, P0, _ = _noisy_problem(pool, k, seed + 1000, noise=0.35, sharp=2.0)
    pick = rng.integers(0, pool, size=n)
    labels = labels0[pick].copy()
    # re-label a few copies so the same row appears under different given labels
    flip = rng.random(n) < 0.1
    labels[flip] = rng.integers(0, k, size=int(flip.sum()))
    # make sure every class appears
    labels[:k] = np.arange(k)
    return labels.astype(np.int64), _cast(P0[pick], dtype)


def missing_class(n=4000, k=8, seed=0, absent=3, dtype=np.float32):
    """Class ``absent`` never occurs as a given label (thresholds flip to float64, t=2)."""
    labels, P, rng = _noisy_problem(n, k, seed, noise=0.2)
    bad = labels == absent
    labels[bad] = (absent + rng.integers(1, k, size=int(bad.sum()))) % k
    assert not np.any(labels == absent)
    return labels, _cast(P, dtype)


def missing_class_float16(n=4000, k=8, seed=0, absent=0):
    labels, P = missing_class(n, k, seed, absent=absent, dtype=np.float64)
    return labels, _cast(P, np.float16)


def never_predicted(n=3000, k=3, seed=0, rare=2, dtype=np.float32):
    """Class ``rare`` is never the argmax but has a low threshold (many ``guess = rare`` rows)."""
    rng = np.random.default_rng(seed)
    p_rare = rng.uniform(0.04, 0.16, size=n)
    rest = 1.0 - p_rare
    a = rng.beta(2.0, 2.0, size=n)
    others = [c for c in range(k) if c != rare]
    P = np.zeros((n, k))
    P[:, rare] = p_rare
    w = rng.dirichlet(np.ones(len(others)) * 0.7, size=n)
    if len(others) == 2:
        w = np.stack([a, 1 - a], axis=1)
    P[:, others] = w * rest[:, None]
    # guarantee rare is never the argmax
    mx = P[:, others].max(axis=1)
    assert np.all(mx > P[:, rare])
    labels = np.array(others)[P[:, others].argmax(axis=1)]
    flip = rng.random(n) < 0.25
    labels = np.where(flip, rng.integers(0, k, size=n), labels).astype(np.int64)
    labels[:2] = rare
    return labels, _cast(P, dtype)


def binary(n=4000, seed=0, dtype=np.float32, noise=0.2):
    """K = 2 (normalized margin == self-confidence mathematically, not bitwise)."""
    labels, P, _ = _noisy_problem(n, 2, seed, noise=noise, sharp=2.0)
    return labels, _cast(P, dtype)


def binary_float16(n=4000, seed=0):
    return binary(n, seed, dtype=np.float64)[0], binary(n, seed, dtype=np.float16)[1]


def many_classes(n=20000, k=1000, seed=0, dtype=np.float32, noise=0.15):
    """K = 1000, small N (calibration rounding ties grow with K)."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, size=n)
    z = rng.normal(0.0, 1.0, size=(n, k)).astype(np.float64)
    z[np.arange(n), y_true] += rng.uniform(4.0, 9.0, size=n)
    # confusable neighbour class
    z[np.arange(n), (y_true + 1) % k] += rng.uniform(0.0, 6.0, size=n)
    P = _softmax(z)
    flip = rng.random(n) < noise
    labels = np.where(flip, (y_true + 1 + rng.integers(0, 3, size=n)) % k, y_true)
    return labels.astype(np.int64), _cast(P, dtype)


def not_normalized(n=4000, k=10, seed=0, dtype=np.float32):
    """Rows scaled by factors in [0.999, 1.0] (and a fifth of them by [0.5, 1.0]): sums != 1."""
    labels, P, rng = _noisy_problem(n, k, seed, noise=0.2)
    s = rng.uniform(0.999, 1.0, size=n)
    big = rng.random(n) < 0.2
    s[big] = rng.uniform(0.5, 1.0, size=int(big.sum()))
    return labels, _cast(P * s[:, None], dtype)


def subnormal_float32(n=3000, k=5, seed=0, noise=0.25):
    """float32 rows whose small probabilities are subnormal (below 1.18e-38, as a very confident
    softmax gives), many of them on a coarse grid of subnormals so keys tie and differences of
    two subnormals are subnormal: GPU code flushing subnormals to zero would change the answer."""
    labels, P, rng = _noisy_problem(n, k, seed, noise=noise)
    tiny = np.finfo(np.float32).tiny
    small = rng.random((n, k)) < 0.5
    P = np.where(small, rng.integers(1, 64, (n, k)) * (tiny / 64), P)
    return labels, P.astype(np.float32)


def all_correct(n=3000, k=10, seed=0, dtype=np.float32):
    """Given label == argmax everywhere, with a clear margin: every filter must flag nothing."""
    labels, P, _ = _noisy_problem(n, k, seed, noise=0.0, sharp=3.0)
    srt = np.sort(P, axis=1)
    ok = (srt[:, -1] - srt[:, -2]) > 1e-3
    P = P[ok]
    labels = P.argmax(axis=1).astype(np.int64)
    assert len(np.unique(labels)) == k
    return labels, _cast(P, dtype)


def _without_class(n, k, seed, cls, noise=0.2):
    """Noisy problem in which class ``cls`` is neither a true nor a given label."""
    w = np.ones(k)
    w[cls] = 0.0
    labels, P, rng = _noisy_problem(n, k, seed, noise=noise, class_weights=w)
    bad = labels == cls
    labels[bad] = (cls + rng.integers(1, k, size=int(bad.sum()))) % k
    return labels, P, rng


def singleton_class(n=4000, k=6, seed=0, single=4, dtype=np.float32):
    """Class ``single`` has exactly one example (and it is confidently mislabeled)."""
    labels, P, rng = _without_class(n, k, seed, single)
    j = int(rng.integers(0, n))
    labels[j] = single
    # that row is confidently another class
    P[j] = 0.01 / (k - 1)
    P[j, (single + 1) % k] = 0.99
    P[j, single] = 0.0
    P[j] /= P[j].sum()
    return labels, _cast(P, dtype)


def singleton_class_correct(n=4000, k=6, seed=0, single=1, dtype=np.float64):
    """Class ``single`` has exactly one example which is labeled correctly and confidently."""
    labels, P, rng = _without_class(n, k, seed, single)
    j = int(rng.integers(0, n))
    labels[j] = single
    P[j] = 0.02 / (k - 1)
    P[j, single] = 0.98
    return labels, _cast(P, dtype)


def tiny_tie_case():
    """The 22-row float16 hand-check case (expected answers in test_parity_arrays.py)."""
    rows = (
        [(0, (0.875, 0.125))] * 6
        + [(0, (0.375, 0.625))] * 4
        + [(0, (0.125, 0.875))] * 2
        + [(1, (0.125, 0.875))] * 8
        + [(1, (0.875, 0.125))] * 2
    )
    labels = np.array([r[0] for r in rows], dtype=np.int64)
    P = np.array([r[1] for r in rows], dtype=np.float16)
    return labels, P


# name -> zero-argument factory.  Sizes are chosen so that the whole array suite runs in minutes.
CASES = {
    "cont_f32": lambda: continuous(4000, 10, np.float32, seed=1),
    "cont_f64": lambda: continuous(4000, 10, np.float64, seed=2),
    "dirichlet_f64": lambda: dirichlet(3000, 7, np.float64, seed=3),
    "ties_f16": lambda: tie_heavy_float16(4000, 10, seed=4),
    "ties_q16_f32": lambda: quantized_float32(4000, 10, seed=5, q=16),
    "dup_rows_f64": lambda: duplicated_rows(3000, 6, seed=6),
    "missing_class_f32": lambda: missing_class(4000, 8, seed=7, absent=3),
    "missing_class_f16": lambda: missing_class_float16(3000, 8, seed=8, absent=0),
    "never_predicted_f32": lambda: never_predicted(3000, 3, seed=9),
    "binary_f32": lambda: binary(3000, seed=10),
    "binary_f16": lambda: binary_float16(3000, seed=11),
    "not_normalized_f32": lambda: not_normalized(4000, 10, seed=12),
    "all_correct_f32": lambda: all_correct(3000, 10, seed=13),
    "singleton_f32": lambda: singleton_class(3000, 6, seed=14),
    "singleton_ok_f64": lambda: singleton_class_correct(3000, 6, seed=15),
    "k1000_f32": lambda: many_classes(20000, 1000, seed=16),
    "subnormal_f32": lambda: subnormal_float32(3000, 5, seed=17),
}

# Cases used by the full filter x ranking cross product (K=1000 is handled separately).
SMALL_CASES = tuple(c for c in CASES if c != "k1000_f32")


@functools.lru_cache(maxsize=None)
def make(name):
    labels, P = CASES[name]()
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    P = np.ascontiguousarray(P)
    labels.flags.writeable = False
    P.flags.writeable = False
    return labels, P
