"""cleanlab 2.9's ranked order of the multi-label ``low_*`` filters, on Dask.

For ``filter_by="low_self_confidence"`` / ``"low_normalized_margin"`` cleanlab flags the ``E``
rows with the lowest default multi-label score and, asked for a ranking, returns
``chosen[argsort(issue_scores)]``: ``chosen`` holds the flagged rows in default-score order,
``issue_scores`` their ``rank_by`` scores in *row* order, computed on the flagged rows alone
(``get_label_quality_scores(Y[mask], P[mask], ...)``: with ``adjust_pred_probs``, each class's
binary thresholds are the means over the flagged rows, not over the whole set). So the
``t``-th flagged row in row order (``y_t``) is paired with the ``t``-th in default-score order
(``x_t``); the pairs are ranked by ``y_t``'s ``rank_by`` score (ties by ``y_t``'s row) and
``x_t`` is what is listed (with its own ``label_quality``, the whole set's score).
:func:`labelscan.multilabel.find_label_issues` does the same in memory.

On Dask, with the score-range ranking of :func:`labelscan.scan.rank_by_ranges` twice and no
O(N) state on the driver:

0. score every partition's flagged rows (kept on its worker by the flag pass) by ``rank_by``
   (:func:`pairing_images`); with ``adjust_pred_probs`` first merge the flagged rows' binary
   thresholds of every class from per-partition pieces, as the scan's own thresholds
   (:func:`labelscan.multilabel_scan.binary_thresholds`): one pass over the flagged rows only;
1. rank the flagged rows of every partition by default score into blocks of about
   ``per_part`` rows, kept on the workers (:func:`merge_block`);
2. partition ``p``, whose flagged rows are ``y_t`` for ``t`` in ``[o_p, o_p + E_p)`` (``o_p``:
   flagged rows of earlier partitions), takes that slice of the default order from the
   blocks overlapping it (:func:`block_slice`) and sorts its pairs by ``y``'s score image
   (:func:`pair_rows`): O(P + R) slices in all;
3. rank the pairs by those images and write the parts as any other ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelscan import multilabel_passes as mlp
from labelscan import outcome, scan
from labelscan.stats.order import float_images, stable_order


@dataclass
class RankedIssues:
    """One partition's issues sorted by ``issues["image"]`` (what the range ranking splits).

    Attributes
    ----------
    issues : dict[str, numpy.ndarray]
        Columns of the same length ``m``, ``image`` (m,) uint64 among them.
    rank_shift : int
        Bits dropped from the images to get the ranking's top bits.
    """

    issues: dict
    rank_shift: int


def default_order(written) -> RankedIssues:
    """A written partition's flagged rows in default-score order (``written.default_order``)."""
    return RankedIssues(written.default_order, written.rank_shift)


def merge_block(first_rank: int, index: int, *pieces) -> dict:
    """One range of the default-score order, merged from every partition's piece (stays on a worker)."""
    return outcome.merge_ranked(list(pieces))


def block_slice(block: dict, start: int, stop: int) -> dict:
    """Rows ``[start, stop)`` of a merged block."""
    return {name: values[start:stop] for name, values in block.items()}


def flagged_rows(written) -> mlp.MultiLabelPartition:
    """A written partition's flagged rows, in row order (``written.flagged``)."""
    return written.flagged


def pairing_images(flagged: mlp.MultiLabelPartition, method: str, adjust: bool, thresholds: list) -> np.ndarray:
    """Order images of the flagged rows' ``rank_by`` scores, in row order: the pairing keys.

    Parameters
    ----------
    flagged : labelscan.multilabel_passes.MultiLabelPartition
        One partition's flagged rows (E_p, K).
    method : str
        ``rank_by``.
    adjust : bool
        ``adjust_pred_probs``.
    thresholds : list, length K
        Each class's binary thresholds (2,) over all flagged rows when ``adjust``; else None each.

    Returns
    -------
    numpy.ndarray, shape (E_p,), uint64
    """
    return float_images(mlp.quality_scores(flagged, method, adjust, thresholds)).astype(np.uint64)


def pair_rows(written, images: np.ndarray, *slices) -> RankedIssues:
    """Pair a partition's flagged rows (row order) with their slice of the default order.

    Parameters
    ----------
    written : labelscan.multilabel_scan.WrittenPartition
        The partition's ``default_order`` and ``rank_shift``.
    images : numpy.ndarray, shape (E_p,), uint64
        :func:`pairing_images` of its flagged rows ``y``, in row order.
    *slices : dict
        The default-order rows ``x_t``, ``t`` in ``[o_p, o_p + E_p)``, in order.

    Returns
    -------
    RankedIssues
        The rows ``x``, each under the image of its ``y``, sorted by it (ties by ``y``'s row).
    """
    pieces = list(slices) or [block_slice(written.default_order, 0, 0)]
    rows = {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}
    rows["image"] = images
    order = stable_order(rows["image"])
    return RankedIssues({name: values[order] for name, values in rows.items()}, written.rank_shift)


def write_low_score_ranked(runner, written, images, summaries, commit, per_part: int, write) -> list:
    """Write ``issues/`` of a ``low_*`` multi-label scan in cleanlab's order (see the module docstring).

    Parameters
    ----------
    written : list
        Handles of every partition's ``WrittenPartition``, in partition order.
    images : list
        Handles of every partition's :func:`pairing_images`.
    summaries : list of dict
        Their ``num_issues`` and ``rank_shift``.
    write : callable
        ``write(first_rank, index, commit, *pieces)`` writes one ranked part.

    Returns
    -------
    list of dict
        Manifest entries of the parts.
    """
    shift = summaries[0]["rank_shift"]
    counts = np.asarray([s["num_issues"] for s in summaries], dtype=np.int64)
    starts = np.cumsum(counts) - counts
    runs = runner.map("default-order", default_order, written)
    blocks, first_ranks = scan.rank_by_ranges(runner, runs, shift, per_part, merge_block)
    runner.release(runs)
    block_stops = np.append(first_ranks[1:], counts.sum())
    paired = []
    for part, (start, stop) in enumerate(zip(starts, starts + counts)):
        overlapping = np.flatnonzero((first_ranks < stop) & (block_stops > start))
        slices = [runner.submit("default-slice", block_slice, blocks[q], int(max(start, first_ranks[q]) - first_ranks[q]),
                                int(min(stop, block_stops[q]) - first_ranks[q])) for q in overlapping]
        paired.append(runner.submit("pair", pair_rows, written[part], images[part], *slices))
    handles, _ = scan.rank_by_ranges(runner, paired, shift, per_part, write, commit)
    entries = runner.gather(handles)
    runner.release(blocks + paired)
    return entries
