"""Synthetic prediction sets for the benchmarks, written as parquet and cached on disk.

The generative model (deterministic given the seed):

- a true class drawn uniformly from K classes;
- a given label that differs from the true class with probability ``noise_rate``
  (10% by default); the noise is asymmetric: a flipped label goes to the true
  class's fixed "partner" class (the next class in a random cycle over the
  classes) with probability ``PARTNER_SHARE``, else to a uniformly drawn other
  class, so ``P(given=i | true=j)`` is far from symmetric;
- out-of-sample predictions ``softmax(logits)``: standard normal logits, plus a
  boost on the true class drawn per row from a wide gamma distribution (scaled
  by ``sqrt(2 ln K)`` so accuracy does not collapse as K grows), so some
  examples are easy and some are hard (boost near zero).

Confident Learning flags roughly 5-15% of the rows of such a set.

Layout: ``part-00000.parquet``, ``part-00001.parquet``, ... of at most
``rows_per_file`` rows (1M), in row groups of ``row_group_rows`` rows (by default
:func:`default_row_group_rows`: 250k rows, fewer where that is more than about 32 MiB of
predictions, as parquet writers size row groups by bytes), with columns ``label`` (int64) and ``pred_probs`` (``fixed_size_list<float32, K>``).
Rows are drawn in chunks of about ``CHUNK_CELLS`` probabilities and each file is
written one row group at a time, so memory stays bounded (one row group of
float32 predictions) for any number of rows. A ``_DONE`` file holding the
generation parameters is written last; :func:`write_dataset` skips a folder
whose ``_DONE`` matches.

Run ``python -m benchmarks.datasets 10Mx10 --data-dir /tmp/labelscan-bench`` to
generate (or find) one set and print its folder.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GENERATOR_VERSION = 1
"""Bump when the generative model changes (invalidates cached sets)."""

ROWS_PER_FILE = 1_000_000
ROW_GROUP_ROWS = 250_000
ROW_GROUP_BYTES = 32 * 2**20
"""Default row groups hold at most ``ROW_GROUP_ROWS`` rows and about this many bytes of float32
predictions: a reader decodes row groups in parallel, and one 800 MB row group (200K×1000)
decodes on a single thread (2.1 s against 0.9 s in 8,000-row groups, 2 cores)."""
CHUNK_CELLS = 1 << 22
"""Probabilities drawn at once (16 MiB of float32 logits)."""

PARTNER_SHARE = 0.7
"""Share of a class's flipped labels that go to its partner class."""

BOOST_SHAPE = 2.0
BOOST_SCALE = 1.0
"""Gamma shape and scale of the true-class logit boost (times ``sqrt(2 ln K)``)."""

DONE_MARKER = "_DONE"
PART_NAME = "part-{:05d}.parquet"
SIZE_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}


@dataclass(frozen=True)
class DatasetSpec:
    """Parameters of a synthetic prediction set.

    Parameters
    ----------
    rows : int
        N, number of examples.
    classes : int
        K, number of classes (at least 2).
    seed : int
        Seed of every random stream.
    noise_rate : float
        Probability that a given label differs from the true class.
    rows_per_file : int
        Most rows per parquet file; a multiple of ``row_group_rows``.
    row_group_rows : int, optional
        Rows per row group (the last one may hold fewer); default :func:`default_row_group_rows`.
    """

    rows: int
    classes: int
    seed: int = 0
    noise_rate: float = 0.1
    rows_per_file: int = ROWS_PER_FILE
    row_group_rows: int | None = None

    def __post_init__(self):
        if self.rows < 1 or self.classes < 2:
            raise ValueError("a dataset needs at least 1 row and 2 classes")
        if self.row_group_rows is None:
            object.__setattr__(self, "row_group_rows", default_row_group_rows(self.classes, self.rows_per_file))
        if not 0 <= self.noise_rate <= 1:
            raise ValueError("noise_rate must lie in [0, 1]")
        if self.rows_per_file % self.row_group_rows:
            raise ValueError("rows_per_file must be a multiple of row_group_rows")

    @property
    def size(self) -> str:
        """Short name such as ``10Mx10``."""
        return format_size(self.rows, self.classes)

    @property
    def folder_name(self) -> str:
        """Folder name that identifies the parameters (N, K, seed, non-default layout)."""
        name = f"{self.size}-seed{self.seed}"
        if self.noise_rate != 0.1:
            name += f"-noise{self.noise_rate:g}"
        if (self.rows_per_file, self.row_group_rows) != (ROWS_PER_FILE, default_row_group_rows(self.classes)):
            name += f"-file{self.rows_per_file}-rg{self.row_group_rows}"
        return name

    def params(self) -> dict:
        """Everything that decides the files' contents (stored in ``_DONE``)."""
        return {**asdict(self), "generator_version": GENERATOR_VERSION}


def default_row_group_rows(classes: int, rows_per_file: int = ROWS_PER_FILE) -> int:
    """The largest divisor of ``rows_per_file`` that is at most :data:`ROW_GROUP_ROWS` and holds
    at most :data:`ROW_GROUP_BYTES` of float32 predictions (at least 1): 250,000 rows at K=10,
    62,500 at K=100, 8,000 at K=1000."""
    target = max(1, min(ROW_GROUP_ROWS, ROW_GROUP_BYTES // (4 * classes), rows_per_file))
    return next(rows for rows in range(target, 0, -1) if rows_per_file % rows == 0)


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"10Mx10"`` into ``(10_000_000, 10)``.

    Parameters
    ----------
    text : str
        ``<rows>x<classes>``; rows may end in K, M or B (powers of 1000).

    Returns
    -------
    tuple of int
        ``(rows, classes)``.
    """
    rows_text, sep, classes_text = text.strip().upper().partition("X")
    if not sep:
        raise ValueError(f"size {text!r} is not of the form <rows>x<classes>, e.g. 10Mx10")
    suffix = rows_text[-1] if rows_text[-1:].isalpha() else ""
    if suffix not in SIZE_SUFFIXES:
        raise ValueError(f"unknown row-count suffix {suffix!r} in {text!r}")
    rows = float(rows_text[: len(rows_text) - len(suffix)]) * SIZE_SUFFIXES[suffix]
    return int(round(rows)), int(classes_text)


def format_size(rows: int, classes: int) -> str:
    """Inverse of :func:`parse_size`: ``(10_000_000, 10) -> "10Mx10"``."""
    for suffix in ("B", "M", "K"):
        scale = SIZE_SUFFIXES[suffix]
        if rows >= scale and rows % scale == 0:
            return f"{rows // scale}{suffix}x{classes}"
    return f"{rows}x{classes}"


def partner_classes(classes: int, seed: int) -> np.ndarray:
    """Each class's partner: the next class along a random cycle (never the class itself).

    Returns
    -------
    numpy.ndarray
        (K,) int64.
    """
    cycle = np.random.default_rng([seed, 2**32]).permutation(classes)
    partners = np.empty(classes, dtype=np.int64)
    partners[cycle] = np.roll(cycle, -1)
    return partners


def sample_rows(rng: np.random.Generator, rows: int, classes: int, noise_rate: float,
                partners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw examples: noisy given labels and a classifier's predicted probabilities.

    Parameters
    ----------
    rng : numpy.random.Generator
    rows : int
        n.
    classes : int
        K.
    noise_rate : float
        Probability of a flipped label.
    partners : numpy.ndarray
        (K,) partner class of each class, see :func:`partner_classes`.

    Returns
    -------
    labels : numpy.ndarray
        (n,) int64 given labels.
    pred_probs : numpy.ndarray
        (n, K) float32, rows summing to 1 up to rounding.
    """
    true = rng.integers(0, classes, size=rows)
    flipped = rng.random(rows) < noise_rate
    to_partner = rng.random(rows) < PARTNER_SHARE
    other = (true + rng.integers(1, classes, size=rows)) % classes
    labels = np.where(flipped, np.where(to_partner, partners[true], other), true)
    boost = rng.gamma(BOOST_SHAPE, BOOST_SCALE * math.sqrt(2 * math.log(classes)), size=rows)
    logits = rng.standard_normal((rows, classes), dtype=np.float32)
    logits[np.arange(rows), true] += boost.astype(np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return labels.astype(np.int64), logits


def chunk_rows(spec: DatasetSpec) -> int:
    """Rows drawn at once: about ``CHUNK_CELLS`` probabilities, at most one row group."""
    return max(1, min(spec.row_group_rows, CHUNK_CELLS // spec.classes))


def row_group(spec: DatasetSpec, group_index: int, partners: np.ndarray) -> pa.Table:
    """Draw row group ``group_index`` of the set (stream ``[seed, group, chunk]`` per chunk).

    Returns
    -------
    pyarrow.Table
        Columns ``label`` and ``pred_probs``.
    """
    start = group_index * spec.row_group_rows
    rows = min(spec.row_group_rows, spec.rows - start)
    labels = np.empty(rows, dtype=np.int64)
    pred_probs = np.empty((rows, spec.classes), dtype=np.float32)
    step = chunk_rows(spec)
    for chunk_index, chunk_start in enumerate(range(0, rows, step)):
        stop = min(rows, chunk_start + step)
        rng = np.random.default_rng([spec.seed, group_index, chunk_index])
        labels[chunk_start:stop], pred_probs[chunk_start:stop] = sample_rows(
            rng, stop - chunk_start, spec.classes, spec.noise_rate, partners)
    return prediction_table(labels, pred_probs)


def prediction_table(labels: np.ndarray, pred_probs: np.ndarray) -> pa.Table:
    """Arrow table of ``label`` (int64) and ``pred_probs`` (``fixed_size_list<float32, K>``)."""
    values = pa.array(np.ascontiguousarray(pred_probs).reshape(-1))
    return pa.table({"label": pa.array(labels),
                     "pred_probs": pa.FixedSizeListArray.from_arrays(values, pred_probs.shape[1])})


def is_cached(folder, spec: DatasetSpec) -> bool:
    """Whether ``folder`` holds a complete set generated with ``spec``."""
    marker = Path(folder) / DONE_MARKER
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()) == spec.params()
    except (OSError, ValueError):
        return False


def write_file(path: Path, spec: DatasetSpec, groups: range, partners: np.ndarray) -> None:
    """Write one parquet file holding row groups ``groups`` (via a temporary name)."""
    temporary = path.with_name(f".{path.name}.tmp")
    writer = None
    try:
        for group_index in groups:
            table = row_group(spec, group_index, partners)
            if writer is None:
                writer = pq.ParquetWriter(temporary, table.schema)
            writer.write_table(table, row_group_size=spec.row_group_rows)
            del table
    finally:
        if writer is not None:
            writer.close()
    os.replace(temporary, path)


def write_dataset(folder, spec: DatasetSpec, *, force: bool = False, verbose: bool = False,
                  jobs: int = 1) -> dict:
    """Generate the set ``spec`` under ``folder``, unless it is already there.

    Parameters
    ----------
    folder : str or path-like
        Output directory; its ``part-*.parquet`` and ``_DONE`` files are replaced.
    spec : DatasetSpec
    force : bool
        Regenerate even when ``_DONE`` matches.
    verbose : bool
        Print progress (one line per file).
    jobs : int
        Files written at once, each by its own process (the files do not depend on each
        other, so the set is the same for any ``jobs``). 1 writes in this process.

    Returns
    -------
    dict
        ``folder``, ``paths`` (files in row order), ``generated`` (False when
        cached) and ``seconds`` spent generating.
    """
    folder = Path(folder)
    started = time.perf_counter()
    generated = force or not is_cached(folder, spec)
    if generated:
        _clear(folder)
        partners = partner_classes(spec.classes, spec.seed)
        groups_per_file = spec.rows_per_file // spec.row_group_rows
        num_groups = math.ceil(spec.rows / spec.row_group_rows)
        files = [(folder / PART_NAME.format(file_index), range(first, min(num_groups, first + groups_per_file)))
                 for file_index, first in enumerate(range(0, num_groups, groups_per_file))]
        for path in _write_files(files, spec, partners, jobs):
            if verbose:
                print(f"  {spec.size}: wrote {path}", flush=True)
        (folder / DONE_MARKER).write_text(json.dumps(spec.params(), indent=1))
    return {"folder": str(folder), "paths": [str(p) for p in list_files(folder)],
            "generated": generated, "seconds": time.perf_counter() - started}


def _write_files(files: list, spec: DatasetSpec, partners: np.ndarray, jobs: int):
    """Write ``(path, groups)`` files, ``jobs`` processes at a time; yield each path when written."""
    if jobs <= 1:
        for path, groups in files:
            write_file(path, spec, groups, partners)
            yield path
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        written = [pool.submit(write_file, path, spec, groups, partners) for path, groups in files]
        for (path, _), future in zip(files, written):
            future.result()
            yield path


def ensure_dataset(data_dir, rows: int, classes: int, *, seed: int = 0, verbose: bool = False,
                   jobs: int = 1, **spec_options) -> dict:
    """Generate (or find cached) the set of ``rows`` x ``classes`` under ``data_dir``.

    Parameters
    ----------
    data_dir : str or path-like
        Parent directory; the set goes to ``<data_dir>/<size>-seed<seed>``.
    rows, classes, seed :
        See :class:`DatasetSpec`.
    verbose : bool
        Print progress.
    jobs : int
        Processes writing files at once (see :func:`write_dataset`).
    **spec_options
        More :class:`DatasetSpec` fields (``noise_rate``, ``row_group_rows``, ...).

    Returns
    -------
    dict
        As :func:`write_dataset`, plus ``spec``.
    """
    spec = DatasetSpec(rows, classes, seed=seed, **spec_options)
    info = write_dataset(Path(data_dir) / spec.folder_name, spec, verbose=verbose, jobs=jobs)
    return {**info, "spec": spec}


def list_files(folder) -> list[Path]:
    """The set's parquet files in row order."""
    return sorted(Path(folder).glob("part-*.parquet"))


def load_arrays(folder) -> tuple[np.ndarray, np.ndarray]:
    """Read a set back into memory, one row group at a time.

    Parameters
    ----------
    folder : str or path-like
        A folder written by :func:`write_dataset`.

    Returns
    -------
    labels : numpy.ndarray
        (N,) int64.
    pred_probs : numpy.ndarray
        (N, K) float32, C-contiguous.
    """
    files = [pq.ParquetFile(path) for path in list_files(folder)]
    if not files:
        raise FileNotFoundError(f"no part-*.parquet files under {folder}")
    rows = sum(f.metadata.num_rows for f in files)
    classes = files[0].schema_arrow.field("pred_probs").type.list_size
    labels = np.empty(rows, dtype=np.int64)
    pred_probs = np.empty((rows, classes), dtype=np.float32)
    start = 0
    for parquet_file in files:
        for group in range(parquet_file.num_row_groups):
            table = parquet_file.read_row_group(group, columns=["label", "pred_probs"])
            stop = start + table.num_rows
            labels[start:stop] = table.column("label").to_numpy()
            for chunk in table.column("pred_probs").chunks:
                chunk_stop = start + len(chunk)
                pred_probs[start:chunk_stop] = chunk.flatten().to_numpy().reshape(-1, classes)
                start = chunk_stop
        parquet_file.close()
    return labels, pred_probs


def _clear(folder: Path) -> None:
    """Remove a previous set's files (and the marker first, so a crash leaves no stale marker)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE_MARKER).unlink(missing_ok=True)
    for path in list(folder.glob("part-*.parquet")) + list(folder.glob(".part-*.tmp")):
        path.unlink()


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` (where sets are generated and cached, default under the temporary folder)
    and ``--jobs`` (processes generating files), the options of every benchmark that generates
    a set."""
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "labelscan-bench"))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes generating files")


def main(argv=None) -> None:
    """Command line: generate (or find) sets and print their folders."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+", help="sizes such as 10Mx10 1Mx100")
    parser.add_argument("--data-dir", default="/tmp/labelscan-bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if cached")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="files written at once, one process each (default: all CPUs)")
    parser.add_argument("--rows-per-file", type=int, default=ROWS_PER_FILE)
    args = parser.parse_args(argv)
    for size in args.sizes:
        rows, classes = parse_size(size)
        spec = DatasetSpec(rows, classes, seed=args.seed, rows_per_file=args.rows_per_file)
        info = write_dataset(Path(args.data_dir) / spec.folder_name, spec, force=args.force, jobs=args.jobs)
        state = "generated" if info["generated"] else "cached"
        print(f"{size}: {info['folder']} ({state}, {info['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
