"""Are the ids unique across the whole prediction set? A bounded-memory distributed check.

Each partition's own ids are checked while it is read
(:func:`labelscan.io.validate.validate_unique_ids`); this module finds an id shared by two
partitions, after the passes and before anything is written:

1. **Ranges** (one task per partition, one small value each to the driver): each
   partition's ``(min, max)`` id. Partitions whose range overlaps no other partition's
   cannot share an id with anyone. Ids that grow with the row order (the common case:
   sequence numbers, time-ordered keys) finish here, with no data moved.
2. **Hash buckets**, only for the partitions whose ranges overlap: their ids are split by
   ``pandas.util.hash_array(id) % B`` into ``B`` buckets of at most
   :data:`BUCKET_ROWS` rows; per bucket a tree of merges (fan-in
   :data:`~labelscan.runner.DEFAULT_SPLIT_EVERY`) keeps each id once with its first global
   row, counts the rows repeating an earlier id, and remembers the first such row. Memory
   of one merge is bounded by the unique ids of its bucket (``≈ BUCKET_ROWS`` ids); the
   comparison is exact (ids, not hashes). Cost: ``B`` map + merge rounds over the
   overlapping partitions.

With cached partitions the ids come from worker memory (no read); otherwise each task
reads the id column alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labelscan.errors import InputError
from labelscan.io.rejects import kept_row_ids
from labelscan.io.validate import locate_row

BUCKET_ROWS = 1 << 22
"""Most ids one hash bucket should hold (4 Mi; strings cost ≈ 100 bytes each in a merge)."""


def partition_ids(part):
    """``(global rows, ids)`` of the kept rows of a cached partition (``row_start``, ``ids`` and
    optional ``rejected`` attributes) or of a source with ``load_ids()``."""
    if hasattr(part, "load_ids"):
        return part.load_ids()
    return kept_row_ids(part.row_start, len(part.ids), getattr(part, "rejected", None)), part.ids


def id_range(part) -> tuple | None:
    """``(min id, max id)`` of one partition (Python scalars); None when it kept no row."""
    _, ids = partition_ids(part)
    if not len(ids):
        return None
    values = pd.Series(ids)
    return values.min(), values.max()


def bucket_ids(part, bucket: int, num_buckets: int) -> dict:
    """This partition's ids falling in hash bucket ``bucket``, with their global rows."""
    rows, ids = partition_ids(part)
    if num_buckets > 1:
        keep = pd.util.hash_array(np.asarray(ids)) % np.uint64(num_buckets) == np.uint64(bucket)
        ids, rows = np.asarray(ids)[keep], rows[keep]
    return merge_buckets({"ids": ids, "rows": rows, "repeats": 0, "first": None})


def merge_buckets(*pieces) -> dict:
    """Union of bucket pieces: each id once with its first row; rows repeating an id counted.

    Returns
    -------
    dict
        ``ids`` (m,) unique, ``rows`` (m,) int64 first global row of each, ``repeats`` int,
        ``first``: ``(global row, id, first global row of that id)`` of the first row that
        repeats an earlier id, or None.
    """
    frame = pd.DataFrame({"id": np.concatenate([np.asarray(piece["ids"]) for piece in pieces])
                          if len(pieces) > 1 else pieces[0]["ids"],
                          "row": np.concatenate([piece["rows"] for piece in pieces])})
    frame = frame.sort_values("row", kind="stable")
    repeated = frame["id"].duplicated(keep="first").to_numpy()
    repeats = sum(piece["repeats"] for piece in pieces) + int(repeated.sum())
    candidates = [piece["first"] for piece in pieces if piece["first"] is not None]
    if repeated.any():
        row = int(frame["row"].to_numpy()[repeated][0])
        value = _plain(frame["id"].to_numpy()[repeated][0])
        kept_ids, kept_rows = frame["id"].to_numpy()[~repeated], frame["row"].to_numpy()[~repeated]
        first_seen = int(kept_rows[kept_ids == value][0])
        candidates.append((row, value, first_seen))
    kept = frame[~repeated]
    return {"ids": kept["id"].to_numpy(), "rows": kept["row"].to_numpy(), "repeats": repeats,
            "first": min(candidates, key=lambda item: item[0]) if candidates else None}


def _plain(value):
    """A numpy scalar as the Python value (its repr is the one a user reads)."""
    return value.item() if isinstance(value, np.generic) else value


def overlapping(ranges) -> np.ndarray:
    """Indices of the partitions whose ``(min, max)`` range (None: no ids) overlaps another partition's."""
    order = sorted((i for i in range(len(ranges)) if ranges[i] is not None), key=lambda i: ranges[i][0])
    flagged = np.zeros(len(ranges), dtype=bool)
    cluster, cluster_max = [], None
    for i in order:
        low, high = ranges[i]
        if cluster and low <= cluster_max:
            cluster.append(i)
            cluster_max = max(cluster_max, high)
            continue
        if len(cluster) > 1:
            flagged[cluster] = True
        cluster, cluster_max = [i], high
    if len(cluster) > 1:
        flagged[cluster] = True
    return np.flatnonzero(flagged)


def check_unique_ids(runner, parts, plan, bucket_rows: int = BUCKET_ROWS) -> dict:
    """Raise :class:`InputError` when two rows of the set share an id.

    Parameters
    ----------
    runner : labelscan.runner.DaskRunner or InProcessRunner
    parts : list
        Per partition (global row order): cached partitions or sources with ``load_ids()``.
    plan : DatasetPlan
        To name the file, row group and row of the first repeating row.
    bucket_rows : int
        Most ids per hash bucket.

    Returns
    -------
    dict
        ``{"partitions_compared": int, "buckets": int}``: how much of the set needed the
        hash-bucket stage.
    """
    if len(parts) < 2:
        return {"partitions_compared": 0, "buckets": 0}
    ranges = runner.gather(runner.map("id-ranges", id_range, parts))
    try:
        suspects = overlapping(ranges)
    except TypeError:   # ids that do not order (mixed objects): compare everything
        suspects = np.arange(len(parts))
    if not len(suspects):
        return {"partitions_compared": 0, "buckets": 0}
    rows = sum(plan.partitions[i].num_rows for i in suspects)
    num_buckets = max(1, -(-rows // bucket_rows))
    chosen = [parts[i] for i in suspects]
    results = []
    for bucket in range(num_buckets):
        pieces = runner.map("id-buckets", bucket_ids, chosen, bucket=bucket, num_buckets=num_buckets)
        results.append(runner.submit("id-repeats", _repeats,
                                     runner.reduce("id-merge", merge_buckets, pieces)))
    found = [result for result in runner.gather(results) if result["repeats"]]
    if found:
        raise duplicate_error(plan, sum(result["repeats"] for result in found),
                              min((result["first"] for result in found), key=lambda item: item[0]))
    return {"partitions_compared": int(len(suspects)), "buckets": num_buckets}


def _repeats(merged: dict) -> dict:
    """The small part of a merged bucket the driver needs."""
    return {"repeats": merged["repeats"], "first": merged["first"]}


def duplicate_error(plan, repeats: int, first: tuple) -> InputError:
    """The error naming the first row (global order) whose id repeats an earlier row's."""
    global_row, value, first_seen = first
    starts = [spec.row_start for spec in plan.partitions]
    spec = plan.partitions[int(np.searchsorted(starts, global_row, side="right")) - 1]
    path, row_group, row = locate_row(spec, global_row - spec.row_start)
    return InputError(f"duplicate id {value!r} (first at global row {first_seen})", path=path,
                      row_group=row_group, row=row, global_row=global_row, num_rows_affected=repeats)
