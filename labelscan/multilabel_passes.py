"""Partition-side steps of a multi-label scan: all K one-vs-rest binary problems in each pass.

A multi-label partition holds its multi-hot labels ``Y`` (n, K) and predictions ``P`` (n, K).
Class ``c``'s binary problem (cleanlab's one-vs-rest reduction, ``CLEANLAB_SPEC.md`` §14) has
labels ``Y[:, c]`` and predictions ``[1 − P[:, c], P[:, c]]``; :meth:`MultiLabelPartition.binary`
builds it as a grouped partition of the single-label engine, so every per-class step below is
the engine's own step (:mod:`labelscan.passes`, :mod:`labelscan.selection`,
:mod:`labelscan.kernels.grouped`) run K times inside one task. States returned to the driver are
O(K): per class two threshold pieces, a 2×2 joint and a few counts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from labelscan import multilabel, passes, selection
from labelscan.errors import InputError
from labelscan.kernels import grouped
from labelscan.plan import confident_thresholds
from labelscan.stats.order import float_images


@dataclass
class MultiLabelPartition:
    """One decoded partition of a multi-label set (row order).

    Attributes
    ----------
    row_start : int
    multi_hot : numpy.ndarray, shape (n, K), bool
    pred_probs : numpy.ndarray, shape (n, K)
    ids : numpy.ndarray or None, shape (n,)
    """

    row_start: int
    multi_hot: np.ndarray
    pred_probs: np.ndarray
    ids: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return len(self.multi_hot)

    @property
    def num_classes(self) -> int:
        return self.pred_probs.shape[1]

    @property
    def row_ids(self) -> np.ndarray:
        return np.arange(self.row_start, self.row_start + self.num_rows, dtype=np.int64)

    def binary(self, c: int) -> grouped.GroupedPartition:
        """Class ``c``'s one-vs-rest problem: labels ``Y[:, c]``, predictions ``[1 − p_c, p_c]``."""
        return grouped.group_by_label(self.row_start, self.multi_hot[:, c].astype(np.int64),
                                      multilabel.complement(self.pred_probs[:, c]))


@dataclass
class ClassFamily:
    """One selection family of every class, as one engine family plus each class's own view.

    Attributes
    ----------
    per_class : list of selection.SelectionTasks, length K
        Class ``c``'s tasks on its binary problem (its binary classes 0 / 1).
    offsets : numpy.ndarray, shape (K + 1,)
        Class ``c``'s tasks are ``combined`` tasks ``offsets[c]:offsets[c + 1]``.
    combined : selection.SelectionTasks
        All classes' tasks, class after class (what the cutoff rounds refine).
    """

    per_class: list
    offsets: np.ndarray
    combined: selection.SelectionTasks

    def __sizeof__(self) -> int:
        """Bytes held, every class's tasks included (see ``SelectionTasks.__sizeof__``)."""
        return (object.__sizeof__(self) + self.offsets.nbytes + sys.getsizeof(self.combined)
                + sum(sys.getsizeof(tasks) for tasks in self.per_class))

    @classmethod
    def of(cls, per_class: list, key_dtype) -> "ClassFamily":
        sizes = [len(tasks) for tasks in per_class]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

        def joined(name, dtype):
            pieces = [getattr(tasks, name) for tasks in per_class]
            return np.concatenate(pieces).astype(dtype) if pieces else np.zeros(0, dtype)

        combined = selection.SelectionTasks(
            kind=per_class[0].kind if per_class else selection.BY_CLASS,
            classes=joined("classes", np.int64), columns=joined("columns", np.int64),
            counts=joined("counts", np.int64), sizes=joined("sizes", np.int64), key_dtype=np.dtype(key_dtype))
        return cls(per_class=per_class, offsets=offsets, combined=combined)

    def class_cutoffs(self, cutoffs: selection.PartitionCutoffs, c: int) -> selection.PartitionCutoffs:
        """Class ``c``'s slice of a partition's cutoffs of the combined family."""
        part = slice(int(self.offsets[c]), int(self.offsets[c + 1]))
        return selection.PartitionCutoffs(select_all=cutoffs.select_all[part], image=cutoffs.image[part],
                                          quota=cutoffs.quota[part])


@dataclass
class MultiLabelRequest:
    """What the flag pass needs besides the partition and its cutoffs: one object, the same for
    every partition (shipped to the workers once, as the multiclass ``passes.FlagRequest``).

    Attributes
    ----------
    filter_by : str
    thresholds : list of numpy.ndarray, length K
        Each class's binary confident thresholds (2,).
    families : list of ClassFamily
        Pruning filters: their selection families. Each partition's cutoffs of each family
        (of the low-score task for ``low_*`` filters) travel beside the request.
    low_score : selection.SelectionTasks or None
        ``low_*`` filters: the one task "the E rows with the lowest default multi-label score".
    rank_by : str
    adjust_pred_probs : bool
    """

    filter_by: str
    thresholds: list
    families: list
    low_score: selection.SelectionTasks | None
    rank_by: str
    adjust_pred_probs: bool

    def __sizeof__(self) -> int:
        """Bytes held, the families' arrays included: what ``dask.sizeof`` sees, so that the
        runner ships a large request once as its own task."""
        return (object.__sizeof__(self) + sum(values.nbytes for values in self.thresholds)
                + sum(sys.getsizeof(family) for family in self.families)
                + (sys.getsizeof(self.low_score) if self.low_score is not None else 0))


def prepare(source):
    """Load a multi-label partition (``source.load()`` gives ``(row_start, Y, P, ids)``), or its InputFailure."""
    try:
        return MultiLabelPartition(*source.load())
    except InputError as error:
        return passes.InputFailure(error)


def as_partition(part) -> MultiLabelPartition:
    """The cached partition itself, or a source read now."""
    if isinstance(part, MultiLabelPartition):
        return part
    prepared = part if isinstance(part, passes.InputFailure) else prepare(part)
    if isinstance(prepared, passes.InputFailure):
        raise prepared.error
    return prepared


def class_counts(part):
    """Rows having each class, shape (K,), int64 — or the partition's InputFailure (first pass)."""
    if not isinstance(part, MultiLabelPartition):
        part = part if isinstance(part, passes.InputFailure) else prepare(part)
        if isinstance(part, passes.InputFailure):
            return part
    return np.count_nonzero(part.multi_hot, axis=0).astype(np.int64)


def threshold_pieces(part, class_offsets: np.ndarray, class_totals: np.ndarray) -> list:
    """Every class's binary threshold pieces held by this partition.

    Parameters
    ----------
    class_offsets, class_totals : numpy.ndarray, shape (K, 2)
        Rows of each binary class (0: without ``c``, 1: with ``c``) in earlier partitions / in all.

    Returns
    -------
    list of dict, length K
        :func:`labelscan.passes.threshold_pieces` of each class's binary problem.
    """
    part = as_partition(part)
    return [passes.threshold_pieces(part.binary(c), class_offsets[c], class_totals[c])
            for c in range(part.num_classes)]


def merge_threshold_pieces(*piece_lists) -> list:
    """Per class, the union of disjoint partitions' pieces (a tree-reduce step)."""
    return [passes.merge_threshold_pieces(*pieces) for pieces in zip(*piece_lists)]


def fold_thresholds(merged: list, class_totals: np.ndarray, dtype) -> list:
    """Each class's binary confident thresholds (2,) from its merged pieces (runs where they
    were merged: only the thresholds travel to the client).

    Parameters
    ----------
    merged : list of dict
        :func:`merge_threshold_pieces` over every partition.
    class_totals : numpy.ndarray, shape (K, 2)
    """
    return [confident_thresholds(pieces, totals, dtype) for pieces, totals in zip(merged, class_totals)]


def joint_summary(part, thresholds: list, audioset_thresholds: np.ndarray) -> dict:
    """Confident-joint pass of every class.

    Returns
    -------
    dict
        ``joint_counts`` (K, 2, 2) int64, ``num_off_diagonal_issues`` (K,) int64 (each class's
        binary ``confident_learning`` issues), ``num_confident_issues`` (rows that are a
        ``confident_learning`` issue of any class: the multi-label count), ``threshold_counts``
        (T, 3) int64 (:func:`labelscan.multilabel.threshold_counts`).
    """
    part = as_partition(part)
    num_classes = part.num_classes
    joint = np.zeros((num_classes, 2, 2), dtype=np.int64)
    off = np.zeros(num_classes, dtype=np.int64)
    any_issue = np.zeros(part.num_rows, dtype=bool)
    for c in range(num_classes):
        binary = part.binary(c)
        facts = passes.row_facts(binary, thresholds[c])
        joint[c] = facts.joint_counts.dense()
        off[c] = facts.num_off_diagonal_issues
        any_issue |= binary.to_row_order(facts.off_diagonal & ~facts.given_is_argmax)
    return {"joint_counts": joint, "num_off_diagonal_issues": off,
            "num_confident_issues": int(np.count_nonzero(any_issue)),
            "threshold_counts": multilabel.threshold_counts(part.multi_hot, part.pred_probs, audioset_thresholds)}


def merge_joint_summaries(*summaries) -> dict:
    """Sum joint summaries (a tree-reduce step)."""
    return {key: passes.sum_arrays(*[np.asarray(s[key]) for s in summaries]) for key in summaries[0]}


def quality_scores(part, method: str, adjust: bool, thresholds: list) -> np.ndarray:
    """Multi-label label-quality score of every row (row order), shape (n,), float64.

    Each class's binary score (:func:`labelscan.kernels.grouped.label_quality_scores`, with its
    own thresholds when ``adjust``) aggregated by cleanlab's default exponential moving average.
    """
    part = as_partition(part)
    per_class = np.zeros(part.multi_hot.shape)
    for c in range(part.num_classes):
        binary = part.binary(c)
        per_class[:, c] = binary.to_row_order(grouped.label_quality_scores(binary, method, adjust, thresholds[c]))
    return multilabel.aggregator(**multilabel.DEFAULT_AGGREGATOR)(per_class)


def family_keys(part, family: ClassFamily) -> selection.PartitionKeys:
    """Key images of every class's tasks of one family, task ids of the combined family."""
    part = as_partition(part)
    blocks = []
    for c, tasks in enumerate(family.per_class):
        if not len(tasks):
            continue
        for block in selection.partition_keys(part.binary(c), tasks=tasks).blocks:
            block.task_ids = block.task_ids + family.offsets[c]
            blocks.append(block)
    return selection.PartitionKeys(blocks, part.num_rows)


def low_score_keys(part, tasks: selection.SelectionTasks) -> selection.PartitionKeys:
    """Key images of the default multi-label score (self-confidence, EMA), row order."""
    part = as_partition(part)
    blocks = []
    if len(tasks):
        scores = quality_scores(part, "self_confidence", False, [None] * part.num_classes)
        blocks.append(selection.KeyBlock(np.arange(len(tasks)), slice(0, part.num_rows), part.row_ids,
                                         float_images(scores)[None, :]))
    return selection.PartitionKeys(blocks, part.num_rows)


def flag(part, request: MultiLabelRequest, cutoffs: list):
    """Flag and score one partition.

    ``cutoffs``: this partition's :class:`~labelscan.selection.PartitionCutoffs` of each of the
    request's families (of its low-score task for ``low_*`` filters).

    Returns
    -------
    flagged : numpy.ndarray, shape (n,), bool
        ``is_label_issue`` (row order).
    per_class : numpy.ndarray, shape (n, K), bool
        Which class's binary problem flagged the row (all False for ``low_*`` filters).
    quality : numpy.ndarray, shape (n,), float64
        The ``rank_by`` multi-label score.
    """
    part = as_partition(part)
    per_class = np.zeros(part.multi_hot.shape, dtype=bool)
    if request.low_score is not None:
        flagged = selection.select_rows(low_score_keys(part, request.low_score), request.low_score,
                                        cutoffs[0])
    else:
        for c in range(part.num_classes):
            binary = part.binary(c)
            facts = passes.row_facts(binary, request.thresholds[c])
            class_request = passes.FlagRequest(
                filter_by=request.filter_by, families=[family.per_class[c] for family in request.families],
                rank_by=request.rank_by, adjust_pred_probs=request.adjust_pred_probs,
                thresholds=request.thresholds[c])
            class_cutoffs = [family.class_cutoffs(family_cutoffs, c)
                             for family, family_cutoffs in zip(request.families, cutoffs)]
            chosen = passes.flagged_rows(binary, facts, class_request, class_cutoffs,
                                         [(binary, None)] * len(request.families))
            per_class[:, c] = binary.to_row_order(chosen)
        flagged = per_class.any(axis=1)
    quality = quality_scores(part, request.rank_by, request.adjust_pred_probs, request.thresholds)
    return flagged, per_class, quality
