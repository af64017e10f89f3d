"""Helpers shared by the parity test modules (test_parity_*.py).

- ``labelscan_api(name)``: the labelscan function under test, or a clear pytest failure if the
  engine does not provide it yet.
- ``mismatch(expected, got, labels, P)``: '' when ``got`` is exactly ``expected`` (type, dtype,
  shape, values), else a precise description (first differing index, values, the row's data).
- ``OracleCache``: memoises oracle answers per (dataset, arguments) for the whole session.
- ``load_bad_corpus()``: the bad-input corpus generator ``tests/data/bad/make_corpus.py`` as a module.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

CORPUS_SCRIPT = Path(__file__).resolve().parent / "data" / "bad" / "make_corpus.py"


def load_bad_corpus():
    """``tests/data/bad/make_corpus.py`` imported once (a script, not a package module)."""
    name = "labelscan_bad_corpus"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, CORPUS_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module   # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


def labelscan_api(name: str):
    try:
        import labelscan
    except Exception as exc:  # pragma: no cover - engine not importable
        pytest.fail(f"import labelscan failed: {exc!r}", pytrace=False)
    fn = getattr(labelscan, name, None)
    if fn is None:
        pytest.fail(f"labelscan.{name} does not exist (yet)", pytrace=False)
    return fn


def _row(P, labels, i, maxk=12):
    p = np.asarray(P[i])
    vals = ", ".join(f"{float(v):.9g}" for v in p[:maxk])
    more = "" if p.shape[0] <= maxk else f", ... (K={p.shape[0]}, argmax={int(p.argmax())})"
    return f"row {i}: label={int(labels[i])} P=[{vals}{more}]"


def mismatch(expected, got, labels=None, P=None, scores=None) -> str:
    """Describe how ``got`` differs from ``expected`` (a bool mask or a ranked int index array)."""
    if not isinstance(got, np.ndarray):
        return f"expected np.ndarray, got {type(got).__name__}"
    if got.dtype != expected.dtype:
        return f"dtype {got.dtype} != expected {expected.dtype}"
    if got.shape != expected.shape and expected.dtype == bool:
        return f"shape {got.shape} != expected {expected.shape}"
    if got.shape == expected.shape and np.array_equal(got, expected):
        return ""
    lines = []
    if expected.dtype == bool:
        diff = np.flatnonzero(got != expected)
        i = int(diff[0])
        lines.append(
            f"mask: expected {int(expected.sum())} issues, got {int(got.sum())}; "
            f"{len(diff)} rows differ; first differing row {i}: expected {bool(expected[i])}, "
            f"got {bool(got[i])}; differing rows (first 10): {diff[:10].tolist()}")
        if labels is not None and P is not None:
            for j in diff[:3]:
                lines.append("  " + _row(P, labels, int(j)))
    else:
        n = min(len(expected), len(got))
        neq = np.flatnonzero(expected[:n] != got[:n])
        pos = int(neq[0]) if len(neq) else n
        lines.append(
            f"ranked indices: expected length {len(expected)}, got {len(got)}; "
            f"first differing position {pos}: expected "
            f"{expected[pos] if pos < len(expected) else 'END'}, got "
            f"{got[pos] if pos < len(got) else 'END'}")
        missing = np.setdiff1d(expected, got)
        extra = np.setdiff1d(got, expected)
        if len(missing) or len(extra):
            lines.append(f"  missing (first 10): {missing[:10].tolist()}; "
                         f"extra (first 10): {extra[:10].tolist()}")
        else:
            lines.append("  same set of rows, different order")
        if scores is not None and pos < n:
            a, b = int(expected[pos]), int(got[pos])
            lines.append(f"  scores: expected row {a} -> {scores[a]!r}, got row {b} -> {scores[b]!r}")
        if labels is not None and P is not None and pos < n:
            lines.append("  expected " + _row(P, labels, int(expected[pos])))
            lines.append("  got      " + _row(P, labels, int(got[pos])))
    return "\n".join(lines)


def _freeze(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, np.ndarray):
        return (v.dtype.str, v.shape, bool(v.flags.f_contiguous), v.tobytes(order="A"))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


class OracleCache:
    """Session-wide memo of oracle results keyed by dataset name and call arguments."""

    def __init__(self):
        self._d = {}

    def get(self, key, fn, *args, **kwargs):
        k = (key, _freeze(kwargs))
        if k not in self._d:
            try:
                self._d[k] = ("ok", fn(*args, **kwargs))
            except Exception as exc:  # remember the exception type cleanlab raised
                self._d[k] = ("raise", exc)
        status, value = self._d[k]
        return status, value
