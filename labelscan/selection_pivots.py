"""Sample-based starting intervals ("pivots") for the per-class selections.

The selection's first refine round (:mod:`labelscan.selection`) histograms every key image of
every task over the whole image range. For the per-class families of few classes
(``noise_rate``: the ``c`` rows of class ``k`` with the largest ``P_j - P_k``; ``by_class``:
with the smallest ``P_k``) and many rows, a small sample of each class's rows already tells
where each task's ``c``-th key lies. The confident-joint pass keeps a systematic sample of
every class's rows (every ``stride``-th row of the class in each partition, at most
:data:`SAMPLE_ROWS_PER_CLASS` per class in all, all ``K`` probabilities of each); the driver
computes the sampled keys of every task and picks an interval ``[lo, lo + last]`` of images
around the wanted rank, wide enough (:data:`MARGIN_SIGMAS` standard deviations of a sampled
rank, plus :data:`MARGIN_ROWS`) to hold the cut almost always.

The first round then counts, per task, the rows below ``lo`` and histograms only the rows
inside the interval: a few comparisons per image and a histogram of a small fraction of them,
instead of a histogram of all images (on a GPU: no sort of every image). Exactness never
depends on the sample: the counts are exact, and a task whose cut falls outside its interval
(a miss) goes back to the whole image range for the next round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelscan import config
from labelscan.stats.order import float_images, image_bits
from labelscan.xp import to_host

MAX_CLASSES = 32
"""Pivots serve families of at most this many classes: the sample holds ``K`` probabilities
per sampled row and the driver computes ``K - 1`` keys of each (at most ~1M keys at K=32), and
wider partitions keep flat keys (:data:`labelscan.selection.FLAT_MIN_BLOCKS`)."""

SAMPLE_ROWS_PER_CLASS = 2048
"""Most sampled rows per class over the whole scan (8 MB of float32 samples at K=32)."""

MARGIN_SIGMAS = 5.0
"""Half-width of a pivot interval in standard deviations of the wanted rank in the sample."""

MARGIN_ROWS = 2
"""Sampled rows added to either side of the interval besides :data:`MARGIN_SIGMAS`."""

MAX_INSIDE_FRACTION = 0.25
"""A pivot whose interval is expected to hold more of its task's rows is not used."""


@dataclass
class ClassSample:
    """Sampled rows of a scan's classes.

    Attributes
    ----------
    rows : numpy.ndarray, shape (m, K)
        Predictions of the sampled rows, in the input dtype.
    classes : numpy.ndarray, shape (m,), int32
        Given class of each sampled row.
    """

    rows: np.ndarray
    classes: np.ndarray

    @classmethod
    def merge(cls, *samples: "ClassSample | None") -> "ClassSample | None":
        """Samples of several partitions as one (a tree-reduce step); ``None`` when none was taken."""
        taken = [sample for sample in samples if sample is not None]
        if not taken:
            return None
        return cls(rows=np.concatenate([sample.rows for sample in taken]),
                   classes=np.concatenate([sample.classes for sample in taken]))


def sample_strides(class_totals: np.ndarray) -> np.ndarray:
    """Rows per sampled row of each class, shape (K,), int64; 0 for a class without rows.

    Small classes are sampled whole (stride 1): their pivots then sit right at the cut.

    Parameters
    ----------
    class_totals : numpy.ndarray, shape (K,)
        Rows of each given class in the whole scan.
    """
    totals = np.asarray(class_totals, dtype=np.int64)
    return -(-totals // SAMPLE_ROWS_PER_CLASS)


def wanted(num_classes: int, filter_by: str) -> bool:
    """Whether a scan of ``num_classes`` classes with ``filter_by`` uses pivots (configuration
    key ``labelscan.pivots``, true by default)."""
    return (config.switch_setting("labelscan.pivots", config.get("pivots")) and num_classes <= MAX_CLASSES
            and filter_by in ("prune_by_noise_rate", "prune_by_class", "both"))


def partition_sample(part, strides: np.ndarray) -> ClassSample:
    """Every ``strides[k]``-th grouped row of each sampled class ``k`` of one partition.

    Parameters
    ----------
    part : labelscan.kernels.grouped.GroupedPartition
        Host or device partition.
    strides : numpy.ndarray, shape (K,), int64
        From :func:`sample_strides`.

    Returns
    -------
    ClassSample
        On the host, ``rows`` of shape (m, K).
    """
    positions = [np.arange(part.class_starts[k], part.class_starts[k + 1], strides[k])
                 for k in np.flatnonzero(strides)]
    positions = np.concatenate(positions) if positions else np.zeros(0, dtype=np.intp)
    columns = part.columns[:, part.xp.asarray(positions)]
    classes = np.searchsorted(part.class_starts, positions, side="right") - 1
    return ClassSample(rows=np.ascontiguousarray(to_host(columns).T), classes=classes.astype(np.int32))


@dataclass
class Pivots:
    """Starting intervals of a family's tasks: images in ``[lo, lo + last]``.

    Attributes
    ----------
    lo, last : numpy.ndarray, shape (T,), uint64
        ``lo = 0`` and ``last`` the largest image for tasks without a pivot.
    pivoted : numpy.ndarray, shape (T,), bool
    expected_inside : numpy.ndarray, shape (T,), int64
        Rows each pivoted task's interval is expected to hold (0 without a pivot).
    """

    lo: np.ndarray
    last: np.ndarray
    pivoted: np.ndarray
    expected_inside: np.ndarray


def choose_pivots(tasks, sample: ClassSample | None) -> Pivots | None:
    """Pivot intervals of a ``noise_rate`` or ``by_class`` family from the class sample.

    Parameters
    ----------
    tasks : labelscan.selection.SelectionTasks
    sample : ClassSample or None

    Returns
    -------
    Pivots or None
        ``None`` when no task gets a pivot.
    """
    num_tasks = len(tasks)
    full = np.uint64((1 << image_bits(tasks.key_dtype)) - 1)
    pivots = Pivots(lo=np.zeros(num_tasks, dtype=np.uint64), last=np.full(num_tasks, full, dtype=np.uint64),
                    pivoted=np.zeros(num_tasks, dtype=bool), expected_inside=np.zeros(num_tasks, dtype=np.int64))
    if sample is None or not num_tasks or tasks.kind not in ("noise_rate", "by_class"):
        return None
    order = np.argsort(sample.classes, kind="stable")
    starts = np.searchsorted(sample.classes[order], np.arange(sample.rows.shape[1] + 1))
    for k in np.unique(tasks.classes):
        rows = sample.rows[order[starts[k]:starts[k + 1]]]
        task_ids = np.flatnonzero((tasks.classes == k) & (tasks.counts < tasks.sizes))
        if len(rows) == 0 or not len(task_ids):
            continue
        _pivot_class(pivots, tasks, task_ids, _sample_images(tasks, task_ids, rows, int(k)), full)
    return pivots if pivots.pivoted.any() else None


def _sample_images(tasks, task_ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Sorted key images of the sampled rows of class ``k`` for each task, shape (m, len(task_ids)),
    computed as the partitions compute keys (``P_k - P_j`` in the input dtype, or ``P_k``)."""
    given = rows[:, k]
    if tasks.kind == "by_class":
        keys = np.repeat(given[:, None], len(task_ids), axis=1)
    else:
        keys = given[:, None] - rows[:, tasks.columns[task_ids]]
    return np.sort(float_images(np.ascontiguousarray(keys), overwrite=True), axis=0)


def _pivot_class(pivots: Pivots, tasks, task_ids: np.ndarray, images: np.ndarray, full: np.uint64) -> None:
    """Fill the pivots of one class's tasks from their sorted sampled images (m, T_k)."""
    num_sampled = images.shape[0]
    counts = tasks.counts[task_ids].astype(np.float64)
    sizes = tasks.sizes[task_ids].astype(np.float64)
    share = counts / sizes
    wanted_rank = counts * num_sampled / sizes   # 1-based rank of the cut in the sample
    margin = MARGIN_SIGMAS * np.sqrt(num_sampled * share * (1 - share)) + MARGIN_ROWS
    first = np.floor(wanted_rank - margin).astype(np.int64) - 1    # 0-based; < 0: from the range's start
    last_index = np.ceil(wanted_rank + margin).astype(np.int64) - 1  # >= m: to the range's end
    inside_share = (np.minimum(last_index, num_sampled - 1) - np.maximum(first, 0) + 1) / num_sampled
    use = inside_share <= MAX_INSIDE_FRACTION
    columns = np.arange(len(task_ids))
    lo = np.where(first >= 0, images[np.clip(first, 0, num_sampled - 1), columns], 0).astype(np.uint64)
    hi = np.where(last_index < num_sampled, images[np.clip(last_index, 0, num_sampled - 1), columns],
                  full).astype(np.uint64)
    chosen = task_ids[use]
    pivots.lo[chosen] = lo[use]
    pivots.last[chosen] = hi[use] - lo[use]
    pivots.pivoted[chosen] = True
    pivots.expected_inside[chosen] = np.ceil(inside_share[use] * sizes[use]).astype(np.int64)
